//! MongoDB, against STAND-INS: no real mongod, mongodump or mongorestore can be
//! installed on these machines (no Debian package; the "memory server" packages
//! download binaries at run time). `tests/fixtures/mongo/standin.py` plays mongodump,
//! mongorestore and mongosh at the process boundary: the same options, the `--config`
//! YAML file, real archives in mongodump's documented format (written with pymongo's
//! `bson`, CRC-64 per namespace), the real tools' exit codes and error lines, and a
//! "server" that is a JSON file.
//!
//! What these tests prove: the arguments the tool passes in every mode, that the
//! password travels only in a 0600 file (or mongosh's environment) and never in argv,
//! logs or manifests, that the archive reader counts what the archive holds and catches
//! damage, that memory stays bounded, that failures leave nothing listed, and that a
//! stored artifact restores with the standard pipeline. What only a real server proves:
//! that real mongodump/mongorestore/mongosh accept exactly these arguments and scripts,
//! that real archives (BSON types, views, timeseries, users/roles) read the same, and
//! that restored data is right beyond document counts.
mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const SECRET: &str = "s3cr'et:P@ss #1";

/// The stand-in tools and their "servers".
struct Tools {
    dir: tempfile::TempDir,
}

impl Tools {
    fn new() -> Tools {
        let dir = tempfile::Builder::new()
            .prefix("mongo-standin-")
            .tempdir()
            .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("state/servers")).unwrap();
        let python = ci_python();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mongo/standin.py"
        );
        for tool in ["mongodump", "mongorestore", "mongosh"] {
            let p = bin.join(tool);
            std::fs::write(
                &p,
                format!("#!/bin/sh\nexec {python} {script} {tool} \"$@\"\n"),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Tools { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap()
        )
    }

    /// A server on a port of its own; returns its URI host part.
    fn server(
        &self,
        role: &str,
        collections: Value,
        password: Option<&str>,
        oplog: Value,
    ) -> String {
        let port = free_port();
        let s = json!({
            "role": role, "version": "7.0.14", "set_name": "rs0",
            "user": password.map(|_| "backup"), "password": password,
            "collections": collections, "oplog": oplog,
        });
        std::fs::write(
            self.server_file(&format!("127.0.0.1:{port}")),
            s.to_string(),
        )
        .unwrap();
        format!("127.0.0.1:{port}")
    }

    fn server_file(&self, host: &str) -> PathBuf {
        self.state()
            .join("servers")
            .join(format!("{}.json", host.replace(':', "_")))
    }

    fn read_server(&self, host: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.server_file(host)).unwrap()).unwrap()
    }

    fn count(&self, host: &str, ns: &str) -> Option<u64> {
        let c = &self.read_server(host)["collections"][ns];
        if c.is_null() {
            return None;
        }
        Some(
            c["ids"]
                .as_array()
                .map(|a| a.len() as u64)
                .unwrap_or_else(|| c["count"].as_u64().unwrap()),
        )
    }

    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn calls_of(&self, tool: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["tool"] == tool)
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.state().join("calls.jsonl"));
    }
}

fn sample() -> Value {
    json!({
        "app.users": {"count": 1200, "indexes": ["email_1", "created_1"], "pad": 20},
        "app.orders": {"count": 3001, "indexes": ["user_1"]},
        "billing.invoices": {"count": 7},
    })
}

fn oplog() -> Value {
    json!([{"op": "i", "ns": "app.orders", "id": 5000}, {"op": "i", "ns": "app.orders", "id": 5001}, {"op": "d", "ns": "app.orders", "id": 3}])
}

fn config(env: &Env, host: &str, extra: &str) -> PathBuf {
    std::fs::write(env.path().join("mongo.pw"), format!("{SECRET}\n")).unwrap();
    env.write_config(&format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[targets.mongo]
engine = "mongodb"
uri = "mongodb://backup@{host}/?replicaSet=rs0"
password_file = "{}"
storages = ["local"]
{extra}
"#,
        env.repo().display(),
        env.path().join("mongo.pw").display()
    ))
}

