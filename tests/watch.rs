//! Metrics, status and notifications, driven through the binary against real PostgreSQL,
//! a local HTTP server (Slack, webhook, PagerDuty and Pushgateway endpoints) and real SMTP
//! servers (aiosmtpd), all started by the tests. The HTTP server is a stand-in for the
//! remote services (no Slack or PagerDuty here); it records what the tool sent.
mod common;
#[path = "fixtures/smtp.rs"]
mod smtp;
use common::*;
use smtp::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    body: String,
}

/// A tiny HTTP/1.1 server that records requests and answers `status`.
fn http_sink(status: u16) -> (u16, Arc<Mutex<Vec<Req>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            let mut parts = first.split_whitespace();
            g.lock().unwrap().push(Req {
                method: parts.next().unwrap_or("").into(),
                path: parts.next().unwrap_or("").into(),
                body: String::from_utf8_lossy(&body).into(),
            });
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 {status} OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, got)
}

fn metrics_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn metrics_textfile_and_pushgateway_after_success_and_failure() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let (push_port, pushed) = http_sink(200);
    let prom = env.path().join("textfile").join("backup.prom");
    let dead = free_port();
    env.write_config(&format!(
        "{}\n[targets.dead]\nengine = \"postgres\"\nurl = \"postgresql://postgres@127.0.0.1:{dead}/app\"\nstorages = [\"local\"]\n\n\
         [metrics]\ntextfile = \"{}\"\npushgateway = \"http://127.0.0.1:{push_port}\"\n\n\
         [storages.local.retention]\nkeep_last = 1\nmin_age = \"0s\"\n",
        local_config(&env.repo(), &pg.url("app"), "plain"),
        prom.display()
    ));
    env.ok(&["run", "pg"]);
    let t = metrics_of(&prom);
    let l = "{target=\"pg\",storage=\"local\",kind=\"logical\"}";
    assert!(t.contains(&format!("backup_success_total{l} 1\n")), "{t}");
    assert!(t.contains(&format!("backup_failure_total{l} 0\n")), "{t}");
    assert!(
        t.contains(&format!("backup_last_run_success{l} 1\n")),
        "{t}"
    );
    assert!(t.contains("# TYPE backup_success_total counter"), "{t}");
    let size_line = t
        .lines()
        .find(|x| x.starts_with(&format!("backup_size_bytes{l}")))
        .unwrap();
    assert!(
        size_line.split(' ').nth(1).unwrap().parse::<u64>().unwrap() > 1000,
        "{size_line}"
    );
    let ts: i64 = t
        .lines()
        .find(|x| x.starts_with(&format!("backup_last_success_timestamp_seconds{l}")))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 120);
    assert!(t.contains(&format!("backup_age_seconds{l} ")), "{t}");
    promtool_check_metrics(&t);

    // Counters survive across runs; a failure counts for every storage of the target.
    env.ok(&["run", "pg"]);
    let (code, _, _) = env.run(&["run", "dead"]);
    assert_eq!(code, 1);
    let (code, _, _) = env.run(&["run", "dead"]);
    assert_eq!(code, 1);
    let t = metrics_of(&prom);
    assert!(t.contains(&format!("backup_success_total{l} 2\n")), "{t}");
    let d = "{target=\"dead\",storage=\"local\",kind=\"logical\"}";
    assert!(t.contains(&format!("backup_failure_total{d} 2\n")), "{t}");
    assert!(t.contains(&format!("backup_success_total{d} 0\n")), "{t}");
    assert!(
        t.contains(&format!("backup_last_run_success{d} 0\n")),
        "{t}"
    );
    assert!(
        !t.contains(&format!("backup_last_success_timestamp_seconds{d}")),
        "{t}"
    );
    promtool_check_metrics(&t);

    // verify is counted too.
    env.ok(&["verify", "pg"]);
    let t = metrics_of(&prom);
    assert!(t.contains(&format!("verify_success_total{l} 1\n")), "{t}");
    // No temp files left next to the textfile.
    let names: Vec<_> = std::fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // prune: one backup of pg removed on local.
    env.ok(&["prune", "pg", "--yes"]);
    let t = metrics_of(&prom);
    assert!(t.contains(&format!("prune_success_total{l} 1\n")), "{t}");
    assert!(t.contains(&format!("prune_deleted_backups{l} 1\n")), "{t}");
    assert!(t.contains(&format!("prune_freed_bytes{l} ")), "{t}");
    promtool_check_metrics(&t);

    let p = pushed.lock().unwrap();
    assert_eq!(p.len(), 6, "{p:?}");
    assert!(
        p.iter()
            .all(|r| r.method == "PUT" && r.path.starts_with("/metrics/job/backup/instance/")),
        "{p:?}"
    );
    assert_eq!(p.last().unwrap().body, t);
}

