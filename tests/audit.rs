//! The audit trail (`audit_log`): a JSON line per restore and per prune deletion, with
//! who and what, against a real PostgreSQL; no secret of the config in it.

mod common;
use common::{local_config, Env, Pg};
use serde_json::Value;

#[test]
fn restore_and_prune_deletions_are_audited_without_secrets() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let audit = env.path().join("audit/audit.jsonl");
    // A password in the URL (moved to PGPASSWORD by the engine; the test cluster trusts
    // local connections) and a notifier whose URL is a secret.
    let url = pg.url("app").replace("postgres@", "postgres:Pw-S3cret-91@");
    assert!(url.contains("Pw-S3cret-91"), "{url}");
    let cfg = format!(
        "audit_log = \"{}\"\n{}notify = [\"ops\"]\n[storages.local.retention]\nkeep_last = 1\nmin_age = \"0s\"\n\
         [notifiers.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook/Tok-S3cret-42\"\non = [\"recovery\"]\n",
        audit.display(),
        local_config(&env.repo(), &url, "custom")
    );
    env.write_config(&cfg);
    let first = env.ok(&["run", "pg"]).trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = env.ok(&["run", "pg"]).trim().to_string();
    assert!(!audit.exists(), "a backup is not an audited act");

    env.ok(&["restore", "pg", &second, "--to-database", "copy", "--yes"]);
    env.ok(&["restore", "pg", "--dry-run"]);
    env.ok(&["prune", "pg", "--yes"]);

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains("S3cret"),
        "a secret in the audit log:\n{text}"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one restore (not the dry run) and one deletion:\n{text}"
    );
    let r = &lines[0];
    assert_eq!(
        (
            r["command"].as_str(),
            r["target"].as_str(),
            r["backup_id"].as_str(),
            r["storage"].as_str(),
            r["outcome"].as_str()
        ),
        (
            Some("restore"),
            Some("pg"),
            Some(second.as_str()),
            Some("local"),
            Some("ok")
        ),
        "{r}"
    );
    assert_eq!(r["details"]["database"], "copy");
    for l in &lines {
        assert!(l["user"].as_str().is_some_and(|u| !u.is_empty()), "{l}");
        assert!(
            l["host"].is_string() && l["ts"].is_string() && l["pid"].is_u64(),
            "{l}"
        );
    }
    let p = &lines[1];
    assert_eq!(
        (
            p["command"].as_str(),
            p["backup_id"].as_str(),
            p["outcome"].as_str()
        ),
        (Some("prune"), Some(first.as_str()), Some("ok")),
        "{p}"
    );
    assert!(p["details"]["reasons"].is_array(), "{p}");

    // A failed restore is audited too, with its (redacted) error.
    let (code, _, _) = env.run(&["restore", "pg", "nosuchid", "--yes"]);
    assert_ne!(code, 0);
    let text = std::fs::read_to_string(&audit).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["command"].as_str(), last["outcome"].as_str()),
        (Some("restore"), Some("failed"))
    );
    assert!(
        last["error"].is_string() && !text.contains("S3cret"),
        "{text}"
    );
}
