//! Shared locks per backup, so a prune never deletes a backup a restore, test-restore,
//! pitr, copy or verify on this host is reading.
//!
//! flock(2) on `<state_dir>/readers/<target>/<backup id>.lock`: readers hold it shared
//! for as long as they read; prune takes it exclusively (without waiting) for every
//! backup it plans to remove and holds it until the deletions are done. A backup whose
//! lock prune cannot take is kept, and the plan says which reader holds it. A reader
//! that finds the backup being removed by a running prune fails at once with that
//! reason instead of reading half-deleted objects. The kernel drops a dead process's
//! lock. Readers on other hosts are not seen: the lock is local to the state folder.

use crate::error::Fail;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A shared (reader) or exclusive (prune) hold on one backup; released on drop.
pub struct BackupLock {
    _file: Option<File>,
}

fn path(state_dir: &Path, target: &str, id: &str) -> PathBuf {
    state_dir
        .join("readers")
        .join(target)
        .join(format!("{id}.lock"))
}

fn open(p: &Path) -> Result<File> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .with_context(|| format!("opening {}", p.display()))
}

fn try_flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: a valid open descriptor.
    unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) == 0 }
}

/// Holds backup `id` of `target` for reading. Fails (exit 4) when a prune is removing it.
pub fn read(state_dir: &Path, target: &str, id: &str, what: &str) -> Result<BackupLock> {
    let p = path(state_dir, target, id);
    // A restore must never fail because the state folder cannot be written (a
    // read-only host at 3 a.m.): it goes on without the lock, and says what that risks.
    let mut f = match open(&p) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warning: no reader lock on {target} {id} ({e:#}): a prune on this host could remove it meanwhile"
            );
            return Ok(BackupLock { _file: None });
        }
    };
    if !try_flock(&f, libc::LOCK_SH) {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        return Err(Fail::Locked(format!(
            "backup {target} {id} is being removed by a running prune ({}); pick another backup",
            holder.trim()
        ))
        .into());
    }
    // Shared: several readers may write here; the last one's line is what a prune shows.
    let _ = f.set_len(0);
    let _ = writeln!(
        f,
        "{what}, pid {}, since {}",
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    Ok(BackupLock { _file: Some(f) })
}

/// For prune: holds backup `id` exclusively, or says which reader holds it.
pub fn for_removal(
    state_dir: &Path,
    target: &str,
    id: &str,
) -> std::result::Result<BackupLock, String> {
    let p = path(state_dir, target, id);
    let mut f = open(&p).map_err(|e| format!("{e:#}"))?;
    if try_flock(&f, libc::LOCK_EX) {
        let _ = f.set_len(0);
        let _ = writeln!(f, "backup prune, pid {}", std::process::id());
        return Ok(BackupLock { _file: Some(f) });
    }
    let mut holder = String::new();
    let _ = f.read_to_string(&mut holder);
    Err(holder.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_and_prune_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let r = read(dir.path(), "pg", "20261130T010000Z", "backup restore").unwrap();
        let held = for_removal(dir.path(), "pg", "20261130T010000Z")
            .err()
            .unwrap();
        assert!(held.contains("backup restore"), "{held}");
        // A second reader is fine.
        let r2 = read(dir.path(), "pg", "20261130T010000Z", "backup verify").unwrap();
        drop((r, r2));
        let p = for_removal(dir.path(), "pg", "20261130T010000Z").unwrap();
        let e = read(dir.path(), "pg", "20261130T010000Z", "x")
            .err()
            .unwrap();
        assert!(format!("{e}").contains("being removed"), "{e}");
        drop(p);
        read(dir.path(), "pg", "20261130T010000Z", "x").unwrap();
        // An unwritable state folder costs the lock, never the read.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        read(&file, "pg", "20261130T010000Z", "x").unwrap();
    }
}
