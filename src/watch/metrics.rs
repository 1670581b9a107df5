//! Prometheus metrics: counters that survive across runs (kept in the state dir), written
//! after every run, prune, verify and test-restore to a textfile (node_exporter's textfile
//! collector; temp file + rename) and/or pushed to a Pushgateway.
//!
//! Families, each labelled `target`, `storage`, `kind` (OP is backup, verify, prune,
//! test_restore): `OP_success_total`, `OP_failure_total` (counters), `OP_duration_seconds`,
//! `OP_last_run_timestamp_seconds`, `OP_last_run_success` (1/0),
//! `OP_last_success_timestamp_seconds`, `OP_age_seconds` (now minus the last success, as
//! of writing: alert on `time() - OP_last_success_timestamp_seconds`, which keeps
//! growing when the writer stops), plus `backup_size_bytes`, `prune_deleted_backups`,
//! `prune_freed_bytes`, `test_restore_checks_failed`, `test_restore_restore_seconds`,
//! `test_restore_rto_seconds`, `test_restore_benchmark_seconds`.

use crate::config::Config;
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Backup,
    Verify,
    Prune,
    TestRestore,
}

impl Op {
    pub fn as_str(&self) -> &'static str {
        match self {
            Op::Backup => "backup",
            Op::Verify => "verify",
            Op::Prune => "prune",
            Op::TestRestore => "test_restore",
        }
    }
}

