//! The fault matrix, injected for real against real servers: an S3 endpoint answering
//! 503/500 for a while, refusing with 403, stalling without a word, an S3 server
//! SIGKILLed mid-upload, and a manifest edited by hand. Each test states what the tool
//! must do: a clear error naming the storage, the right exit code, nothing listed as
//! good that is not, and a retry that succeeds once the fault is gone.
mod common;
use common::faults::{Fault, FaultProxy};
use common::*;
use std::time::{Duration, Instant};

fn config(pg: &Pg, env: &Env, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[storages.local]
type = "local"
path = "{repo}"

[storages.s3]
type = "s3"
bucket = "backups"
prefix = "prod"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
part_size_mb = 5
{extra}

[targets.pg]
engine = "postgres"
url = "{url}"
format = "plain"
storages = ["local", "s3"]
"#,
        repo = env.repo().display(),
        url = pg.url("app"),
    )
}

fn sample_pg() -> Pg {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    pg
}

/// A cluster with the sample data, moto behind a fault proxy, and a workspace whose
/// target `pg` goes to a local folder and to S3 through the proxy (`extra`: more keys of
/// the S3 storage).
fn behind_proxy(extra: &str) -> (Pg, Moto, FaultProxy, Env) {
    let pg = sample_pg();
    let moto = Moto::start();
    moto.create_bucket("backups");
    let proxy = FaultProxy::start(moto.port);
    let env = Env::new();
    env.write_config(&config(&pg, &env, &proxy.endpoint(), extra));
    (pg, moto, proxy, env)
}

fn listed(env: &Env, storage: &str) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "pg", "--storage", storage, "--json"])).unwrap();
    v.as_array().unwrap().len()
}

/// Runs the binary but kills it if it has not finished within `limit`: a hang is a
/// failure of its own, reported as such rather than blocking the suite.
fn run_within(env: &Env, args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = env
        .std_cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code().unwrap_or(-1), err);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("backup {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 503 SlowDown and 500 InternalError for a while: retried with backoff, the run
/// succeeds on both storages.
#[test]
fn s3_throttling_and_server_errors_are_retried_until_the_run_succeeds() {
    let (_pg, _moto, proxy, env) = behind_proxy("");
    proxy.push(&[
        Fault::Status(503, "SlowDown"),
        Fault::Status(503, "SlowDown"),
        Fault::Status(500, "InternalError"),
    ]);
    env.ok(&["run", "pg"]);
    assert!(
        proxy.connections() >= 4,
        "{} connections",
        proxy.connections()
    );
    assert_eq!(listed(&env, "s3"), 1);
    assert_eq!(listed(&env, "local"), 1);
}

/// 403 is the operator's to fix: not retried (one connection), the run exits 1 naming
/// the storage, the local copy is kept and listed, nothing is listed on S3. 400 is not
/// retried either.
#[test]
fn s3_access_denied_is_not_retried() {
    let (_pg, _moto, proxy, env) = behind_proxy("");
    proxy.push(&[Fault::Status(403, "AccessDenied")]);
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`s3`") && err.contains("AccessDenied"),
        "{err}"
    );
    assert_eq!(proxy.connections(), 1, "403 was retried");
    assert_eq!(listed(&env, "local"), 1);
    assert_eq!(listed(&env, "s3"), 0);
    // The fault is gone: the next run stores on both.
    env.ok(&["run", "pg"]);
    assert_eq!(listed(&env, "s3"), 1);
    // 400, a request the store will never take as sent: not retried either.
    let before = proxy.connections();
    proxy.push(&[Fault::Status(400, "InvalidArgument")]);
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("InvalidArgument"), "{err}");
    assert_eq!(proxy.connections(), before + 1, "400 was retried");
}

/// An endpoint that accepts and never answers: with `timeout_seconds = 2` the run
/// fails (naming the storage) instead of hanging; the local copy is kept.
#[test]
fn a_stalled_s3_endpoint_fails_within_its_timeout_instead_of_hanging() {
    let (_pg, _moto, proxy, env) = behind_proxy(
        "timeout_seconds = 2
max_attempts = 2",
    );
    proxy.stall_all(true);
    let (code, err) = run_within(&env, &["run", "pg"], Duration::from_secs(120));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`s3`"), "{err}");
    assert_eq!(listed(&env, "local"), 1);
    proxy.stall_all(false);
    env.ok(&["run", "pg"]);
    assert_eq!(listed(&env, "s3"), 1);
}

