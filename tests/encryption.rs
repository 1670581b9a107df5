//! Client-side encryption with age, against a real PostgreSQL cluster, moto and the
//! real `age` / `age-keygen` CLI (Debian's `age` package): round trips, interop both
//! ways, no plaintext in storage, and refusals that touch nothing.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A marker row that must never appear in storage in the clear.
const MARKER: &str = "sekrit-marker-7d41c0";

fn sealed_config(repo: &Path, url: &str, recipient: &str, identity: Option<&Path>) -> String {
    let identity = identity
        .map(|p| format!("age_identity_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[storages.local.encryption]
age_recipients = ["{recipient}"]
{identity}
[targets.pg]
engine = "postgres"
url = "{url}"
format = "plain"
storages = ["local"]
"#,
        repo.display()
    )
}

fn with_marker(pg: &Pg) {
    pg.createdb("app");
    pg.load_sample("app");
    pg.sql(
        "app",
        &format!("CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('{MARKER}')"),
    );
}

/// Every byte stored under `dir`, searched for the marker.
fn plaintext_anywhere(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let b = std::fs::read(p).unwrap();
            b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
        })
        .collect()
}

fn sh(cmd: &str) -> (i32, String, String) {
    let out = Command::new("bash").args(["-c", cmd]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A cluster with the marker, a repository sealed to a new key (identity configured),
/// and one backup: (cluster, workspace, identity file, recipient, backup id).
fn sealed_backup() -> (Pg, Env, PathBuf, String, String) {
    let pg = Pg::start();
    with_marker(&pg);
    let env = Env::new();
    let (key, recipient) = age_keygen(env.path(), "key");
    env.write_config(&sealed_config(
        &env.repo(),
        &pg.url("app"),
        &recipient,
        Some(&key),
    ));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    (pg, env, key, recipient, id)
}

#[test]
fn logical_backup_is_sealed_listed_verified_restored_and_readable_by_the_age_cli() {
    let (pg, env, key, recipient, id) = sealed_backup();

    // Stored as an age file, the manifest readable and holding no key.
    let dir = env.repo().join("pg").join(&id);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.contains(&"dump.sql.gz.age".to_string()), "{names:?}");
    assert!(!names.contains(&"dump.sql.gz".to_string()), "{names:?}");
    let stored = std::fs::read(dir.join("dump.sql.gz.age")).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert!(plaintext_anywhere(&env.repo()).is_empty());
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["encryption"]["method"], "age");
    assert_eq!(m["encryption"]["recipients"][0], recipient.as_str());
    assert_eq!(
        m["encryption"]["stored"]["dump.sql.gz"]["size_bytes"],
        stored.len() as u64
    );
    assert!(!manifest.contains("AGE-SECRET-KEY"));

    // `list` says to whom it is sealed.
    let out = env.ok(&["list", "pg", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["sealed_to"][0], recipient.as_str(), "{out}");
    let out = env.ok(&["list", "pg"]);
    assert!(
        out.contains(&format!("encrypted with age to: {recipient}")),
        "{out}"
    );

    // verify checks the stored bytes and the plaintext.
    let (code, out, err) = env.run(&["verify", "pg", "latest", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matches its SHA-256"), "{out}");

    // The tool restores it.
    pg.createdb("copy");
    env.ok(&["restore", "pg", "latest", "--to-database", "copy", "--yes"]);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("copy"));

    // Without this tool: age -d | gunzip | psql (the README's runbook).
    pg.createdb("bytools");
    let (code, _, err) = sh(&format!(
        "age -d -i {} {} | gunzip | {} -X -q -v ON_ERROR_STOP=1 -d {} >/dev/null",
        key.display(),
        dir.join("dump.sql.gz.age").display(),
        pg_bin().join("psql").display(),
        pg.url("bytools")
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("bytools"));
}

#[test]
fn a_file_sealed_by_the_age_cli_is_read_by_the_tool() {
    // A backup taken before encryption was turned on, then sealed by hand with the age
    // CLI (the way an operator encrypts old backups): the tool restores it.
    let (pg, env, id) = sample_backup("plain");
    let (key, recipient) = age_keygen(env.path(), "key");
    let dir = env.repo().join("pg").join(&id);
    let (code, _, err) = sh(&format!(
        "age -r {recipient} -o {0}/dump.sql.gz.age {0}/dump.sql.gz && rm {0}/dump.sql.gz",
        dir.display()
    ));
    assert_eq!(code, 0, "{err}");
    env.write_config(&sealed_config(
        &env.repo(),
        &pg.url("app"),
        &recipient,
        Some(&key),
    ));
    env.ok(&["verify", "pg", &id]);
    pg.createdb("copy");
    env.ok(&["restore", "pg", &id, "--to-database", "copy", "--yes"]);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("copy"));
}

#[test]
fn wrong_or_missing_identity_is_refused_before_the_database_is_touched() {
    let pg = Pg::start();
    with_marker(&pg);
    let env = Env::new();
    let (_key, recipient) = age_keygen(env.path(), "key");
    let (other, _) = age_keygen(env.path(), "other");
    env.write_config(&sealed_config(
        &env.repo(),
        &pg.url("app"),
        &recipient,
        None,
    ));
    env.ok(&["run", "pg"]);
    pg.createdb("copy");
    pg.sql("copy", "CREATE TABLE untouched (x int)");

    // No identity at all.
    let (code, out, err) = env.run(&["restore", "pg", "latest", "--to-database", "copy", "--yes"]);
    assert_eq!(code, 2, "{out}{err}");
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or(&err)
        .to_string();
    assert!(line.contains("BACKUP_AGE_IDENTITY"), "{err}");

    // The wrong identity, through the environment.
    let out = env
        .cmd()
        .env("BACKUP_AGE_IDENTITY", &other)
        .args(["restore", "pg", "latest", "--to-database", "copy", "--yes"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("other recipients"), "{err}");
    assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
    // verify says the same, exit 2 (not a damaged backup).
    let out = env
        .cmd()
        .env("BACKUP_AGE_IDENTITY", &other)
        .args(["verify", "pg", "latest"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The destination was never touched.
    assert_eq!(
        pg.sql(
            "copy",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "untouched"
    );
}

#[test]
fn bad_recipients_are_refused_before_anything_is_stored() {
    let pg = Pg::start();
    pg.createdb("app");
    let env = Env::new();
    let (key, _) = age_keygen(env.path(), "key");
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    for (bad, expect) in [
        ("age1notarecipient", "is not an age X25519 recipient"),
        (secret.as_str(), "holds a secret key"),
    ] {
        env.write_config(&sealed_config(&env.repo(), &pg.url("app"), bad, None));
        let (code, out, err) = env.run(&["run", "pg"]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains("storages.local.encryption.age_recipients"),
            "{err}"
        );
        assert!(err.contains(expect), "{err}");
        assert!(!err.contains(&secret), "the secret key was echoed: {err}");
        assert!(!env.repo().exists() || files_under(&env.repo()).is_empty());
    }
    // No recipient at all.
    env.write_config(
        &sealed_config(&env.repo(), &pg.url("app"), "x", None)
            .replace("age_recipients = [\"x\"]", ""),
    );
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no recipient given"), "{err}");
}

#[test]
fn s3_holds_no_plaintext_and_two_storages_have_their_own_recipients() {
    let pg = Pg::start();
    with_marker(&pg);
    let moto = Moto::start();
    moto.create_bucket("backups");
    let env = Env::new();
    let (key_a, rec_a) = age_keygen(env.path(), "a");
    let (key_b, rec_b) = age_keygen(env.path(), "b");
    env.write_config(&format!(
        r#"
[storages.local]
type = "local"
path = "{repo}"
[storages.local.encryption]
age_recipients = ["{rec_a}"]
age_identity_file = "{ka}"

[storages.s3]
type = "s3"
bucket = "backups"
region = "us-east-1"
endpoint = "{ep}"
force_path_style = true
part_size_mb = 5
[storages.s3.encryption]
age_recipients_file = "recipients.txt"
age_identity_file = "{kb}"

[targets.pg]
engine = "postgres"
url = "{url}"
storages = ["local", "s3"]
"#,
        repo = env.repo().display(),
        ep = moto.endpoint(),
        url = pg.url("app"),
        ka = key_a.display(),
        kb = key_b.display(),
    ));
    std::fs::write(
        env.path().join("recipients.txt"),
        format!("# the off-site key\n{rec_b}\n"),
    )
    .unwrap();
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let keys = moto.keys("backups", "pg/");
    assert!(
        keys.contains(&format!("pg/{id}/dump.sql.gz.age")),
        "{keys:?}"
    );
    for k in &keys {
        let body = moto.get_object("backups", k).unwrap();
        assert!(
            !body.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "plaintext marker in {k}"
        );
    }
    let body = moto
        .get_object("backups", &format!("pg/{id}/dump.sql.gz.age"))
        .unwrap();
    let sealed = env.path().join("from-s3.age");
    std::fs::write(&sealed, body).unwrap();
    // Sealed to b only: a's identity cannot open the S3 copy, b's can.
    let (code, _, _) = sh(&format!(
        "age -d -i {} {} >/dev/null",
        key_a.display(),
        sealed.display()
    ));
    assert_ne!(code, 0);
    let (code, out, err) = sh(&format!(
        "age -d -i {} {} | gunzip | grep -c {MARKER}",
        key_b.display(),
        sealed.display()
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");
    for s in ["local", "s3"] {
        env.ok(&["verify", "pg", "latest", "--storage", s]);
    }
    let out = env.ok(&["list", "pg", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    for r in rows.as_array().unwrap() {
        let want = if r["storage"] == "s3" { &rec_b } else { &rec_a };
        assert_eq!(r["sealed_to"][0], want.as_str(), "{out}");
    }
    pg.createdb("copy");
    env.ok(&[
        "restore",
        "pg",
        "latest",
        "--storage",
        "s3",
        "--to-database",
        "copy",
        "--yes",
    ]);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("copy"));
}

#[test]
fn a_tampered_encrypted_artifact_fails_verify_and_restore() {
    let (pg, env, _, _, id) = sealed_backup();
    let f = env.repo().join("pg").join(&id).join("dump.sql.gz.age");
    let mut b = std::fs::read(&f).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x40;
    std::fs::write(&f, b).unwrap();
    let (code, out, err) = env.run(&["verify", "pg", &id]);
    assert_eq!(code, 3, "{out}{err}");
    pg.createdb("copy");
    let (code, out, err) = env.run(&["restore", "pg", &id, "--to-database", "copy", "--yes"]);
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(
        pg.sql(
            "copy",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
}

#[test]
fn clickhouse_tables_are_sealed_one_object_each_and_restore() {
    // The stream-set path (one artifact per table) through a sealed storage.
    let ch = common::clickhouse_server::ClickHouseServer::start();
    ch.q("CREATE DATABASE app");
    ch.q("CREATE TABLE app.t (id UInt64, v String) ENGINE = MergeTree ORDER BY id");
    ch.q(&format!(
        "INSERT INTO app.t SELECT number, concat('{MARKER}', toString(number)) FROM numbers(5000)"
    ));
    let env = Env::new();
    let (key, recipient) = age_keygen(env.path(), "key");
    env.write_config(&format!(
        r#"
[storages.local]
type = "local"
path = "{}"
[storages.local.encryption]
age_recipients = ["{recipient}"]
age_identity_file = "{}"

[targets.analytics]
engine = "clickhouse"
url = "{}"
storages = ["local"]
"#,
        env.repo().display(),
        key.display(),
        ch.url()
    ));
    let before = ch.fingerprint("app", "t");
    let id = env.ok(&["run", "analytics"]).trim().to_string();
    assert!(plaintext_anywhere(&env.repo()).is_empty());
    let dir = env.repo().join("analytics").join(&id);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let sealed = m["encryption"]["stored"].as_object().unwrap();
    assert_eq!(
        sealed.len(),
        m["artifacts"].as_array().unwrap().len(),
        "every artifact has its encrypted digest: {m}"
    );
    for name in sealed.keys() {
        assert!(dir.join(format!("{name}.age")).exists(), "{name}");
    }
    env.ok(&["verify", "analytics", "latest"]);
    env.ok(&[
        "restore",
        "analytics",
        "latest",
        "--to-database",
        "copy",
        "--yes",
    ]);
    assert_eq!(before, ch.fingerprint("copy", "t"));
}
