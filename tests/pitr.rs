//! Point-in-time recovery against real temporary PostgreSQL clusters: physical base
//! backups, WAL archived by the server itself through `backup wal-push`, and
//! `backup pitr --start` bringing up a restored cluster that replays it.
//!
//! When the tests run as root the servers run as the `postgres` OS user, so the test
//! workspace is opened up (0777) for that user to read the config and write the repo.

mod common;

use common::physical::{
    archive_now, archiving_cluster_with, bin, is_root, open_up, pitr, Restored,
};
use common::{pg_bin, Env, Moto, Pg};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn config(repo: &Path, url: &str) -> String {
    format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[targets.pg]
engine = "postgres"
kind = "physical"
url = "{url}"
storages = ["local"]
compression_level = 1
"#,
        repo.display()
    )
}

/// A cluster archiving into `env`'s repo through `backup wal-push pg %p`.
fn archiving_cluster(env: &Env) -> Pg {
    // The server (the postgres OS user) archives into the same repo that `backup run`
    // (root here) writes: the target's folder must be writable by both.
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    archiving_cluster_with(env, |url| config(&repo, url))
}

fn rows(r: &Restored) -> String {
    r.sql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t")
}

#[test]
fn pitr_round_trips_to_time_name_lsn_xid_and_immediate() {
    let env = Env::new();
    let pg = archiving_cluster(&env);
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, label text)",
    );
    let run = env.ok(&["run", "pg", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_eq!(v["kind"], "physical");
    let id = v["id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join("pg").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let wal = &manifest["wal"];
    assert_eq!(wal["timeline"], 1);
    assert!(wal["start_segment"]
        .as_str()
        .unwrap()
        .starts_with("00000001"));
    assert!(!wal["stop_lsn"].as_str().unwrap().is_empty());
    assert!(manifest["database"]["extra"]["backup_label"]
        .as_str()
        .unwrap()
        .contains("START WAL LOCATION"));
    assert!(env.repo().join("pg").join(&id).join("base.tar.gz").exists());
    let before_backup = "2000-01-01T00:00:00Z";

    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("postgres", "INSERT INTO t VALUES (1, 'a')");
    std::thread::sleep(Duration::from_millis(300));
    let t1 = pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(300));
    pg.sql("postgres", "INSERT INTO t VALUES (2, 'b')");
    pg.sql("postgres", "SELECT pg_create_restore_point('before_3')");
    pg.sql("postgres", "INSERT INTO t VALUES (3, 'c')");
    let lsn = pg.sql("postgres", "SELECT pg_current_wal_insert_lsn()");
    let xid = pg.sql(
        "postgres",
        "BEGIN; INSERT INTO t VALUES (4, 'd'); SELECT txid_current(); COMMIT;",
    );
    pg.sql("postgres", "INSERT INTO t VALUES (5, 'e')");
    archive_now(&pg);

    // The archive as PostgreSQL left it: continuous, and verify says so.
    let out = env.ok(&["verify", "pg"]);
    assert!(out.contains("OK   pg wal local"), "{out}");
    assert!(out.contains(&format!("OK   pg {id} local")), "{out}");
    let list = env.ok(&["list", "pg", "--json"]);
    let l: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(l[0]["recoverable_until"].is_string(), "{list}");

    let (r, out) = pitr(&env, "r-time", &["--target-time", &t1]);
    assert!(out.contains("recovery stopped"), "{out}");
    assert_eq!(rows(&r), "1");
    assert_eq!(r.sql("SELECT pg_is_in_recovery()"), "f");
    drop(r);

    let (r, _) = pitr(&env, "r-name", &["--target-name", "before_3"]);
    assert_eq!(rows(&r), "1,2");
    drop(r);

    let (r, _) = pitr(&env, "r-lsn", &["--target-lsn", &lsn]);
    assert_eq!(rows(&r), "1,2,3");
    drop(r);

    let (r, _) = pitr(&env, "r-xid", &["--target-xid", &xid]);
    assert_eq!(rows(&r), "1,2,3,4");
    drop(r);

    let (r, _) = pitr(&env, "r-immediate", &["--target-immediate"]);
    assert_eq!(rows(&r), "");
    drop(r);

    // A target before the oldest base backup is refused, and nothing is written.
    let d = env.path().join("r-early");
    let (code, _, err) = env.run(&[
        "pitr",
        "pg",
        "--target-time",
        before_backup,
        "--data-dir",
        d.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no base backup of `pg` ends before the target"),
        "{err}"
    );
    assert!(!d.join("PG_VERSION").exists());

    // A non-empty data directory is refused.
    let (code, _, err) = env.run(&[
        "pitr",
        "pg",
        "--target-immediate",
        "--data-dir",
        env.path().join("r-time").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not empty"), "{err}");
}

#[test]
fn a_missing_wal_segment_is_named_by_verify_and_refused_by_pitr() {
    let env = Env::new();
    let pg = archiving_cluster(&env);
    pg.sql("postgres", "CREATE TABLE t (id int)");
    env.ok(&["run", "pg"]);
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..4 {
        pg.sql("postgres", &format!("INSERT INTO t VALUES ({i})"));
        archive_now(&pg);
    }
    let target = pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    pg.sql("postgres", "INSERT INTO t VALUES (99)");
    archive_now(&pg);
    let dir = env.repo().join("pg/wal/00000001");
    let mut segs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 27 && n.ends_with(".gz"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 5, "{segs:?}");
    let victim = segs[segs.len() - 3].clone();
    std::fs::remove_file(dir.join(&victim)).unwrap();
    let victim = victim.trim_end_matches(".gz").to_string();

    let (code, out, err) = env.run(&["verify", "pg"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains(&format!("first missing segment {victim}")),
        "{out}"
    );

    let d = env.path().join("r");
    let (code, _, err) = env.run(&[
        "pitr",
        "pg",
        "--target-time",
        &target,
        "--data-dir",
        d.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&victim) && err.contains("gap"), "{err}");
    assert!(!d.join("PG_VERSION").exists());
}

fn segment(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(dir).unwrap();
    let mut data = vec![byte; 16 * 1024 * 1024];
    data[..8].copy_from_slice(b"walwalwa");
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn wal_push_is_idempotent_and_never_overwrites() {
    let env = Env::new();
    env.write_config(&config(
        &env.repo(),
        "postgresql://postgres@127.0.0.1:1/postgres",
    ));
    let seg = segment(&env.path().join("a"), "000000010000000000000007", 1);
    env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    let other = segment(&env.path().join("b"), "000000010000000000000007", 2);
    let (code, _, err) = env.run(&["wal-push", "pg", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing to overwrite 000000010000000000000007"),
        "{err}"
    );
    // The archived copy is still the first one.
    let dest = env.path().join("fetched");
    env.ok(&[
        "wal-fetch",
        "pg",
        "000000010000000000000007",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());
    // History, backup and partial files go through too.
    for n in [
        "00000002.history",
        "000000010000000000000007.00000028.backup",
        "000000010000000000000008.partial",
    ] {
        let p = env.path().join("c").join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("content of {n}")).unwrap();
        env.ok(&["wal-push", "pg", p.to_str().unwrap()]);
        let d = env.path().join(format!("got-{n}"));
        env.ok(&["wal-fetch", "pg", n, d.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(&d).unwrap(),
            format!("content of {n}")
        );
    }
}

#[test]
fn wal_fetch_exit_codes_missing_damaged_and_storage_down() {
    let env = Env::new();
    env.write_config(&config(
        &env.repo(),
        "postgresql://postgres@127.0.0.1:1/postgres",
    ));
    let dest = env.path().join("x");
    let (code, _, err) = env.run(&[
        "wal-fetch",
        "pg",
        "000000010000000000000009",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(!dest.exists());

    // A damaged archive copy is a checksum error, not "missing".
    let seg = segment(&env.path().join("a"), "00000001000000000000000A", 3);
    env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    let key = env
        .repo()
        .join("pg/wal/00000001/00000001000000000000000A.gz");
    let mut other = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut other, b"not the segment").unwrap();
    let packed = other.finish().unwrap();
    // Keep the original header (with its sha256 comment) but swap the body.
    std::fs::write(&key, {
        let orig = std::fs::read(&key).unwrap();
        let hdr_end = 10 + orig[10..].iter().position(|&b| b == 0).unwrap() + 1;
        let mut v = orig[..hdr_end].to_vec();
        v[3] |= 0x10; // FCOMMENT stays set
        v.extend_from_slice(&packed[10..]);
        v
    })
    .unwrap();
    let (code, _, err) = env.run(&[
        "wal-fetch",
        "pg",
        "00000001000000000000000A",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!dest.exists());

    // A local storage whose path cannot be read (a file where the folder should be).
    let broken = env.path().join("not-a-dir");
    std::fs::write(&broken, "x").unwrap();
    env.write_config(&config(
        &broken,
        "postgresql://postgres@127.0.0.1:1/postgres",
    ));
    let (code, _, err) = env.run(&[
        "wal-fetch",
        "pg",
        "000000010000000000000009",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code, 126, "{err}");

    // S3: missing is 1 while the server is up, 126 once it is down.
    let moto = Moto::start();
    moto.create_bucket("wal");
    env.write_config(&format!(
        r#"
[storages.s3]
type = "s3"
bucket = "wal"
endpoint = "{}"
force_path_style = true
region = "us-east-1"
max_attempts = 1

[targets.pg]
engine = "postgres"
kind = "physical"
storages = ["s3"]
"#,
        moto.endpoint()
    ));
    env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    let other = segment(&env.path().join("b"), "00000001000000000000000A", 4);
    let (code, _, _) = env.run(&["wal-push", "pg", other.to_str().unwrap()]);
    assert_eq!(code, 1);
    env.ok(&[
        "wal-fetch",
        "pg",
        "00000001000000000000000A",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());
    let (code, _, err) = env.run(&[
        "wal-fetch",
        "pg",
        "000000010000000000000009",
        env.path().join("y").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    drop(moto);
    let (code, _, err) = env.run(&[
        "wal-fetch",
        "pg",
        "000000010000000000000009",
        env.path().join("y").to_str().unwrap(),
    ]);
    assert_eq!(code, 126, "{err}");
}

fn now_utc(pg_sql: impl Fn(&str) -> String) -> String {
    pg_sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

fn as_postgres(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

#[test]
fn pitr_after_a_promotion_follows_the_new_timeline() {
    let env = Env::new();
    let pg = archiving_cluster(&env);
    pg.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    let b1 = env.ok(&["run", "pg"]).trim().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("postgres", "INSERT INTO t VALUES (1)");
    let t1 = now_utc(|q| pg.sql("postgres", q));
    pg.sql("postgres", "INSERT INTO t VALUES (100)");
    archive_now(&pg);

    // Restore without --start, configure archiving as a production postgresql.conf
    // would, and start it by hand: it promotes to timeline 2 and archives there.
    let data = env.path().join("r1");
    let out = env.ok(&[
        "pitr",
        "pg",
        "--target-time",
        &t1,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.contains("next: "), "{out}");
    let cfg = env.path().join("backup.toml");
    let mut auto = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .unwrap();
    use std::io::Write;
    writeln!(
        auto,
        "wal_level = replica\narchive_mode = on\nmax_wal_senders = 5\narchive_command = '{} --config {} wal-push pg %p'",
        bin().display(),
        cfg.display()
    )
    .unwrap();
    drop(auto);
    let port = common::free_port();
    let r = Restored {
        data: data.clone(),
        port,
    };
    let st = as_postgres(&pg_bin().join("pg_ctl"))
        .args(["-w", "-t", "60", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(data.join("manual.log"))
        .args([
            "-o",
            &format!("-p {port} -c listen_addresses=127.0.0.1 -k /tmp"),
            "start",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let t = Instant::now();
    while r.sql("SELECT pg_is_in_recovery()") != "f" {
        assert!(t.elapsed() < Duration::from_secs(60), "no promotion");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rows(&r), "1");
    r.sql("INSERT INTO t VALUES (2)");
    let t2 = now_utc(|q| r.sql(q));
    r.sql("INSERT INTO t VALUES (3)");
    let seg = r.sql("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(seg.starts_with("00000002"), "{seg}");
    let t = Instant::now();
    while !env
        .repo()
        .join(format!("pg/wal/00000002/{seg}.gz"))
        .exists()
    {
        assert!(t.elapsed() < Duration::from_secs(60), "{seg} not archived");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env
        .repo()
        .join("pg/wal/00000002/00000002.history.gz")
        .exists());

    // From the timeline-1 base backup, recovery follows the history to timeline 2.
    let (r2, out) = pitr(&env, "r2", &["--target-time", &t2, "--backup", &b1]);
    assert!(out.contains("recovery stopped"), "{out}");
    assert_eq!(rows(&r2), "1,2");
    drop(r2);
    drop(r);
    drop(pg);
}

#[test]
fn check_confirms_archiving_and_run_refuses_without_it() {
    let env = Env::new();
    let pg = archiving_cluster(&env);
    let out = env.ok(&["check", "pg"]);
    assert!(out.contains("arrived on `local`"), "{out}");
    assert!(out.contains("archive_mode = on"), "{out}");

    // A cluster that does not archive: a base backup would be unrestorable.
    let plain = Pg::start_with(&["wal_level=replica", "max_wal_senders=5"]);
    env.write_config(&config(&env.repo(), &plain.url("postgres")));
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("WAL archiving is not set up"), "{err}");
    let (code, _, err) = env.run(&["check", "pg"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("archive_mode = off"), "{err}");
    drop(pg);
}

#[test]
fn pitr_round_trip_through_s3_only() {
    // The servers' archive_command and restore_command sign S3 requests: they inherit
    // these from the process that starts them (moto does not check them).
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let moto = Moto::start();
    moto.create_bucket("pitr");
    let env = Env::new();
    let s3_config = |url: &str| {
        format!(
            r#"
[storages.s3]
type = "s3"
bucket = "pitr"
prefix = "prod"
endpoint = "{}"
force_path_style = true
region = "us-east-1"

[targets.pg]
engine = "postgres"
kind = "physical"
url = "{url}"
storages = ["s3"]
"#,
            moto.endpoint()
        )
    };
    let pg = archiving_cluster_with(&env, s3_config);
    pg.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    env.ok(&["run", "pg"]);
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("postgres", "INSERT INTO t SELECT generate_series(1, 1000)");
    let target = now_utc(|q| pg.sql("postgres", q));
    pg.sql("postgres", "DELETE FROM t");
    archive_now(&pg);
    let out = env.ok(&["verify", "pg"]);
    assert!(out.contains("OK   pg wal s3"), "{out}");
    let (r, out) = pitr(&env, "r", &["--target-time", &target]);
    assert!(out.contains("from `s3`"), "{out}");
    assert_eq!(r.sql("SELECT count(*) FROM t"), "1000");
    drop(r);
    drop(pg);
}

/// Prune of a physical target: the older base backup goes, and with it exactly the
/// WAL before the kept backup's start segment; the kept backup stays verifiable.
#[test]
fn prune_removes_wal_before_the_oldest_kept_base_backup() {
    let env = Env::new();
    let pg = archiving_cluster(&env);
    pg.sql("postgres", "CREATE TABLE t (id int)");
    let old = env.ok(&["run", "pg"]).trim().to_string();
    for i in 0..3 {
        pg.sql("postgres", &format!("INSERT INTO t VALUES ({i})"));
        archive_now(&pg);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let kept = env.ok(&["run", "pg"]).trim().to_string();
    pg.sql("postgres", "INSERT INTO t VALUES (10)");
    archive_now(&pg);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join(format!("pg/{kept}/manifest.json"))).unwrap(),
    )
    .unwrap();
    let start = manifest["wal"]["start_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let wal_dir = env.repo().join("pg/wal/00000001");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&wal_dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with(".meta-")) // local storage's metadata side files
            .collect();
        v.sort();
        v
    };
    let before = names();
    assert!(
        before.iter().any(|n| n.as_str() < start.as_str()),
        "{before:?} {start}"
    );

    let cfg = std::fs::read_to_string(env.path().join("backup.toml")).unwrap();
    env.write_config(&format!(
        "{cfg}\n[storages.local.retention]\nkeep_last = 1\n"
    ));
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "pg", "--dry-run", "--json", "--now", &later]))
            .unwrap();
    let wal = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["wal"] == true)
        .expect("a WAL entry in the plan");
    assert_eq!(wal["action"], "remove", "{plan}");
    assert!(
        wal["reasons"][0].as_str().unwrap().contains(&start),
        "{plan}"
    );
    assert_eq!(names(), before, "--dry-run deleted WAL");

    env.ok(&["prune", "pg", "--yes", "--now", &later]);
    let after = names();
    assert!(!env.repo().join(format!("pg/{old}")).exists());
    assert!(env.repo().join(format!("pg/{kept}/manifest.json")).exists());
    for n in &after {
        if !n.ends_with(".history.gz") {
            assert!(n.as_str() >= start.as_str(), "{n} survived, start {start}");
        }
    }
    assert!(after.iter().any(|n| n.starts_with(&start)), "{after:?}");
    assert!(after.len() < before.len());
    // What is left still forms a continuous archive from the kept backup.
    env.ok(&["verify", "pg"]);
}

/// test-restore of a physical target goes through PITR: the base backup is restored,
/// recovered to its consistent end and checked read-only; nothing is archived from the
/// scratch copy and nothing of it is left afterwards.
#[test]
fn test_restore_of_a_physical_backup_recovers_and_checks_it() {
    let env = Env::new();
    let pg = archiving_cluster(&env);
    pg.sql(
        "postgres",
        "CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int, parent_id int REFERENCES parent(id));
         INSERT INTO parent SELECT generate_series(1, 100); INSERT INTO child SELECT i, i FROM generate_series(1, 100) i;",
    );
    let id = env.ok(&["run", "pg"]).trim().to_string();
    archive_now(&pg);
    let scratch = env.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    open_up(&scratch);
    let cfg = std::fs::read_to_string(env.path().join("backup.toml")).unwrap();
    env.write_config(&format!(
        "[test_restore]\ntemp_dir = \"{}\"\nbenchmark_sql = [\"SELECT count(*) FROM parent JOIN child ON child.parent_id = parent.id\"]\n{cfg}",
        scratch.display()
    ));
    let wal_before: Vec<_> = std::fs::read_dir(env.repo().join("pg/wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = env.ok(&["test-restore", "pg", "latest", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["id"], id.as_str(), "{out}");
    assert_eq!(r["kind"], "physical", "{out}");
    assert_eq!(r["passed"], true, "{out}");
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"restore") && names.contains(&"rto"),
        "{names:?}"
    );
    assert!(names.contains(&"foreign_keys postgres"), "{names:?}");
    // The benchmark runs on the recovered (read-only) copy, right after the RTO check.
    let rto = names.iter().position(|n| *n == "rto").unwrap();
    assert!(
        names[rto + 1].starts_with("benchmark #1: SELECT count(*) FROM parent"),
        "{names:?}"
    );
    assert_eq!(r["checks"][rto + 1]["figures"]["rows"], 1, "{out}");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left behind"
    );
    // No new timeline was archived from the scratch copy.
    let wal_after: Vec<_> = std::fs::read_dir(env.repo().join("pg/wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(wal_before, wal_after);

    // An orphaned foreign key in a later backup fails the check (exit 6).
    pg.sql(
        "postgres",
        "CREATE TABLE kid (pid int); INSERT INTO kid VALUES (999);
         ALTER TABLE kid ADD CONSTRAINT kid_fk FOREIGN KEY (pid) REFERENCES parent(id) NOT VALID;",
    );
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(&["run", "pg"]);
    archive_now(&pg);
    let (code, out, err) = env.run(&["test-restore", "pg", "latest", "--json"]);
    assert_eq!(code, 6, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fk = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "foreign_keys postgres")
        .unwrap();
    assert_eq!(fk["passed"], false, "{out}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn encrypted_base_backup_and_wal_recover_and_need_the_identity() {
    // Base backup and every WAL segment sealed with age; wal-fetch decrypts during
    // recovery; without the identity wal-fetch says so with exit 126.
    let env = Env::new();
    let (key, recipient) = common::age_keygen(env.path(), "key");
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let sealed = |url: &str| {
        config(&repo, url).replace(
            "[targets.pg]",
            &format!(
                "[storages.local.encryption]\nage_recipients = [\"{recipient}\"]\nage_identity_file = \"{}\"\n\n[targets.pg]",
                key.display()
            ),
        )
    };
    let pg = archiving_cluster_with(&env, sealed);
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, label text)",
    );
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let dir = env.repo().join("pg").join(&id);
    assert!(dir.join("base.tar.gz.age").exists());
    assert!(!dir.join("base.tar.gz").exists());
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("postgres", "INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    std::thread::sleep(Duration::from_millis(300));
    let t1 = now_utc(|q| pg.sql("postgres", q));
    std::thread::sleep(Duration::from_millis(300));
    pg.sql("postgres", "INSERT INTO t VALUES (3, 'c')");
    archive_now(&pg);
    let segs: Vec<String> = common::files_under(&env.repo().join("pg/wal"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        // Local metadata side files (the plaintext's SHA-256, for wal-push's conflict check).
        .filter(|n| !n.starts_with(".meta-"))
        .collect();
    assert!(!segs.is_empty());
    assert!(segs.iter().all(|s| s.ends_with(".gz.age")), "{segs:?}");
    let out = env.ok(&["verify", "pg"]);
    assert!(out.contains("OK   pg wal local"), "{out}");

    // Without the identity, restore_command refuses in a way that stops recovery.
    let seg = segs
        .iter()
        .find(|s| s.len() == 24 + 7)
        .unwrap()
        .trim_end_matches(".gz.age")
        .to_string();
    let cfg = std::fs::read_to_string(env.path().join("backup.toml")).unwrap();
    env.write_config(&cfg.replace(&format!("age_identity_file = \"{}\"", key.display()), ""));
    let dest = env.path().join("fetched");
    let (code, _, err) = env.run(&["wal-fetch", "pg", &seg, dest.to_str().unwrap()]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("BACKUP_AGE_IDENTITY"), "{err}");
    env.write_config(&cfg);
    open_up(env.path());

    let (restored, _) = pitr(&env, "restored", &["--target-time", &t1]);
    assert_eq!(rows(&restored), "1,2");
}
