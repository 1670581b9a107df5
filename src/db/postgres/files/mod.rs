//! File-level physical backups (`kind = "physical"`, `method = "files"`): the tool
//! reads PGDATA itself between `pg_backup_start` and `pg_backup_stop`, the way
//! pgBackRest does, so backups can be full, differential or incremental by file and
//! copied by several workers at once.
//!
//! - `walk.rs`: what of PGDATA is backed up (PostgreSQL's own base-backup exclusions).
//! - `bundle.rs`: files packed into standard tar archives, zstd-compressed
//!   (`pgdata-0001.tar.zst`: `zstd -dc F | tar x` reads one without this tool).
//! - `backup.rs`: `backup run --type full|diff|incr`, change detection, the workers.
//! - `restore.rs`: a chain restored file by file (each bundle read once), `--delta`.
//!
//! The manifest's `database.extra.pgdata` lists every file with its size, mtime and
//! SHA-256, and which backup holds its bytes (`backup`, absent when it is this one);
//! `depends_on` lists those backups, so retention keeps a chain whole.

pub mod backup;
pub mod bundle;
mod plan;
pub mod restore;
mod store;
pub mod walk;

use crate::manifest::Manifest;
use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

/// The manifest `format` of a file-level backup.
pub const FORMAT: &str = "files";
/// The bundle written after `pg_backup_stop`: `global/pg_control`, `backup_label`,
/// `tablespace_map`. Extracting every bundle of a backup in order, this one last,
/// gives a data directory ready for recovery.
pub fn control_bundle(c: crate::compress::Compression) -> String {
    format!("pgdata-control.tar{}", c.ext())
}

