//! `backup restore`: verify first, then touch the database.
//!
//! The artifact is read back in full and checked (size, SHA-256, whole gzip stream,
//! the engine's own reader) before the database is touched; from S3 it is downloaded
//! to a temporary file on the way. Plain dumps replay through psql in one transaction
//! with ON_ERROR_STOP, so a failed restore leaves the database as it was. Afterwards
//! the restored tables' row counts are compared with the manifest's.

use crate::compress::Compression;
use crate::db::{LogicalEngine, RestoreOptions, Target};
use crate::engine::{catalog, verify};
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::{self, Storage};
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub struct RestoreRequest {
    pub which: String,
    pub storage: Option<String>,
    pub opts: RestoreOptions,
    pub yes: bool,
    pub dry_run: bool,
    pub check_counts: bool,
    pub temp_dir: Option<PathBuf>,
    /// Read the storage as it was before objects were deleted (`--deleted`).
    pub deleted: bool,
}

#[derive(Debug, Serialize)]
pub struct RestoreOutcome {
    pub target: String,
    pub id: String,
    pub storage: String,
    pub database: String,
    pub dry_run: bool,
    pub plan: Vec<String>,
    pub tables_checked: usize,
    pub duration_seconds: f64,
    /// Statistics rebuilt after the restore (None: the engine has none to rebuild).
    pub analyze: Option<crate::db::Analyze>,
}

/// Finds a backup on the named storage, or on the first of the target's storages that
/// has it (local storages first: faster to read).
pub fn locate(t: &Target, which: &str, only: Option<&str>) -> Result<(Box<dyn Storage>, Manifest)> {
    locate_in(t, which, only, false)
}

/// `locate`, optionally in the `--deleted` view of the named storage (the ransomware
/// runbook: backups hidden behind delete markers).
pub fn locate_in(
    t: &Target,
    which: &str,
    only: Option<&str>,
    deleted: bool,
) -> Result<(Box<dyn Storage>, Manifest)> {
    let (cfg, target) = (t.config, t.name);
    let names: Vec<String> = match only {
        Some(s) => {
            cfg.storage(s)?;
            vec![s.to_string()]
        }
        None if deleted => {
            return Err(Fail::Usage(
                "--deleted reads one versioned S3 storage: name it with --storage".into(),
            )
            .into())
        }
        None => t.readable_storages_local_first(),
    };
    let mut errors = Vec::new();
    let mut best: Option<(Box<dyn Storage>, Manifest)> = None;
    for n in &names {
        let opened = if deleted {
            storage::open_deleted(cfg, n)
        } else {
            storage::open(cfg, n)
        };
        let s = match opened {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{n}: {e:#}"));
                continue;
            }
        };
        match catalog::scan(s.as_ref(), target) {
            Ok(cat) => {
                if let Some(m) = catalog::pick(&cat, which) {
                    // For `latest`, the newest across storages wins.
                    let better = match &best {
                        None => true,
                        Some((_, b)) => which == "latest" && m.id > b.id,
                    };
                    if better {
                        best = Some((s, m.clone()));
                    }
                }
            }
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    if let Some(b) = best {
        return Ok(b);
    }
    let mut msg = format!(
        "no backup `{which}` of target `{target}` on storage(s) [{}]; run `backup list {target}`",
        names.join(", ")
    );
    if !errors.is_empty() {
        msg.push_str(&format!(" (could not read: {})", errors.join("; ")));
        anyhow::bail!(msg);
    }
    Err(Fail::Usage(msg).into())
}

pub fn confirm(ui: &Ui, question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Fail::NotConfirmed(format!(
            "{question}: refusing without --yes because stdin is not a terminal"
        ))
        .into());
    }
    let _ = ui;
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Fail::NotConfirmed("not confirmed; nothing was changed".into()).into())
    }
}

