//! The files of part-level backups: where a table's parts live under the server's
//! data path, `ALTER TABLE ... FREEZE` and its shadow increments, a frozen part as a
//! tar stream read file by file (bounded memory), unpacking a part into `detached/`,
//! and which parts earlier backups of the target already store.

use super::http::{ident, literal, Client};
use crate::config::Config;
use crate::manifest::Manifest;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One data part of a part-level backup (`database.extra.clickhouse_parts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub database: String,
    pub table: String,
    /// The part's name (`202609_1_1_0`).
    pub name: String,
    /// SHA-256 of its `checksums.txt` (which lists every file's checksum): equal
    /// names and digests are the same immutable part.
    pub checksums: String,
    pub rows: u64,
    pub bytes: u64,
    /// The artifact (a tar of the part's files).
    pub artifact: String,
    /// The earlier backup that stores the artifact (None: this backup stores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}

/// The parts a manifest records.
pub fn of_manifest(m: &Manifest) -> Vec<Part> {
    m.database
        .extra
        .get("clickhouse_parts")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// A table's folder (`<root>/data/<db>/<table>/`) from `system.tables.data_path`,
/// moved under `root` when the operator set `data_path` (the server may see its
/// folder under another name, e.g. in a container).
pub fn table_dir(c: &Client, root: Option<&Path>, db: &str, table: &str) -> Result<PathBuf> {
    let p = c
        .text(&format!(
            "SELECT data_path FROM system.tables WHERE database = {} AND name = {} FORMAT TSVRaw",
            literal(db),
            literal(table)
        ))?
        .trim_end_matches('\n')
        .to_string();
    if p.is_empty() {
        bail!("{db}.{table} has no data path on {}", c.display());
    }
    let p = PathBuf::from(p);
    Ok(match root {
        None => p,
        Some(r) => {
            let tail: Vec<_> = p.components().rev().take(3).collect();
            tail.into_iter()
                .rev()
                .fold(r.to_path_buf(), |a, c| a.join(c))
        }
    })
}

/// The data path (`<root>`) a table folder lies in.
pub fn root_of(table_dir: &Path) -> PathBuf {
    table_dir
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Freezes one table: `ALTER TABLE ... FREEZE` hard-links its parts into a new
/// `shadow/<N>/`. Returns the new increment folders (to remove afterwards) and the
/// frozen parts' folders.
pub fn freeze(
    c: &Client,
    root: &Path,
    table_dir: &Path,
    db: &str,
    table: &str,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let shadow = root.join("shadow");
    let before = increments(&shadow);
    c.exec(&format!(
        "ALTER TABLE {}.{} FREEZE",
        ident(db),
        ident(table)
    ))
    .with_context(|| format!("freezing {db}.{table}"))?;
    let new: Vec<PathBuf> = increments(&shadow)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let rel = table_dir
        .strip_prefix(root)
        .map_err(|_| anyhow!("{} is not under {}", table_dir.display(), root.display()))?;
    let mut parts = Vec::new();
    for inc in &new {
        let dir = inc.join(rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue; // a table with no parts freezes nothing
        };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            if e.file_type()?.is_dir() {
                parts.push(e.path());
            }
        }
    }
    parts.sort();
    Ok((new, parts))
}

/// The increment folders under `shadow/`.
pub fn increments(shadow: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(shadow)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// SHA-256 of a part's `checksums.txt`.
pub fn checksums_digest(part: &Path) -> Result<String> {
    use sha2::Digest;
    let b = std::fs::read(part.join("checksums.txt"))
        .with_context(|| format!("{} has no readable checksums.txt", part.display()))?;
    Ok(hex::encode(sha2::Sha256::digest(&b)))
}

/// A part folder as a tar stream (its files, flat, sorted), one file open at a time.
pub struct PartTar {
    files: std::vec::IntoIter<(String, u64)>,
    dir: PathBuf,
    cur: Box<dyn Read + Send>,
    done: bool,
}

impl PartTar {
    pub fn open(dir: &Path) -> Result<PartTar> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let md = e.metadata()?;
            if md.is_file() {
                files.push((e.file_name().to_string_lossy().into_owned(), md.len()));
            }
        }
        files.sort();
        Ok(PartTar {
            files: files.into_iter(),
            dir: dir.to_path_buf(),
            cur: Box::new(std::io::empty()),
            done: false,
        })
    }

    fn next_entry(&mut self) -> std::io::Result<bool> {
        let Some((name, size)) = self.files.next() else {
            if self.done {
                return Ok(false);
            }
            self.done = true;
            self.cur = Box::new(std::io::Cursor::new(vec![0u8; 1024]));
            return Ok(true);
        };
        let mut h = tar::Header::new_gnu();
        h.set_path(&name)?;
        h.set_size(size);
        h.set_mode(0o640);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let f = std::fs::File::open(self.dir.join(&name))?;
        let pad = ((512 - size % 512) % 512) as usize;
        // A file that changed size would shift every later header: read exactly `size`.
        let body = Exactly {
            inner: f.take(size),
            left: size,
            name: name.clone(),
        };
        self.cur = Box::new(
            std::io::Cursor::new(h.as_bytes().to_vec())
                .chain(body)
                .chain(std::io::Cursor::new(vec![0u8; pad])),
        );
        Ok(true)
    }
}

struct Exactly<R> {
    inner: R,
    left: u64,
    name: String,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} shrank while it was read",
                self.name
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl Read for PartTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.cur.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if !self.next_entry()? {
                return Ok(0);
            }
        }
    }
}

/// Reads a part tar to its end: (files, bytes); it must hold `checksums.txt`.
pub fn check_tar(r: &mut dyn Read) -> Result<(usize, u64)> {
    let mut a = tar::Archive::new(r);
    let (mut files, mut bytes, mut checksums) = (0, 0u64, false);
    for e in a.entries().context("the part is not a tar")? {
        let mut e = e.context("the part's tar is damaged")?;
        checksums |= e.path()?.as_os_str() == "checksums.txt";
        bytes += std::io::copy(&mut e, &mut std::io::sink()).context("the part's tar is cut")?;
        files += 1;
    }
    if !checksums {
        bail!("the part holds no checksums.txt");
    }
    Ok((files, bytes))
}

/// Unpacks a part tar into `detached/<name>/`, owned like the table's folder (the
/// server, often its own OS user, must read and later move it).
pub fn unpack(tar_file: &Path, detached: &Path, name: &str, owner: (u32, u32)) -> Result<()> {
    let dest = detached.join(name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let f = std::fs::File::open(tar_file)?;
    let mut a = tar::Archive::new(std::io::BufReader::new(f));
    for e in a.entries()? {
        let mut e = e?;
        let p = e.path()?.into_owned();
        let file = p
            .file_name()
            .filter(|f| p.components().count() == 1 && *f != "..")
            .ok_or_else(|| {
                anyhow!(
                    "{}: entry {} is not a plain file name",
                    tar_file.display(),
                    p.display()
                )
            })?
            .to_owned();
        let out = dest.join(file);
        let mut w =
            std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        std::io::copy(&mut e, &mut w)?;
        let _ = std::os::unix::fs::chown(&out, Some(owner.0), Some(owner.1));
    }
    let _ = std::os::unix::fs::chown(detached, Some(owner.0), Some(owner.1));
    let _ = std::os::unix::fs::chown(&dest, Some(owner.0), Some(owner.1));
    Ok(())
}

/// (database, table, part name, checksums digest) -> (home backup, artifact).
pub type Stored = BTreeMap<(String, String, String, String), (String, String)>;

/// The parts earlier backups of `target` store, from the backups present on every
/// one of its storages (a reference must resolve wherever the new backup lands). A
/// storage that cannot be read means no reuse at all: uploading again is safe.
pub fn stored(config: &Config, target: &str, storages: &[String]) -> Stored {
    let mut common: Option<Vec<Manifest>> = None;
    for n in storages {
        let Ok(cat) = crate::storage::open(config, n)
            .and_then(|s| crate::engine::catalog::scan(s.as_ref(), target))
        else {
            return Stored::new();
        };
        common = Some(match common {
            None => cat.backups,
            Some(prev) => prev
                .into_iter()
                .filter(|m| cat.backups.iter().any(|x| x.id == m.id))
                .collect(),
        });
    }
    let ms = common.unwrap_or_default();
    let ids: Vec<&str> = ms.iter().map(|m| m.id.as_str()).collect();
    let mut out = Stored::new();
    for m in &ms {
        for p in of_manifest(m) {
            let home = p.home.clone().unwrap_or_else(|| m.id.clone());
            if ids.contains(&home.as_str()) {
                out.insert(
                    (p.database, p.table, p.name, p.checksums),
                    (home, p.artifact),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_round_trips_through_its_tar() {
        let d = tempfile::tempdir().unwrap();
        let part = d.path().join("202609_1_1_0");
        std::fs::create_dir(&part).unwrap();
        std::fs::write(part.join("checksums.txt"), b"sums").unwrap();
        std::fs::write(part.join("id.bin"), vec![7u8; 1300]).unwrap();
        std::fs::write(part.join("count.txt"), b"").unwrap();
        let mut tar = Vec::new();
        PartTar::open(&part).unwrap().read_to_end(&mut tar).unwrap();
        assert_eq!(check_tar(&mut &tar[..]).unwrap(), (3, 1304));
        let f = d.path().join("p.tar");
        std::fs::write(&f, &tar).unwrap();
        let det = d.path().join("detached");
        unpack(&f, &det, "202609_1_1_0", (0, 0)).unwrap();
        assert_eq!(
            std::fs::read(det.join("202609_1_1_0").join("id.bin")).unwrap(),
            vec![7u8; 1300]
        );
        assert!(check_tar(&mut &tar[..tar.len() - 2048]).is_err());
    }

    #[test]
    fn table_dirs_move_under_the_configured_root() {
        let p = PathBuf::from("/var/lib/clickhouse/data/db/t%2Ex/");
        assert_eq!(root_of(&p), PathBuf::from("/var/lib/clickhouse"));
    }
}
