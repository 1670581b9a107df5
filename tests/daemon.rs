//! `backup daemon` against a real PostgreSQL cluster with fast (six-field, seconds)
//! schedules: runs happen and never overlap for one target, a missed run is caught up
//! after a restart, SIGHUP with a broken config keeps the old one, SIGTERM mid-run exits
//! cleanly, `/metrics` passes `promtool check metrics`, `/healthz` turns 503 when stale.
//!
//! The only stand-in is a wrapper around the real pg_dump (`bin_dir_with_pg_dump`) that
//! notes when each dump starts and ends and makes it last long enough to overlap.

mod common;
use common::{
    bin_dir_with_pg_dump, free_port, http_full, local_config_with, promtool_check_metrics, Env, Pg,
};
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// pg_dump that appends `start T` / `end T` to `dumps.log` and sleeps `secs` first.
fn slow_pg_dump(env: &Env, secs: f64) -> String {
    let log = env.path().join("dumps.log");
    let bin = bin_dir_with_pg_dump(
        env.path(),
        &format!(
            "case \"$*\" in *--version*) exec $REAL \"$@\";; esac\n\
             echo \"start $(date +%s.%N)\" >> {log}\nsleep {secs}\n$REAL \"$@\"\nrc=$?\n\
             echo \"end $(date +%s.%N)\" >> {log}\nexit $rc",
            log = log.display()
        ),
    );
    bin.display().to_string()
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(env: &Env, name: &str) -> Daemon {
        let log = env.path().join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = env
            .std_cmd()
            .args(["daemon", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut(&[Value]) -> bool) {
        let t = Instant::now();
        while !ok(&self.events()) {
            assert!(
                t.elapsed() < limit,
                "timed out waiting for {what}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// SIGTERM and the exit status, within `limit`.
    fn stop(mut self, limit: Duration) -> (i32, String) {
        self.signal("TERM");
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (
                    st.code().unwrap_or(-1),
                    std::fs::read_to_string(&self.log).unwrap(),
                );
            }
            assert!(t.elapsed() < limit, "daemon did not stop within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ended_ok(e: &[Value]) -> usize {
    e.iter()
        .filter(|e| e["event"] == "job_end" && e["outcome"] == "ok")
        .count()
}

fn setup(schedule: &str, dump_secs: f64, daemon: &str) -> (Pg, Env) {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let bin = slow_pg_dump(&env, dump_secs);
    env.write_config(&local_config_with(
        &env.repo(),
        &pg.url("app"),
        "custom",
        &format!("bin_dir = \"{bin}\"\nschedule = \"{schedule}\"\n[daemon]\n{daemon}"),
    ));
    (pg, env)
}

fn list(env: &Env) -> Vec<Value> {
    serde_json::from_str(&env.ok(&["list", "pg", "--json"])).unwrap()
}

#[test]
fn runs_never_overlap_metrics_pass_promtool_and_sigterm_lets_the_run_finish() {
    let port = free_port();
    // Every second, each dump taking 1.5 s: without the per-target rule runs would pile up.
    let (_pg, env) = setup(
        "* * * * * *",
        1.5,
        &format!("listen = \"127.0.0.1:{port}\"\nmax_concurrent_jobs = 4\n"),
    );
    let d = Daemon::start(&env, "daemon");
    d.wait_for("three good runs", Duration::from_secs(60), |e| {
        ended_ok(e) >= 3
    });
    let dumps = std::fs::read_to_string(env.path().join("dumps.log")).unwrap();
    let mut last_end = 0.0f64;
    let mut open = false;
    for l in dumps.lines() {
        let (what, t) = l.split_once(' ').unwrap();
        let t: f64 = t.parse().unwrap();
        match what {
            "start" => {
                assert!(!open && t >= last_end, "two dumps overlapped:\n{dumps}");
                open = true;
            }
            _ => {
                open = false;
                last_end = t;
            }
        }
    }
    assert!(
        d.count("job_skipped") >= 1,
        "fires during a run are skipped"
    );

    let m = http_full(port, "GET", "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .contains("backup_success_total{target=\"pg\",storage=\"local\",kind=\"logical\"}"),
        "{}",
        m.body
    );
    promtool_check_metrics(&m.body);
    assert_eq!(http_full(port, "GET", "/nope").status, 404);

    // SIGTERM while a dump runs: the default grace period lets it finish.
    d.wait_for("a running job", Duration::from_secs(30), |e| {
        e.iter().filter(|e| e["event"] == "job_start").count()
            > e.iter().filter(|e| e["event"] == "job_end").count()
    });
    let (code, log) = d.stop(Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("job_cancel"), "{log}");
    let last_end: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|e| e["event"] == "job_end")
        .unwrap();
    assert_eq!(last_end["outcome"], "ok", "{log}");
    assert!(log.contains("daemon_stop"), "{log}");
    let (_, out, _) = env.run(&["list", "pg", "--json", "--all"]);
    assert!(!out.contains("incomplete"), "{out}");
}

#[test]
fn sigterm_past_the_grace_period_cancels_the_job_cleanly() {
    let (_pg, env) = setup("* * * * * *", 30.0, "grace_period = \"1s\"\n");
    let d = Daemon::start(&env, "daemon");
    d.wait_for("a dump started", Duration::from_secs(30), |_| {
        std::fs::read_to_string(env.path().join("dumps.log")).is_ok()
    });
    let t = Instant::now();
    let (code, log) = d.stop(Duration::from_secs(40));
    assert_eq!(code, 0, "{log}");
    assert!(t.elapsed() < Duration::from_secs(20), "{log}");
    assert!(log.contains("job_cancel"), "{log}");
    // The job's own cleanup removed its partial backup: nothing listed, nothing left.
    assert!(list(&env).is_empty());
    let left = common::files_under(&env.repo());
    assert!(left.is_empty(), "partial files left: {left:?}\n{log}");
}

#[test]
fn a_missed_run_is_caught_up_once_after_a_restart() {
    let (_pg, env) = setup("0 0 1 1 *", 0.0, "");
    // First start: the job is seen, its baseline recorded, nothing runs.
    let d = Daemon::start(&env, "first");
    d.wait_for("start", Duration::from_secs(10), |e| {
        e.iter().any(|e| e["event"] == "daemon_start")
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, log) = d.stop(Duration::from_secs(10));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("job_start"), "{log}");
    // Downtime across a fire time: move the recorded last fire back a year.
    let state = env.path().join("state/daemon.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["last"]["pg/backup"] = Value::String("2025-06-01T00:00:00Z".into());
    std::fs::write(&state, v.to_string()).unwrap();
    let d = Daemon::start(&env, "second");
    d.wait_for("the caught-up run", Duration::from_secs(60), |e| {
        ended_ok(e) == 1
    });
    let caught: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| e["event"] == "catch_up")
        .collect();
    assert_eq!(caught.len(), 1, "{caught:?}");
    assert_eq!(caught[0]["missed"], "2026-01-01T00:00:00Z");
    let (code, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
    assert_eq!(list(&env).len(), 1);
    // Caught up once: a third start has nothing to catch up.
    let d = Daemon::start(&env, "third");
    d.wait_for("start", Duration::from_secs(10), |e| {
        e.iter().any(|e| e["event"] == "daemon_start")
    });
    std::thread::sleep(Duration::from_millis(800));
    let (_, log) = d.stop(Duration::from_secs(10));
    assert!(
        !log.contains("catch_up") && !log.contains("job_start"),
        "{log}"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let (_pg, env) = setup("*/2 * * * * *", 0.0, "");
    let good = std::fs::read_to_string(env.path().join("backup.toml")).unwrap();
    let d = Daemon::start(&env, "daemon");
    d.wait_for("a first run", Duration::from_secs(30), |e| ended_ok(e) >= 1);
    env.write_config(&good.replace("*/2 * * * * *", "*/2 * * * 13 *"));
    d.signal("HUP");
    d.wait_for("reload_failed", Duration::from_secs(10), |e| {
        e.iter().any(|e| e["event"] == "reload_failed")
    });
    let err = d
        .events()
        .into_iter()
        .find(|e| e["event"] == "reload_failed")
        .unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("targets.pg.schedule"),
        "{err}"
    );
    let before = ended_ok(&d.events());
    d.wait_for("runs on the old schedule", Duration::from_secs(30), |e| {
        ended_ok(e) >= before + 2
    });
    // A good new config is taken.
    env.write_config(&good.replace("*/2 * * * * *", "0 0 1 1 *"));
    d.signal("HUP");
    d.wait_for("reload", Duration::from_secs(10), |e| {
        e.iter().any(|e| e["event"] == "reload")
    });
    let (code, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
}

#[test]
fn healthz_turns_unhealthy_when_the_target_goes_stale() {
    let port = free_port();
    let (pg, env) = setup(
        "*/2 * * * * *",
        0.0,
        &format!("listen = \"127.0.0.1:{port}\"\nmax_age = \"1h\"\n"),
    );
    // The target's own max_age wins over [daemon] max_age.
    let cfg = std::fs::read_to_string(env.path().join("backup.toml")).unwrap();
    env.write_config(&cfg.replace("[daemon]\n", "max_age = \"5s\"\n[daemon]\n"));
    let d = Daemon::start(&env, "daemon");
    d.wait_for("a good run", Duration::from_secs(30), |e| ended_ok(e) >= 1);
    let h = http_full(port, "GET", "/healthz");
    assert_eq!(h.status, 200, "{}", h.body);
    assert!(h.body.starts_with("ok pg on local"), "{}", h.body);
    // The server dies: runs fail, the newest backup ages past 5 s.
    pg.stop();
    let t = Instant::now();
    loop {
        let h = http_full(port, "GET", "/healthz");
        if h.status == 503 {
            assert!(h.body.contains("STALE pg on local"), "{}", h.body);
            assert!(h.body.contains("(max 5s)"), "{}", h.body);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "still healthy: {}",
            h.body
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(d
        .events()
        .iter()
        .any(|e| e["event"] == "job_end" && e["outcome"] == "failed"));
    let (code, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
}
