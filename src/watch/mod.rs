//! After a run: metrics, notifications and the last test-restore result, in one place so
//! the subcommands each add a single call.

pub mod audit;
mod email;
pub mod metrics;
mod notice;
pub mod notify;
pub mod sink;

use crate::config::Config;
use crate::engine::test_restore::{last_test_restore_path, LastTestRestore, TestRestoreReport};
use crate::manifest::RunOutcome;
use crate::ui::Ui;
use anyhow::Result;
use metrics::{Event, Op};
use notify::Notice;

fn kind_of(cfg: &Config, target: &str) -> String {
    cfg.targets
        .get(target)
        .map(|t| t.kind.clone())
        .unwrap_or_else(|| "logical".into())
}

/// After `backup run`: a success per storage that holds the backup, a failure per
/// storage that does not (all of them when the run failed before storing).
pub fn after_backup(cfg: &Config, target: &str, res: &Result<RunOutcome>, seconds: f64, ui: &Ui) {
    let kind = kind_of(cfg, target);
    let storages: Vec<String> = cfg
        .targets
        .get(target)
        .map(|t| t.storages.clone())
        .unwrap_or_default();
    let mut events = Vec::new();
    // Differential/incremental backups also give the size per type and the bytes
    // this run copied (`backup_incr_size_bytes`, `backup_changed_bytes`...).
    let typed: Vec<(&'static str, f64)> = match res {
        Ok(out) => {
            let m = &out.manifest;
            let size = m.size_bytes() as f64;
            let raw: u64 = m.artifacts.iter().map(|a| a.raw_size_bytes).sum();
            match m.backup_type() {
                Some("full") => vec![("full_size_bytes", size), ("changed_bytes", raw as f64)],
                Some("diff") => vec![("diff_size_bytes", size), ("changed_bytes", raw as f64)],
                Some("incr") => vec![("incr_size_bytes", size), ("changed_bytes", raw as f64)],
                _ => vec![],
            }
        }
        Err(_) => vec![],
    };
    let ev = |storage: &str, success: bool, size: Option<u64>| Event {
        op: Op::Backup,
        target: target.into(),
        storage: storage.into(),
        kind: kind.clone(),
        success,
        duration_seconds: seconds,
        gauges: size
            .map(|s| {
                let mut g = vec![("size_bytes", s as f64)];
                g.extend(typed.iter().cloned());
                g
            })
            .unwrap_or_default(),
    };
    let notice = match res {
        Ok(out) => {
            let size = out.manifest.size_bytes();
            for s in &storages {
                events.push(ev(s, out.stored_on.contains(s), Some(size)));
            }
            Notice {
                operation: "backup".into(),
                target: target.into(),
                id: Some(out.manifest.id.clone()),
                success: out.failed.is_empty(),
                size_bytes: Some(size),
                duration_seconds: seconds,
                storages: out.stored_on.clone(),
                error: (!out.failed.is_empty())
                    .then(|| crate::engine::backup::describe_failures(&out.failed)),
                details: vec![],
                host: crate::engine::lock::hostname(),
                time: chrono::Utc::now(),
            }
        }
        Err(e) => {
            for s in &storages {
                events.push(ev(s, false, None));
            }
            Notice::failed("backup", target, seconds, format!("{e:#}"))
        }
    };
    metrics::record(cfg, &events, ui);
    notify::notify(cfg, &notice, ui);
}

/// After `backup verify`: one event per (target, storage) checked.
pub fn after_verify(cfg: &Config, results: &[(String, String, bool)], seconds: f64, ui: &Ui) {
    let events: Vec<Event> = results
        .iter()
        .map(|(t, s, ok)| Event {
            op: Op::Verify,
            target: t.clone(),
            storage: s.clone(),
            kind: kind_of(cfg, t),
            success: *ok,
            duration_seconds: seconds,
            gauges: vec![],
        })
        .collect();
    if !events.is_empty() {
        metrics::record(cfg, &events, ui);
    }
}

/// A test-restore's gauges: failed checks, the restore time and the RTO it is judged
/// against, and the benchmark queries' total time (when there are any: one series per
/// target, not per query, to keep the label set small).
fn test_restore_gauges(r: &TestRestoreReport, failed: usize) -> Vec<(&'static str, f64)> {
    let mut g = vec![
        ("checks_failed", failed as f64),
        ("restore_seconds", r.restore_seconds),
    ];
    let fig = |c: &crate::db::Check, k: &str| c.figures.get(k).and_then(|v| v.as_f64());
    if let Some(rto) = r.checks.iter().find(|c| c.name == "rto") {
        if let Some(v) = fig(rto, "rto_seconds") {
            g.push(("rto_seconds", v));
        }
    }
    let bench: Vec<f64> = r
        .checks
        .iter()
        .filter(|c| c.name.starts_with("benchmark"))
        .filter_map(|c| fig(c, "seconds"))
        .collect();
    if !bench.is_empty() {
        g.push(("benchmark_seconds", bench.iter().sum()));
    }
    g
}

