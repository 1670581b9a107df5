//! `backup run` against real clusters: failures of pg_dump, the lock, tool checks,
//! tags and JSON output, and secrets.
//!
//! Some tests put a stand-in `pg_dump` script in the target's `bin_dir` (psql and
//! pg_restore stay the real ones). The stand-in runs the real pg_dump and then fails,
//! dies, waits, or claims an old version: the only ways to make a real pg_dump do that
//! on demand.
mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn sample() -> Pg {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    pg
}

/// Points target `pg` (plain format, database `app`) at a bin_dir.
fn with_bin_dir(env: &Env, pg: &Pg, bin: &Path) {
    env.write_config(&local_config_with(
        &env.repo(),
        &pg.url("app"),
        "plain",
        &format!("bin_dir = \"{}\"", bin.display()),
    ));
}

fn assert_nothing_kept(env: &Env) {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!([]), "no backup may be listed");
    assert_eq!(
        entries_under(&env.repo()),
        Vec::<std::path::PathBuf>::new(),
        "no file or folder may be left in the repository"
    );
}

#[test]
fn custom_format_run_records_the_manifest() {
    let pg = sample();
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "custom"));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join("pg").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["format"], "custom");
    assert_eq!(m["kind"], "logical");
    let art = &m["artifacts"][0];
    assert_eq!(art["name"], "dump.pgdump");
    let bytes = std::fs::read(env.repo().join("pg").join(&id).join("dump.pgdump")).unwrap();
    assert_eq!(art["size_bytes"], bytes.len() as u64);
    assert!(m["versions"]["pg_dump"].as_str().unwrap().starts_with("15"));
    assert!(m["versions"]["server"].is_string());
    let tables = m["database"]["tables"].as_array().unwrap();
    let rows = |name: &str| {
        tables
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["rows"].clone())
    };
    assert_eq!(rows("messages"), Some(serde_json::json!(3000)));
    assert_eq!(rows("invoices"), Some(serde_json::json!(200)));
    assert!(m["database"]["size_bytes"].as_u64().unwrap() > 0);
    // No temp files beside the backup.
    assert_eq!(
        files_under(&env.repo())
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
            .count(),
        0
    );
}

#[test]
fn run_with_tag_and_json() {
    let pg = sample();
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let out = env.ok(&["run", "pg", "--tag", "pre-deployment-v1.2.3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tag"], "pre-deployment-v1.2.3");
    assert_eq!(v["target"], "pg");
    assert_eq!(v["engine"], "postgres");
    assert_eq!(v["format"], "plain");
    assert_eq!(v["storages"], serde_json::json!(["local"]));
    assert!(v["size_bytes"].as_u64().unwrap() > 1000);
    let id = v["id"].as_str().unwrap();
    let m = std::fs::read_to_string(env.repo().join("pg").join(id).join("manifest.json")).unwrap();
    assert!(m.contains("pre-deployment-v1.2.3"), "{m}");
    // A tag that cannot be an S3 tag value or a file-name-safe label is refused up front.
    let (code, _, err) = env.run(&["run", "pg", "--tag", "bad tag/with spaces"]);
    assert_eq!(code, 2, "{err}");
}

fn failing_midway(script_tail: &str, expect: &str) {
    let pg = sample();
    let env = Env::new();
    // The sample dump is several MiB; the stand-in passes 100 KB of the real one on.
    let bin = bin_dir_with_pg_dump(
        env.path(),
        &format!(
            "if [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n\"$REAL\" \"$@\" | head -c 100000\n{script_tail}"
        ),
    );
    with_bin_dir(&env, &pg, &bin);
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.is_empty(), "no backup id on stdout: {out}");
    assert!(
        err.contains(expect),
        "stderr should contain `{expect}`: {err}"
    );
    assert!(err.contains("nothing was kept"), "{err}");
    assert_nothing_kept(&env);
    // The lock was released: a good run afterwards works.
    std::fs::remove_dir_all(&bin).unwrap();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    env.ok(&["run", "pg"]);
}

#[test]
fn pg_dump_killed_midway_leaves_nothing() {
    failing_midway("kill -KILL $$", "killed by signal 9");
}

#[test]
fn pg_dump_failing_midway_reports_its_own_message() {
    failing_midway(
        "echo 'pg_dump: error: Dumping the contents of table \"messages\" failed: simulated' >&2\nexit 1",
        "pg_dump: error: Dumping the contents of table \"messages\" failed: simulated",
    );
}

