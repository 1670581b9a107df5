//! File-level physical backups (`method = "files"`) against a real PostgreSQL 15
//! cluster with data checksums (`initdb -k`), archiving through `backup wal-push`:
//! a chain full -> incr -> diff -> incr under pgbench writes, every backup of it
//! restored and started, PITR to a moment between two backups, `--delta` restores,
//! `pg_amcheck` on what came back, and a missing link refused before anything is
//! written.
//!
//! When the tests run as root the server runs as the `postgres` OS user; `backup run`
//! (root) reads PGDATA itself, as it would as the cluster's owner.

mod common;

use common::physical::{archive_now, archiving_cluster_initdb, is_root, pitr, Restored};
use common::{pg_bin, Env, Pg};
use std::path::Path;
use std::process::Command;

fn config(repo: &Path, url: &str) -> String {
    format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[targets.pg]
engine = "postgres"
kind = "physical"
method = "files"
jobs = 2
url = "{url}"
storages = ["local"]
"#,
        repo.display()
    )
}

/// What the data is: pgbench's balances and history, a table rewritten by VACUUM
/// FULL, whether the dropped table is gone, and the unlogged table's rows.
const SNAPSHOT: &str = "SELECT (SELECT count(*) || ':' || sum(abalance) FROM pgbench_accounts) \
    || '/' || (SELECT sum(bbalance) FROM pgbench_branches) \
    || '/' || (SELECT count(*) || ':' || coalesce(sum(delta), 0) FROM pgbench_history) \
    || '/' || (SELECT coalesce(md5(string_agg(id || v, ',' ORDER BY id)), '') FROM rewritten) \
    || '/' || coalesce(to_regclass('dropped')::text, 'no dropped') \
    || '/' || (SELECT count(*) FROM scratch)";