/// After `backup test-restore`: keep the result, record metrics, notify.
pub fn after_test_restore(
    cfg: &Config,
    target: &str,
    res: &Result<TestRestoreReport>,
    seconds: f64,
    ui: &Ui,
) {
    let kind = kind_of(cfg, target);
    let (last, event, notice) = match res {
        Ok(r) => {
            let failed: Vec<String> = r
                .failed_checks()
                .iter()
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let summary = if r.passed {
                format!("{} check(s) passed", r.checks.len())
            } else {
                format!("{} of {} check(s) failed", failed.len(), r.checks.len())
            };
            (
                LastTestRestore {
                    at: chrono::Utc::now(),
                    passed: r.passed,
                    id: Some(r.id.clone()),
                    storage: Some(r.storage.clone()),
                    summary: summary.clone(),
                    report: Some(r.clone()),
                },
                Event {
                    op: Op::TestRestore,
                    target: target.into(),
                    storage: r.storage.clone(),
                    kind: r.kind.clone(),
                    success: r.passed,
                    duration_seconds: r.duration_seconds,
                    gauges: test_restore_gauges(r, failed.len()),
                },
                Notice {
                    operation: "test-restore".into(),
                    target: target.into(),
                    id: Some(r.id.clone()),
                    success: r.passed,
                    size_bytes: Some(r.size_bytes),
                    duration_seconds: r.duration_seconds,
                    storages: vec![r.storage.clone()],
                    error: (!r.passed).then(|| summary.clone()),
                    details: failed,
                    host: crate::engine::lock::hostname(),
                    time: chrono::Utc::now(),
                },
            )
        }
        Err(e) => {
            let msg = format!("{e:#}");
            (
                LastTestRestore {
                    at: chrono::Utc::now(),
                    passed: false,
                    id: None,
                    storage: None,
                    summary: msg.clone(),
                    report: None,
                },
                Event {
                    op: Op::TestRestore,
                    target: target.into(),
                    storage: "none".into(),
                    kind,
                    success: false,
                    duration_seconds: seconds,
                    gauges: vec![],
                },
                Notice::failed("test-restore", target, seconds, msg),
            )
        }
    };
    if let Ok(b) = serde_json::to_vec_pretty(&last) {
        if let Err(e) = sink::write_atomic(&last_test_restore_path(cfg, target), &b) {
            ui.warn(format!("cannot keep the test-restore result: {e:#}"));
        }
    }
    metrics::record(cfg, &[event], ui);
    notify::notify(cfg, &notice, ui);
}

/// After a prune (the command or `prune_after_run`): one event per target and storage
/// planned; a storage where any removal failed counts as a failure.
pub fn after_prune(cfg: &Config, prune: &crate::engine::prune::Prune, seconds: f64, ui: &Ui) {
    use crate::engine::prune::Outcome;
    // The audit trail: one line per deletion attempted.
    let acts: Vec<audit::Act> = prune
        .entries()
        .filter_map(|e| {
            let outcome = match e.result? {
                Outcome::Removed => "ok",
                Outcome::Retained => "retained",
                Outcome::Failed => "failed",
            };
            Some(audit::Act {
                command: "prune".into(),
                target: Some(e.target.clone()),
                backup_id: Some(e.id.clone()),
                storage: Some(e.storage.clone()),
                outcome: outcome.into(),
                error: e.detail.clone().filter(|_| outcome != "ok"),
                details: serde_json::json!({
                    "what": if e.wal { "wal" } else if e.incomplete { "incomplete backup" } else { "backup" },
                    "reasons": e.reasons,
                    "size_bytes": e.size_bytes,
                }),
            })
        })
        .collect();
    audit::record(cfg, &acts, ui);
    let events: Vec<Event> = prune
        .plans
        .iter()
        .map(|p| {
            let removed = p
                .entries
                .iter()
                .filter(|e| matches!(e.result, Some(Outcome::Removed)));
            let (n, bytes) = removed.fold((0u64, 0u64), |(n, b), e| (n + 1, b + e.size_bytes));
            Event {
                op: Op::Prune,
                target: p.target.clone(),
                storage: p.storage.clone(),
                kind: kind_of(cfg, &p.target),
                success: !p
                    .entries
                    .iter()
                    .any(|e| matches!(e.result, Some(Outcome::Failed))),
                duration_seconds: seconds,
                gauges: vec![("deleted_backups", n as f64), ("freed_bytes", bytes as f64)],
            }
        })
        .collect();
    if !events.is_empty() {
        metrics::record(cfg, &events, ui);
    }
}