/// One outcome on one storage.
#[derive(Debug, Clone)]
pub struct Event {
    pub op: Op,
    pub target: String,
    pub storage: String,
    /// `logical` or `physical`.
    pub kind: String,
    pub success: bool,
    pub duration_seconds: f64,
    /// Extra gauges for this op, e.g. `("size_bytes", 1234.0)` -> `backup_size_bytes`.
    pub gauges: Vec<(&'static str, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    pub op: String,
    pub target: String,
    pub storage: String,
    pub kind: String,
    pub success_total: u64,
    pub failure_total: u64,
    pub duration_seconds: f64,
    pub last_run_timestamp: i64,
    pub last_run_success: bool,
    pub last_success_timestamp: Option<i64>,
    #[serde(default)]
    pub gauges: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub series: BTreeMap<String, Series>,
}

fn state_path(cfg: &Config) -> PathBuf {
    cfg.state_dir().join("metrics.json")
}

/// Holds an exclusive flock on the state while it is read, changed and written.
struct StateLock(#[allow(dead_code)] std::fs::File);

impl StateLock {
    fn acquire(dir: &Path) -> Result<StateLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("metrics.lock"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an open descriptor; released when the file closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            anyhow::bail!("locking {}", dir.join("metrics.lock").display());
        }
        Ok(StateLock(f))
    }
}

pub fn load_state(cfg: &Config) -> State {
    std::fs::read(state_path(cfg))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records outcomes and publishes; a publishing failure is a warning, never fatal.
pub fn record(cfg: &Config, events: &[Event], ui: &Ui) {
    if let Err(e) = record_inner(cfg, events, ui) {
        ui.warn(format!("metrics not updated: {e:#}"));
    }
}

fn record_inner(cfg: &Config, events: &[Event], ui: &Ui) -> Result<()> {
    let dir = cfg.state_dir();
    let _lock = StateLock::acquire(&dir)?;
    let mut state = load_state(cfg);
    let now = chrono::Utc::now().timestamp();
    for e in events {
        let key = format!("{}|{}|{}|{}", e.op.as_str(), e.target, e.storage, e.kind);
        let s = state.series.entry(key).or_insert_with(|| Series {
            op: e.op.as_str().into(),
            target: e.target.clone(),
            storage: e.storage.clone(),
            kind: e.kind.clone(),
            ..Default::default()
        });
        if e.success {
            s.success_total += 1;
            s.last_success_timestamp = Some(now);
            for (k, v) in &e.gauges {
                s.gauges.insert(k.to_string(), *v);
            }
        } else {
            s.failure_total += 1;
            // Gauges describing a failed run (e.g. checks failed) are still news.
            for (k, v) in &e.gauges {
                if !k.ends_with("size_bytes") && *k != "changed_bytes" {
                    s.gauges.insert(k.to_string(), *v);
                }
            }
        }
        s.duration_seconds = e.duration_seconds;
        s.last_run_timestamp = now;
        s.last_run_success = e.success;
    }
    let mut json = serde_json::to_vec_pretty(&state)?;
    json.push(b'\n');
    super::sink::write_atomic(&state_path(cfg), &json)?;
    publish(cfg, &state, ui)
}

/// Writes the textfile and pushes, as configured.
pub fn publish(cfg: &Config, state: &State, ui: &Ui) -> Result<()> {
    let Some(m) = &cfg.metrics else {
        return Ok(());
    };
    let text = render(state, chrono::Utc::now().timestamp());
    let mut errors = Vec::new();
    if let Some(p) = &m.textfile {
        if let Err(e) = super::sink::write_atomic(p, text.as_bytes()) {
            errors.push(format!("textfile {}: {e:#}", p.display()));
        }
    }
    if let Some(u) = &m.pushgateway {
        let job = m.job.as_deref().unwrap_or("backup");
        let host = crate::engine::lock::hostname();
        let url = format!(
            "{}/metrics/job/{}/instance/{}",
            u.trim_end_matches('/'),
            enc(job),
            enc(&host)
        );
        let r = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .put(&url)
            .set("Content-Type", "text/plain; version=0.0.4")
            .send_string(&text);
        match r {
            Ok(_) => ui.info(format!("metrics pushed to {}", crate::redact::url(u))),
            Err(e) => errors.push(format!(
                "pushgateway {}: {}",
                crate::redact::url(u),
                super::sink::http_error(e)
            )),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The Prometheus text exposition of the state, ages computed at `now`.
pub fn render(state: &State, now: i64) -> String {
    // family name -> (type, help, lines)
    let mut fams: BTreeMap<String, (&str, String, Vec<String>)> = BTreeMap::new();
    let mut put = |name: String, typ: &'static str, help: String, labels: &str, v: f64| {
        let f = fams.entry(name.clone()).or_insert((typ, help, Vec::new()));
        f.2.push(format!("{name}{{{labels}}} {}", num(v)));
    };
    for s in state.series.values() {
        let op = &s.op;
        let what = op.replace('_', "-");
        let l = format!(
            "target=\"{}\",storage=\"{}\",kind=\"{}\"",
            label(&s.target),
            label(&s.storage),
            label(&s.kind)
        );
        put(
            format!("{op}_success_total"),
            "counter",
            format!("Successful {what} runs."),
            &l,
            s.success_total as f64,
        );
        put(
            format!("{op}_failure_total"),
            "counter",
            format!("Failed {what} runs."),
            &l,
            s.failure_total as f64,
        );
        put(
            format!("{op}_duration_seconds"),
            "gauge",
            format!("Duration of the last {what} run."),
            &l,
            s.duration_seconds,
        );
        put(
            format!("{op}_last_run_timestamp_seconds"),
            "gauge",
            format!("Unix time of the last {what} run."),
            &l,
            s.last_run_timestamp as f64,
        );
        put(
            format!("{op}_last_run_success"),
            "gauge",
            format!("1 if the last {what} run succeeded, else 0."),
            &l,
            if s.last_run_success { 1.0 } else { 0.0 },
        );
        if let Some(t) = s.last_success_timestamp {
            put(
                format!("{op}_last_success_timestamp_seconds"),
                "gauge",
                format!("Unix time of the last successful {what} run; alert on time() minus this."),
                &l,
                t as f64,
            );
            put(format!("{op}_age_seconds"), "gauge", format!("Seconds since the last successful {what} run, as of writing this file (stale if the writer stops)."), &l, (now - t).max(0) as f64);
        }
        for (k, v) in &s.gauges {
            put(format!("{op}_{k}"), "gauge", gauge_help(op, k), &l, *v);
        }
    }
    let mut out = String::new();
    for (name, (typ, help, lines)) in fams {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {typ}\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

fn gauge_help(op: &str, k: &str) -> String {
    match (op, k) {
        ("backup", "size_bytes") => "Stored size of the last successful backup.".into(),
        ("backup", "full_size_bytes") => {
            "Stored size of the last successful full backup (method = files).".into()
        }
        ("backup", "diff_size_bytes") => {
            "Stored size of the last successful differential backup.".into()
        }
        ("backup", "incr_size_bytes") => {
            "Stored size of the last successful incremental backup.".into()
        }
        ("backup", "changed_bytes") => {
            "Bytes the last successful backup copied from the database (before compression).".into()
        }
        ("prune", "deleted_backups") => "Backups deleted by the last prune.".into(),
        ("prune", "freed_bytes") => "Bytes freed by the last prune.".into(),
        ("test_restore", "checks_failed") => "Checks that failed in the last test-restore.".into(),
        ("test_restore", "restore_seconds") => {
            "Seconds the last test-restore's restore took.".into()
        }
        ("test_restore", "rto_seconds") => {
            "The RTO the last test-restore was judged against.".into()
        }
        ("test_restore", "benchmark_seconds") => {
            "Total seconds of the last test-restore's benchmark_sql queries.".into()
        }
        _ => format!("{op} {k}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_once_with_labels() {
        let mut st = State::default();
        for (storage, ok) in [("local", 3), ("s3", 1)] {
            st.series.insert(
                format!("backup|pg|{storage}|logical"),
                Series {
                    op: "backup".into(),
                    target: "pg".into(),
                    storage: storage.into(),
                    kind: "logical".into(),
                    success_total: ok,
                    failure_total: 1,
                    duration_seconds: 2.5,
                    last_run_timestamp: 1000,
                    last_run_success: true,
                    last_success_timestamp: Some(900),
                    gauges: [("size_bytes".to_string(), 42.0)].into(),
                },
            );
        }
        let t = render(&st, 1000);
        assert_eq!(t.matches("# TYPE backup_success_total counter").count(), 1);
        assert!(t.contains(
            "backup_success_total{target=\"pg\",storage=\"local\",kind=\"logical\"} 3\n"
        ));
        assert!(
            t.contains("backup_age_seconds{target=\"pg\",storage=\"s3\",kind=\"logical\"} 100\n")
        );
        assert!(t.contains("backup_size_bytes{target=\"pg\",storage=\"s3\",kind=\"logical\"} 42\n"));
        assert!(t.contains(
            "backup_duration_seconds{target=\"pg\",storage=\"s3\",kind=\"logical\"} 2.5\n"
        ));
    }
}