/// The S3 server SIGKILLed while a multipart upload is under way: the run exits 1
/// naming the storage, the local copy is complete and listed, nothing is listed on S3,
/// and once the server is back a new run succeeds there.
#[test]
fn s3_killed_mid_upload_fails_naming_it_and_a_retry_succeeds() {
    let pg = sample_pg();
    pg.load_noise("app", 40);
    let mut s3 = S3sFs::start("testing", "testing");
    s3.create_bucket("backups");
    let env = Env::new();
    env.write_config(&config(&pg, &env, &s3.endpoint(), ""));
    let child = env
        .std_cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .args(["run", "pg"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until parts are arriving (s3s-fs writes them to its folder), then kill it.
    let before = files_under(s3.dir.path()).len();
    let t0 = Instant::now();
    while files_under(s3.dir.path()).len() <= before {
        assert!(t0.elapsed() < Duration::from_secs(60), "no upload started");
        std::thread::sleep(Duration::from_millis(10));
    }
    s3.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`s3`"), "{err}");
    assert_eq!(listed(&env, "local"), 1);
    s3.restart();
    assert_eq!(listed(&env, "s3"), 0);
    env.ok(&["run", "pg"]);
    assert_eq!(listed(&env, "s3"), 1);
    env.ok(&["verify", "pg", "--storage", "s3"]);
}

/// A manifest edited by hand (a row count lowered, the JSON still valid): `verify`
/// detects it from the checksum stored beside the manifest and exits 3.
#[test]
fn a_manifest_edited_by_hand_fails_verify() {
    let (_pg, env, id) = sample_backup("plain");
    env.ok(&["verify", "pg", &id]);
    let path = env.repo().join("pg").join(&id).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"host\": \"", "\"host\": \"x", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let (code, out, err) = env.run(&["verify", "pg", &id]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("manifest.json")
            && format!("{out}{err}").contains("changed"),
        "{out}{err}"
    );
}

/// prune while a copy reads the backup prune would delete: the copy holds a shared lock
/// on it, so prune keeps it and its plan names the reader; once the reader is gone
/// (SIGTERM: it exits 143), the next prune removes it.
#[test]
fn prune_keeps_a_backup_a_reader_is_using() {
    let pg = sample_pg();
    let moto = Moto::start();
    moto.create_bucket("backups");
    let proxy = FaultProxy::start(moto.port);
    let env = Env::new();
    env.write_config(
        &config(
            &pg,
            &env,
            &proxy.endpoint(),
            "timeout_seconds = 60\nmax_attempts = 1",
        )
        .replace(
            "path = \"",
            "retention = { keep_last = 1, min_age = \"0s\" }\npath = \"",
        )
        .replace(r#"storages = ["local", "s3"]"#, r#"storages = ["local"]"#),
    );
    let first = env.ok(&["run", "pg"]).trim().to_string();
    env.ok(&["run", "pg"]);
    // The copy to S3 stalls (the store never answers) while holding `first`.
    proxy.stall_all(true);
    let mut copy = env
        .std_cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["copy", "pg", &first, "--from", "local", "--to", "s3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path().join("copy.err")).unwrap())
        .spawn()
        .unwrap();
    let lock = env.path().join(format!("state/readers/pg/{first}.lock"));
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("backup copy")) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the copy never held the backup"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(copy.try_wait().unwrap().is_none(), "the copy ended early");
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "pg", "--yes", "--json"])).unwrap();
    let e = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == first.as_str())
        .unwrap();
    assert_eq!(e["action"], "keep", "{plan}");
    assert!(e["reasons"].to_string().contains("backup copy"), "{plan}");
    assert_eq!(listed(&env, "local"), 2);
    // SAFETY: signalling our own child.
    unsafe { libc_kill(copy.id() as i32, 15) };
    assert_eq!(copy.wait().unwrap().code(), Some(143));
    proxy.stall_all(false);
    env.ok(&["prune", "pg", "--yes"]);
    assert_eq!(listed(&env, "local"), 1);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A small tmpfs mounted for the test (root only), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The local storage's disk fills up mid-backup (a 12 MiB tmpfs): the run exits 1 naming
/// the storage and the full disk, the partial file is removed, the earlier backup is
/// untouched and still verifies, and with room again the next run succeeds.
#[test]
fn a_full_disk_mid_backup_fails_cleanly_and_keeps_earlier_backups() {
    let pg = sample_pg();
    let env = Env::new();
    let Some(_fs) = Tmpfs::mount(&env.repo(), "12m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let first = env.ok(&["run", "pg"]).trim().to_string();
    // Incompressible enough to overflow 12 MiB; the free-space pre-check (the last
    // backup's size + 20%) passes, so the disk fills during the write.
    pg.load_noise("app", 30);
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`local`"), "{err}");
    assert!(
        err.contains("is full") && err.contains("free after writing"),
        "{err}"
    );
    let leftovers: Vec<_> = files_under(&env.repo())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(&first))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    env.ok(&["verify", "pg", &first]);
    pg.sql("app", "DROP TABLE noise");
    env.ok(&["run", "pg"]);
}

