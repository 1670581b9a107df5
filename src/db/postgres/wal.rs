//! The WAL archive: `wal-push` (archive_command), `wal-fetch` (restore_command), and
//! reading the archive back for PITR, `list` and `verify`.
//!
//! Layout (per target, on every storage of the target):
//! ```text
//! <target>/wal/<timeline, 8 hex>/<file name>.gz     (compression = "gzip", the default)
//! <target>/wal/<timeline, 8 hex>/<file name>.zst    (compression = "zstd")
//! <target>/wal/<timeline, 8 hex>/<file name>        (compression = "none")
//! ```
//! e.g. `pg/wal/00000001/000000010000000000000003.gz`, `pg/wal/00000002/00000002.history.zst`.
//! Each object is the file PostgreSQL handed over, compressed with the target's
//! `compression` (see [`push_compression`]).
//! The SHA-256 of the raw file is in the object's metadata (`sha256`) and inside the
//! object itself: the gzip header comment (`sha256=<hex>`), or a zstd skippable frame
//! holding the same text ahead of the data (which `zstd -d` skips), so a fetch verifies
//! it without a second request and a re-push compares without downloading. An archive
//! may mix the three after a change of `compression`: every reader accepts each, and a
//! push finds a file already archived under another extension. The hot path never
//! lists and never locks: one conditional put per storage (create-if-absent), one GET
//! on fetch (a file stored with another compression costs one more per extension).

use super::wal_codec::{pack, unpack};
use crate::compress::Compression;
use crate::db::recovery::WalConflict;
use crate::db::{FetchOutcome, PushOutcome, Target};
use crate::storage::{self, AlreadyExists, PutMeta, Storage};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

// The names and positions of WAL (pure, no storage): their own file, so the fuzz crate
// (fuzz/) can compile them without this module's storage and database stack.
pub use super::walname::{
    format_lsn, is_archive_name, parse_lsn, parse_segment, segment_name, segno_of, wal_prefix,
    DEFAULT_SEGMENT_SIZE,
};

/// The key of `name` archived with `c`.
pub fn wal_key_as(target: &str, name: &str, c: Compression) -> String {
    super::walname::wal_key_ext(target, name, c.ext())
}

/// Every key `name` may be archived under, `first` first (then gzip, zstd, none).
pub fn wal_keys(target: &str, name: &str, first: Compression) -> Vec<(String, Compression)> {
    let mut order = vec![first];
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        if c != first {
            order.push(c);
        }
    }
    order
        .into_iter()
        .map(|c| (wal_key_as(target, name, c), c))
        .collect()
}

/// An archive object's file name -> the WAL file name and how it is stored.
pub fn archived_name(file: &str) -> Option<(&str, Compression)> {
    let (name, c) = if let Some(n) = file.strip_suffix(".gz") {
        (n, Compression::Gzip)
    } else if let Some(n) = file.strip_suffix(".zst") {
        (n, Compression::Zstd)
    } else {
        (file, Compression::None)
    };
    is_archive_name(name).then_some((name, c))
}