/// Restores a logical backup of target `t` with its engine.
pub fn restore(
    t: &Target,
    engine: &mut dyn LogicalEngine,
    mut req: RestoreRequest,
    ui: &Ui,
) -> Result<RestoreOutcome> {
    let started = std::time::Instant::now();
    let (storage, m) = locate_in(t, &req.which, req.storage.as_deref(), req.deleted)?;
    // Held until the restore is done: a prune keeps this backup meanwhile.
    let _reading =
        crate::engine::readers::read(&t.config.state_dir(), t.name, &m.id, "backup restore")?;
    req.opts.backup_id = Some(m.id.clone());
    let database = engine
        .restore_precheck(&req.opts, &m.format)
        .context("checking the restore target before touching anything")?;

    let art = m
        .artifacts
        .first()
        .ok_or_else(|| Fail::Verify(format!("backup {} lists no artifact", m.id)))?
        .clone();
    let mut plan = plan_head(&m, storage.as_ref());
    plan.push(format!(
        "verify {} (size, SHA-256, whole stream) before touching the database",
        art.name
    ));
    plan.push(engine.restore_plan(&req.opts, &m.format, &database));
    if req.check_counts {
        plan.push("then compare restored row counts with the manifest".into());
    }
    let (mut out, go) = present_plan(&m, storage.as_ref(), &database, plan, &req, ui)?;
    if !go {
        return Ok(out);
    }

    // Verify (and, for remote storages, download) before touching the database.
    let tmp = temp_dir(req.temp_dir.as_deref())?;
    let path = fetch_verified(t, storage.as_ref(), &m, &art, tmp.path(), &*engine, ui)?;

    ui.info(format!("restoring {} into `{database}`", m.id));
    engine.restore(
        &path,
        Compression::from_manifest(&art.compression),
        &req.opts,
    )?;
    out.analyze = rebuild_statistics(engine, &req.opts, &m, ui);

    if req.check_counts {
        out.tables_checked = compare_counts(engine, &req.opts, &m, &database, ui)?;
    }
    out.duration_seconds = started.elapsed().as_secs_f64();
    ui.info(format!(
        "restored {} into `{database}` in {}",
        m.id,
        crate::duration::human(started.elapsed())
    ));
    Ok(out)
}

/// Rebuilds the planner's statistics of what was restored. The data is in by now, so a
/// failure is a warning (and `done: false` in the outcome), not a failed restore.
pub fn rebuild_statistics(
    engine: &mut dyn LogicalEngine,
    opts: &RestoreOptions,
    m: &Manifest,
    ui: &Ui,
) -> Option<crate::db::Analyze> {
    let tables: Vec<_> = m
        .database
        .tables
        .iter()
        .filter(|t| engine.compares(opts, t))
        .cloned()
        .collect();
    match engine.rebuild_statistics(opts, &tables, ui) {
        Ok(Some(a)) => {
            ui.info(format!("statistics: {}", a.detail));
            Some(a)
        }
        Ok(None) => None,
        Err(e) => {
            ui.warn(format!(
                "restored, but rebuilding the statistics failed (the first queries may be slow; run ANALYZE): {e:#}"
            ));
            Some(crate::db::Analyze {
                done: false,
                detail: format!("failed: {e:#}"),
                stages: 0,
                tables: 0,
                seconds: 0.0,
            })
        }
    }
}

/// The first lines of a restore plan: which backup, from where.
pub fn plan_head(m: &Manifest, storage: &dyn Storage) -> Vec<String> {
    vec![
        format!(
            "backup {} of target {} ({}, {} {}, {}, taken {}{})",
            m.id,
            m.target,
            m.engine,
            m.kind,
            m.format,
            crate::duration::bytes(m.size_bytes()),
            m.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
            m.tag
                .as_deref()
                .map(|t| format!(", tag {t}"))
                .unwrap_or_default()
        ),
        format!("from storage `{}` ({})", storage.name(), storage.location()),
    ]
}

/// A temporary folder for downloads, in `dir` when given.
pub fn temp_dir(dir: Option<&std::path::Path>) -> Result<tempfile::TempDir> {
    let b = tempfile::Builder::new().prefix("backup-restore-").clone();
    Ok(match dir {
        Some(d) => b.tempdir_in(d)?,
        None => b.tempdir()?,
    })
}

/// Downloads an artifact (remote storages) into `tmp` and verifies it in full (size,
/// SHA-256, whole stream, the engine's reader); a failure is exit 3 and names where
/// else the backup may be intact. Returns the local path.
pub fn fetch_verified(
    t: &Target,
    storage: &dyn Storage,
    m: &Manifest,
    art: &crate::manifest::Artifact,
    tmp: &std::path::Path,
    engine: &dyn LogicalEngine,
    ui: &Ui,
) -> Result<PathBuf> {
    use std::io::Read;
    let key = catalog::artifact_key(&m.target, &m.id, &art.name);
    let path = match storage.local_path(&key) {
        Some(p) => p,
        None => {
            let dest = tmp.join(&art.name);
            ui.info(format!(
                "downloading {} from `{}`",
                art.name,
                storage.name()
            ));
            let mut src = match storage.open(&key) {
                Err(e) if crate::storage::is_not_found(&e) => {
                    return Err(refusal(t, storage, m, &[missing(art)]))
                }
                r => r?,
            };
            let mut f = std::fs::File::create(&dest)
                .with_context(|| format!("creating {}", dest.display()))?;
            let mut progress = ui.progress(&format!("download {}", m.id), Some(art.size_bytes));
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf).context("downloading")?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n]).with_context(|| {
                    format!(
                        "writing {} (is the temp folder full? use --temp-dir)",
                        dest.display()
                    )
                })?;
                progress.inc(n as u64);
            }
            progress.finish();
            f.sync_all()?;
            dest
        }
    };
    let file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refusal(t, storage, m, &[missing(art)]))
        }
        r => r.with_context(|| format!("opening {}", path.display()))?,
    };
    let (checks, mut problems) = verify::check_stream(Box::new(file), art, engine, &m.database);
    if let Some(Err(p)) = verify::check_sealed(storage, m, &art.name) {
        problems.push(p);
    }
    if !problems.is_empty() {
        return Err(refusal(t, storage, m, &problems));
    }
    for c in &checks {
        ui.info(format!("verified: {c}"));
    }
    Ok(path)
}

