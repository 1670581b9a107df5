//! Which files a diff or incr copies and which it takes from earlier backups, and the
//! small worker pool the file-level code shares.

use super::{walk, FileEntry};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

/// What to copy and what to take from earlier backups.
pub(super) struct Plan {
    pub copy: Vec<walk::Found>,
    pub kept: Vec<FileEntry>,
}

/// `prior`: the earlier backup's files (with the backup holding each) and when it
/// began listing (whole seconds).
pub(super) fn plan(
    walked: &walk::Walk,
    prior: Option<(&BTreeMap<String, FileEntry>, i64)>,
    now_ns: i64,
    listed_at: f64,
    jobs: usize,
    pgdata: &Path,
    notes: &mut Vec<String>,
) -> Result<Plan> {
    let candidates: Vec<&walk::Found> = walked
        .files
        .iter()
        .filter(|f| f.path != "global/pg_control")
        .collect();
    let Some((prior_files, prior_listed_at)) = prior else {
        return Ok(Plan {
            copy: candidates.into_iter().cloned().collect(),
            kept: vec![],
        });
    };
    // Can timestamps be trusted this time?
    let mut delta = listed_at.floor() < prior_listed_at as f64;
    for f in &candidates {
        let why = match prior_files.get(&f.path) {
            _ if f.mtime_ns > now_ns => Some("has an mtime in the future"),
            Some(e) if f.mtime_ns < e.mtime_ns => {
                Some("has an mtime older than the last backup recorded")
            }
            Some(e) if f.mtime_ns == e.mtime_ns && f.size != e.size => {
                Some("changed size under the same mtime")
            }
            _ => None,
        };
        if let Some(why) = why {
            if !delta {
                notes.push(format!("{} {why}: comparing files by checksum", f.path));
            }
            delta = true;
            break;
        }
    }
    let settled_before = (prior_listed_at - 1) * 1_000_000_000;
    let mut copy = Vec::new();
    let mut kept = Vec::new();
    let mut to_hash = Vec::new();
    for f in candidates {
        match prior_files.get(&f.path) {
            Some(e) if e.size == f.size && delta => to_hash.push((f.clone(), e.clone())),
            Some(e)
                if e.size == f.size && e.mtime_ns == f.mtime_ns && e.mtime_ns < settled_before =>
            {
                kept.push(e.clone())
            }
            _ => copy.push(f.clone()),
        }
    }
    // Delta: a file whose bytes equal the earlier copy's is taken from there.
    let hashed = parallel(to_hash, jobs, |(f, e)| {
        let same = match sha256_file(&pgdata.join(&f.path)) {
            Ok(Some((size, sha))) => size == e.size && sha == e.sha256,
            Ok(None) => return Ok(None), // vanished
            Err(err) => return Err(err),
        };
        Ok(Some((f, e, same)))
    })?;
    for (f, mut e, same) in hashed.into_iter().flatten() {
        if same {
            e.mtime_ns = f.mtime_ns;
            kept.push(e);
        } else {
            copy.push(f);
        }
    }
    Ok(Plan { copy, kept })
}

pub(super) fn sha256_file(p: &Path) -> Result<Option<(u64, String)>> {
    use sha2::Digest;
    let mut f = match std::fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok(Some((n, hex::encode(h.finalize()))))
}

