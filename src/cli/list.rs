use crate::config::Config;
use crate::db::{registry, Target};
use crate::engine::catalog;
use crate::storage;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this target (default: every target in the config).
    pub target: Option<String>,
    /// Only this storage (default: every storage of each target).
    #[arg(long)]
    pub storage: Option<String>,
    /// Only backups with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Also show incomplete backups (no manifest: interrupted or failed runs).
    #[arg(long)]
    pub all: bool,
    /// Ransomware runbook: list the backups whose manifest a delete marker hides on a
    /// versioned S3 storage, whose old versions are still there (restore them with
    /// `restore --deleted`, or bring them back with `undelete`).
    #[arg(long)]
    pub deleted: bool,
    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub target: String,
    pub engine: String,
    pub kind: String,
    pub format: String,
    /// `full`, `diff` or `incr` (file-level physical backups).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<String>,
    /// Backups this one needs (its chain), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub storage: String,
    pub tag: Option<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub duration_seconds: Option<f64>,
    pub size_bytes: u64,
    pub tables: Option<usize>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Physical backups: the point-in-time window the WAL present allows (from the
    /// backup's end to the newest segment of the unbroken WAL run after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable_from: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable_until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_until_segment: Option<String>,
    /// Encrypted copies: the age recipients this storage's copy is sealed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_to: Option<Vec<String>>,
    /// S3 Object Lock of the backup (its first-written object's, the earliest to end),
    /// on storages that lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::storage::ObjectLock>,
}

