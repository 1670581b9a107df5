//! S3 storage against real S3-compatible HTTP servers started by the harness: moto for
//! API breadth (multipart, tags, SSE and storage class headers, listing uploads) and
//! s3s-fs for signature checks (moto accepts any credentials).
mod common;
use common::*;

fn s3_config(env: &Env, pg_url: &str, endpoint: &str, format: &str, storages: &str) -> String {
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
storage_class = "STANDARD_IA"
server_side_encryption = "AES256"
part_size_mb = 5

[targets.pg]
engine = "postgres"
url = "{pg_url}"
format = "{format}"
storages = {storages}
"#,
        repo = env.repo().display()
    )
}

/// A moto server with bucket `backups`, and a workspace whose target `pg` (database
/// `app`) goes to `storages`.
fn moto_env(pg: &Pg, format: &str, storages: &str) -> (Moto, Env) {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let env = Env::new();
    env.write_config(&s3_config(
        &env,
        &pg.url("app"),
        &moto.endpoint(),
        format,
        storages,
    ));
    (moto, env)
}

/// The S3 config for s3s-fs, which implements neither storage classes nor SSE.
fn s3s_config(env: &Env, pg: &Pg, s3: &S3sFs) -> String {
    s3_config(env, &pg.url("app"), &s3.endpoint(), "plain", r#"["s3"]"#)
        .replace("storage_class = \"STANDARD_IA\"\n", "")
        .replace("server_side_encryption = \"AES256\"\n", "")
}

/// Runs the binary with these S3 credentials; returns (exit code, stdout, stderr).
fn run_as(env: &Env, key: &str, secret: &str, args: &[&str]) -> (i32, String, String) {
    let out = env
        .cmd()
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Keys in the bucket and multipart uploads still open, from moto's raw API.
fn bucket_state(moto: &Moto) -> (Vec<String>, usize) {
    let list = http_full(moto.port, "GET", "/backups?list-type=2");
    assert_eq!(list.status, 200, "{}", list.body);
    let keys = list
        .body
        .split("<Key>")
        .skip(1)
        .map(|s| s.split("</Key>").next().unwrap().to_string())
        .collect();
    let uploads = http_full(moto.port, "GET", "/backups?uploads");
    assert_eq!(uploads.status, 200, "{}", uploads.body);
    (keys, uploads.body.matches("<UploadId>").count())
}

#[test]
fn local_and_s3_multipart_tags_sse_list_verify_restore() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    // ~24 MiB of hex text: gzip leaves ~13 MiB, three or more 5 MiB parts.
    pg.load_noise("app", 24);
    let (moto, env) = moto_env(&pg, "plain", r#"["local", "s3"]"#);
    let out = env.ok(&["run", "pg", "--tag", "nightly", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["storages"], serde_json::json!(["local", "s3"]), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let size = v["size_bytes"].as_u64().unwrap();
    assert!(
        size > 10 * 1024 * 1024,
        "dump too small for 3 parts: {size}"
    );

    // The object as the store has it: a multipart upload of >= 3 parts, with the
    // storage class and encryption asked for, and the size in the manifest.
    let key = format!("/backups/prod/pg/{id}/dump.sql.gz");
    let head = http_full(moto.port, "HEAD", &key);
    assert_eq!(head.status, 200);
    let etag = head.header("etag").unwrap().trim_matches('"').to_string();
    let parts: u32 = etag.rsplit_once('-').unwrap().1.parse().unwrap();
    assert!(parts >= 3, "ETag {etag}");
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(head.header("x-amz-storage-class"), Some("STANDARD_IA"));
    assert_eq!(head.header("x-amz-server-side-encryption"), Some("AES256"));
    // Object tags: target, engine, backup id, tag.
    let tags = http_full(moto.port, "GET", &format!("{key}?tagging"));
    assert_eq!(tags.status, 200, "{}", tags.body);
    for (k, v) in [
        ("target", "pg"),
        ("engine", "postgres"),
        ("backup-id", id.as_str()),
        ("tag", "nightly"),
    ] {
        assert!(
            tags.body
                .contains(&format!("<Key>{k}</Key><Value>{v}</Value>")),
            "tag {k}={v} missing: {}",
            tags.body
        );
    }
    let (keys, open_uploads) = bucket_state(&moto);
    assert_eq!(
        keys,
        vec![
            format!("prod/pg/{id}/dump.sql.gz"),
            format!("prod/pg/{id}/manifest.json")
        ]
    );
    assert_eq!(open_uploads, 0);

    // list, per storage and together.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--storage", "s3", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["storage"], "s3");
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["size_bytes"], size);
    assert_eq!(v[0]["tag"], "nightly");
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");

    // verify reads the whole object back from S3.
    let out = env.ok(&["verify", "pg", "--storage", "s3"]);
    assert!(out.starts_with("OK") && out.contains("s3"), "{out}");

    // A damaged local copy is refused, pointing at the S3 copy.
    let local = env.repo().join("pg").join(&id).join("dump.sql.gz");
    let good = std::fs::read(&local).unwrap();
    let mut bad = good.clone();
    bad[1000] ^= 1;
    std::fs::write(&local, &bad).unwrap();
    let (code, _, err) = env.run(&["restore", "pg", "--to-database", "copy", "--yes"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("try --storage s3"), "{err}");

    // With the local copy gone, restore comes from S3.
    std::fs::remove_dir_all(env.repo()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&env.ok(&[
        "restore",
        "pg",
        "latest",
        "--to-database",
        "copy",
        "--yes",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["storage"], "s3");
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
}

#[test]
fn custom_format_on_s3_only_and_single_table_restore() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let (moto, env) = moto_env(&pg, "custom", r#"["s3"]"#);
    let id = env.ok(&["run", "pg"]).trim().to_string();
    assert!(!env.repo().exists());
    env.ok(&["verify", "pg", &id]);
    pg.sql("app", "DELETE FROM billing.invoices");
    env.ok(&[
        "restore",
        "pg",
        &id,
        "--table",
        "billing.invoices",
        "--clean",
        "--yes",
    ]);
    assert_eq!(
        pg.sql("app", "SELECT count(*) FROM billing.invoices"),
        "200"
    );
    // A corrupted object on S3 is caught too: the same size, some bytes changed.
    let key = format!("prod/pg/{id}/dump.pgdump");
    let mut body = moto.get_object("backups", &key).expect("the dump is on S3");
    let n = body.len();
    assert!(n > 1000);
    body[n / 2] ^= 0xff;
    moto.put_object("backups", &key, &body);
    let (code, _, err) = env.run(&["verify", "pg", &id]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("SHA-256"), "{err}");
    let before = pg.fingerprint("app");
    let (code, _, err) = env.run(&["restore", "pg", &id, "--clean", "--yes"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(pg.fingerprint("app"), before);
}

#[test]
fn failed_run_leaves_no_object_and_no_open_upload() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_noise("app", 24);
    let moto = Moto::start();
    moto.create_bucket("backups");
    let env = Env::new();
    // A stand-in pg_dump that passes ~16 MB of the real dump on (enough for a
    // multipart upload to be under way), then dies.
    let bin = bin_dir_with_pg_dump(
        env.path(),
        "if [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n\"$REAL\" \"$@\" | head -c 16000000\nkill -KILL $$",
    );
    env.write_config(&format!(
        "{}bin_dir = \"{}\"\n",
        s3_config(
            &env,
            &pg.url("app"),
            &moto.endpoint(),
            "plain",
            r#"["local", "s3"]"#
        ),
        bin.display()
    ));
    let (code, _, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    let (keys, open_uploads) = bucket_state(&moto);
    assert_eq!(keys, Vec::<String>::new());
    assert_eq!(open_uploads, 0, "the multipart upload must be aborted");
    assert_eq!(entries_under(&env.repo()), Vec::<std::path::PathBuf>::new());
    assert_eq!(env.ok(&["list", "--all", "--json"]).trim(), "[]");
}

#[test]
fn wrong_credentials_give_a_clear_error_naming_the_storage() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.sql(
        "app",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)",
    );
    let s3 = S3sFs::start("backupkey", "backupsecret1234");
    s3.create_bucket("backups");
    let env = Env::new();
    env.write_config(&s3s_config(&env, &pg, &s3));
    let run = |key: &str, secret: &str, args: &[&str]| run_as(&env, key, secret, args);
    for (key, secret, what) in [
        ("backupkey", "not-the-secret", "wrong secret"),
        ("nobody", "backupsecret1234", "unknown key"),
    ] {
        for args in [&["run", "pg"][..], &["list"][..]] {
            let (code, out, err) = run(key, secret, args);
            assert_ne!(code, 0, "{what} {args:?}: {out}{err}");
            assert!(out.trim().is_empty() || out.trim() == "[]", "{out}");
            let errors: Vec<&str> = err.lines().filter(|l| l.contains(" ERROR ")).collect();
            assert_eq!(errors.len(), 2, "one error line and a hint: {err}");
            assert!(errors[0].contains("storage `s3`"), "{what}: {err}");
            assert!(
                errors[0].contains("SignatureDoesNotMatch")
                    || errors[0].contains("InvalidAccessKeyId")
                    || errors[0].contains("NotSignedUp"),
                "{what}: {err}"
            );
            assert!(
                errors[1].contains("hint: check the S3 credentials"),
                "{err}"
            );
            assert!(!err.contains(secret), "the secret leaked: {err}");
        }
    }
    assert_eq!(files_under(&s3.dir.path().join("backups")).len(), 0);

    // The right credentials work against the same server.
    let (code, out, err) = run("backupkey", "backupsecret1234", &["run", "pg"]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let (code, out, err) = run("backupkey", "backupsecret1234", &["verify", "pg", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(
        "backupkey",
        "backupsecret1234",
        &["restore", "pg", &id, "--to-database", "copy", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(pg.sql("copy", "SELECT sum(i) FROM t"), "5050");
}

#[test]
fn an_unreachable_s3_storage_does_not_cost_the_local_backup() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let moto = Moto::start();
    // The bucket does not exist.
    let env = Env::new();
    env.write_config(&s3_config(
        &env,
        &pg.url("app"),
        &moto.endpoint(),
        "plain",
        r#"["local", "s3"]"#,
    ));
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("storage `s3`") && err.contains("NoSuchBucket"),
        "{err}"
    );
    assert!(err.contains("hint: create the bucket"), "{err}");
    // The local copy was taken, is complete and verifies.
    let id = out.trim();
    assert_eq!(id.len(), 16, "the id is printed: {out}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "pg", "--storage", "local", "--json"])).unwrap();
    assert_eq!(v[0]["id"], id);
    env.ok(&["verify", "pg", id, "--storage", "local"]);
}

#[test]
fn multipart_upload_to_s3s_fs() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_noise("app", 16);
    let s3 = S3sFs::start("backupkey", "backupsecret1234");
    s3.create_bucket("backups");
    let env = Env::new();
    env.write_config(&s3s_config(&env, &pg, &s3));
    let (code, out, err) = run_as(
        &env,
        "backupkey",
        "backupsecret1234",
        &["run", "pg", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["size_bytes"].as_u64().unwrap() > 5 * 1024 * 1024, "{v}");
    let (code, _, err) = run_as(&env, "backupkey", "backupsecret1234", &["verify", "pg"]);
    assert_eq!(code, 0, "{err}");
}