/// Runs `f` over `items` on `jobs` threads; the first error wins.
pub(super) fn parallel<T: Send, R: Send>(
    items: Vec<T>,
    jobs: usize,
    f: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let queue = Mutex::new(items);
    let out = Mutex::new(Vec::new());
    let err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| loop {
                if err.lock().unwrap().is_some() || crate::engine::cleanup::terminating() {
                    break;
                }
                let Some(item) = queue.lock().unwrap().pop() else {
                    break;
                };
                match f(item) {
                    Ok(r) => out.lock().unwrap().push(r),
                    Err(e) => {
                        err.lock().unwrap().get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = err.into_inner().unwrap() {
        return Err(e);
    }
    if crate::engine::cleanup::terminating() {
        bail!("interrupted");
    }
    Ok(out.into_inner().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn found(path: &str, size: u64, mtime_s: i64) -> walk::Found {
        walk::Found {
            path: path.into(),
            size,
            mtime_ns: mtime_s * S,
        }
    }

    fn entry(path: &str, size: u64, mtime_s: i64, sha: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mtime_ns: mtime_s * S,
            sha256: sha.into(),
            bundle: "pgdata-0001.tar.zst".into(),
            backup: Some("20261130T020000Z".into()),
        }
    }

    fn paths(v: &[walk::Found]) -> Vec<&str> {
        let mut p: Vec<&str> = v.iter().map(|f| f.path.as_str()).collect();
        p.sort();
        p
    }

    #[test]
    fn takes_unchanged_files_only_when_their_mtime_settled_before_the_last_listing() {
        let dir = tempfile::tempdir().unwrap();
        let prior: BTreeMap<String, FileEntry> = [
            entry("base/5/1", 8192, 900, "a"), // settled long before the listing at 1000
            entry("base/5/2", 8192, 999, "b"), // modified in the second before it
            entry("base/5/3", 8192, 900, "c"), // grew since
            entry("global/pg_control", 8192, 900, "d"),
        ]
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
        let walked = walk::Walk {
            directories: vec![],
            files: vec![
                found("base/5/1", 8192, 900),
                found("base/5/2", 8192, 999),
                found("base/5/3", 16384, 1500),
                found("base/5/4", 8192, 1500), // new
                found("global/pg_control", 8192, 900),
            ],
            unlogged_skipped: 0,
        };
        let mut notes = vec![];
        let p = plan(
            &walked,
            Some((&prior, 1000)),
            2000 * S,
            2000.2,
            1,
            dir.path(),
            &mut notes,
        )
        .unwrap();
        assert_eq!(paths(&p.copy), ["base/5/2", "base/5/3", "base/5/4"]);
        assert_eq!(p.kept.len(), 1);
        assert_eq!(p.kept[0].path, "base/5/1");
        assert_eq!(p.kept[0].backup.as_deref(), Some("20261130T020000Z"));
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn untrustworthy_timestamps_compare_by_checksum() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base/5")).unwrap();
        std::fs::write(dir.path().join("base/5/1"), b"same").unwrap();
        std::fs::write(dir.path().join("base/5/2"), b"new!").unwrap();
        let sha_same = sha256_file(&dir.path().join("base/5/1"))
            .unwrap()
            .unwrap()
            .1;
        let prior: BTreeMap<String, FileEntry> = [
            entry("base/5/1", 4, 900, &sha_same),
            entry("base/5/2", 4, 900, "old"),
        ]
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
        // base/5/2 has an mtime in the future: everything is compared by checksum.
        let walked = walk::Walk {
            directories: vec![],
            files: vec![found("base/5/1", 4, 950), found("base/5/2", 4, 5000)],
            unlogged_skipped: 0,
        };
        let mut notes = vec![];
        let p = plan(
            &walked,
            Some((&prior, 1000)),
            2000 * S,
            2000.0,
            2,
            dir.path(),
            &mut notes,
        )
        .unwrap();
        assert_eq!(paths(&p.copy), ["base/5/2"]);
        assert_eq!(p.kept.len(), 1);
        assert_eq!(p.kept[0].mtime_ns, 950 * S);
        assert!(notes[0].contains("in the future"), "{notes:?}");

        // A size change under the same mtime, and a clock behind the last backup, too.
        let walked = walk::Walk {
            directories: vec![],
            files: vec![found("base/5/1", 4, 900), found("base/5/2", 5, 900)],
            unlogged_skipped: 0,
        };
        let mut notes = vec![];
        plan(
            &walked,
            Some((&prior, 1000)),
            2000 * S,
            2000.0,
            2,
            dir.path(),
            &mut notes,
        )
        .unwrap();
        assert!(notes[0].contains("same mtime"), "{notes:?}");
        let mut notes = vec![];
        let p = plan(
            &walked,
            Some((&prior, 1000)),
            990 * S,
            990.0,
            2,
            dir.path(),
            &mut notes,
        )
        .unwrap();
        // (the run itself reports the clock; the plan compares by checksum)
        assert_eq!(paths(&p.copy), ["base/5/2"]);
    }
}
