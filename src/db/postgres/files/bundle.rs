//! Bundles: several PGDATA files in one standard tar archive (then zstd), so a backup
//! is a few dozen objects rather than thousands and stays readable with
//! `zstd -dc pgdata-0001.tar.zst | tar x`.
//!
//! [`TarFiles`] produces the archive as a `Read` (bounded memory: one buffer, whatever
//! the file sizes) and hashes each file on the way; [`extract`] reads an archive back
//! and writes only the files a restore wants from it, checking each one's SHA-256.

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file to put in a bundle.
#[derive(Debug, Clone)]
pub struct Source {
    /// Relative to PGDATA.
    pub path: String,
    pub abs: PathBuf,
    /// Modification time as listed (kept in the tar header and the manifest).
    pub mtime_ns: i64,
}

/// What was stored of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mtime_ns: i64,
}

enum State {
    /// Between files: open the next one.
    Next,
    /// Sending `left` bytes of the open file (zeros once it ends early).
    Body {
        file: Option<File>,
        left: u64,
        pad: u64,
    },
    Trailer(usize),
    Done,
}

/// The tar stream of `sources`, produced while read.
pub struct TarFiles {
    sources: std::vec::IntoIter<Source>,
    state: State,
    pending: Vec<u8>,
    pos: usize,
    current: Option<(Source, u64, Sha256)>,
    /// Files stored, in order.
    pub stored: Vec<Stored>,
    /// Files that vanished before they could be opened (dropped by PostgreSQL).
    pub vanished: Vec<String>,
}

impl TarFiles {
    pub fn new(sources: Vec<Source>) -> TarFiles {
        TarFiles {
            sources: sources.into_iter(),
            state: State::Next,
            pending: Vec::new(),
            pos: 0,
            current: None,
            stored: Vec::new(),
            vanished: Vec::new(),
        }
    }

    fn header(path: &str, size: u64, mtime_ns: i64) -> std::io::Result<Vec<u8>> {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).map_err(|e| {
            std::io::Error::other(format!("{path}: cannot be named in a tar header: {e}"))
        })?;
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(h.as_bytes().to_vec())
    }

    /// Fills `pending` with the next piece of the archive; false at the end.
    fn refill(&mut self) -> std::io::Result<bool> {
        loop {
            match &mut self.state {
                State::Done => return Ok(false),
                State::Trailer(n) => {
                    if *n == 0 {
                        self.state = State::Done;
                        continue;
                    }
                    self.pending = vec![0u8; *n];
                    self.state = State::Trailer(0);
                    return Ok(true);
                }
                State::Next => {
                    if crate::engine::cleanup::terminating() {
                        return Err(std::io::Error::other("interrupted"));
                    }
                    let Some(src) = self.sources.next() else {
                        self.state = State::Trailer(1024);
                        continue;
                    };
                    let file = match File::open(&src.abs) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            self.vanished.push(src.path);
                            continue;
                        }
                        Err(e) => {
                            return Err(std::io::Error::new(
                                e.kind(),
                                format!("reading {}: {e}", src.abs.display()),
                            ))
                        }
                    };
                    // The size when the copy begins: a relation that grows meanwhile is
                    // cut here, one that shrinks is padded with zeros; WAL replay
                    // brings either to its state at the end of the backup.
                    let size = file.metadata()?.len();
                    self.pending = Self::header(&src.path, size, src.mtime_ns)?;
                    let pad = (512 - size % 512) % 512;
                    self.current = Some((src, size, Sha256::new()));
                    self.state = State::Body {
                        file: Some(file),
                        left: size,
                        pad,
                    };
                    return Ok(true);
                }
                State::Body { file, left, pad } => {
                    if *left == 0 {
                        let (src, size, h) = self.current.take().expect("a file is open");
                        self.stored.push(Stored {
                            path: src.path,
                            size,
                            sha256: hex::encode(h.finalize()),
                            mtime_ns: src.mtime_ns,
                        });
                        let pad = *pad as usize;
                        self.state = State::Next;
                        if pad > 0 {
                            self.pending = vec![0u8; pad];
                            return Ok(true);
                        }
                        continue;
                    }
                    let want = (*left).min(256 * 1024) as usize;
                    let mut buf = vec![0u8; want];
                    let mut n = 0;
                    if let Some(f) = file {
                        while n < want {
                            let r = f.read(&mut buf[n..])?;
                            if r == 0 {
                                break;
                            }
                            n += r;
                        }
                        if n < want {
                            *file = None; // shrank: zeros from here on
                        }
                    }
                    // `buf` is already zeroed past `n`.
                    *left -= want as u64;
                    if let Some((_, _, h)) = &mut self.current {
                        h.update(&buf);
                    }
                    self.pending = buf;
                    return Ok(true);
                }
            }
        }
    }
}