fn run(env: &Env, t: &Tools, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = env.cmd();
    c.env("PATH", t.path_var())
        .env("MONGO_STANDIN_DIR", t.state())
        .env_remove("MONGODB_PASSWORD");
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ok(env: &Env, t: &Tools, args: &[&str]) -> String {
    let (code, out, err) = run(env, t, args, &[]);
    assert_eq!(
        code, 0,
        "backup {args:?} failed ({code}):\nstdout: {out}\nstderr: {err}"
    );
    out
}

fn manifest(env: &Env, id: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(env.repo().join("mongo").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap()
}

fn artifact(env: &Env, id: &str) -> PathBuf {
    env.repo().join("mongo").join(id).join("dump.archive.gz")
}

fn args_of(call: &Value) -> Vec<String> {
    call["cmdline"]
        .as_array()
        .unwrap()
        .iter()
        .skip(3)
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn has(args: &[String], a: &str) -> bool {
    args.iter().any(|x| x == a)
}

/// Rewrites a stored artifact's archive with `f` and fixes the manifest's size and
/// SHA-256, so that only the archive reader can notice.
fn tamper(env: &Env, id: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let p = artifact(env, id);
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    f(&mut raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&p, &bytes).unwrap();
    use sha2::Digest;
    let mp = env.repo().join("mongo").join(id).join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
    m["artifacts"][0]["size_bytes"] = json!(bytes.len());
    m["artifacts"][0]["sha256"] = json!(hex::encode(sha2::Sha256::digest(&bytes)));
    write_manifest(&mp, &serde_json::to_vec_pretty(&m).unwrap());
}

fn assert_no_secret(t: &Tools, texts: &[&str]) {
    for c in t.calls() {
        assert_ne!(c["password_in_argv"], json!(true), "password in argv: {c}");
        for a in c["cmdline"].as_array().unwrap() {
            assert!(
                !a.as_str().unwrap().contains("P@ss"),
                "password in argv: {c}"
            );
        }
    }
    for text in texts {
        assert!(
            !text.contains("P@ss") && !text.contains("P%40ss"),
            "password leaked: {text}"
        );
    }
}

#[test]
fn backup_counts_from_the_archive_with_oplog_and_the_password_only_in_a_0600_file() {
    let t = Tools::new();
    let host = t.server("primary", sample(), Some(SECRET), oplog());
    let env = Env::new();
    config(&env, &host, "");
    let (code, out, err) = run(&env, &t, &["run", "mongo"], &[]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let m = manifest(&env, &id);
    assert_eq!(m["format"], "archive-oplog");
    let tables: Vec<(String, u64)> = m["database"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                format!(
                    "{}.{}",
                    t["schema"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                ),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    for (ns, spec) in sample().as_object().unwrap() {
        assert!(
            tables.contains(&(ns.clone(), spec["count"].as_u64().unwrap())),
            "{ns}: {tables:?}"
        );
    }
    assert_eq!(tables.len(), 3);
    let x = &m["database"]["extra"];
    assert_eq!(
        x["collections"]["app.users"]["indexes"],
        json!(["_id_", "email_1", "created_1"])
    );
    assert_eq!(x["oplog"]["entries"], 3);
    assert_eq!(x["role"], "primary");
    assert_eq!(x["oplog_used"], true);
    assert_eq!(m["versions"]["mongodump"], "100.10.0");
    assert_eq!(m["versions"]["server"], "7.0.14");

    let dump = &t.calls_of("mongodump")[0];
    let args = args_of(dump);
    assert!(has(&args, "--archive") && has(&args, "--oplog"), "{args:?}");
    assert!(
        has(
            &args,
            &format!("--uri=mongodb://backup@{host}/?replicaSet=rs0")
        ),
        "{args:?}"
    );
    assert_eq!(dump["config_mode"], "0o600");
    assert_eq!(dump["config_password_ok"], true);
    let config_file = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap();
    assert!(
        !Path::new(config_file).exists(),
        "the --config file was left behind"
    );
    let mf =
        std::fs::read_to_string(env.repo().join("mongo").join(&id).join("manifest.json")).unwrap();
    assert_no_secret(&t, &[&out, &err, &mf]);

    let list = ok(&env, &t, &["list", "mongo"]);
    assert!(list.contains(&id), "{list}");
    let (code, vout, verr) = run(&env, &t, &["verify", "mongo", &id], &[]);
    assert_eq!(code, 0, "{vout}{verr}");
    assert!(
        format!("{vout}{verr}").contains("document counts match the manifest"),
        "{vout}{verr}"
    );
}

#[test]
fn oplog_modes_roles_and_filters_give_the_right_arguments() {
    let t = Tools::new();
    let env = Env::new();
    let dump_args = |role: &str, extra: &str| -> (i32, Vec<String>, String) {
        let host = t.server(role, sample(), Some(SECRET), oplog());
        config(&env, &host, extra);
        t.clear_calls();
        let (code, _, err) = run(&env, &t, &["run", "mongo"], &[]);
        let args = t
            .calls_of("mongodump")
            .first()
            .map(args_of)
            .unwrap_or_default();
        (code, args, err)
    };
    for (role, extra, oplog) in [
        ("secondary", "", true),
        ("standalone", "", false),
        ("mongos", "", false),
        ("primary", "oplog = false", false),
        ("primary", "databases = [\"app\"]", false),
    ] {
        let (code, args, err) = dump_args(role, extra);
        assert_eq!(code, 0, "{role} {extra}: {err}");
        assert_eq!(has(&args, "--oplog"), oplog, "{role} {extra}: {args:?}");
    }
    let (_, args, _) = dump_args(
        "primary",
        "databases = [\"app\"]\ncollections = [\"users\"]",
    );
    assert!(
        has(&args, "--db=app") && has(&args, "--collection=users"),
        "{args:?}"
    );
    let (_, args, _) = dump_args(
        "primary",
        "databases = [\"app\"]\nexclude_collections = [\"orders\"]",
    );
    assert!(
        has(&args, "--excludeCollection=orders") && !has(&args, "--oplog"),
        "{args:?}"
    );

    // Refusals before anything is stored: exit 2, one line, nothing listed.
    let before = std::fs::read_dir(env.repo().join("mongo"))
        .map(|d| d.count())
        .unwrap_or(0);
    for (role, word) in [("mongos", "mongos"), ("standalone", "standalone")] {
        let (code, args, err) = dump_args(role, "oplog = true");
        assert_eq!(code, 2, "{role}: {err}");
        assert!(err.contains(word) && err.contains("oplog = true"), "{err}");
        assert!(args.is_empty(), "mongodump ran: {args:?}");
    }
    let host = t.server("primary", sample(), None, json!([]));
    config(&env, &host, "oplog = true\ndatabases = [\"app\"]");
    let (code, _, err) = run(&env, &t, &["run", "mongo"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("targets.mongo.oplog") && err.contains("full dumps"),
        "{err}"
    );
    for bad in [
        "databases = [\"a\", \"b\"]",
        "collections = [\"users\"]",
        "colections = []",
        "oplog = \"yes\"",
    ] {
        config(&env, &host, bad);
        let (code, _, err) = run(&env, &t, &["run", "mongo"], &[]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{bad}: {err}");
    }
    let after = std::fs::read_dir(env.repo().join("mongo"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(before, after);
}

#[test]
fn password_from_the_uri_or_the_environment_never_reaches_argv_or_logs() {
    let t = Tools::new();
    let host = t.server("primary", sample(), Some(SECRET), oplog());
    let env = Env::new();
    let enc = "s3cr%27et%3AP%40ss%20%231";
    env.write_config(&format!(
        "[storages.local]\ntype = \"local\"\npath = \"{}\"\n[targets.mongo]\nengine = \"mongodb\"\nuri = \"mongodb://backup:{enc}@{host}/\"\nstorages = [\"local\"]\n",
        env.repo().display()
    ));
    let (code, out, err) = run(&env, &t, &["run", "mongo"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_no_secret(&t, &[&out, &err]);
    assert_eq!(t.calls_of("mongodump")[0]["config_password_ok"], true);

    t.clear_calls();
    env.write_config(&format!(
        "[storages.local]\ntype = \"local\"\npath = \"{}\"\n[targets.mongo]\nengine = \"mongodb\"\nuri = \"mongodb://backup@{host}/\"\nstorages = [\"local\"]\n",
        env.repo().display()
    ));
    let (code, out, err) = run(&env, &t, &["run", "mongo"], &[("MONGODB_PASSWORD", SECRET)]);
    assert_eq!(code, 0, "{err}");
    assert_no_secret(&t, &[&out, &err]);
    // A wrong password: the tool's own error, still without the password.
    let (code, out, err) = run(
        &env,
        &t,
        &["run", "mongo"],
        &[("MONGODB_PASSWORD", "P@ss-wrong")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Authentication failed"), "{err}");
    assert_no_secret(&t, &[&out, &err.replace("P@ss-wrong", "")]);
    assert!(!err.contains("P@ss-wrong"), "{err}");
}

#[test]
fn verify_catches_a_flipped_byte_and_a_truncated_archive_and_restore_refuses_them() {
    let t = Tools::new();
    let host = t.server("primary", sample(), None, oplog());
    let dest = t.server("primary", json!({}), None, json!([]));
    let env = Env::new();
    config(&env, &host, "");
    let id = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    ok(&env, &t, &["verify", "mongo", &id]);

    // A byte flipped inside a document (archive re-compressed, manifest checksums fixed):
    // only the archive's CRC-64 can see it.
    tamper(&env, &id, |raw| {
        let at = raw.windows(7).position(|w| w == b"app.use").unwrap() + 200;
        let at = at + raw[at..].windows(2).position(|w| w == b"x\0").unwrap();
        raw[at] = b'y';
    });
    let (code, out, err) = run(&env, &t, &["verify", "mongo", &id], &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(format!("{out}{err}").contains("CRC mismatch"), "{out}{err}");
    t.clear_calls();
    let (code, _, err) = run(
        &env,
        &t,
        &[
            "restore",
            "mongo",
            &id,
            "--to-uri",
            &format!("mongodb://{dest}/"),
            "--yes",
        ],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("was not touched"), "{err}");
    assert!(t.calls_of("mongorestore").is_empty());

    // Truncated in the middle.
    let id2 = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    tamper(&env, &id2, |raw| raw.truncate(raw.len() / 2));
    let (code, out, err) = run(&env, &t, &["verify", "mongo", &id2], &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(format!("{out}{err}").contains("truncated"), "{out}{err}");

    // And the stored bytes themselves flipped: the checksums catch it.
    let id3 = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    let p = artifact(&env, &id3);
    let mut b = std::fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&p, b).unwrap();
    let (code, out, err) = run(&env, &t, &["verify", "mongo", &id3], &[]);
    assert_eq!(code, 3, "{out}{err}");

    // And the archive gone (the corruption matrix's third case, tests/corruption.rs):
    // verify names it, restore refuses before mongorestore runs.
    std::fs::remove_file(artifact(&env, &id3)).unwrap();
    let (code, out, err) = run(&env, &t, &["verify", "mongo", &id3], &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(format!("{out}{err}").contains("dump.archive"), "{out}{err}");
    t.clear_calls();
    let to = format!("mongodb://{dest}/");
    let (code, _, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id3, "--to-uri", &to, "--yes"],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("was not touched"), "{err}");
    assert!(t.calls_of("mongorestore").is_empty());
}

#[test]
fn a_dump_that_dies_midway_leaves_nothing_listed() {
    let t = Tools::new();
    let host = t.server("primary", sample(), Some(SECRET), oplog());
    let env = Env::new();
    config(&env, &host, "");
    let (code, out, err) = run(
        &env,
        &t,
        &["run", "mongo"],
        &[("MONGODUMP_DIE_AFTER_BYTES", "20000")],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("mongodump failed") && err.contains("signal 9"),
        "{err}"
    );
    let list = ok(&env, &t, &["list", "mongo"]);
    assert!(!list.contains("20"), "{list}");
    let manifests = files_under(&env.repo())
        .into_iter()
        .filter(|p| p.ends_with("manifest.json"))
        .count();
    assert_eq!(manifests, 0);
    // The --config file went with it.
    let args = args_of(
        &t.calls_of("mongodump")
            .into_iter()
            .next()
            .unwrap_or(json!({"cmdline": ["", "", ""]})),
    );
    if let Some(cf) = args.iter().find_map(|a| a.strip_prefix("--config=")) {
        assert!(!Path::new(cf).exists());
    }
}

#[test]
fn restore_modes_oplog_replay_filters_renames_drop_and_the_refusals() {
    let t = Tools::new();
    let src = t.server("primary", sample(), Some(SECRET), oplog());
    let dest = t.server("primary", json!({}), Some(SECRET), json!([]));
    let env = Env::new();
    config(&env, &src, "");
    let id = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    let to = format!("mongodb://backup@{dest}/");
    let pw = [("MONGODB_PASSWORD", SECRET)];

    // Dry run: the plan, nothing restored.
    t.clear_calls();
    let (code, out, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id, "--to-uri", &to, "--dry-run"],
        &pw,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("--oplogReplay") && out.contains("without --drop"),
        "{out}"
    );
    assert!(t.calls_of("mongorestore").is_empty());

    // Whole restore with the oplog replayed; counts compared (app.orders, which the oplog
    // changed, is left out of the comparison).
    let (code, out, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id, "--to-uri", &to, "--yes"],
        &pw,
    );
    assert_eq!(code, 0, "{out}{err}");
    let args = args_of(&t.calls_of("mongorestore")[0]);
    assert!(
        has(&args, "--archive") && has(&args, "--oplogReplay") && !has(&args, "--drop"),
        "{args:?}"
    );
    assert!(has(&args, &format!("--uri={to}")), "{args:?}");
    assert_eq!(t.count(&dest, "app.users"), Some(1200));
    assert_eq!(t.count(&dest, "app.orders"), Some(3001 + 2 - 1));
    assert!(err.contains("row counts of 2 table(s) match"), "{err}");
    assert_no_secret(&t, &[&out, &err]);

    // Again without --drop: duplicate _ids fail, and the message says what to do.
    let (code, _, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id, "--to-uri", &to, "--yes"],
        &pw,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("failed to restore") && err.contains("--drop"),
        "{err}"
    );
    t.clear_calls();
    let (code, _, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id, "--to-uri", &to, "--drop", "--yes"],
        &pw,
    );
    assert_eq!(code, 0, "{err}");
    assert!(has(&args_of(&t.calls_of("mongorestore")[0]), "--drop"));
    assert_eq!(t.count(&dest, "app.users"), Some(1200));

    // An oplog dump with a namespace filter: refused before anything runs, with a way out.
    t.clear_calls();
    let (code, _, err) = run(
        &env,
        &t,
        &[
            "restore",
            "mongo",
            &id,
            "--to-uri",
            &to,
            "--ns-include",
            "app.users",
            "--yes",
        ],
        &pw,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--oplogReplay") && err.contains("--to-uri"),
        "{err}"
    );
    assert!(t.calls_of("mongorestore").is_empty());

    // Without an oplog: one collection, renamed.
    config(&env, &src, "oplog = false");
    let id2 = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    t.clear_calls();
    let (code, out, err) = run(
        &env,
        &t,
        &[
            "restore",
            "mongo",
            &id2,
            "--to-uri",
            &to,
            "--ns-include",
            "app.users",
            "--ns-from",
            "app.users",
            "--ns-to",
            "app.users_copy",
            "--yes",
        ],
        &pw,
    );
    assert_eq!(code, 0, "{out}{err}");
    let args = args_of(&t.calls_of("mongorestore")[0]);
    for a in [
        "--nsInclude=app.users",
        "--nsFrom=app.users",
        "--nsTo=app.users_copy",
    ] {
        assert!(has(&args, a), "{a}: {args:?}");
    }
    assert!(!has(&args, "--oplogReplay"), "{args:?}");
    assert_eq!(t.count(&dest, "app.users_copy"), Some(1200));
    assert!(err.contains("row counts of 1 table(s) match"), "{err}");

    // Flags that do not fit.
    let (code, _, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id2, "--ns-from", "a.b", "--yes"],
        &pw,
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(
        &env,
        &t,
        &["restore", "mongo", &id2, "--table", "x", "--yes"],
        &pw,
    );
    assert_eq!(code, 2, "{err}");
    let secondary = t.server("secondary", json!({}), Some(SECRET), json!([]));
    let (code, _, err) = run(
        &env,
        &t,
        &[
            "restore",
            "mongo",
            &id2,
            "--to-uri",
            &format!("mongodb://backup@{secondary}/"),
            "--yes",
        ],
        &pw,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("secondary"), "{err}");
}

#[test]
fn test_restore_uses_a_scratch_database_and_drops_it_every_time() {
    let t = Tools::new();
    let src = t.server("primary", sample(), None, oplog());
    let scratch = t.server(
        "primary",
        json!({"other.keep": {"count": 3}}),
        None,
        json!([]),
    );
    let env = Env::new();
    config(
        &env,
        &src,
        &format!("[targets.mongo.test_restore]\nuri = \"mongodb://{scratch}/\"\nrto = \"1h\""),
    );
    let id = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    let (code, out, err) = run(&env, &t, &["test-restore", "mongo", "--json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"document counts") && names.contains(&"scratch dropped"),
        "{names:?}"
    );
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    let args = args_of(&t.calls_of("mongorestore")[0]);
    let scratch_db = format!("backup_scratch_{}", id.to_ascii_lowercase());
    assert!(
        has(&args, "--nsFrom=$db$.$coll$")
            && has(&args, &format!("--nsTo={scratch_db}.$db$.$coll$")),
        "{args:?}"
    );
    assert!(!has(&args, "--oplogReplay"), "{args:?}");
    let left: Vec<String> = t.read_server(&scratch)["collections"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(left, vec!["other.keep"]);

    // A damaged backup: the restore check fails, the scratch database is still dropped.
    tamper(&env, &id, |raw| raw.truncate(raw.len() - 100));
    let (code, out, _) = run(&env, &t, &["test-restore", "mongo", "--json"], &[]);
    assert_eq!(code, 6, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let dropped = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "scratch dropped")
        .unwrap()
        .clone();
    assert_eq!(dropped["passed"], true, "{report}");
}

#[test]
fn a_stored_artifact_restores_with_gunzip_and_mongorestore() {
    let t = Tools::new();
    let src = t.server("primary", sample(), None, oplog());
    let dest = t.server("primary", json!({}), None, json!([]));
    let env = Env::new();
    config(&env, &src, "");
    let id = ok(&env, &t, &["run", "mongo"]).trim().to_string();
    // The README's runbook: gunzip | mongorestore --archive (here a stand-in mongorestore).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gunzip -c {} | mongorestore --uri=mongodb://{dest}/ --archive --oplogReplay",
            artifact(&env, &id).display()
        ))
        .env("PATH", t.path_var())
        .env("MONGO_STANDIN_DIR", t.state())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.count(&dest, "app.users"), Some(1200));
    assert_eq!(t.count(&dest, "billing.invoices"), Some(7));
}

#[test]
fn memory_stays_bounded_with_a_large_archive() {
    let t = Tools::new();
    // ~150 MB of documents; the tool's peak RSS is read by the stand-in mongodump from
    // its parent's /proc/PID/status (VmHWM) just before it exits.
    let src = t.server(
        "primary",
        json!({"big.docs": {"count": 140000, "pad": 1000}}),
        None,
        json!([]),
    );
    let env = Env::new();
    config(&env, &src, "");
    let (code, out, err) = run(&env, &t, &["run", "mongo"], &[]);
    assert_eq!(code, 0, "{err}");
    let call = &t.calls_of("mongodump")[0];
    let bytes = call["bytes"].as_u64().unwrap();
    let hwm_kb = call["parent_vmhwm_kb"].as_u64().unwrap();
    eprintln!(
        "archive {} MB, backup peak RSS {} MB",
        bytes >> 20,
        hwm_kb >> 10
    );
    assert!(bytes > 140 << 20, "{bytes}");
    assert!(
        hwm_kb * 1024 * 3 < bytes,
        "peak RSS {hwm_kb} kB for a {bytes}-byte archive"
    );
    let m = manifest(&env, out.trim());
    assert_eq!(m["database"]["tables"][0]["rows"], 140000);
}