/// A missing artifact is a damaged backup like any other (exit 3), not an I/O error.
fn missing(art: &crate::manifest::Artifact) -> String {
    format!("{} does not exist", art.name)
}

/// Exit 3, naming what is wrong and, at 3 a.m. the next question, where else the
/// backup may be.
fn refusal(t: &Target, storage: &dyn Storage, m: &Manifest, problems: &[String]) -> anyhow::Error {
    let others: Vec<String> = t
        .cfg
        .storages
        .iter()
        .filter(|s| s.as_str() != storage.name())
        .map(|s| format!("--storage {s}"))
        .collect();
    let elsewhere = if others.is_empty() {
        String::new()
    } else {
        format!("; another copy may be intact: try {}", others.join(" or "))
    };
    Fail::Verify(format!(
        "backup {} on `{}` failed verification; the database was not touched: {}{elsewhere}",
        m.id,
        storage.name(),
        problems.join("; ")
    ))
    .into()
}

/// Compares the restored tables' row counts with the manifest's (those the engine
/// says this restore covers); returns how many were compared.
pub fn compare_counts(
    engine: &mut dyn LogicalEngine,
    opts: &RestoreOptions,
    m: &Manifest,
    database: &str,
    ui: &Ui,
) -> Result<usize> {
    if !m.database.tables.iter().any(|t| t.rows.is_some()) {
        return Ok(0);
    }
    let got = engine.count_rows(opts)?;
    let wanted: Vec<_> = m
        .database
        .tables
        .iter()
        .filter(|t| engine.compares(opts, t))
        .collect();
    let mut mismatches = Vec::new();
    for w in &wanted {
        let Some(rows) = w.rows else { continue };
        match got
            .iter()
            .find(|g| g.schema == w.schema && g.name == w.name)
        {
            Some(g) if g.rows == Some(rows) => {}
            Some(g) => mismatches.push(format!(
                "{}.{} has {} rows, the backup had {rows}",
                w.schema,
                w.name,
                g.rows.map(|r| r.to_string()).unwrap_or("?".into())
            )),
            None => mismatches.push(format!(
                "{}.{} is missing after the restore",
                w.schema, w.name
            )),
        }
    }
    if !mismatches.is_empty() {
        return Err(Fail::Verify(format!(
            "restored {} into `{database}` but row counts differ from the backup: {}",
            m.id,
            mismatches.join("; ")
        ))
        .into());
    }
    if !wanted.is_empty() {
        ui.info(format!(
            "row counts of {} table(s) match the backup",
            wanted.len()
        ));
    }
    Ok(wanted.len())
}

/// Prints the plan and builds the outcome; `Ok(None)` after a dry run, else asks for
/// confirmation (or `--yes`) and returns the outcome to fill in.
pub fn present_plan(
    m: &Manifest,
    storage: &dyn Storage,
    database: &str,
    plan: Vec<String>,
    req: &RestoreRequest,
    ui: &Ui,
) -> Result<(RestoreOutcome, bool)> {
    let out = RestoreOutcome {
        target: m.target.clone(),
        id: m.id.clone(),
        storage: storage.name().to_string(),
        database: database.to_string(),
        dry_run: req.dry_run,
        plan: plan.clone(),
        tables_checked: 0,
        duration_seconds: 0.0,
        analyze: None,
    };
    for p in &plan {
        ui.info(format!("plan: {p}"));
    }
    if req.dry_run {
        ui.info("dry run: nothing was changed");
        return Ok((out, false));
    }
    confirm(
        ui,
        &format!("restore backup {} into `{database}`", m.id),
        req.yes,
    )?;
    Ok((out, true))
}