/// SIGTERM while psql is restoring (inside its single transaction): the tool stops psql
/// before exiting 143 (had psql seen its input end instead, it would have committed a
/// partial restore), says so, and the database is exactly as it was before.
#[test]
fn a_terminated_restore_rolls_back_and_says_so() {
    let pg = sample_pg();
    pg.load_noise("app", 30);
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    pg.sql(
        "app",
        "CREATE TABLE after_backup (x int); INSERT INTO after_backup VALUES (1)",
    );
    let before = pg.fingerprint("app");
    let child = env
        .std_cmd()
        .args(["restore", "pg", &id, "--clean", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' \
                AND application_name = 'psql' AND state <> 'idle'";
    let t0 = Instant::now();
    while pg.sql("postgres", busy) == "0" {
        assert!(t0.elapsed() < Duration::from_secs(60), "psql never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        err.contains("psql stopped") && err.contains("rolled back"),
        "{err}"
    );
    let t0 = Instant::now();
    while pg.sql(
        "postgres",
        busy.replace(" AND state <> 'idle'", "").as_str(),
    ) != "0"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "psql still connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pg.fingerprint("app"), before);
}

/// Two runs in the same second, and a leftover folder from a killed run stamped an hour
/// ahead (a clock stepped back since): every run gets a new id at once (no waiting for
/// the clock), both complete, nothing is written into the leftover.
#[test]
fn runs_in_one_second_or_after_a_clock_step_get_distinct_ids() {
    let (pg, env, first) = sample_backup("plain");
    let _ = pg;
    let second = env.ok(&["run", "pg"]).trim().to_string();
    assert!(second > first, "{first} {second}");
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let leftover = env.repo().join("pg").join(&ahead);
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("dump.sql.gz"), b"partial").unwrap();
    let (code, err) = run_within(&env, &["run", "pg"], Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(leftover.join("dump.sql.gz")).unwrap(),
        b"partial"
    );
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "pg", "--json"])).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{v}");
    assert!(ids[2] > ahead.as_str(), "{ids:?}");
    env.ok(&["verify", "pg", "--all"]);
}

/// Damage to a physical backup's own artifacts: a byte flipped in `base.tar.gz` and a
/// WAL segment cut short. `verify` exits 3 naming both; `pitr` refuses before it writes
/// anything into the data directory.
#[test]
fn damaged_base_backup_and_wal_are_named_by_verify_and_refused_by_pitr() {
    use common::physical::{archive_now, archiving_cluster_with};
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let pg = archiving_cluster_with(&env, move |url| {
        format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.pg]\nengine = \"postgres\"\nkind = \"physical\"\nurl = \"{url}\"\nstorages = [\"local\"]\ncompression_level = 1\n",
            repo.display()
        )
    });
    pg.sql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 1000) AS id",
    );
    let id = env.ok(&["run", "pg"]).trim().to_string();
    archive_now(&pg);
    env.ok(&["verify", "pg"]);

    let base = env.repo().join("pg").join(&id).join("base.tar.gz");
    let mut b = std::fs::read(&base).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x55;
    std::fs::write(&base, b).unwrap();
    let wal = env.repo().join("pg/wal/00000001");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 27 && n.ends_with(".gz"))
        .collect();
    segs.sort();
    let victim = segs.last().unwrap().clone();
    let seg = std::fs::read(wal.join(&victim)).unwrap();
    std::fs::write(wal.join(&victim), &seg[..seg.len() / 2]).unwrap();

    let (code, out, err) = env.run(&["verify", "pg"]);
    assert_eq!(code, 3, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("base.tar.gz"), "{all}");
    assert!(all.contains(victim.trim_end_matches(".gz")), "{all}");

    let d = env.path().join("restored");
    let (code, _, err) = env.run(&[
        "pitr",
        "pg",
        "--target-immediate",
        "--data-dir",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("base.tar.gz") && err.contains("damaged"),
        "{err}"
    );
    assert!(!d.join("PG_VERSION").exists());
}

/// SIGTERM while `pitr` unpacks the base backup: exit 143, the data directory emptied
/// (a half-restored cluster must never be started by mistake), and it says so.
#[test]
fn a_terminated_pitr_leaves_an_empty_data_directory() {
    use common::physical::{archive_now, archiving_cluster_with};
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let pg = archiving_cluster_with(&env, move |url| {
        format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.pg]\nengine = \"postgres\"\nkind = \"physical\"\nurl = \"{url}\"\nstorages = [\"local\"]\ncompression_level = 1\n",
            repo.display()
        )
    });
    pg.load_noise("postgres", 120);
    env.ok(&["run", "pg"]);
    archive_now(&pg);
    let d = env.path().join("restored");
    let child = env
        .std_cmd()
        .args(["pitr", "pg", "--target-immediate", "--data-dir"])
        .arg(&d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !d.join("base").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing was unpacked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        eprintln!("SKIPPED: the restore finished before the signal arrived");
        return;
    }
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("was emptied"), "{err}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
}
