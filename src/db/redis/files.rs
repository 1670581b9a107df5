//! The files of `restore --by-file` (see `by_file.rs`): where the server keeps them,
//! the RDB written beside its data file while it is read, and the swap (old files kept
//! aside, the new ones renamed in, the AOF folder rebuilt around the restored RDB).

use super::rdb::RdbReader;
use super::rdb_version_of;
use crate::error::Fail;
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Where the server keeps its data, as `CONFIG GET` said before it was stopped.
pub struct Layout {
    pub dir: PathBuf,
    pub dbfilename: String,
    pub aof: Option<Aof>,
    pub version: String,
}

/// The AOF, when `appendonly` is on.
pub enum Aof {
    /// Redis 7+: `appenddirname` holding a manifest and the files it names.
    Dir { dirname: String, filename: String },
    /// Before 7.0: one file.
    File { filename: String },
}

impl Layout {
    pub fn data(&self) -> PathBuf {
        self.dir.join(&self.dbfilename)
    }
    fn aside(&self, name: &str, id: &str) -> PathBuf {
        self.dir.join(format!("{name}.backup-{id}.old"))
    }
    pub fn tmp(&self, id: &str) -> PathBuf {
        self.dir
            .join(format!(".{}.backup-{id}.tmp", self.dbfilename))
    }
    /// (current name, kept-aside name) of every file or folder the restore replaces.
    pub fn replaced(&self, id: &str) -> Vec<(PathBuf, PathBuf)> {
        let mut v = vec![(self.data(), self.aside(&self.dbfilename, id))];
        match &self.aof {
            Some(Aof::Dir { dirname, .. }) => {
                v.push((self.dir.join(dirname), self.aside(dirname, id)))
            }
            Some(Aof::File { filename }) => {
                v.push((self.dir.join(filename), self.aside(filename, id)))
            }
            None => {}
        }
        v
    }
}

/// Moves the old files aside and puts the new ones in place; `done` lists what moved.
pub fn swap(
    l: &Layout,
    tmp: &Path,
    replaced: &[(PathBuf, PathBuf)],
    done: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    for (cur, old) in replaced {
        if cur.exists() {
            std::fs::rename(cur, old)
                .with_context(|| format!("moving {} to {}", cur.display(), old.display()))?;
            done.push((cur.clone(), old.clone()));
        }
    }
    let data = l.data();
    let owner = replaced
        .first()
        .map(|(_, old)| old.clone())
        .filter(|o| o.exists())
        .unwrap_or_else(|| l.dir.clone());
    own_like(tmp, &owner);
    std::fs::rename(tmp, &data)
        .with_context(|| format!("renaming {} to {}", tmp.display(), data.display()))?;
    match &l.aof {
        None => {}
        Some(Aof::File { filename }) => link_or_copy(&data, &l.dir.join(filename))?,
        Some(Aof::Dir { dirname, filename }) => {
            let d = l.dir.join(dirname);
            std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            own_like(&d, &l.dir);
            let base = format!("{filename}.1.base.rdb");
            link_or_copy(&data, &d.join(&base))?;
            let manifest = d.join(format!("{filename}.manifest"));
            let mut f = std::fs::File::create(&manifest)
                .with_context(|| format!("creating {}", manifest.display()))?;
            writeln!(f, "file {base} seq 1 type b")?;
            f.sync_all()?;
            own_like(&manifest, &data);
            sync_dir(&d)?;
        }
    }
    sync_dir(&l.dir)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        std::fs::File::open(to)?.sync_all()?;
    }
    Ok(())
}

fn sync_dir(d: &Path) -> Result<()> {
    std::fs::File::open(d)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", d.display()))
}

/// The owner and mode of `reference` (a file) or its owner (a folder), as far as
/// this user may: Redis must be able to read what root wrote.
fn own_like(path: &Path, reference: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = std::fs::metadata(reference) else {
        return;
    };
    let _ = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()));
    let mode = if m.is_dir() {
        if path.is_dir() {
            0o755
        } else {
            0o644
        }
    } else {
        m.mode() & 0o777
    };
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// What the restored server should hold: keys per db, those already expired when the
/// file was written, and the expiries due within the hour (they may go while it loads).
#[derive(Default)]
pub struct Expected {
    pub keys: BTreeMap<u64, u64>,
    pub gone: BTreeMap<u64, u64>,
    pub soon: BTreeMap<u64, Vec<i64>>,
}

/// Decompresses the artifact to `tmp` while reading it with the RDB reader (its
/// version checked against the server's, its keys and expiries counted); fsynced.
pub fn write_rdb(
    file: &Path,
    compression: crate::compress::Compression,
    tmp: &Path,
    version: &str,
    who: &str,
) -> Result<Expected> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let input: Box<dyn Read> = compression.decoder(f)?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut tee = TeeFile {
        inner: input,
        out: BufWriter::with_capacity(1 << 20, out),
    };
    let mut r = RdbReader::new(&mut tee)?;
    let dest_rdb = rdb_version_of(version);
    if r.version > dest_rdb {
        return Err(Fail::Usage(format!(
            "the backup is RDB version {} but {who} runs Redis {version}, which loads RDB {dest_rdb} at most; restore into Redis {} or newer",
            r.version,
            if r.version >= 11 { "7.2" } else { "7.0" }
        ))
        .into());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut e = Expected::default();
    while let Some(k) = r.next_key()? {
        *e.keys.entry(k.db).or_default() += 1;
        match k.expire_ms {
            Some(t) if t <= now => *e.gone.entry(k.db).or_default() += 1,
            Some(t) if t <= now + 3_600_000 => e.soon.entry(k.db).or_default().push(t),
            _ => {}
        }
    }
    drop(r);
    std::io::copy(&mut tee, &mut std::io::sink())?;
    let out = tee
        .out
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {}", tmp.display(), e.error()))?;
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    Ok(e)
}

/// Reads through, writing every byte to the file.
struct TeeFile {
    inner: Box<dyn Read>,
    out: BufWriter<std::fs::File>,
}

impl Read for TeeFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_replaced_and_where_they_are_kept() {
        let l = Layout {
            dir: "/var/lib/redis".into(),
            dbfilename: "dump.rdb".into(),
            aof: Some(Aof::Dir {
                dirname: "appendonlydir".into(),
                filename: "appendonly.aof".into(),
            }),
            version: "7.0.15".into(),
        };
        let r = l.replaced("20261124T060000Z");
        assert_eq!(r[0].0, PathBuf::from("/var/lib/redis/dump.rdb"));
        assert_eq!(
            r[0].1,
            PathBuf::from("/var/lib/redis/dump.rdb.backup-20261124T060000Z.old")
        );
        assert_eq!(
            r[1].1,
            PathBuf::from("/var/lib/redis/appendonlydir.backup-20261124T060000Z.old")
        );
        assert_eq!(
            l.tmp("X"),
            PathBuf::from("/var/lib/redis/.dump.rdb.backup-X.tmp")
        );
    }
}
