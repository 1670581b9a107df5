//! The fault matrix, continued (tests/faults.rs holds the first rows): signals during
//! `prune` and `copy`, a run SIGKILLed and what the next commands make of its leftovers,
//! and two clusters racing to archive different WAL under one name. The S3 faults come
//! from a proxy that stalls one chosen request, so each signal lands at a known step.
mod common;
use common::faults::FaultProxy;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, sig) };
}

fn with_aws(mut c: Command) -> Command {
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

fn spawn(env: &Env, args: &[&str]) -> Child {
    with_aws(env.std_cmd())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `cond`, failing the test after `secs` seconds with `what`.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exit code and stderr of a finished child.
fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ids(env: &Env, args: &[&str]) -> Vec<(String, String)> {
    let mut a = vec!["list", "pg", "--json"];
    a.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&a)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A cluster with the sample data; moto behind a fault proxy; target `pg` on `local`
/// and/or `s3` (`storages`), `s3` reached through the proxy (`s3_extra`: more keys of
/// that storage, which by default waits 120 s and tries once).
fn setup(storages: &str, s3_extra: &str) -> (Pg, Moto, FaultProxy, Env) {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let moto = Moto::start();
    moto.create_bucket("backups");
    let proxy = FaultProxy::start(moto.port);
    let env = Env::new();
    env.write_config(&format!(
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
{s3_extra}

[targets.pg]
engine = "postgres"
url = "{url}"
format = "plain"
storages = {storages}
"#,
        repo = env.repo().display(),
        endpoint = proxy.endpoint(),
        url = pg.url("app"),
    ));
    (pg, moto, proxy, env)
}

/// SIGTERM while prune deletes: it deletes every manifest first (one request), then
/// the rest; stalled in that second step, it is stopped. Exit 143, the target's lock
/// held until then and released after, the removed backups never listed as good
/// (`list --all` shows them incomplete), the kept one intact, and a later prune
/// finishes the job.
#[test]
fn a_prune_stopped_mid_delete_lists_nothing_half_deleted_as_good() {
    let (_pg, moto, proxy, env) = setup(
        r#"["s3"]"#,
        "timeout_seconds = 120\nmax_attempts = 1\nretention = { keep_last = 1, min_age = \"0s\" }",
    );
    let run = |env: &Env| env.ok(&["run", "pg"]).trim().to_string();
    let old: Vec<String> = (0..2).map(|_| run(&env)).collect();
    let newest = run(&env);

    proxy.stall_request("?delete", 2);
    let prune = spawn(&env, &["prune", "pg", "--yes"]);
    wait_for("prune never reached its second delete", 60, || {
        proxy.request_stalled()
    });
    // Prune holds the target: a run waits its turn (exit 4), naming the holder.
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("backup prune pg"), "{err}");
    signal(&prune, 15);
    let (code, err) = finish(prune);
    assert_eq!(code, 143, "{err}");

    let keys = moto.keys("backups", "prod/pg/");
    for id in &old {
        assert!(
            !keys.contains(&format!("prod/pg/{id}/manifest.json")),
            "{keys:?}"
        );
    }
    assert_eq!(ids(&env, &[]), [(newest.clone(), "complete".to_string())]);
    let all = ids(&env, &["--all"]);
    for id in &old {
        assert!(
            all.contains(&(id.clone(), "incomplete".to_string())),
            "{all:?}"
        );
    }
    env.ok(&["verify", "pg"]);
    // The lock died with the prune: the next run and prune go ahead; the leftovers
    // go once past their grace period.
    let later = run(&env);
    let after = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    env.ok(&["prune", "pg", "--yes", "--now", &after]);
    assert_eq!(ids(&env, &["--all"]), [(later, "complete".to_string())]);
}

/// SIGINT (Ctrl-C) while copy stores the manifest at the destination, the last step:
/// exit 130, the artifacts there but no manifest, so nothing is listed; the next copy
/// copies it again and it verifies there.
#[test]
fn an_interrupted_copy_leaves_no_manifest_and_the_next_copy_completes_it() {
    let (_pg, moto, proxy, env) = setup(r#"["local"]"#, "timeout_seconds = 120\nmax_attempts = 1");
    let id = env.ok(&["run", "pg"]).trim().to_string();
    proxy.stall_request(&format!("PUT /backups/prod/pg/{id}/manifest.json"), 1);
    let copy = spawn(&env, &["copy", "pg", &id, "--from", "local", "--to", "s3"]);
    wait_for("copy never stored the manifest", 60, || {
        proxy.request_stalled()
    });
    signal(&copy, 2);
    let (code, err) = finish(copy);
    assert_eq!(code, 130, "{err}");
    let keys = moto.keys("backups", "prod/pg/");
    assert!(
        keys.contains(&format!("prod/pg/{id}/dump.sql.gz")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(ids(&env, &["--storage", "s3"]).is_empty());
    // No reader lock left holding the source backup.
    let plan = env.ok(&["prune", "pg", "--dry-run", "--json"]);
    assert!(!plan.contains("backup copy"), "{plan}");

    env.ok(&["copy", "pg", &id, "--from", "local", "--to", "s3"]);
    assert_eq!(
        ids(&env, &["--storage", "s3"]),
        [(id, "complete".to_string())]
    );
    env.ok(&["verify", "pg", "--storage", "s3"]);
}

/// An upload part that never gets an answer (S3 stalls mid-multipart-upload): the run
/// fails within `timeout_seconds` naming the storage, the multipart upload is aborted
/// (none left open on the server to cost storage), the local copy is kept, and the next
/// run stores on S3 too.
#[test]
fn a_failed_multipart_upload_is_aborted() {
    let (pg, moto, proxy, env) = setup(
        r#"["local", "s3"]"#,
        "timeout_seconds = 3\nmax_attempts = 1",
    );
    pg.load_noise("app", 20);
    proxy.stall_request("partNumber=2", 1);
    let run = spawn(&env, &["run", "pg"]);
    let (code, err) = finish(run);
    assert!(proxy.request_stalled(), "no second part was sent: {err}");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`s3`"), "{err}");
    let open = http_full(moto.port, "GET", "/backups?uploads");
    assert_eq!(open.status, 200, "{}", open.body);
    assert!(!open.body.contains("<UploadId>"), "{}", open.body);
    assert_eq!(ids(&env, &["--storage", "local"]).len(), 1);
    assert!(ids(&env, &["--storage", "s3"]).is_empty());
    env.ok(&["run", "pg"]);
    assert_eq!(ids(&env, &["--storage", "s3"]).len(), 1);
}

/// SIGKILL mid-run (no cleanup at all): the lock file still names the dead run, yet
/// the next run takes the lock over at once; `list --all` shows the leftover folder,
/// and prune removes it once past `incomplete_grace`, keeping every good backup.
#[test]
fn a_killed_run_leaves_a_stale_lock_taken_over_and_a_leftover_pruned_after_grace() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let bin = bin_dir_with_pg_dump(
        env.path(),
        "if [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n\"$REAL\" \"$@\" | head -c 2000000\nsleep 30",
    );
    let config = |extra: &str| {
        local_config_with(
            &env.repo(),
            &pg.url("app"),
            "plain",
            &format!("{extra}\n[storages.local.retention]\nkeep_last = 5\n"),
        )
    };
    env.write_config(&config(&format!("bin_dir = \"{}\"", bin.display())));
    let mut child = env.std_cmd().args(["run", "pg"]).spawn().unwrap();
    wait_for("the run wrote nothing", 30, || {
        files_under(&env.repo()).iter().any(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = std::fs::read_to_string(env.path().join("state/locks/pg.lock")).unwrap();
    assert!(lock.contains(&format!("pid {}", child.id())), "{lock}");

    env.write_config(&config(""));
    let good = env.ok(&["run", "pg"]).trim().to_string();
    let all = ids(&env, &["--all"]);
    assert_eq!(all.len(), 2, "{all:?}");
    let leftover = all.iter().find(|(id, _)| *id != good).unwrap().clone();
    assert_eq!(leftover.1, "incomplete", "{all:?}");
    // Inside the grace period the leftover stays; past it, prune removes it.
    env.ok(&["prune", "pg", "--yes"]);
    assert_eq!(ids(&env, &["--all"]).len(), 2);
    let after = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    env.ok(&["prune", "pg", "--yes", "--now", &after]);
    assert_eq!(ids(&env, &["--all"]), [(good, "complete".to_string())]);
}

/// Two clusters (after a failover) archiving different WAL under the same names at
/// the same moment, on a local repository and on S3: for each name exactly one push
/// wins, the other exits 1 naming the segment, and the archive holds the winner's
/// bytes (never "identical" for different bytes).
#[test]
fn two_clusters_pushing_different_wal_under_one_name_at_once() {
    let moto = Moto::start();
    moto.create_bucket("wal");
    for storage in ["local", "s3"] {
        let env = Env::new();
        env.write_config(&format!(
            r#"
[storages.local]
type = "local"
path = "{repo}"

[storages.s3]
type = "s3"
bucket = "wal"
endpoint = "{endpoint}"
force_path_style = true
region = "us-east-1"

[targets.pg]
engine = "postgres"
kind = "physical"
url = "postgresql://postgres@127.0.0.1:1/postgres"
storages = ["{storage}"]
"#,
            repo = env.repo().display(),
            endpoint = moto.endpoint(),
        ));
        for n in 1..=6u8 {
            let name = format!("0000000{n}0000000000000010");
            let seg = |cluster: &str, byte: u8| {
                let dir = env.path().join(cluster);
                std::fs::create_dir_all(&dir).unwrap();
                let p = dir.join(&name);
                std::fs::write(&p, vec![byte; 1 << 20]).unwrap();
                p
            };
            let (a, b) = (seg("a", n), seg("b", n + 100));
            let pushes: Vec<Child> = [&a, &b]
                .iter()
                .map(|p| spawn(&env, &["wal-push", "pg", p.to_str().unwrap()]))
                .collect();
            let results: Vec<(i32, String)> = pushes.into_iter().map(finish).collect();
            let won: Vec<usize> = (0..2).filter(|i| results[*i].0 == 0).collect();
            assert_eq!(won.len(), 1, "{storage} {name}: {results:?}");
            let (code, err) = &results[1 - won[0]];
            assert_eq!(*code, 1, "{storage}: {err}");
            assert!(err.contains(&name), "{storage}: {err}");
            let dest = env.path().join(format!("fetched-{n}"));
            env.ok(&["wal-fetch", "pg", &name, dest.to_str().unwrap()]);
            let winner = if won[0] == 0 { &a } else { &b };
            assert!(
                std::fs::read(&dest).unwrap() == std::fs::read(winner).unwrap(),
                "{storage} {name}: the archive does not hold the winner's bytes"
            );
        }
    }
}