fn pgbench(pg: &Pg, args: &[&str]) {
    let out = Command::new(pg_bin().join("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg("postgres")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(env: &Env, ty: &str) -> (String, serde_json::Value) {
    let out = env.ok(&["run", "pg", "--type", ty, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join("pg").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    (id, m)
}

fn amcheck(r: &Restored) {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(pg_bin().join("pg_amcheck"));
        c
    } else {
        Command::new(pg_bin().join("pg_amcheck"))
    };
    let out = c
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &r.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["--install-missing", "--heapallindexed", "--all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_chain_restores_backup_by_backup_and_recovers_between_them() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let pg = archiving_cluster_initdb(&env, &["-k"], |url| config(&repo, url));
    pgbench(&pg, &["-i", "-s", "2", "-q"]);
    pg.sql(
        "postgres",
        "CREATE TABLE rewritten (id int PRIMARY KEY, v text); \
         INSERT INTO rewritten SELECT g, repeat('x', 50) FROM generate_series(1, 5000) g; \
         CREATE TABLE dropped AS SELECT g FROM generate_series(1, 1000) g; \
         CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g;",
    );
    let snap = |pg: &Pg| pg.sql("postgres", SNAPSHOT);

    // A diff with no full before it becomes a full and says so.
    let out = env
        .cmd()
        .args(["run", "pg", "--type", "diff"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taking a full backup instead of diff"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (full, m) = run(&env, "full");
    assert_eq!(m["format"], "files");
    assert_eq!(m["database"]["extra"]["backup_type"], "full");
    let s_full = snap(&pg);

    // Writes, a table dropped and one rewritten, then an incremental.
    pgbench(&pg, &["-t", "300", "-c", "2"]);
    pg.sql(
        "postgres",
        "DROP TABLE dropped; UPDATE rewritten SET v = v || 'y' WHERE id % 7 = 0",
    );
    pg.sql("postgres", "VACUUM FULL rewritten");
    let (incr1, m) = run(&env, "incr");
    assert_eq!(m["database"]["extra"]["backup_type"], "incr");
    assert_eq!(m["depends_on"], serde_json::json!([full]));
    // pgbench's random updates touch most pages of its tables, but the catalogs and the
    // other tables are not copied again.
    let files = m["database"]["extra"]["pgdata"]["files"]
        .as_array()
        .unwrap();
    let copied = files.iter().filter(|f| f.get("backup").is_none()).count();
    assert!(
        copied * 4 < files.len(),
        "incr copied {copied} of {} files: unchanged files were stored again",
        files.len()
    );
    let s_incr1 = snap(&pg);

    pgbench(&pg, &["-t", "300", "-c", "2"]);
    let (diff, m) = run(&env, "diff");
    assert_eq!(m["database"]["extra"]["backup_type"], "diff");
    assert_eq!(m["depends_on"], serde_json::json!([full]));
    let s_diff = snap(&pg);

    // A moment between the diff and the last incr, with its data.
    pgbench(&pg, &["-t", "200", "-c", "2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let between = pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    let s_between = snap(&pg);
    std::thread::sleep(std::time::Duration::from_millis(300));
    pgbench(&pg, &["-t", "200", "-c", "2"]);
    let (incr2, m) = run(&env, "incr");
    let deps = m["depends_on"].as_array().unwrap();
    assert!(deps.contains(&serde_json::json!(diff)), "{deps:?}");
    let s_incr2 = snap(&pg);
    archive_now(&pg);

    // `list` shows types and chains; verify checks every file of every bundle.
    let l: serde_json::Value = serde_json::from_str(&env.ok(&["list", "pg", "--json"])).unwrap();
    let types: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(types, ["full", "full", "incr", "diff", "incr"], "{l}");
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", "pg", "--json"])).unwrap();
    assert_eq!(st[0]["storages"][0]["last_type"], "incr", "{st}");
    assert!(
        st[0]["storages"][0]["last_full_finished_at"].is_string(),
        "{st}"
    );
    let v = env.ok(&["verify", "pg", "--all", "--json"]);
    assert!(v.contains("size and SHA-256 match"), "{v}");

    // Every backup of the chain restores to exactly its data, with the unlogged table
    // back empty (its init fork) and pg_amcheck clean.
    for (id, want) in [
        (&full, &s_full),
        (&incr1, &s_incr1),
        (&diff, &s_diff),
        (&incr2, &s_incr2),
    ] {
        let (r, _) = pitr(
            &env,
            &format!("r-{id}"),
            &["--backup", id, "--target-immediate"],
        );
        let got = r.sql(SNAPSHOT);
        let want_empty_scratch = format!("{}/0", want.rsplit_once('/').unwrap().0);
        assert_eq!(got, want_empty_scratch, "backup {id}");
        amcheck(&r);
    }

    // Point in time between the diff and the last incr.
    let (r, _) = pitr(&env, "r-between", &["--target-time", &between]);
    assert_eq!(
        r.sql(SNAPSHOT),
        format!("{}/0", s_between.rsplit_once('/').unwrap().0)
    );
    drop(r);

    // --delta: the full's restored (now stopped) cluster brought to the last incr,
    // rewriting only what changed.
    let dir = env.path().join(format!("r-{full}"));
    let (code, out, err) = env.run(&[
        "pitr",
        "pg",
        "--backup",
        &incr2,
        "--target-immediate",
        "--delta",
        "--data-dir",
        &dir.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let kept: u64 = err
        .split("--delta kept ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        kept > 500,
        "--delta rewrote files that were already right: {err}"
    );
    let port = common::free_port();
    let r = Restored {
        data: dir.clone(),
        port,
    };
    start(&dir, port);
    assert_eq!(
        r.sql(SNAPSHOT),
        format!("{}/0", s_incr2.rsplit_once('/').unwrap().0)
    );
    drop(r);

    // test-restore proves the last incr too (restored from its whole chain).
    let out = env.ok(&["test-restore", "pg", &incr2, "--json"]);
    assert!(out.contains("\"passed\": true"), "{out}");

    // A missing link: verify names it, pitr refuses before writing a byte.
    std::fs::rename(
        env.repo().join("pg").join(&diff),
        env.path().join("moved-away"),
    )
    .unwrap();
    let (code, out, err) = env.run(&["verify", "pg", &incr2]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains(&diff) || err.contains(&diff), "{out}{err}");
    let empty = env.path().join("r-missing");
    let (code, _, err) = env.run(&[
        "pitr",
        "pg",
        "--backup",
        &incr2,
        "--target-immediate",
        "--data-dir",
        &empty.display().to_string(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&diff) && err.contains("missing"), "{err}");
    assert!(
        !empty.exists() || std::fs::read_dir(&empty).unwrap().next().is_none(),
        "pitr wrote into the data directory before finding the chain broken"
    );
    // With --delta into a stopped cluster, a broken chain leaves that cluster as it was.
    let (code, _, err) = env.run(&[
        "pitr",
        "pg",
        "--backup",
        &incr2,
        "--target-immediate",
        "--delta",
        "--data-dir",
        &dir.display().to_string(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        dir.join("global/pg_control").exists(),
        "a refused --delta removed the cluster's pg_control"
    );
}

/// Starts a restored data directory (as postgres when root) and waits for it.
fn start(dir: &Path, port: u16) {
    let log = dir.with_extension("log");
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(pg_bin().join("pg_ctl"));
        c
    } else {
        Command::new(pg_bin().join("pg_ctl"))
    };
    if is_root() {
        let _ = std::fs::write(&log, "");
        Command::new("chown")
            .args(["postgres"])
            .arg(&log)
            .status()
            .unwrap();
    }
    let out = c
        .args(["-w", "-t", "60", "-D"])
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .args([
            "-o",
            &format!("-p {port} -c listen_addresses=127.0.0.1 -k /tmp"),
            "start",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl start: {}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Recovery to the end of the backup, then promotion.
    let t = std::time::Instant::now();
    loop {
        let o = Command::new(pg_bin().join("psql"))
            .args(["-X", "-A", "-t", "-d"])
            .arg(format!("postgresql://postgres@127.0.0.1:{port}/postgres"))
            .args(["-c", "SELECT pg_is_in_recovery()"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).trim() == "f" {
            return;
        }
        assert!(
            t.elapsed().as_secs() < 60,
            "the delta-restored cluster did not finish recovery: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// examples/backup.toml's commented [targets.pgphys], uncommented, runs the strategy
/// document's schedule: a full at 02:00, incrementals at 08:00, 14:00 and 20:00.
#[test]
fn the_example_config_schedules_full_and_incremental_backups() {
    let env = Env::new();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backup.toml"))
            .unwrap();
    let block: String = text
        .lines()
        .skip_while(|l| *l != "# [targets.pgphys]")
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
        .collect();
    assert!(block.contains("method = \"files\""), "{block}");
    let block = block.replace("storages = [\"local\", \"s3\"]", "storages = [\"local\"]");
    let cfg = env.write_config(&format!(
        "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n{block}",
        env.repo().display()
    ));
    let out = env.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "schedule",
        "--json",
        "--from",
        "2026-11-30T00:00:00Z",
        "-n",
        "4",
    ]);
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let commands: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["command"].to_string())
        .collect();
    assert_eq!(
        commands,
        [r#"["run","pgphys"]"#, r#"["run","pgphys","--type","incr"]"#],
        "{out}"
    );
    assert_eq!(jobs[0]["next"][0], "2026-11-30T02:00:00Z", "{out}");
    let incr: Vec<&str> = jobs[1]["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        incr,
        [
            "2026-11-30T08:00:00Z",
            "2026-11-30T14:00:00Z",
            "2026-11-30T20:00:00Z",
            "2026-12-01T08:00:00Z"
        ],
        "{out}"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Waits until `dir` holds a file whose path passes `pred`.
fn wait_for_file(dir: &Path, pred: impl Fn(&str) -> bool, what: &str) {
    let t = std::time::Instant::now();
    while !common::files_under(dir)
        .iter()
        .any(|p| pred(&p.to_string_lossy()))
    {
        assert!(
            t.elapsed().as_secs() < 60,
            "{what}: nothing appeared in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// SIGTERM mid-backup: exit 143, nothing left (not even for `list --all`), the server's
/// backup mode ended with the session, and the next run succeeds. SIGTERM mid-restore:
/// exit 143 and the data directory emptied, never a half-restored cluster.
#[test]
fn a_signal_mid_backup_or_mid_restore_leaves_nothing_half_made() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let pg = archiving_cluster_initdb(&env, &["-k"], |url| {
        config(&repo, url).replace("jobs = 2", "jobs = 1")
    });
    pgbench(&pg, &["-i", "-s", "10", "-q"]);

    let quiet = |mut c: Command| {
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let mut child = quiet(env.std_cmd())
        .args(["run", "pg", "--type", "full"])
        .spawn()
        .unwrap();
    wait_for_file(
        &env.repo().join("pg"),
        // a bundle being written (not a WAL segment the server archives meanwhile)
        |p| p.contains("/.tmp-") && !p.contains("/wal/"),
        "backup run",
    );
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "pg", "--all", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!([]), "{v}");
    let (id, _) = run(&env, "full");
    archive_now(&pg);

    let data = env.path().join("r-signal");
    let mut child = quiet(env.std_cmd())
        .args([
            "pitr",
            "pg",
            "--target-immediate",
            "--backup",
            &id,
            "--data-dir",
        ])
        .arg(&data)
        .spawn()
        .unwrap();
    wait_for_file(&data, |_| true, "pitr");
    // SAFETY: as above.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(
        common::files_under(&data).is_empty(),
        "a half-restored data directory was left: {:?}",
        common::files_under(&data).len()
    );
}

/// The same through S3 only (moto): bundles as multipart uploads, an incr referencing
/// the full's objects, both verified, the incr restored and recovered to a time after it.
#[test]
fn an_incremental_chain_through_s3_restores_and_recovers() {
    // The server's archive_command and restore_command sign S3 requests with these.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let moto = common::Moto::start();
    moto.create_bucket("incr");
    let env = Env::new();
    let s3_config = |url: &str| {
        format!(
            r#"
[storages.s3]
type = "s3"
bucket = "incr"
endpoint = "{}"
force_path_style = true
region = "us-east-1"
part_size_mb = 5

[targets.pg]
engine = "postgres"
kind = "physical"
method = "files"
url = "{url}"
storages = ["s3"]
"#,
            moto.endpoint()
        )
    };
    let pg = archiving_cluster_initdb(&env, &[], s3_config);
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, pad text); \
         INSERT INTO t SELECT g, md5(g::text) || repeat('x', 200) FROM generate_series(1, 100000) g",
    );
    let (full, _) = run_s3(&env, "full");
    pg.sql(
        "postgres",
        "INSERT INTO t VALUES (100001, 'after the full')",
    );
    let (incr, m) = run_s3(&env, "incr");
    assert_eq!(m["depends_on"], serde_json::json!([full]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pg.sql(
        "postgres",
        "INSERT INTO t VALUES (100002, 'after the incr')",
    );
    let target = pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    pg.sql("postgres", "DELETE FROM t");
    archive_now(&pg);
    let out = env.ok(&["verify", "pg", "--all"]);
    assert!(out.contains(&format!("OK   pg {incr} s3")), "{out}");
    let (r, out) = pitr(&env, "r", &["--target-time", &target]);
    assert!(out.contains(&incr), "{out}");
    assert_eq!(r.sql("SELECT count(*) FROM t"), "100002");
}

/// `run --type TYPE --json` and the manifest as stored in S3 (read back by `list`).
fn run_s3(env: &Env, ty: &str) -> (String, serde_json::Value) {
    let out = env.ok(&["run", "pg", "--type", ty, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let l: serde_json::Value = serde_json::from_str(&env.ok(&["list", "pg", "--json"])).unwrap();
    let row = l
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .cloned()
        .unwrap();
    (id, row)
}

/// A promotion (here: a PITR that promotes, then archives into the same target) starts
/// a new timeline: the next incr is taken as a full and says why, and it restores.
#[test]
fn a_new_timeline_makes_the_next_incr_a_full() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let pg = archiving_cluster_initdb(&env, &[], |url| config(&repo, url));
    pg.sql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let (full, _) = run(&env, "full");
    archive_now(&pg);
    let (r, _) = pitr(&env, "promoted", &["--backup", &full, "--target-immediate"]);
    assert_eq!(
        r.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    drop(pg); // the old primary is gone; the promoted copy takes over the target
    let cfg = env.write_config(&config(
        &repo,
        &format!("postgresql://postgres@127.0.0.1:{}/postgres", r.port),
    ));
    r.sql("ALTER SYSTEM SET archive_mode = on");
    r.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{} --config {} wal-push pg %p'",
        common::physical::bin().display(),
        cfg.display()
    ));
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(pg_bin().join("pg_ctl"));
        c
    } else {
        Command::new(pg_bin().join("pg_ctl"))
    };
    let out = c
        .args(["-w", "-m", "fast", "-D"])
        .arg(&r.data)
        .arg("stop")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start(&r.data, r.port);
    r.sql("INSERT INTO t VALUES (1001)");

    let out = env
        .cmd()
        .args(["run", "pg", "--type", "incr", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("the timeline changed (1 -> 2)"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join("pg").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["database"]["extra"]["backup_type"], "full");
    assert_eq!(m["wal"]["timeline"], 2);
    assert!(m.get("depends_on").is_none(), "{}", m["depends_on"]);
}
