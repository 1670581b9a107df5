//! `backup status`: are we backed up? The newest good backup of each target on each
//! storage, its age against a limit, and the last test-restore's result.

use crate::config::Config;
use crate::engine::catalog;
use crate::engine::test_restore::last_test_restore;
use crate::storage;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct StorageStatus {
    pub storage: String,
    pub last_id: Option<String>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    pub size_bytes: Option<u64>,
    /// The newest backup's type (`full`, `diff`, `incr`; file-level physical backups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_type: Option<String>,
    /// With typed backups: when the newest full one finished (what a chain restores from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_full_finished_at: Option<DateTime<Utc>>,
    pub backups: usize,
    pub incomplete: usize,
    /// Older than allowed, missing, or unreadable.
    pub stale: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TestRestoreStatus {
    pub at: DateTime<Utc>,
    pub passed: bool,
    pub id: Option<String>,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub max_age_seconds: u64,
    pub storages: Vec<StorageStatus>,
    pub last_test_restore: Option<TestRestoreStatus>,
    pub ok: bool,
}

/// The status of every target (or `only`). A target's newest backup may be as old as
/// `max_age` when given (an explicit `--max-age`), else as its own `max_age` key, else
/// `default_max_age`.
pub fn status(
    cfg: &Config,
    only: Option<&str>,
    max_age: Option<Duration>,
    default_max_age: Duration,
) -> Result<Vec<TargetStatus>> {
    let targets: Vec<String> = match only {
        Some(t) => {
            cfg.target(t)?;
            vec![t.to_string()]
        }
        None => cfg.targets.keys().cloned().collect(),
    };
    let now = Utc::now();
    let mut out = Vec::new();
    for t in targets {
        let tcfg = cfg.target(&t)?;
        // Validated when the config was loaded.
        let max_age = max_age
            .or_else(|| {
                tcfg.max_age
                    .as_deref()
                    .and_then(|a| crate::duration::parse(a).ok())
            })
            .unwrap_or(default_max_age);
        let mut storages = Vec::new();
        for sname in &tcfg.all_storages() {
            let scanned = storage::open(cfg, sname).and_then(|s| catalog::scan(s.as_ref(), &t));
            let st = match scanned {
                Ok(cat) => {
                    let last = cat.backups.last();
                    let age = last.map(|m| (now - m.finished_at).num_seconds());
                    StorageStatus {
                        storage: sname.clone(),
                        last_id: last.map(|m| m.id.clone()),
                        last_finished_at: last.map(|m| m.finished_at),
                        age_seconds: age,
                        size_bytes: last.map(|m| m.size_bytes()),
                        last_type: last.and_then(|m| m.backup_type()).map(str::to_string),
                        last_full_finished_at: last.and_then(|m| m.backup_type()).and_then(|_| {
                            cat.backups
                                .iter()
                                .rev()
                                .find(|m| m.backup_type() == Some("full"))
                                .map(|m| m.finished_at)
                        }),
                        backups: cat.backups.len(),
                        incomplete: cat.incomplete.len(),
                        stale: !matches!(age, Some(a) if a <= max_age.as_secs() as i64),
                        error: None,
                    }
                }
                Err(e) => StorageStatus {
                    storage: sname.clone(),
                    last_id: None,
                    last_finished_at: None,
                    age_seconds: None,
                    size_bytes: None,
                    last_type: None,
                    last_full_finished_at: None,
                    backups: 0,
                    incomplete: 0,
                    stale: true,
                    error: Some(format!("{e:#}")),
                },
            };
            storages.push(st);
        }
        let last_test_restore = last_test_restore(cfg, &t).map(|l| TestRestoreStatus {
            at: l.at,
            passed: l.passed,
            id: l.id,
            summary: l.summary,
        });
        let ok = storages.iter().all(|s| !s.stale);
        out.push(TargetStatus {
            target: t,
            max_age_seconds: max_age.as_secs(),
            storages,
            last_test_restore,
            ok,
        });
    }
    Ok(out)
}
