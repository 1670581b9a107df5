//! Off-site copies (`backup copy`, `copy_after_run`) and S3 Object Lock, against a real
//! PostgreSQL cluster and real S3 servers: s3s-fs (on disk, so it can be killed and
//! started again, and it checks signatures like a GCS HMAC endpoint) and moto (for
//! versioning and Object Lock).
mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A request to moto as an authenticated client (moto refuses anonymous reads):
/// (status, lower-cased header block, body).
fn s3_req(port: u16, method: &str, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

fn s3_storage(name: &str, endpoint: &str, bucket: &str, extra: &str) -> String {
    format!(
        r#"
[storages.{name}]
type = "s3"
bucket = "{bucket}"
prefix = "prod"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
part_size_mb = 5
{extra}
"#
    )
}

fn pg_target(url: &str, storages: &str, extra: &str) -> String {
    format!(
        r#"
[targets.pg]
engine = "postgres"
url = "{url}"
format = "plain"
storages = {storages}
{extra}
"#
    )
}

/// Backups on s3s-fs copied to moto: verified there, restorable from there, a second
/// `copy --all` copies nothing, and a copy whose source server is SIGKILLed midway
/// fails naming it, lists nothing half-copied as good, and resumes once it is back.
#[test]
fn copy_between_s3_servers_verifies_resumes_and_is_idempotent() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let mut src = S3sFs::start("testing", "testing");
    src.create_bucket("primary");
    let dst = Moto::start();
    dst.create_bucket("offsite");
    let env = Env::new();
    env.write_config(&format!(
        "{}{}{}",
        s3_storage("s3", &src.endpoint(), "primary", ""),
        s3_storage("gcs", &dst.endpoint(), "offsite", ""),
        pg_target(&pg.url("app"), r#"["s3"]"#, ""),
    ));
    let small = env.ok(&["run", "pg"]).trim().to_string();
    // A second, bigger backup, so that a copy is still busy when the source dies.
    pg.load_noise("app", 40);
    let big = env.ok(&["run", "pg"]).trim().to_string();
    let want = pg.fingerprint("app");

    // Kill the source as soon as the first backup is complete at the destination.
    let child = env
        .std_cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .args([
            "copy", "pg", "--all", "--from", "s3", "--to", "gcs", "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first_manifest = format!("prod/pg/{small}/manifest.json");
    let t0 = Instant::now();
    while !dst.keys("offsite", "prod/pg/").contains(&first_manifest) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "first copy never completed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    src.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&big) && stderr.contains("`s3`"), "{stderr}");
    assert!(stderr.contains("resumes"), "{stderr}");
    // Only the whole backup is listed at the destination.
    let listed = json(&env.ok(&["list", "pg", "--storage", "gcs", "--json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![small.as_str()]);
    assert!(!dst
        .keys("offsite", "prod/pg/")
        .contains(&format!("prod/pg/{big}/manifest.json")));

    // The source is back: the copy resumes, skipping what is complete.
    src.restart();
    let r = json(&env.ok(&[
        "copy", "pg", "--all", "--from", "s3", "--to", "gcs", "--json",
    ]));
    let action = |id: &str| {
        r["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()["action"]
            .clone()
    };
    assert_eq!(action(&small), "skipped");
    assert_eq!(action(&big), "copied");
    env.ok(&["verify", "pg", "--all", "--storage", "gcs"]);

    // Idempotent: nothing more to copy.
    let again = json(&env.ok(&[
        "copy", "pg", "--all", "--from", "s3", "--to", "gcs", "--json",
    ]));
    assert!(again["backups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "skipped"));

    // The off-site copy restores (the data-center-loss path: read from `gcs` only).
    env.ok(&[
        "restore",
        "pg",
        &big,
        "--storage",
        "gcs",
        "--to-database",
        "fromcopy",
        "--yes",
    ]);
    assert_eq!(pg.fingerprint("fromcopy"), want);
}

/// `copy_after_run` copies each run to the off-site storage, re-encrypted to that
/// storage's own recipient: the copy opens with the off-site key only, and `prune`
/// follows the off-site storage's own retention.
#[test]
fn copy_after_run_reencrypts_and_follows_the_destination_retention() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let (key_a, rec_a) = age_keygen(env.path(), "primary");
    let (key_b, rec_b) = age_keygen(env.path(), "offsite");
    let offsite = env.path().join("offsite");
    env.write_config(&format!(
        r#"
[storages.local]
type = "local"
path = "{repo}"
retention = {{ keep_last = 5 }}

[storages.local.encryption]
age_recipients = ["{rec_a}"]
age_identity_file = "{key_a}"

[storages.far]
type = "local"
path = "{far}"
retention = {{ keep_last = 1, min_age = "0s" }}

[storages.far.encryption]
age_recipients = ["{rec_b}"]
age_identity_file = "{key_b}"
{target}"#,
        repo = env.repo().display(),
        far = offsite.display(),
        key_a = key_a.display(),
        key_b = key_b.display(),
        target = pg_target(
            &pg.url("app"),
            r#"["local"]"#,
            r#"copy_after_run = ["far"]"#
        ),
    ));
    let first = env.ok(&["run", "pg"]).trim().to_string();
    let second = env.ok(&["run", "pg"]).trim().to_string();
    let far = json(&env.ok(&["list", "pg", "--storage", "far", "--json"]));
    assert_eq!(far.as_array().unwrap().len(), 2, "{far}");
    assert_eq!(far[0]["sealed_to"][0], rec_b.as_str());
    env.ok(&["verify", "pg", "--all", "--storage", "far"]);

    // The stored copy opens with the off-site identity and not with the primary one.
    let sealed = offsite.join(format!("pg/{second}/dump.sql.gz.age"));
    let ok = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key_b)
        .arg(&sealed)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let wrong = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key_a)
        .arg(&sealed)
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    // Each storage's own retention: `far` keeps one, `local` keeps both.
    let plan = json(&env.ok(&["prune", "pg", "--yes", "--json"]));
    let removed: Vec<(String, String)> = plan
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "remove")
        .map(|e| {
            (
                e["storage"].as_str().unwrap().into(),
                e["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(removed, vec![("far".to_string(), first.clone())]);
    let local = json(&env.ok(&["list", "pg", "--storage", "local", "--json"]));
    assert_eq!(local.as_array().unwrap().len(), 2);
}

/// `copy` refuses clearly: the same storage twice, an unknown backup, no destination.
#[test]
fn copy_refuses_bad_requests_with_one_line() {
    let (_pg, env, _id) = sample_backup("plain");
    let (code, _, err) = env.run(&["copy", "pg", "--from", "local", "--to", "local"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("two different storages"), "{err}");
    let (code, _, err) = env.run(&["copy", "pg", "20200101T000000Z"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--to STORAGE"), "{err}");
}

/// Object Lock: every object of a backup is locked at upload (mode and date read back
/// from the server), `list` shows it, `check` passes, a locked backup survives
/// `prune` and a direct delete of its version, `prune --extend-locks` extends and
/// never shortens, and a bucket that cannot lock is refused before a byte is stored.
#[test]
fn object_lock_locks_at_upload_survives_prune_and_extends() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let moto = Moto::start();
    // Object Lock enabled, no default retention: any lock seen is the tool's own.
    let (st, _) = http_with(
        moto.port,
        "PUT",
        "/locked",
        &[("x-amz-bucket-object-lock-enabled", "true")],
        b"",
    );
    assert!(st.contains("200"), "{st}");
    moto.create_bucket("plain");
    let env = Env::new();
    let config = |bucket: &str, lock: &str| {
        format!(
            "{}{}",
            s3_storage(
                "s3",
                &moto.endpoint(),
                bucket,
                &format!("retention = {{ keep_last = 1, min_age = \"0s\" }}\n{lock}"),
            ),
            pg_target(&pg.url("app"), r#"["s3"]"#, ""),
        )
    };
    let lock2 = "[storages.s3.object_lock]\nmode = \"GOVERNANCE\"\ndays = 2\n";

    // A bucket without versioning and Object Lock: refused, nothing stored.
    env.write_config(&config("plain", lock2));
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("plain") && err.contains("object-lock-enabled-for-bucket"),
        "{err}"
    );
    assert!(moto.keys("plain", "").is_empty());
    let (code, _, err) = env.run(&["check", "pg"]);
    assert_eq!(code, 2, "{err}");

    env.write_config(&config("locked", lock2));
    let out = env.ok(&["check", "pg"]);
    assert!(out.contains("GOVERNANCE"), "{out}");
    let first = env.ok(&["run", "pg"]).trim().to_string();
    let keys = moto.keys("locked", &format!("prod/pg/{first}/"));
    assert_eq!(keys.len(), 2, "{keys:?}");
    let until = |key: &str| {
        let (st, h, _) = s3_req(moto.port, "HEAD", &format!("/locked/{key}"));
        assert_eq!(st, 200, "{key}: {h}");
        assert_eq!(
            header(&h, "x-amz-object-lock-mode"),
            Some("governance"),
            "{key}"
        );
        let t = header(&h, "x-amz-object-lock-retain-until-date")
            .unwrap()
            .to_uppercase();
        chrono::DateTime::parse_from_rfc3339(&t)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let now = chrono::Utc::now();
    for k in &keys {
        let u = until(k);
        assert!(
            u > now + chrono::Duration::hours(47) && u < now + chrono::Duration::hours(49),
            "{k}: {u}"
        );
    }
    let listed = json(&env.ok(&["list", "pg", "--json"]));
    assert_eq!(listed[0]["object_lock"]["mode"], "GOVERNANCE");

    // keep_last = 1: the first backup is to go, but its lock keeps it.
    let second = env.ok(&["run", "pg"]).trim().to_string();
    let plan = json(&env.ok(&["prune", "pg", "--yes", "--json"]));
    let old = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == first.as_str())
        .unwrap();
    assert_eq!(old["result"], "retained", "{plan}");
    // A direct delete of the locked version, with the backup role's keys: refused.
    let manifest = format!("prod/pg/{first}/manifest.json");
    let (_, _, versions) = s3_req(
        moto.port,
        "GET",
        &format!("/locked?versions&prefix={manifest}"),
    );
    let vid = versions
        .split("<VersionId>")
        .nth(1)
        .and_then(|s| s.split("</VersionId>").next())
        .unwrap()
        .to_string();
    let path = format!("/locked/{manifest}?versionId={vid}");
    let (st, _, body) = s3_req(moto.port, "DELETE", &path);
    assert_eq!(st, 403, "{body}");
    assert_eq!(s3_req(moto.port, "GET", &path).0, 200);

    // Longer lock in the config: --extend-locks extends the kept backup (and only
    // when less than half the period is left); a shorter one never shortens it.
    env.write_config(&config(
        "locked",
        "[storages.s3.object_lock]\nmode = \"GOVERNANCE\"\ndays = 30\n",
    ));
    let plan = json(&env.ok(&["prune", "pg", "--yes", "--json", "--extend-locks"]));
    let kept = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == second.as_str())
        .unwrap();
    assert_eq!(kept["lock"]["extended"], 2, "{plan}");
    let extended = until(&format!("prod/pg/{second}/manifest.json"));
    assert!(extended > now + chrono::Duration::days(29), "{extended}");
    env.write_config(&config("locked", lock2));
    env.ok(&["prune", "pg", "--yes", "--extend-locks"]);
    assert_eq!(until(&format!("prod/pg/{second}/manifest.json")), extended);

    // WAL segments are locked at upload too (a physical target's wal-push).
    env.write_config(
        &config("locked", lock2).replace("format = \"plain\"\n", "kind = \"physical\"\n"),
    );
    let seg = env.path().join("000000010000000000000007");
    let mut data = vec![7u8; 16 * 1024 * 1024];
    data[..8].copy_from_slice(b"walwalwa");
    std::fs::write(&seg, data).unwrap();
    env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    let u = until("prod/pg/wal/00000001/000000010000000000000007.gz");
    assert!(u > now + chrono::Duration::hours(47), "{u}");
}

/// The ransomware runbook: with the backup role's keys an attacker deletes every
/// object of a locked, versioned bucket, which only hides them behind delete markers.
/// `list --deleted` finds the backups, `restore --deleted` restores one as it was, and
/// `undelete` makes them current again.
#[test]
fn ransomware_runbook_lists_restores_and_undeletes_deleted_backups() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let moto = Moto::start();
    let (st, _) = http_with(
        moto.port,
        "PUT",
        "/locked",
        &[("x-amz-bucket-object-lock-enabled", "true")],
        b"",
    );
    assert!(st.contains("200"), "{st}");
    let env = Env::new();
    env.write_config(&format!(
        "{}{}",
        s3_storage(
            "s3",
            &moto.endpoint(),
            "locked",
            "[storages.s3.object_lock]\nmode = \"GOVERNANCE\"\ndays = 2\n",
        ),
        pg_target(&pg.url("app"), r#"["s3"]"#, ""),
    ));
    env.ok(&["run", "pg"]);
    let want = pg.fingerprint("app");
    let newest = env.ok(&["run", "pg"]).trim().to_string();

    // The attack: a plain DELETE of every key, as the backup role may.
    let keys = moto.keys("locked", "prod/");
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in &keys {
        let (st, _, body) = s3_req(moto.port, "DELETE", &format!("/locked/{k}"));
        assert_eq!(st, 204, "{k}: {body}");
    }
    assert!(moto.keys("locked", "prod/").is_empty());
    assert_eq!(
        json(&env.ok(&["list", "pg", "--json"])),
        serde_json::json!([])
    );

    let listed = json(&env.ok(&["list", "pg", "--storage", "s3", "--deleted", "--json"]));
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows.iter().all(|r| r["status"] == "deleted"));

    env.ok(&[
        "restore",
        "pg",
        "latest",
        "--storage",
        "s3",
        "--deleted",
        "--to-database",
        "rescued",
        "--yes",
    ]);
    assert_eq!(pg.fingerprint("rescued"), want);

    let (code, _, err) = env.run(&["undelete", "pg", "--storage", "s3", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(moto.keys("locked", "prod/").is_empty());
    let out = json(&env.ok(&["undelete", "pg", "--storage", "s3", "--yes", "--json"]));
    assert_eq!(out["backups"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["objects"], 4);
    let back = json(&env.ok(&["list", "pg", "--json"]));
    assert_eq!(back.as_array().unwrap().len(), 2);
    assert_eq!(back[1]["id"], newest.as_str());
    env.ok(&["verify", "pg", "--all"]);
}

/// The data-center-loss runbook: a physical target archives its WAL to the primary
/// storage and is copied off-site (sealed to the off-site key). On a "new machine" (a
/// workspace with only a config naming the off-site storage, the identity file and
/// the tool) `pitr --target-latest --start` recovers everything the archive holds and
/// reports the last transaction reached.
#[test]
fn data_center_loss_recovers_the_latest_from_the_offsite_copy() {
    use common::physical::{archive_now, archiving_cluster_with, open_up, pitr};
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let far = env.path().join("far");
    let (key, rec) = age_keygen(env.path(), "dr");
    let storages = format!(
        r#"
[storages.far]
type = "local"
path = "{far}"

[storages.far.encryption]
age_recipients = ["{rec}"]
age_identity_file = "{key}"
"#,
        far = far.display(),
        key = key.display()
    );
    let repo = env.repo();
    let primary = storages.clone();
    let pg = archiving_cluster_with(&env, move |url| {
        format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\n{primary}{}",
            repo.display(),
            pg_target(
                url,
                r#"["local"]"#,
                "kind = \"physical\"\ncopy_to = [\"far\"]\ncompression_level = 1"
            )
            .replace("format = \"plain\"\n", "")
        )
    });
    pg.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    env.ok(&["run", "pg"]);
    pg.sql("postgres", "INSERT INTO t SELECT generate_series(1, 100)");
    archive_now(&pg);
    let copied = json(&env.ok(&["copy", "pg", "--all", "--json"]));
    assert!(
        copied["archive"]["objects_copied"].as_u64().unwrap() >= 2,
        "{copied}"
    );
    pg.stop(); // the data center is gone

    let fresh = Env::new();
    fresh.write_config(&format!(
        "{storages}{}",
        pg_target(
            "postgresql://postgres@127.0.0.1:1/postgres",
            r#"["far"]"#,
            "kind = \"physical\""
        )
        .replace("format = \"plain\"\n", "")
    ));
    // The restored server (the postgres OS user when root) runs wal-fetch itself.
    open_up(env.path());
    open_up(fresh.path());
    let (restored, out) = pitr(&fresh, "restored", &["--target-latest", "--json"]);
    let o = json(&out);
    assert_eq!(o["goal"], "the end of the archived WAL (latest)");
    assert!(
        o["stopped_at"].as_str().unwrap().contains("redo done"),
        "{o}"
    );
    assert!(o["last_transaction"].is_string(), "{o}");
    assert_eq!(restored.sql("SELECT count(*) FROM t"), "100");
    assert_eq!(restored.sql("SELECT pg_is_in_recovery()"), "f");
}
