//! What of PGDATA a file-level backup copies: everything PostgreSQL's own base backup
//! copies (src/backend/backup/basebackup.c), so a restore is what `pg_basebackup`
//! would have given.
//!
//! Left out: the contents of pg_wal (the archive holds the WAL), pg_replslot,
//! pg_dynshmem, pg_notify, pg_serial, pg_snapshots, pg_stat_tmp and pg_subtrans (their
//! directories are kept, empty); postmaster.pid/.opts, an old backup_label,
//! tablespace_map or backup_manifest, pg_internal.init, *.tmp leftovers; temporary
//! files (`pgsql_tmp*`) and temporary relations (`t<backend>_<relfilenode>`); and every
//! fork of an unlogged relation except its init fork, which PostgreSQL copies over the
//! main fork at the end of recovery (the table comes back empty, as after a crash).

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Directories whose contents are not backed up (the directory itself is).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files never backed up, wherever they are.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
];

/// A file found in PGDATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative to PGDATA, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    pub directories: Vec<String>,
    /// Sorted by path.
    pub files: Vec<Found>,
    /// Unlogged-relation forks left out (their init forks are kept).
    pub unlogged_skipped: usize,
}

/// Lists PGDATA. A file or directory that vanishes while being listed is left out
/// (PostgreSQL dropped it; WAL replay agrees).
pub fn walk(pgdata: &Path) -> Result<Walk> {
    let mut w = Walk::default();
    let mut stack: Vec<(PathBuf, String)> = vec![(pgdata.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "listing {} (run backup as the cluster's OS user, or initdb --allow-group-access and add this user to its group)",
                        dir.display()
                    )
                })
            }
        };
        let mut names: Vec<(String, std::fs::Metadata)> = Vec::new();
        for e in rd {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Follow symlinks (pg_wal may be one); one that points nowhere is skipped.
            match std::fs::metadata(e.path()) {
                Ok(md) => names.push((name, md)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(err).with_context(|| format!("reading {}", e.path().display()))
                }
            }
        }
        let init_forks: BTreeSet<String> = names
            .iter()
            .filter_map(|(n, _)| n.strip_suffix("_init").map(str::to_string))
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
            .collect();
        for (name, md) in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if name.starts_with("pgsql_tmp") {
                continue;
            }
            if md.is_dir() {
                w.directories.push(path.clone());
                if rel.is_empty() && EMPTY_DIRS.contains(&name.as_str()) {
                    if name == "pg_wal" {
                        w.directories.push("pg_wal/archive_status".into());
                    }
                    continue;
                }
                stack.push((dir.join(&name), path));
                continue;
            }
            if !md.is_file() {
                continue; // sockets, fifos
            }
            if SKIP_FILES.contains(&name.as_str()) && rel.is_empty()
                || name.starts_with("pg_internal.init")
            {
                continue;
            }
            if in_database_dir(&rel) {
                if is_temp_relation(&name) {
                    continue;
                }
                if let Some(node) = relfilenode(&name) {
                    if init_forks.contains(node) && !name.ends_with("_init") {
                        w.unlogged_skipped += 1;
                        continue;
                    }
                }
            }
            w.files.push(Found {
                path,
                size: md.len(),
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            });
        }
    }
    w.directories.sort();
    w.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(w)
}

/// `base/<oid>` (or a tablespace's database directory): where relation files live.
fn in_database_dir(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    (parts.len() == 2 && parts[0] == "base") || (parts.first() == Some(&"pg_tblspc"))
}

/// The relfilenode of a relation file name (`16384`, `16384.1`, `16384_fsm`...).
fn relfilenode(name: &str) -> Option<&str> {
    let end = name
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(name.len());
    let (node, rest) = name.split_at(end);
    if node.is_empty() {
        return None;
    }
    let fork_ok = rest.is_empty()
        || ["_fsm", "_vm", "_init"]
            .iter()
            .any(|f| rest == *f || rest.strip_prefix(f).is_some_and(is_segment_suffix))
        || is_segment_suffix(rest);
    fork_ok.then_some(node)
}

fn is_segment_suffix(s: &str) -> bool {
    s.strip_prefix('.')
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

/// `t<backend>_<relfilenode>[_fork][.segment]`: a temporary relation.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty() && backend.chars().all(|c| c.is_ascii_digit()) && relfilenode(rel).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn leaves_out_what_a_base_backup_leaves_out() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "PG_VERSION",
            "global/pg_control",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384_fsm",
            "base/5/16400",
            "base/5/16400_init",
            "base/5/16400_fsm",
            "base/5/16400.1",
            "base/5/t3_16500",
            "base/5/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.ready",
            "pg_replslot/s/state",
            "pg_stat_tmp/global.stat",
            "postmaster.pid",
            "backup_label",
            "postgresql.auto.conf",
        ] {
            touch(r, f, b"x");
        }
        std::fs::create_dir_all(r.join("pg_tblspc")).unwrap();
        let w = walk(r).unwrap();
        let files: Vec<&str> = w.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/5/1259",
                "base/5/16384",
                "base/5/16384_fsm",
                "base/5/16400_init",
                "global/pg_control",
                "postgresql.auto.conf"
            ]
        );
        assert_eq!(w.unlogged_skipped, 3);
        for d in [
            "pg_wal",
            "pg_wal/archive_status",
            "pg_replslot",
            "pg_stat_tmp",
            "pg_tblspc",
            "base",
            "base/5",
        ] {
            assert!(w.directories.contains(&d.to_string()), "{d}");
        }
        assert!(!w.directories.iter().any(|d| d.contains("pgsql_tmp")));
    }

    #[test]
    fn names_relation_files() {
        assert_eq!(relfilenode("16384"), Some("16384"));
        assert_eq!(relfilenode("16384.12"), Some("16384"));
        assert_eq!(relfilenode("16384_vm"), Some("16384"));
        assert_eq!(relfilenode("16384_init.1"), Some("16384"));
        assert_eq!(relfilenode("PG_VERSION"), None);
        assert_eq!(relfilenode("16384_x"), None);
        assert!(is_temp_relation("t3_16500"));
        assert!(is_temp_relation("t12_16500_fsm"));
        assert!(!is_temp_relation("t_1"));
        assert!(!is_temp_relation("16500"));
    }
}