#[test]
fn missing_database_and_bad_credentials_exit_non_zero_with_the_tools_message() {
    let pg = Pg::start();
    pg.add_password_user("app", "right-secret");
    let env = Env::new();

    env.write_config(&local_config(&env.repo(), &pg.url("nope"), "plain"));
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("database \"nope\" does not exist"), "{err}");

    let url = format!("postgresql://app@127.0.0.1:{}/postgres", pg.port);
    env.write_config(&local_config(&env.repo(), &url, "plain"));
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no password supplied"), "{err}");
    assert!(err.contains("hint: set PGPASSWORD"), "{err}");

    let url = format!(
        "postgresql://app:wrong-secret@127.0.0.1:{}/postgres",
        pg.port
    );
    env.write_config(&local_config(&env.repo(), &url, "plain"));
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("password authentication failed for user \"app\""),
        "{err}"
    );
    assert!(
        !err.contains("wrong-secret") && !out.contains("wrong-secret"),
        "{err}"
    );
    // Each error is one line (plus an optional hint line).
    for l in err.lines() {
        assert!(
            l.contains(" ERROR ") || l.contains(" INFO ") || l.contains(" WARN "),
            "unexpected continuation line: {l}"
        );
    }
    assert_nothing_kept(&env);
}

#[test]
fn second_concurrent_run_is_refused_naming_the_holder() {
    let pg = sample();
    let env = Env::new();
    // A pg_dump that waits before dumping, so the first run holds the lock a while.
    let bin = bin_dir_with_pg_dump(
        env.path(),
        "if [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\nsleep 4\nexec \"$REAL\" \"$@\"",
    );
    with_bin_dir(&env, &pg, &bin);
    let first = env
        .std_cmd()
        .args(["run", "pg"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    let lock = env.path().join("state/locks/pg.lock");
    let t = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pid")) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "first run took no lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 4, "stdout: {out}\nstderr: {err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains("backup run pg"), "{err}");
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // One backup, from the first run.
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        v[0]["id"].as_str().unwrap(),
        String::from_utf8_lossy(&first.stdout).trim()
    );
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    let pg = sample();
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let locks = env.path().join("state/locks");
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::write(
        locks.join("pg.lock"),
        "pid 999999 on elsewhere: backup run pg, since 2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    env.ok(&["run", "pg"]);
}

fn tool_error_before_anything_is_written(bin: &Path, env: &Env, pg: &Pg, expect: &[&str]) {
    with_bin_dir(env, pg, bin);
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    for e in expect {
        assert!(err.contains(e), "stderr should contain `{e}`: {err}");
    }
    assert!(!env.repo().exists(), "nothing may be written");
}

#[test]
fn missing_pg_dump_is_a_clear_error() {
    let pg = sample();
    let env = Env::new();
    // bin_dir is an empty folder.
    let empty = env.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    tool_error_before_anything_is_written(
        &empty,
        &env,
        &pg,
        &["not found in bin_dir", &empty.display().to_string()],
    );
    // bin_dir has psql and pg_restore but no pg_dump.
    let bin = bin_dir_with_pg_dump(env.path(), "exit 1");
    std::fs::remove_file(bin.join("pg_dump")).unwrap();
    tool_error_before_anything_is_written(
        &bin,
        &env,
        &pg,
        &[
            "pg_dump not found in bin_dir",
            "install the PostgreSQL client tools",
        ],
    );
}

#[test]
fn too_old_pg_dump_is_a_clear_error() {
    // No PostgreSQL 9.6 client exists on this machine's package sources, so a stand-in
    // answers `--version` like pg_dump 9.6 would; it must never be asked to dump.
    let pg = sample();
    let env = Env::new();
    let bin = bin_dir_with_pg_dump(
        env.path(),
        "if [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 9.6.24'; exit 0; fi\necho 'the old pg_dump was run' >&2\nexit 1",
    );
    tool_error_before_anything_is_written(
        &bin,
        &env,
        &pg,
        &[
            "pg_dump 9.6.24",
            "older than the server (15",
            "postgresql-client-15",
        ],
    );
}

/// A bin_dir whose psql, pg_dump and pg_restore log their argv and whether PGPASSWORD
/// was set, then run the real tools.
fn logging_bin_dir(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("logbin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["psql", "pg_dump", "pg_restore"] {
        let p = bin.join(tool);
        std::fs::write(
            &p,
            format!(
                "#!/bin/bash\necho \"{tool} argv: $* | PGPASSWORD=${{PGPASSWORD:-unset}}\" >> {log}\nexec {real} \"$@\"\n",
                log = dir.join("tools.log").display(),
                real = pg_bin().join(tool).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn a_password_in_the_url_is_never_shown_and_reaches_tools_only_by_env() {
    let pg = sample();
    pg.add_password_user("app", "Sup3r-s3cret-pw");
    let env = Env::new();
    let bin = logging_bin_dir(env.path());
    let url = format!("postgresql://app:Sup3r-s3cret-pw@127.0.0.1:{}/app", pg.port);
    env.write_config(&local_config_with(
        &env.repo(),
        &url,
        "custom",
        &format!("bin_dir = \"{}\"", bin.display()),
    ));
    let mut seen = String::new();
    for args in [
        vec!["run", "pg", "--json"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["verify", "pg"],
        vec!["restore", "pg", "--to-database", "copy", "--dry-run"],
        vec!["restore", "pg", "--to-database", "copy", "--yes", "--json"],
    ] {
        let (code, out, err) = env.run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        seen.push_str(&out);
        seen.push_str(&err);
    }
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
    for f in files_under(&env.repo()) {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
    }
    assert!(!seen.contains("Sup3r-s3cret-pw"), "password leaked: {seen}");
    let log = std::fs::read_to_string(env.path().join("tools.log")).unwrap();
    // Every call that connects (`--dbname=`) gets the password by env, none by argv.
    for l in log.lines() {
        let (argv, env_part) = l.split_once(" | ").unwrap();
        assert!(!argv.contains("Sup3r-s3cret-pw"), "password in argv: {l}");
        if argv.contains("--dbname=") {
            assert_eq!(env_part, "PGPASSWORD=Sup3r-s3cret-pw", "{l}");
        }
    }
    assert!(log.contains("pg_dump argv: --no-password"), "{log}");
    for tool in ["psql argv", "pg_dump argv", "pg_restore argv"] {
        assert!(log.contains(tool), "{tool} never ran: {log}");
    }
}

#[test]
fn password_file_is_used_and_never_shown() {
    let pg = sample();
    pg.add_password_user("filer", "from-the-file-pw");
    let env = Env::new();
    let pw = env.path().join("pgpass.txt");
    std::fs::write(&pw, "from-the-file-pw\n").unwrap();
    let url = format!("postgresql://filer@127.0.0.1:{}/app", pg.port);
    env.write_config(&local_config_with(
        &env.repo(),
        &url,
        "plain",
        &format!("password_file = \"{}\"", pw.display()),
    ));
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 0, "{err}");
    env.ok(&["verify", "pg"]);
    let mut seen = format!("{out}{err}");
    for f in files_under(&env.repo()) {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
    }
    assert!(!seen.contains("from-the-file-pw"), "{seen}");
    // A wrong password in the file: psql's message, the password not repeated.
    std::fs::write(&pw, "not-it\n").unwrap();
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-it"), "{err}");
}

#[test]
fn an_interrupted_run_is_never_listed_as_a_backup() {
    let pg = sample();
    let env = Env::new();
    let (mut child, bin) = run_hanging_mid_stream(&env, &pg);
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(v[0]["status"], "incomplete", "{v}");
    let (code, _, err) = env.run(&["restore", "pg", "--yes", "--to-database", "x"]);
    assert_eq!(code, 2, "{err}");
    // The lock died with the process: the next run works.
    std::fs::remove_dir_all(&bin).unwrap();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    env.ok(&["run", "pg"]);
}

/// SIGTERM (a service stop) or Ctrl-C mid-stream: the run removes its partial files
/// before exiting, so not even `list --all` shows a leftover; the exit code says how
/// it ended (128 + 15).
#[test]
fn a_terminated_run_cleans_up_after_itself() {
    let pg = sample();
    let env = Env::new();
    let (mut child, _bin) = run_hanging_mid_stream(&env, &pg);
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert!(
        files_under(&env.repo()).is_empty(),
        "{:?}",
        files_under(&env.repo())
    );
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!([]));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Starts `backup run pg` with a pg_dump that sends part of the dump, then hangs;
/// returns once the run has written a temporary file (it is mid-stream).
fn run_hanging_mid_stream(env: &Env, pg: &Pg) -> (std::process::Child, std::path::PathBuf) {
    let bin = bin_dir_with_pg_dump(
        env.path(),
        "if [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n\"$REAL\" \"$@\" | head -c 2000000\nsleep 20",
    );
    with_bin_dir(env, pg, &bin);
    let child = env.std_cmd().args(["run", "pg"]).spawn().unwrap();
    let t = Instant::now();
    while !files_under(&env.repo()).iter().any(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-")
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the run wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, bin)
}
