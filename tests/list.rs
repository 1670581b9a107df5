//! `backup list`: complete backups from manifests, incomplete folders with `--all`,
//! the JSON contract, and filters.
mod common;
use common::*;

#[test]
fn json_fields_tags_and_incomplete_backups() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.sql(
        "app",
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1), (2)",
    );
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let plain = env.ok(&["run", "pg"]).trim().to_string();
    let tagged = env
        .ok(&["run", "pg", "--tag", "pre-deployment-v1.2.3"])
        .trim()
        .to_string();
    assert!(tagged > plain, "ids sort by time: {plain} {tagged}");

    // A folder without a manifest: an interrupted run.
    let broken = env.repo().join("pg/20200101T000000Z");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("dump.sql.gz"), b"partial").unwrap();
    // Something that is not a backup folder at all is ignored.
    std::fs::create_dir_all(env.repo().join("pg/not-a-backup")).unwrap();
    std::fs::write(env.repo().join("pg/not-a-backup/x"), b"x").unwrap();

    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        for field in [
            "id",
            "target",
            "engine",
            "kind",
            "format",
            "storage",
            "tag",
            "started_at",
            "finished_at",
            "size_bytes",
        ] {
            assert!(r.get(field).is_some(), "field {field} missing: {r}");
        }
        assert_eq!(r["target"], "pg");
        assert_eq!(r["engine"], "postgres");
        assert_eq!(r["kind"], "logical");
        assert_eq!(r["format"], "plain");
        assert_eq!(r["storage"], "local");
        assert_eq!(r["status"], "complete");
        assert!(r["size_bytes"].as_u64().unwrap() > 0);
        let started = chrono::DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap());
        let finished = chrono::DateTime::parse_from_rfc3339(r["finished_at"].as_str().unwrap());
        assert!(started.unwrap() <= finished.unwrap());
    }
    assert_eq!(rows[0]["id"], plain.as_str());
    assert_eq!(rows[0]["tag"], serde_json::Value::Null);
    assert_eq!(rows[1]["id"], tagged.as_str());
    assert_eq!(rows[1]["tag"], "pre-deployment-v1.2.3");

    // --tag filters.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "pg", "--tag", "pre-deployment-v1.2.3", "--json"]))
            .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], tagged.as_str());
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--tag", "other", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!([]));

    // --all adds the incomplete folder, marked as such.
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    let inc = rows
        .iter()
        .find(|r| r["id"] == "20200101T000000Z")
        .expect("incomplete backup listed");
    assert_eq!(inc["status"], "incomplete");
    assert_eq!(inc["size_bytes"], 7);
    assert!(
        inc["reason"].as_str().unwrap().contains("no manifest"),
        "{inc}"
    );

    // The table for people says the same.
    let table = env.ok(&["list", "--all"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("20200101T000000Z"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("incomplete"), "{line}");
    let line = table.lines().find(|l| l.starts_with(&tagged)).unwrap();
    assert!(
        line.contains("complete") && line.contains("pre-deployment-v1.2.3"),
        "{line}"
    );
    assert!(!env.ok(&["list"]).contains("20200101T000000Z"));

    // A damaged manifest makes a backup incomplete, with the reason.
    let damaged = env.repo().join("pg/20210101T000000Z");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("manifest.json"), b"{ not json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "20210101T000000Z")
        .expect("listed");
    assert_eq!(row["status"], "incomplete");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("unreadable manifest"),
        "{row}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&env.ok(&["list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // An incomplete backup is never restored or verified as `latest`... even if newer.
    let newer = env.repo().join("pg/29990101T000000Z");
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::write(newer.join("dump.sql.gz"), b"partial").unwrap();
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["verify", "pg", "--json"])).unwrap();
    assert_eq!(v[0]["id"], tagged.as_str());
}

#[test]
fn unknown_target_or_storage_is_a_usage_error() {
    let pg = Pg::start();
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("postgres"), "plain"));
    let (code, _, err) = env.run(&["list", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no target `nope`") && err.contains("[pg]"),
        "{err}"
    );
    let (code, _, err) = env.run(&["list", "--storage", "elsewhere"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no storage `elsewhere`"), "{err}");
    // An empty repository lists nothing, successfully.
    assert_eq!(env.ok(&["list", "--json"]).trim(), "[]");
}

/// `backup list | head`: a reader that goes away is not a failure (exit 0, no error
/// line); the same broken pipe from a child tool would be (see tests/restore.rs).
#[test]
fn a_closed_stdout_is_not_a_failure() {
    let (_pg, env, _id) = common::sample_backup("plain");
    for _ in 0..5 {
        env.ok(&["run", "pg"]);
    }
    let bin = assert_cmd::cargo::cargo_bin("backup");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            // `true` exits without reading: by the time list writes, the pipe has no reader.
            "'{}' list --json | true; echo \"${{PIPESTATUS[0]}}\" >&2",
            bin.display()
        ))
        .env("BACKUP_CONFIG", env.path().join("backup.toml"))
        .env("BACKUP_STATE_DIR", env.path().join("state"))
        .current_dir(env.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().last(), Some("0"), "{err}");
    assert!(!err.contains("ERROR"), "{err}");
}