#[test]
fn status_reports_age_and_exits_7_when_stale() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let (code, out, err) = env.run(&["status"]);
    assert_eq!(code, 7, "{out}{err}");
    assert!(out.contains("none") && out.contains("STALE"), "{out}");
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let out = env.ok(&["status", "pg"]);
    assert!(
        out.contains(&id) && out.contains(" ok ") && out.contains("never"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--json", "--max-age", "1h"])).unwrap();
    assert_eq!(v[0]["storages"][0]["last_id"], id.as_str());
    assert_eq!(v[0]["ok"], true);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, out, err) = env.run(&["status", "--max-age", "1s", "--json"]);
    assert_eq!(code, 7, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["storages"][0]["stale"], true);
    assert!(v[0]["storages"][0]["age_seconds"].as_i64().unwrap() >= 2);
    assert!(
        err.contains("no backup newer than 1s for: pg on `local`"),
        "{err}"
    );
    // A target's own max_age, without --max-age; the flag still overrides it.
    let text = local_config(&env.repo(), &pg.url("app"), "plain");
    env.write_config(&format!("{text}max_age = \"1s\"\n"));
    let (code, out, err) = env.run(&["status", "--json"]);
    assert_eq!(code, 7, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["max_age_seconds"], 1);
    assert!(
        err.contains("no backup newer than 1s for: pg on `local`"),
        "{err}"
    );
    env.ok(&["status", "--max-age", "1h"]);
    env.write_config(&format!("{text}max_age = \"soon\"\n"));
    let (code, _, err) = env.run(&["status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("targets.pg.max_age"), "{err}");
}

#[test]
fn notifications_reach_slack_webhook_pagerduty_and_email() {
    let pg = Pg::start();
    let env = Env::new();
    let (hport, reqs) = http_sink(202);
    let (cert, key) = self_signed_cert(env.path());
    let starttls = Smtp::start("starttls", &cert, &key, env.path());
    let implicit = Smtp::start("implicit", &cert, &key, env.path());
    let plain = Smtp::start("plain", &cert, &key, env.path());
    let pwfile = env.path().join("smtp-password");
    std::fs::write(&pwfile, format!("{SMTP_PASSWORD}\n")).unwrap();
    let deadport = free_port();
    // The database does not exist yet: the first run fails, the second recovers.
    env.write_config(&format!(
        r#"{}notify = ["slack", "hook", "pd", "mail", "broken", "mail_implicit", "mail_plain", "mail_badpw", "mail_untrusted"]

[notifiers.slack]
type = "slack"
url = "http://127.0.0.1:{hport}/services/T000/B000/SECRETXYZ"
on = ["failure", "success", "recovery"]

[notifiers.hook]
type = "webhook"
url = "http://127.0.0.1:{hport}/hook?token=SECRETXYZ"

[notifiers.pd]
type = "pagerduty"
routing_key = "R0UTINGKEY"
events_url = "http://127.0.0.1:{hport}/v2/enqueue"

# STARTTLS (the default) with AUTH; the self-signed certificate is trusted via tls_ca_file.
[notifiers.mail]
type = "email"
host = "localhost"
port = {sport}
username = "{SMTP_USER}"
password_env = "SMTP_TEST_PW"
tls_ca_file = "{cert}"
from = "backup@example.com"
to = ["oncall@example.com", "dba@example.com"]

[notifiers.mail_implicit]
type = "email"
host = "localhost"
port = {iport}
tls = "implicit"
username = "{SMTP_USER}"
password_file = "{pwfile}"
tls_ca_file = "{cert}"
from = "backup@example.com"
to = ["oncall@example.com"]

[notifiers.mail_plain]
type = "email"
host = "127.0.0.1"
port = {pport}
starttls = false
from = "backup@example.com"
to = ["oncall@example.com"]

[notifiers.mail_badpw]
type = "email"
host = "localhost"
port = {sport}
username = "{SMTP_USER}"
password_env = "SMTP_TEST_BAD_PW"
tls_ca_file = "{cert}"
from = "backup@example.com"
to = ["nobody@example.com"]

# Without tls_ca_file the self-signed certificate must be refused, not accepted.
[notifiers.mail_untrusted]
type = "email"
host = "localhost"
port = {sport}
username = "{SMTP_USER}"
password_env = "SMTP_TEST_PW"
from = "backup@example.com"
to = ["nobody@example.com"]

[notifiers.broken]
type = "webhook"
url = "http://127.0.0.1:{deadport}/SECRETXYZ"
"#,
        local_config(&env.repo(), &pg.url("app"), "plain"),
        sport = starttls.port,
        iport = implicit.port,
        pport = plain.port,
        cert = cert.display(),
        pwfile = pwfile.display(),
    ));
    let run = |args: &[&str]| -> (i32, String, String) {
        let out = env
            .cmd()
            .env("SMTP_TEST_PW", SMTP_PASSWORD)
            .env("SMTP_TEST_BAD_PW", SMTP_WRONG_PASSWORD)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, _, err1) = run(&["run", "pg"]);
    assert_eq!(code, 1, "{err1}");
    pg.createdb("app");
    pg.load_sample("app");
    let (code, out, err2) = run(&["run", "pg"]);
    assert_eq!(
        code, 0,
        "a failed notifier must not change the exit code: {err2}"
    );
    let id = out.trim();
    // A plain success after the recovery: only slack (on = success) hears of it.
    let (code, _, err3) = run(&["run", "pg"]);
    assert_eq!(code, 0, "{err3}");
    for e in [&err1, &err2, &err3] {
        assert!(
            !e.contains("SECRETXYZ")
                && !e.contains("R0UTINGKEY")
                && !e.contains(SMTP_PASSWORD)
                && !e.contains(SMTP_WRONG_PASSWORD),
            "secret in logs: {e}"
        );
    }
    assert!(
        err2.contains("notifier `broken` (webhook) failed"),
        "{err2}"
    );

    let reqs = reqs.lock().unwrap().clone();
    let by = |p: &str| -> Vec<serde_json::Value> {
        reqs.iter()
            .filter(|r| r.path.starts_with(p))
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    };
    let slack = by("/services/");
    assert_eq!(slack.len(), 3, "{reqs:?}");
    let t0 = slack[0]["text"].as_str().unwrap();
    assert!(
        t0.contains("backup of target pg FAILED") && t0.contains("error:") && t0.contains("app"),
        "{t0}"
    );
    let t1 = slack[1]["text"].as_str().unwrap();
    assert!(
        t1.contains("recovered")
            && t1.contains(id)
            && t1.contains("size:")
            && t1.contains("duration:"),
        "{t1}"
    );
    assert!(slack[2]["text"].as_str().unwrap().contains("succeeded"));
    eprintln!("sample Slack payloads:\n{}\n{}", slack[0], slack[1]);

    let hook = by("/hook");
    assert_eq!(hook.len(), 2, "{reqs:?}");
    assert_eq!(hook[0]["event"], "failure");
    assert_eq!(hook[0]["target"], "pg");
    assert_eq!(hook[1]["event"], "recovery");
    assert_eq!(hook[1]["id"], id);
    assert!(hook[1]["size_bytes"].as_u64().unwrap() > 0);

    let pd = by("/v2/enqueue");
    assert_eq!(pd.len(), 2, "{reqs:?}");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], "R0UTINGKEY");
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);

    // STARTTLS with AUTH: the failure and the recovery, with their facts.
    let mails = starttls.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}\n{err1}\n{err2}");
    for m in &mails {
        assert_eq!(m["mail_from"], "backup@example.com", "{m:#}");
        assert_eq!(m["auth_user"], SMTP_USER, "{m:#}");
        assert_eq!(m["tls"], true, "{m:#}");
    }
    assert_eq!(
        mails[0]["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "dba@example.com"])
    );
    let (subject, body) = (
        mails[0]["subject"].as_str().unwrap(),
        mails[0]["body"].as_str().unwrap(),
    );
    assert!(
        subject.starts_with("[backup] backup of target pg FAILED on "),
        "{subject}"
    );
    assert!(
        body.contains("duration: ") && body.contains("error: ") && body.contains("app"),
        "{body}"
    );
    let (subject, body) = (
        mails[1]["subject"].as_str().unwrap(),
        mails[1]["body"].as_str().unwrap(),
    );
    assert!(
        subject.starts_with("[backup] backup of target pg recovered on "),
        "{subject}"
    );
    assert!(
        body.contains(&format!("id: {id}"))
            && body.contains("size: ")
            && body.contains("storages: local")
            && !body.contains("error:"),
        "{body}"
    );
    let raw = mails[0]["raw"].as_str().unwrap();
    assert!(
        raw.contains("Content-Type: text/plain; charset=utf-8") && raw.contains("Message-ID: <"),
        "{raw}"
    );
    // AUTH happened over TLS: two accepted (mail), and the wrong password refused on every
    // run that notified; the untrusted certificate never got as far as AUTH.
    let auths = starttls.auths();
    let ok = |v: bool| auths.iter().filter(|a| a["ok"] == v).count();
    assert_eq!((ok(true), ok(false)), (2, 2), "{auths:#?}");
    assert!(
        auths
            .iter()
            .all(|a| a["user"] == SMTP_USER && a["tls"] == true),
        "{auths:#?}"
    );

    // A wrong password: one clear line, the run still succeeds (checked above).
    for e in [&err1, &err2] {
        let line = e
            .lines()
            .find(|l| l.contains("notifier `mail_badpw` (email) failed"))
            .unwrap_or_else(|| panic!("no mail_badpw warning: {e}"));
        assert!(
            line.contains("WARN") && line.contains("535") && line.contains("credentials invalid"),
            "{line}"
        );
        let line = e
            .lines()
            .find(|l| l.contains("notifier `mail_untrusted` (email) failed"))
            .unwrap_or_else(|| panic!("no mail_untrusted warning: {e}"));
        assert!(line.contains("certificate"), "{line}");
    }
    for name in ["mail_badpw", "mail_untrusted"] {
        let pat = format!("notifier `{name}`");
        eprintln!(
            "sample email failure: {}",
            err1.lines().find(|l| l.contains(&pat)).unwrap()
        );
    }
    assert!(
        err2.contains("notified `mail` (email) of backup recovery"),
        "{err2}"
    );

    // Implicit TLS (SMTPS) with AUTH, password from password_file.
    let mails = implicit.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}\n{err1}\n{err2}");
    assert_eq!(mails[0]["auth_user"], SMTP_USER);
    assert_eq!(mails[0]["tls"], true);
    assert!(mails[0]["subject"].as_str().unwrap().contains("FAILED"));
    assert!(mails[1]["subject"].as_str().unwrap().contains("recovered"));
    assert!(mails[1]["body"].as_str().unwrap().contains(id));
    assert_eq!(implicit.auths().len(), 2, "{:#?}", implicit.auths());

    // Plain, without AUTH (a trusted local relay).
    let mails = plain.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}\n{err1}\n{err2}");
    assert_eq!(mails[0]["tls"], false);
    assert_eq!(mails[0]["auth_user"], serde_json::Value::Null);
    assert!(mails[1]["subject"].as_str().unwrap().contains("recovered"));
}