/// The compression and level WAL is pushed with. Without a `compression` key: gzip 1,
/// as before the key existed (archive_command is on the server's critical path, and
/// `compression_level` there set the base backup's gzip level only). With the key: that
/// compression at `compression_level`, else gzip 1 or zstd 3.
pub fn push_compression(t: &Target) -> (Compression, i32) {
    let Some(c) = t.cfg.compression.as_deref() else {
        return (Compression::Gzip, 1);
    };
    // Checked when the configuration is loaded.
    let c = Compression::parse(c).unwrap_or_default();
    let level = t
        .cfg
        .compression_level
        .map(|l| l as i32)
        .unwrap_or(match c {
            Compression::Gzip => 1,
            other => other.default_level(),
        });
    (c, level)
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Stored SHA-256 of an archived file: from metadata, else by reading it back.
fn stored_sha(s: &dyn Storage, key: &str) -> Result<String> {
    if let Some(h) = s.metadata(key)?.get("sha256") {
        return Ok(h.clone());
    }
    let c = archived_name(key.rsplit('/').next().unwrap_or(key)).map_or(Compression::Gzip, |x| x.1);
    let (got, _) = unpack(s.open(key)?, c, &mut std::io::sink())?;
    Ok(got)
}

/// archive_command: store `path` in every storage of the target; Ok only when it is
/// durable everywhere.
pub fn push(t: &Target, path: &Path) -> Result<PushOutcome> {
    let target = t.name;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?
        .to_string();
    if !is_archive_name(&name) {
        bail!(
            "`{name}` is not a WAL file name (segment, .partial, .backup or .history); archive_command must pass %p"
        );
    }
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha = sha_hex(&data);
    let (c, level) = push_compression(t);
    let packed = pack(&data, &sha, c, level)?;
    let mut meta = PutMeta::default();
    meta.metadata.insert("sha256".into(), sha.clone());
    meta.metadata
        .insert("raw-size".into(), data.len().to_string());
    let mut keys = wal_keys(target, &name, c).into_iter().map(|k| k.0);
    let key = keys.next().expect("one key per compression");
    // The same file under another extension (pushed before a change of `compression`).
    let others: Vec<String> = keys.collect();
    let storages = t.open_storages_local_first()?;
    // Every storage at once: the slowest one sets the pace, not their sum.
    let results: Vec<(String, Result<bool>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = storages
            .iter()
            .map(|s| {
                let (packed, meta, sha, name) = (&packed, &meta, &sha, &name);
                let (others, mut key) = (&others, &key);
                sc.spawn(move || {
                    // Some S3-compatible stores ignore `If-None-Match: *` (garage): look
                    // first, so a different segment is never overwritten there either.
                    let mut exists = if s.is_local() {
                        Ok(false)
                    } else {
                        s.head(key).map(|h| h.is_some())
                    };
                    for o in others {
                        if let Ok(false) = exists {
                            exists = s.head(o).map(|h| h.is_some());
                            if let Ok(true) = exists {
                                key = o;
                            }
                        }
                    }
                    let put = match exists {
                        Ok(true) => Err(anyhow::Error::new(AlreadyExists(key.clone()))),
                        Ok(false) => s.put_if_absent(key, packed, meta),
                        Err(e) => Err(e),
                    };
                    let r = match put {
                        Ok(_) => Ok(true),
                        Err(e) if e.chain().any(|c| c.downcast_ref::<AlreadyExists>().is_some()) => {
                            match stored_sha(s.as_ref(), key) {
                                Ok(h) if &h == sha => Ok(false),
                                Ok(h) => Err(anyhow::Error::new(WalConflict(format!(
                                    "refusing to overwrite {name} on storage `{}` ({}): the archived copy differs \
                                     (archived sha256 {h}, new sha256 {sha}); two clusters may be archiving into \
                                     target `{target}` (after a failover or a restore): give each cluster its own target",
                                    s.name(),
                                    s.location()
                                )))),
                                Err(e) => Err(e.context(format!(
                                    "{name} exists on storage `{}` but its checksum cannot be read",
                                    s.name()
                                ))),
                            }
                        }
                        Err(e) => Err(e.context(format!(
                            "storing {name} on storage `{}` ({})",
                            s.name(),
                            s.location()
                        ))),
                    };
                    (s.name().to_string(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| ("?".into(), Err(anyhow!("push thread panicked"))))
            })
            .collect()
    });
    let mut stored_any = false;
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for (_, r) in results {
        match r {
            Ok(stored) => stored_any |= stored,
            Err(e) => errors.push(e),
        }
    }
    if let Some(first) = errors.into_iter().reduce(|a, b| {
        // A conflict is the most important thing to report.
        if b.chain().any(|c| c.downcast_ref::<WalConflict>().is_some()) {
            b
        } else {
            a
        }
    }) {
        return Err(first);
    }
    Ok(if stored_any {
        PushOutcome::Stored
    } else {
        PushOutcome::AlreadyArchived
    })
}

/// restore_command: fetch `name` into `dest`. An Err means a storage or checksum
/// problem (recovery must stop), not a missing file.
pub fn fetch(t: &Target, name: &str, dest: &Path) -> Result<FetchOutcome> {
    let target = t.name;
    if !is_archive_name(name) {
        // PostgreSQL asks only for names like these; anything else is a setup error.
        bail!("`{name}` is not a WAL file name; restore_command must pass %f %p");
    }
    let keys = wal_keys(target, name, push_compression(t).0);
    let storages = t.open_readable_storages()?;
    let mut errors = Vec::new();
    for s in &storages {
        for (key, c) in &keys {
            match fetch_one(s.as_ref(), key, *c, dest) {
                Ok(true) => return Ok(FetchOutcome::Fetched(s.name().to_string())),
                Ok(false) => continue,
                Err(e) => errors.push(format!("storage `{}` ({}): {e:#}", s.name(), s.location())),
            }
            break;
        }
    }
    if errors.is_empty() {
        Ok(FetchOutcome::Missing)
    } else {
        bail!("fetching {name}: {}", errors.join("; "))
    }
}

/// Ok(false): not on this storage.
fn fetch_one(s: &dyn Storage, key: &str, c: Compression, dest: &Path) -> Result<bool> {
    let r = match s.open(key) {
        Ok(r) => r,
        Err(e) if storage::is_not_found(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.wal-fetch-{}", std::process::id()));
    let res = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let (got, want) =
            unpack(r, c, &mut f).with_context(|| format!("unpacking into {}", tmp.display()))?;
        let want = match want {
            Some(w) => w,
            None => s
                .metadata(key)?
                .get("sha256")
                .cloned()
                .ok_or_else(|| anyhow!("{key} carries no checksum"))?,
        };
        if got != want {
            bail!("checksum mismatch for {key}: stored sha256 {want}, read {got} (damaged archive copy)");
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn lsn_and_segment_arithmetic() {
        let l = parse_lsn("0/2000028").unwrap();
        assert_eq!(l, 0x2000028);
        assert_eq!(format_lsn(l), "0/2000028");
        let s = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            segment_name(1, segno_of(l, s), s),
            "000000010000000000000002"
        );
        let big = parse_lsn("1/FF000000").unwrap();
        assert_eq!(
            segment_name(3, segno_of(big, s), s),
            "0000000300000001000000FF"
        );
        assert_eq!(
            parse_segment("0000000300000001000000FF", s),
            Some((3, segno_of(big, s)))
        );
        // 1 GiB segments: 4 per xlogid
        let g = 1 << 30;
        assert_eq!(segment_name(1, 5, g), "000000010000000100000001");
        assert!(parse_lsn("nonsense").is_err());
    }

    #[test]
    fn archive_names() {
        for ok in [
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(is_archive_name(ok), "{ok}");
        }
        for bad in [
            "../x",
            "00000002.history.gz",
            "RECOVERYXLOG",
            "0000000100000000000000",
        ] {
            assert!(!is_archive_name(bad), "{bad}");
        }
        assert_eq!(
            wal_key_as("pg", "00000002.history", Compression::Gzip),
            "pg/wal/00000002/00000002.history.gz"
        );
    }

    #[test]
    fn push_fetch_round_trip_and_conflict() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            &format!(
                "[storages.l]\ntype=\"local\"\npath=\"{}\"\n[targets.pg]\nengine=\"postgres\"\nkind=\"physical\"\nstorages=[\"l\"]\n",
                d.path().join("repo").display()
            ),
            "t.toml",
        )
        .unwrap();
        let seg = d.path().join("000000010000000000000001");
        std::fs::write(&seg, vec![7u8; 100_000]).unwrap();
        assert_eq!(
            push(&Target::resolve(&cfg, "pg").unwrap(), &seg).unwrap(),
            PushOutcome::Stored
        );
        assert_eq!(
            push(&Target::resolve(&cfg, "pg").unwrap(), &seg).unwrap(),
            PushOutcome::AlreadyArchived
        );
        let other = d.path().join("x").join("000000010000000000000001");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, vec![8u8; 100_000]).unwrap();
        let e = push(&Target::resolve(&cfg, "pg").unwrap(), &other).unwrap_err();
        assert!(
            e.chain().any(|c| c.downcast_ref::<WalConflict>().is_some()),
            "{e:#}"
        );
        let dest = d.path().join("out");
        assert_eq!(
            fetch(
                &Target::resolve(&cfg, "pg").unwrap(),
                "000000010000000000000001",
                &dest
            )
            .unwrap(),
            FetchOutcome::Fetched("l".into())
        );
        assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; 100_000]);
        assert_eq!(
            fetch(
                &Target::resolve(&cfg, "pg").unwrap(),
                "000000010000000000000002",
                &dest
            )
            .unwrap(),
            FetchOutcome::Missing
        );
    }
}
