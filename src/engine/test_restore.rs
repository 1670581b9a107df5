//! `backup test-restore`: prove that a backup restores and that what comes back is right.
//!
//! This module chooses the backup (`latest`, an id, or a random one within a window),
//! hands it to the engine's [`ScratchEngine`], which restores it into a throwaway place
//! that is always removed and checks what came back, then judges the restore time
//! against the RTO and writes the report. What is checked is the engine's business:
//! for PostgreSQL, row counts, foreign keys, freshness columns and the operator's SQL.

use crate::config::{Config, TestRestoreConfig};
use crate::db::{Check, ScratchEngine, ScratchRequest, Target};
use crate::engine::{catalog, restore};
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::{self, Storage};
use crate::ui::Ui;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const DEFAULT_RTO: &str = "2h";
pub const DEFAULT_FRESHNESS_MAX_LAG: &str = "26h";

pub struct TestRestoreRequest {
    /// An id (or prefix), `latest` or `random`.
    pub which: String,
    /// Only backups that finished within this long before now.
    pub within: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRestoreReport {
    pub target: String,
    pub id: String,
    pub storage: String,
    pub kind: String,
    pub backup_finished_at: DateTime<Utc>,
    pub size_bytes: u64,
    /// Where it was restored: `temporary cluster (PostgreSQL 15)` or `database X on URL`.
    pub scratch: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub restore_seconds: f64,
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl TestRestoreReport {
    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

impl TestRestoreReport {
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: &Manifest,
        storage: &str,
        scratch: String,
        started_at: chrono::DateTime<Utc>,
        t0: Instant,
        restore_seconds: f64,
        checks: Vec<Check>,
    ) -> TestRestoreReport {
        TestRestoreReport {
            target: m.target.clone(),
            id: m.id.clone(),
            storage: storage.to_string(),
            kind: m.kind.to_string(),
            backup_finished_at: m.finished_at,
            size_bytes: m.size_bytes(),
            scratch,
            started_at,
            finished_at: Utc::now(),
            duration_seconds: t0.elapsed().as_secs_f64(),
            restore_seconds,
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

/// Chooses the backup: `latest`, an id, or a uniformly random good one in the window.
pub fn choose(
    t: &Target,
    which: &str,
    within: Option<Duration>,
) -> Result<(Box<dyn Storage>, Manifest)> {
    let (cfg, tcfg, target) = (t.config, t.cfg, t.name);
    let cutoff = within
        .and_then(|w| chrono::Duration::from_std(w).ok())
        .map(|w| Utc::now() - w);
    let in_window = |m: &Manifest| !matches!(cutoff, Some(c) if m.finished_at < c);
    let window_text = || {
        within
            .map(|w| format!(" within the last {}", crate::duration::human(w)))
            .unwrap_or_default()
    };
    if which != "random" {
        let (s, m) = restore::locate(t, which, None)?;
        if !in_window(&m) {
            return Err(Fail::CheckFailed(format!(
                "backup `{which}` of target `{target}` is {} ({}), not{}: the newest backups are not being taken or kept",
                m.id,
                m.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                window_text()
            ))
            .into());
        }
        return Ok((s, m));
    }
    let mut ids = BTreeSet::new();
    let mut errors = Vec::new();
    for n in &tcfg.all_storages() {
        match storage::open(cfg, n).and_then(|s| catalog::scan(s.as_ref(), target)) {
            Ok(cat) => ids.extend(
                cat.backups
                    .iter()
                    .filter(|m| in_window(m))
                    .map(|m| m.id.clone()),
            ),
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    use rand::seq::SliceRandom;
    let Some(id) = ids.choose(&mut rand::thread_rng()) else {
        let mut msg = format!(
            "no complete backup of target `{target}`{} on [{}]",
            window_text(),
            tcfg.all_storages().join(", ")
        );
        if !errors.is_empty() {
            msg.push_str(&format!(" (could not read: {})", errors.join("; ")));
        }
        return Err(Fail::CheckFailed(msg).into());
    };
    restore::locate(t, id, None)
}

/// Runs the test restore. Errors before the restore (no backup, no server binaries)
/// are returned as errors; everything from the restore on is a check in the report.
pub fn run(
    t: &Target,
    engine: &mut dyn ScratchEngine,
    req: &TestRestoreRequest,
    ui: &Ui,
) -> Result<TestRestoreReport> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let trc: TestRestoreConfig = t.config.test_restore_for(t.name);
    let rto = crate::duration::parse(trc.rto.as_deref().unwrap_or(DEFAULT_RTO))
        .map_err(|e| Fail::Config(format!("test_restore.rto: {e}")))?;
    let max_lag = crate::duration::parse(
        trc.freshness_max_lag
            .as_deref()
            .unwrap_or(DEFAULT_FRESHNESS_MAX_LAG),
    )
    .map_err(|e| Fail::Config(format!("test_restore.freshness_max_lag: {e}")))?;
    let checks_sql = match &trc.checks_sql {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            Fail::Config(format!(
                "cannot read test_restore.checks_sql {}: {e}",
                p.display()
            ))
        })?),
        None => None,
    };

    if trc.benchmark_sql.as_ref().is_some_and(|q| !q.is_empty()) && !engine.runs_benchmarks() {
        return Err(Fail::Config(format!(
            "test_restore.benchmark_sql of target `{}`: {} targets do not run benchmark queries; remove the key",
            t.name, t.cfg.engine
        ))
        .into());
    }
    let (storage, m) = choose(t, &req.which, req.within)?;
    ui.info(format!(
        "test-restore of {} {} ({}, taken {}) from `{}`",
        m.target,
        m.id,
        crate::duration::bytes(m.size_bytes()),
        m.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
        storage.name()
    ));
    let sreq = ScratchRequest {
        settings: &trc,
        max_lag,
        checks_sql: checks_sql.as_deref(),
    };
    let out = engine.test_restore(t, storage.as_ref(), &m, &sreq, ui)?;
    let mut checks = out.checks;
    // The RTO check goes before the benchmark timings, which read beside it.
    let at = checks
        .iter()
        .position(|c| c.name.starts_with("benchmark"))
        .unwrap_or(checks.len());
    checks.insert(at, rto_check(out.restored, out.restore_seconds, rto));
    Ok(TestRestoreReport::new(
        &m,
        storage.name(),
        out.place,
        started_at,
        t0,
        out.restore_seconds,
        checks,
    ))
}

/// The restore step of a scratch test-restore, shared by the engines that restore
/// through `engine::restore` into their scratch place: restores backup `m` from
/// `storage` with `opts`, timed. Returns (restored, seconds, the `restore` check).
pub fn timed_restore(
    t: &Target,
    engine: &mut dyn crate::db::LogicalEngine,
    storage: &dyn Storage,
    m: &Manifest,
    opts: crate::db::RestoreOptions,
    temp_dir: Option<PathBuf>,
    ui: &Ui,
) -> (bool, f64, Check) {
    timed(storage, m, opts, temp_dir, |req| {
        restore::restore(t, engine, req, ui)
    })
}

/// [`timed_restore`] for engines whose backup is a set of streams.
pub fn timed_restore_set(
    t: &Target,
    engine: &mut dyn crate::db::StreamSetEngine,
    storage: &dyn Storage,
    m: &Manifest,
    opts: crate::db::RestoreOptions,
    temp_dir: Option<PathBuf>,
    ui: &Ui,
) -> (bool, f64, Check) {
    timed(storage, m, opts, temp_dir, |req| {
        crate::engine::stream_set::restore(t, engine, req, ui)
    })
}

fn timed(
    storage: &dyn Storage,
    m: &Manifest,
    opts: crate::db::RestoreOptions,
    temp_dir: Option<PathBuf>,
    run: impl FnOnce(restore::RestoreRequest) -> Result<restore::RestoreOutcome>,
) -> (bool, f64, Check) {
    let req = restore::RestoreRequest {
        which: m.id.clone(),
        storage: Some(storage.name().to_string()),
        opts,
        yes: true,
        dry_run: false,
        check_counts: false,
        temp_dir,
        deleted: false,
    };
    let started = Instant::now();
    let restored = run(req);
    let seconds = started.elapsed().as_secs_f64();
    let check = match &restored {
        Ok(_) => Check::new(
            "restore",
            true,
            format!(
                "verified and restored in {}",
                crate::duration::human(Duration::from_secs_f64(seconds))
            ),
        ),
        Err(e) => Check::new("restore", false, format!("{e:#}")),
    };
    (restored.is_ok(), seconds, check)
}

/// The restored counts (the engine's `count_rows`) against the manifest's, for the
/// entries the engine says this restore covers. `name` is the check's name, `units`
/// what is counted in what (`("collection", "document")`).
pub fn counts_check(
    eng: &mut dyn crate::db::LogicalEngine,
    opts: &crate::db::RestoreOptions,
    m: &Manifest,
    name: &str,
    units: (&str, &str),
) -> Check {
    let (outer, inner) = units;
    let got = match eng.count_rows(opts) {
        Ok(g) => g,
        Err(e) => return Check::new(name, false, format!("{e:#}")),
    };
    let mut wrong = Vec::new();
    let (mut containers, mut items) = (0, 0);
    for w in m.database.tables.iter().filter(|t| eng.compares(opts, t)) {
        let Some(rows) = w.rows else { continue };
        containers += 1;
        items += rows;
        match got
            .iter()
            .find(|g| g.schema == w.schema && g.name == w.name)
        {
            Some(g) if g.rows == Some(rows) => {}
            Some(g) => wrong.push(format!(
                "{}.{} has {} {inner}(s), the backup had {rows}",
                w.schema,
                w.name,
                g.rows.unwrap_or(0)
            )),
            None => wrong.push(format!("{}.{} is missing", w.schema, w.name)),
        }
    }
    let mut c = if wrong.is_empty() {
        Check::new(
            name,
            true,
            format!("{containers} {outer}(s), {items} {inner}(s) match the backup"),
        )
    } else {
        Check::new(name, false, wrong.join("; "))
    };
    c.figures = serde_json::json!({ format!("{outer}s"): containers, format!("{inner}s"): items });
    c
}

fn rto_check(restored: bool, restore_seconds: f64, rto: Duration) -> Check {
    Check {
        name: "rto".into(),
        passed: restored && restore_seconds < rto.as_secs_f64(),
        detail: format!(
            "restore took {} (RTO {})",
            crate::duration::human(Duration::from_secs_f64(restore_seconds)),
            crate::duration::human(rto)
        ),
        figures: serde_json::json!({ "seconds": restore_seconds, "rto_seconds": rto.as_secs() }),
    }
}

pub fn last_test_restore_path(cfg: &Config, target: &str) -> PathBuf {
    cfg.state_dir()
        .join("test-restore")
        .join(format!("{target}.json"))
}

/// The last test-restore of a target, as `watch::after_test_restore` keeps it.
pub fn last_test_restore(cfg: &Config, target: &str) -> Option<LastTestRestore> {
    let b = std::fs::read(last_test_restore_path(cfg, target)).ok()?;
    serde_json::from_slice(&b).ok()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastTestRestore {
    pub at: chrono::DateTime<chrono::Utc>,
    pub passed: bool,
    /// The backup tested (None when the run failed before choosing one).
    pub id: Option<String>,
    pub storage: Option<String>,
    pub summary: String,
    pub report: Option<TestRestoreReport>,
}

pub fn render(r: &TestRestoreReport) -> String {
    let mut s = format!(
        "test-restore {} {} ({}, {}, taken {}) from {}\ninto {}\n\n",
        r.target,
        r.id,
        r.kind,
        crate::duration::bytes(r.size_bytes),
        r.backup_finished_at.format("%Y-%m-%d %H:%M:%SZ"),
        r.storage,
        r.scratch
    );
    let width = r
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(5)
        .min(60);
    for c in &r.checks {
        s.push_str(&format!(
            "{}  {:<width$}  {}\n",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail,
        ));
    }
    let failed = r.failed_checks().len();
    s.push_str(&format!(
        "\n{}: {} of {} check(s) passed in {}; the scratch copy was removed\n",
        if r.passed { "PASSED" } else { "FAILED" },
        r.checks.len() - failed,
        r.checks.len(),
        crate::duration::human(Duration::from_secs_f64(r.duration_seconds))
    ));
    s
}