#[test]
fn test_restore_failure_pages_and_counts() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let (hport, reqs) = http_sink(202);
    let prom = env.path().join("backup.prom");
    let checks = env.path().join("checks.sql");
    std::fs::write(&checks, "SELECT false;\n").unwrap();
    env.write_config(&format!(
        "{}notify = [\"pd\"]\n[targets.pg.test_restore]\nchecks_sql = \"{}\"\n\n[notifiers.pd]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nevents_url = \"http://127.0.0.1:{hport}/v2/enqueue\"\n\n[metrics]\ntextfile = \"{}\"\n",
        local_config(&env.repo(), &pg.url("app"), "plain"),
        checks.display(),
        prom.display()
    ));
    env.ok(&["run", "pg"]);
    let (code, _, err) = env.run(&["test-restore", "pg"]);
    assert_eq!(code, 6, "{err}");
    let t = metrics_of(&prom);
    let l = "{target=\"pg\",storage=\"local\",kind=\"logical\"}";
    assert!(
        t.contains(&format!("test_restore_failure_total{l} 1\n")),
        "{t}"
    );
    assert!(
        t.contains(&format!("test_restore_checks_failed{l} 1\n")),
        "{t}"
    );
    assert!(
        t.contains(&format!("test_restore_last_run_success{l} 0\n")),
        "{t}"
    );
    promtool_check_metrics(&t);
    let reqs = reqs.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let v: serde_json::Value = serde_json::from_str(&reqs[0].body).unwrap();
    assert_eq!(v["event_action"], "trigger");
    assert!(
        v["dedup_key"]
            .as_str()
            .unwrap()
            .ends_with("/pg/test-restore"),
        "{v}"
    );
    assert!(
        v["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("test-restore of target pg FAILED"),
        "{v}"
    );
    let (code, out, _) = env.run(&["status", "pg"]);
    assert_eq!(code, 0);
    assert!(out.contains("FAILED"), "{out}");
}

/// examples/prometheus: the alert rules load and their unit tests pass under promtool.
#[test]
fn example_alert_rules_pass_promtool_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus");
    let out = match std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            eprintln!(
                "SKIPPED promtool test rules: promtool not installed (Debian package `prometheus`)"
            );
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
