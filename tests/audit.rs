//! The audit trail (`audit_log`, `audit_syslog`): a JSON line per restore and per prune
//! deletion, with who and what, against a real PostgreSQL; no secret of the config in it.

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

/// `audit_syslog = true`: the same JSON lines as datagrams on the syslog socket, in the
/// format glibc's syslog(3) uses (`<PRI>Mmm dd hh:mm:ss backup[PID]: {...}`), facility
/// authpriv, info for a success and warning for a failure. The test binds its own socket
/// (`audit_syslog_socket`), never the system's /dev/log.
#[test]
fn audit_lines_go_to_syslog_on_the_configured_socket() {
    let (pg, env, id) = common::sample_backup("plain");
    let sock_path = env.path().join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let url = pg.url("app").replace("postgres@", "postgres:Pw-S3cret-91@");
    env.write_config(&format!(
        "audit_syslog = true\naudit_syslog_socket = \"{}\"\n{}",
        sock_path.display(),
        local_config(&env.repo(), &url, "plain")
    ));
    env.ok(&["restore", "pg", &id, "--to-database", "copy", "--yes"]);
    let (code, _, _) = env.run(&["restore", "pg", "nosuchid", "--yes"]);
    assert_ne!(code, 0);
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).expect("a syslog datagram");
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    for (msg, pri, outcome) in [(&got[0], "<86>", "ok"), (&got[1], "<84>", "failed")] {
        assert!(msg.starts_with(pri), "{msg}");
        assert!(!msg.contains("S3cret"), "a secret in syslog: {msg}");
        let (head, json) = msg.split_once("]: ").unwrap();
        // `<86>Nov 30 02:00:00 backup[1234`
        assert_eq!(
            head.len(),
            pri.len() + 15 + " backup[".len() + head.rsplit('[').next().unwrap().len(),
            "{msg}"
        );
        assert!(head[pri.len() + 15..].starts_with(" backup["), "{msg}");
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["command"], "restore", "{msg}");
        assert_eq!(v["outcome"], outcome, "{msg}");
        assert!(v["user"].is_string() && v["host"].is_string(), "{msg}");
    }
}