/// `full`, `diff` (changes since the last full) or `incr` (since the last backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    #[default]
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn parse(s: &str) -> std::result::Result<BackupType, String> {
        match s {
            "full" => Ok(BackupType::Full),
            "diff" => Ok(BackupType::Diff),
            "incr" => Ok(BackupType::Incr),
            o => Err(format!(
                "`{o}` is not a backup type; use full, diff or incr"
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

/// One file of the data directory as backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to PGDATA, `/`-separated.
    pub path: String,
    /// Bytes stored (the size when the copy began; PostgreSQL's WAL replay makes up for
    /// a file that grew or shrank meanwhile, as with its own base backups).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch, as listed.
    pub mtime_ns: i64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    /// The bundle holding the bytes.
    pub bundle: String,
    /// The backup holding `bundle`; absent when it is this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

impl FileEntry {
    /// The backup whose folder holds this file's bundle.
    pub fn home<'a>(&'a self, m: &'a Manifest) -> &'a str {
        self.backup.as_deref().unwrap_or(&m.id)
    }
}

/// What a file-level backup holds, kept in the manifest (`database.extra.pgdata`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Listing {
    /// Every directory, relative to PGDATA (created empty when they hold nothing).
    pub directories: Vec<String>,
    pub files: Vec<FileEntry>,
    /// Whole seconds (the database's clock) when listing began: files last modified
    /// a full second before are safe to compare by size and mtime next time.
    pub listed_at: i64,
    /// `full`, `diff` or `incr`.
    pub backup_type: BackupType,
    /// The backup this one was compared with (none for a full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<String>,
    /// Why this backup took more than its type asked (e.g. an incr that became a full).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The listing of a file-level backup's manifest.
pub fn listing(m: &Manifest) -> Result<Listing> {
    let v = m
        .database
        .extra
        .get("pgdata")
        .ok_or_else(|| anyhow!("backup {} has no file list (database.extra.pgdata)", m.id))?;
    serde_json::from_value(v.clone())
        .map_err(|e| anyhow!("backup {}: the file list is unreadable: {e}", m.id))
}

/// Whether `m` is a file-level backup.
pub fn is_files(m: &Manifest) -> bool {
    m.format == FORMAT
}

/// The backup type of a file-level backup (`full`, `diff`, `incr`).
pub fn backup_type(m: &Manifest) -> Option<&str> {
    if !is_files(m) {
        return None;
    }
    m.backup_type()
}

/// `pitr --delta` into a non-empty directory: only a stopped cluster's data directory.
pub fn check_delta_dir(dir: &std::path::Path, running: bool) -> Result<()> {
    use crate::error::Fail;
    if running {
        return Err(Fail::Usage(format!(
            "refusing --delta: a server is running on {} (postmaster.pid); stop it first",
            dir.display()
        ))
        .into());
    }
    if !dir.join("PG_VERSION").exists() {
        return Err(Fail::Usage(format!(
            "refusing --delta: {} is not empty and holds no PG_VERSION, so it is not a PostgreSQL data directory; \
             give a stopped cluster's data directory or an empty one",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// Restores a file-level backup (any type) for `pitr`. On a failure or a signal the
/// directory is left unstartable: emptied, or with `--delta` without pg_control (a
/// second `--delta` run finishes the job cheaply). Returns the files in place.
pub fn restore_for_pitr(
    storage: &dyn crate::storage::Storage,
    m: &Manifest,
    data_dir: &std::path::Path,
    delta: bool,
    jobs: Option<u32>,
    ui: &crate::ui::Ui,
) -> Result<u64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // A broken chain is refused before the directory is touched: with --delta it is a
    // stopped cluster's, which must not lose its pg_control over a missing link.
    restore::check_chain(storage, m)?;
    let dir = data_dir.to_path_buf();
    let busy = Arc::new(AtomicBool::new(true));
    let still = busy.clone();
    let guard = crate::engine::cleanup::CleanupGuard::new(move || {
        if crate::engine::cleanup::terminating() {
            // The workers stop at their next file; wait for them, or a file written
            // after the cleanup would stay.
            let t0 = std::time::Instant::now();
            while still.load(Ordering::SeqCst) && t0.elapsed() < std::time::Duration::from_secs(10)
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            eprintln!("interrupted: {}", make_unstartable(&dir, delta));
        }
    });
    let jobs = jobs.unwrap_or(2).max(1) as usize;
    let res = restore::restore(storage, m, data_dir, delta, jobs, ui);
    busy.store(false, std::sync::atomic::Ordering::SeqCst);
    match res {
        Ok(r) => {
            drop(guard);
            ui.info(format!(
                "restored {} file(s) ({}) from {} bundle(s) of backup(s) {}{}",
                r.files,
                crate::duration::bytes(r.bytes),
                r.bundles,
                r.chain.join(", "),
                if delta {
                    format!(
                        "; --delta kept {} unchanged file(s) and removed {} the backup does not have",
                        r.unchanged, r.removed
                    )
                } else {
                    String::new()
                }
            ));
            Ok(r.files + r.unchanged)
        }
        Err(e) => {
            if crate::engine::cleanup::terminating() {
                return Err(e); // the guard cleans up and says so
            }
            let what = make_unstartable(data_dir, delta);
            drop(guard);
            Err(e.context(format!("restoring backup {} ({what})", m.id)))
        }
    }
}

/// Leaves a half-restored data directory so that no server can start on it.
fn make_unstartable(dir: &std::path::Path, delta: bool) -> String {
    if delta {
        let _ = std::fs::remove_file(dir.join("global/pg_control"));
        return format!(
            "{} was not fully restored; its global/pg_control was removed so no server starts on it: run the same pitr --delta again",
            dir.display()
        );
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    format!(
        "the backup was not fully restored; {} was emptied",
        dir.display()
    )
}

/// `verify` of one bundle (decompressed): every file this backup placed in it is
/// there with its size and SHA-256.
pub fn check_bundle(
    name: &str,
    r: &mut dyn std::io::Read,
    facts: &crate::manifest::DatabaseFacts,
) -> Result<String> {
    use sha2::Digest;
    let list: Listing = serde_json::from_value(facts.extra["pgdata"].clone())
        .map_err(|e| anyhow!("the manifest's file list is unreadable: {e}"))?;
    let mut wanted: std::collections::BTreeMap<&str, &FileEntry> = list
        .files
        .iter()
        .filter(|f| f.backup.is_none() && f.bundle == name)
        .map(|f| (f.path.as_str(), f))
        .collect();
    let total = wanted.len();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut h = sha2::Sha256::new();
        let n = std::io::copy(&mut entry, &mut HashWriter(&mut h))?;
        let got = hex::encode(h.finalize());
        match wanted.remove(path.as_str()) {
            Some(f) if f.size == n && f.sha256 == got => {}
            Some(f) => anyhow::bail!(
                "{path}: {n} bytes with sha256 {got}, the manifest says {} bytes with {}",
                f.size,
                f.sha256
            ),
            None => anyhow::bail!("{path} is in the bundle but not in the manifest's file list"),
        }
    }
    if let Some(p) = wanted.keys().next() {
        anyhow::bail!(
            "{} file(s) of the manifest are missing from the bundle (e.g. {p})",
            wanted.len()
        );
    }
    Ok(format!(
        "{total} file(s), each one's size and SHA-256 match"
    ))
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