pub fn execute(cfg: &Config, args: ListArgs, ui: &Ui) -> Result<()> {
    let targets: Vec<String> = match &args.target {
        Some(t) => {
            cfg.target(t)?;
            vec![t.clone()]
        }
        None => cfg.targets.keys().cloned().collect(),
    };
    if let Some(s) = &args.storage {
        cfg.storage(s)?;
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for t in &targets {
        let target = Target::resolve(cfg, t)?;
        let tcfg = target.cfg;
        // An explicit --storage is read even when the target does not name it (a copy
        // made with `backup copy --to` to a storage outside copy_to).
        let names = match &args.storage {
            Some(s) => vec![s.clone()],
            None => tcfg.all_storages(),
        };
        for sname in &names {
            if args.storage.as_ref().is_some_and(|s| s != sname) {
                continue;
            }
            let is_s3 = matches!(
                cfg.storages.get(sname),
                Some(crate::config::StorageConfig::S3(_))
            );
            if args.deleted && !is_s3 && args.storage.is_none() {
                continue; // only versioned buckets keep what was deleted
            }
            let opened = if args.deleted {
                storage::open_deleted(cfg, sname)
            } else {
                storage::open(cfg, sname)
            };
            let s = match opened {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("storage `{sname}`: {e:#}"));
                    continue;
                }
            };
            let cat = match catalog::scan(s.as_ref(), t) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("storage `{sname}` ({}): {e:#}", s.location()));
                    continue;
                }
            };
            let windows = match registry::log_archive(&target) {
                Some(a) => match a.windows(s.as_ref(), t, &cat.backups) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        errors.push(format!("WAL archive on `{sname}`: {e:#}"));
                        None
                    }
                },
                None => None,
            };
            for (i, m) in cat.backups.iter().enumerate() {
                let window = windows
                    .as_ref()
                    .and_then(|w| w.get(i).cloned().flatten())
                    .filter(|_| m.wal.is_some());
                if args
                    .tag
                    .as_ref()
                    .is_some_and(|tag| m.tag.as_ref() != Some(tag))
                {
                    continue;
                }
                let manifest_key = catalog::artifact_key(t, &m.id, crate::manifest::MANIFEST_FILE);
                if args.deleted && !s.is_deleted(&manifest_key) {
                    continue;
                }
                rows.push(Row {
                    id: m.id.clone(),
                    target: m.target.clone(),
                    engine: m.engine.clone(),
                    kind: m.kind.to_string(),
                    format: m.format.clone(),
                    backup_type: m.backup_type().map(str::to_string),
                    depends_on: m.depends_on.clone(),
                    storage: sname.clone(),
                    tag: m.tag.clone(),
                    started_at: Some(m.started_at),
                    finished_at: Some(m.finished_at),
                    duration_seconds: Some(m.duration_seconds),
                    size_bytes: m.size_bytes(),
                    tables: Some(m.database.tables.len()),
                    status: if args.deleted {
                        "deleted".into()
                    } else if m.wal.is_some() && window.is_none() {
                        "no-wal".into()
                    } else {
                        "complete".into()
                    },
                    reason: (m.wal.is_some() && window.is_none())
                        .then(|| "WAL the backup needs is missing from the archive".to_string()),
                    recoverable_from: window.as_ref().map(|_| m.finished_at),
                    recoverable_until: window.as_ref().and_then(|w| w.until),
                    wal_until_segment: window.map(|w| w.until_file),
                    sealed_to: m.encryption.as_ref().map(|e| e.recipients.clone()),
                    object_lock: s.lock_policy().and_then(|_| {
                        let first = m.artifacts.first().map(|a| a.name.as_str());
                        let key = catalog::artifact_key(
                            t,
                            &m.id,
                            first.unwrap_or(crate::manifest::MANIFEST_FILE),
                        );
                        s.lock_of(&key).unwrap_or_else(|e| {
                            errors.push(format!("object lock of {key} on `{sname}`: {e:#}"));
                            None
                        })
                    }),
                });
            }
            if args.all && args.tag.is_none() && !args.deleted {
                for i in &cat.incomplete {
                    rows.push(Row {
                        id: i.id.clone(),
                        target: i.target.clone(),
                        engine: tcfg.engine.clone(),
                        kind: tcfg.kind.clone(),
                        format: String::new(),
                        backup_type: None,
                        depends_on: vec![],
                        storage: sname.clone(),
                        tag: None,
                        started_at: crate::manifest::parse_backup_id(&i.id),
                        finished_at: None,
                        duration_seconds: None,
                        size_bytes: i.size_bytes,
                        tables: None,
                        status: "incomplete".into(),
                        reason: Some(i.reason.clone()),
                        recoverable_from: None,
                        recoverable_until: None,
                        wal_until_segment: None,
                        sealed_to: None,
                        object_lock: None,
                    });
                }
            }
        }
    }
    rows.sort_by(|a, b| (&a.target, &a.id, &a.storage).cmp(&(&b.target, &b.id, &b.storage)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        ui.info("no backups");
    } else {
        println!(
            "{:<18} {:<12} {:<8} {:<9} {:<7} {:<10} {:>10} {:>8} {:<10} TAG",
            "ID", "TARGET", "ENGINE", "KIND", "FORMAT", "STORAGE", "SIZE", "TIME", "STATUS"
        );
        for r in &rows {
            println!(
                "{:<18} {:<12} {:<8} {:<9} {:<7} {:<10} {:>10} {:>8} {:<10} {}",
                r.id,
                r.target,
                r.engine,
                r.kind,
                r.format,
                r.storage,
                crate::duration::bytes(r.size_bytes),
                r.duration_seconds
                    .map(|d| format!("{d:.1}s"))
                    .unwrap_or_else(|| "-".into()),
                r.status,
                r.tag.clone().or(r.reason.clone()).unwrap_or_default()
            );
            if let (Some(f), Some(u)) = (r.recoverable_from, r.recoverable_until) {
                println!(
                    "    point-in-time window: {} .. {} (WAL to {})",
                    f.format("%Y-%m-%d %H:%M:%SZ"),
                    u.format("%Y-%m-%d %H:%M:%SZ"),
                    r.wal_until_segment.as_deref().unwrap_or("?")
                );
            }
            if let Some(ty) = &r.backup_type {
                if r.depends_on.is_empty() {
                    println!("    {ty} backup");
                } else {
                    println!("    {ty} backup; chain: {}", r.depends_on.join(" <- "));
                }
            }
            if let Some(l) = &r.object_lock {
                println!(
                    "    object lock: {} until {}",
                    l.mode,
                    l.retain_until.format("%Y-%m-%d %H:%M:%SZ")
                );
            }
            if let Some(rs) = &r.sealed_to {
                println!("    encrypted with age to: {}", rs.join(", "));
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("could not read every storage: {}", errors.join("; "));
    }
    Ok(())
}