impl Read for TarFiles {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.pending.len() {
            self.pos = 0;
            self.pending.clear();
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.pending.len() - self.pos);
        out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a restore wants from one bundle: path -> (size, sha256, mtime_ns).
pub type Wanted = BTreeMap<String, (u64, String, i64)>;

/// Writes the `wanted` files of the tar stream `r` under `root`, each checked against
/// its SHA-256; files not wanted (superseded by a later backup of the chain) are
/// skipped. Returns (files, bytes) written. Stops between files on a signal.
pub fn extract(r: &mut dyn Read, root: &Path, wanted: &Wanted, what: &str) -> Result<(u64, u64)> {
    let mut archive = tar::Archive::new(r);
    let mut found = 0u64;
    let mut bytes = 0u64;
    for entry in archive
        .entries()
        .with_context(|| format!("reading {what}"))?
    {
        if crate::engine::cleanup::terminating() {
            bail!("interrupted while restoring {what}");
        }
        let mut entry = entry.with_context(|| format!("reading {what}"))?;
        let path = entry
            .path()
            .with_context(|| format!("reading {what}"))?
            .to_string_lossy()
            .into_owned();
        let Some((size, sha, mtime_ns)) = wanted.get(&path) else {
            continue;
        };
        if path.split('/').any(|c| c == ".." || c.is_empty()) || path.starts_with('/') {
            bail!("{what} holds an unsafe path `{path}`; refusing to restore it");
        }
        let dest = root.join(&path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let _ = std::fs::remove_file(&dest); // never write through a symlink left there
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let r = entry
                .read(&mut buf)
                .with_context(|| format!("reading {path} from {what}"))?;
            if r == 0 {
                break;
            }
            h.update(&buf[..r]);
            out.write_all(&buf[..r])
                .with_context(|| format!("writing {}", dest.display()))?;
            n += r as u64;
        }
        let got = hex::encode(h.finalize());
        if n != *size || got != *sha {
            return Err(crate::error::Fail::Verify(format!(
                "{path} in {what} is damaged: {n} bytes with sha256 {got}, the manifest says {size} bytes with {sha}"
            ))
            .into());
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos((*mtime_ns).max(0) as u64);
        let _ = out.set_modified(t);
        found += 1;
        bytes += n;
    }
    if found < wanted.len() as u64 {
        let missing: Vec<&String> = wanted
            .keys()
            .filter(|p| !root.join(p).exists())
            .take(3)
            .collect();
        return Err(anyhow!(
            "{what} lacks {} file(s) the manifest places there (e.g. {missing:?})",
            wanted.len() as u64 - found
        ));
    }
    Ok((found, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_files_and_skips_unwanted_ones() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), vec![7u8; 700]).unwrap();
        std::fs::write(src.path().join("b"), b"bee").unwrap();
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(src.path().join("c"), &big).unwrap();
        let sources: Vec<Source> = ["a", "gone", "b", "c"]
            .iter()
            .map(|p| Source {
                path: format!("base/1/{p}"),
                abs: src.path().join(p),
                mtime_ns: 1_700_000_000_123_456_789,
            })
            .collect();
        let mut t = TarFiles::new(sources);
        let mut tar = Vec::new();
        t.read_to_end(&mut tar).unwrap();
        assert_eq!(tar.len() % 512, 0);
        assert_eq!(t.vanished, ["base/1/gone"]);
        assert_eq!(t.stored.len(), 3);
        assert_eq!(t.stored[2].size, 600_000);
        let wanted: Wanted = t
            .stored
            .iter()
            .filter(|s| s.path != "base/1/b")
            .map(|s| (s.path.clone(), (s.size, s.sha256.clone(), s.mtime_ns)))
            .collect();
        let dst = tempfile::tempdir().unwrap();
        let (files, bytes) = extract(&mut &tar[..], dst.path(), &wanted, "bundle").unwrap();
        assert_eq!((files, bytes), (2, 600_700));
        assert_eq!(std::fs::read(dst.path().join("base/1/c")).unwrap(), big);
        assert!(!dst.path().join("base/1/b").exists());
        let mt = std::fs::metadata(dst.path().join("base/1/a"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mt.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
            1_700_000_000_123_456_789
        );

        // A damaged byte is named.
        let mut bad = wanted.clone();
        bad.get_mut("base/1/a").unwrap().1 = "0".repeat(64);
        let dst = tempfile::tempdir().unwrap();
        let e = extract(&mut &tar[..], dst.path(), &bad, "bundle").unwrap_err();
        assert!(
            format!("{e:#}").contains("base/1/a in bundle is damaged"),
            "{e:#}"
        );
        // So is a file the bundle does not have.
        let mut more = wanted.clone();
        more.insert("base/1/zz".into(), (1, "x".into(), 0));
        let dst = tempfile::tempdir().unwrap();
        let e = extract(&mut &tar[..], dst.path(), &more, "bundle").unwrap_err();
        assert!(format!("{e:#}").contains("lacks 1 file"), "{e:#}");
    }

    #[test]
    fn standard_tar_reads_it() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"hello").unwrap();
        let mut t = TarFiles::new(vec![Source {
            path: "global/f".into(),
            abs: src.path().join("f"),
            mtime_ns: 0,
        }]);
        let mut tar = Vec::new();
        t.read_to_end(&mut tar).unwrap();
        let dst = tempfile::tempdir().unwrap();
        tar::Archive::new(&tar[..]).unpack(dst.path()).unwrap();
        assert_eq!(
            std::fs::read(dst.path().join("global/f")).unwrap(),
            b"hello"
        );
    }
}
