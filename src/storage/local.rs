//! A directory as a repository. Writes are atomic: a temp file in the same folder,
//! fsync, rename, fsync of the folder. Temp files start with `.tmp-` and are never
//! listed as objects.

use super::{AlreadyExists, DeleteReport, NotFound, ObjectInfo, ObjectWriter, PutMeta, Storage};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub struct LocalStorage {
    name: String,
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(name: &str, root: &Path) -> LocalStorage {
        LocalStorage {
            name: name.to_string(),
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in key
            .split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        {
            p.push(part);
        }
        p
    }

    fn temp_path(&self, path: &Path) -> PathBuf {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            rand::random::<u32>(),
            file
        ))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".meta-{file}.json"))
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of folder {}", dir.display()))
}

/// Removes `dir` and its parents while they are empty, never `root` or above it.
fn remove_empty_dirs(root: &Path, dir: &Path) {
    let mut cur = dir.to_path_buf();
    while cur != root && cur.starts_with(root) {
        if fs::remove_dir(&cur).is_err() {
            break;
        }
        match cur.parent() {
            Some(p) => cur = p.to_path_buf(),
            None => break,
        }
    }
}

struct LocalWriter {
    root: PathBuf,
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    dest: PathBuf,
    key: String,
    written: u64,
    meta: BTreeMap<String, String>,
}

impl LocalWriter {
    /// A full disk, said plainly: where, how much was written and how much is free.
    fn explain(&self, e: std::io::Error) -> std::io::Error {
        if e.raw_os_error() != Some(libc::ENOSPC) {
            return e;
        }
        std::io::Error::new(
            e.kind(),
            format!(
                "the disk under {} is full ({} free after writing {} of this file): free space there, or lower the retention of this storage",
                self.root.display(),
                crate::duration::bytes(free_bytes(&self.root).unwrap_or(0)),
                crate::duration::bytes(self.written)
            ),
        )
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self
            .file
            .as_mut()
            .expect("writer used after finish")
            .write(buf)
        {
            Ok(n) => n,
            Err(e) => return Err(self.explain(e)),
        };
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file
            .as_mut()
            .expect("writer used after finish")
            .flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<ObjectInfo> {
        let file = self.file.take().expect("finish called twice");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.temp.display()))?;
        file.sync_all()
            .with_context(|| format!("fsync of {}", self.temp.display()))?;
        drop(file);
        let size = fs::metadata(&self.temp)?.len();
        if size != self.written {
            anyhow::bail!(
                "{}: wrote {} bytes but the file has {}",
                self.temp.display(),
                self.written,
                size
            );
        }
        if !self.meta.is_empty() {
            let mp = LocalStorage::meta_path(&self.dest);
            let tmp = mp.with_extension("json.tmp");
            fs::write(&tmp, serde_json::to_vec(&self.meta)?)?;
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &mp)?;
        }
        fs::rename(&self.temp, &self.dest).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp.display(),
                self.dest.display()
            )
        })?;
        if let Some(dir) = self.dest.parent() {
            fsync_dir(dir)?;
        }
        Ok(ObjectInfo {
            key: self.key.clone(),
            size,
            modified: Some(chrono::Utc::now()),
        })
    }

    fn abort(mut self: Box<Self>) {
        self.discard();
    }
}

impl LocalWriter {
    /// Removes the temp file and the backup folders it left empty: an aborted run
    /// leaves nothing behind.
    fn discard(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
            if let Some(dir) = self.dest.parent() {
                remove_empty_dirs(&self.root, dir);
            }
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        self.discard();
    }
}

impl Storage for LocalStorage {
    fn name(&self) -> &str {
        &self.name
    }
    fn location(&self) -> String {
        let abs = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", abs.display())
    }
    fn is_local(&self) -> bool {
        true
    }
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn create(&self, key: &str, meta: &PutMeta) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(key);
        let dir = dest.parent().expect("key has a folder");
        fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
        let temp = self.temp_path(&dest);
        let file = File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        Ok(Box::new(LocalWriter {
            root: self.root.clone(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            dest,
            key: key.to_string(),
            written: 0,
            meta: meta.metadata.clone(),
        }))
    }

    fn put_if_absent(&self, key: &str, data: &[u8], meta: &PutMeta) -> Result<ObjectInfo> {
        let dest = self.path(key);
        let dir = dest.parent().expect("key has a folder");
        fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
        let temp = self.temp_path(&dest);
        {
            let mut f =
                File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        // link(2) fails when the name exists: atomic create-if-absent.
        let res = fs::hard_link(&temp, &dest);
        let _ = fs::remove_file(&temp);
        match res {
            Ok(()) => {
                // Only the writer that won the link describes the object: a loser
                // writing first could leave metadata of content that is not there
                // (and a re-push compared against it would be taken as identical).
                // A crash before this leaves no side file, and readers fall back to
                // the object itself.
                if !meta.metadata.is_empty() {
                    let mp = Self::meta_path(&dest);
                    let tmp = self.temp_path(&mp);
                    fs::write(&tmp, serde_json::to_vec(&meta.metadata)?)?;
                    File::open(&tmp)?.sync_all()?;
                    fs::rename(&tmp, &mp)?;
                }
                fsync_dir(dir)?;
                Ok(ObjectInfo {
                    key: key.to_string(),
                    size: data.len() as u64,
                    modified: Some(chrono::Utc::now()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(AlreadyExists(key.to_string()).into())
            }
            Err(e) => Err(e).with_context(|| format!("storing {}", dest.display())),
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.path(key);
        match File::open(&p) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(NotFound(format!("{} ({})", key, p.display())).into())
            }
            Err(e) => Err(e).with_context(|| format!("opening {}", p.display())),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let p = self.path(key);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
                modified: m.modified().ok().map(chrono::DateTime::from),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    fn metadata(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let mp = Self::meta_path(&self.path(key));
        match fs::read(&mp) {
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
            Err(_) => Ok(BTreeMap::new()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        // Start at the deepest folder the prefix names.
        let (dir_part, _) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let start = self.path(dir_part);
        if !start.exists() {
            return Ok(out);
        }
        let mut stack = vec![(start, dir_part.trim_matches('/').to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    stack.push((entry.path(), key));
                } else if ft.is_file() && !name.starts_with(".meta-") {
                    if !key.starts_with(prefix) {
                        continue;
                    }
                    let m = entry.metadata()?;
                    out.push(ObjectInfo {
                        key,
                        size: m.len(),
                        modified: m.modified().ok().map(chrono::DateTime::from),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, keys: &[String]) -> Result<DeleteReport> {
        let mut rep = DeleteReport::default();
        let mut dirs = std::collections::BTreeSet::new();
        for k in keys {
            let p = self.path(k);
            match fs::remove_file(&p) {
                Ok(()) => rep.deleted.push(k.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => rep.deleted.push(k.clone()),
                Err(e) => rep.failed.push((k.clone(), e.to_string())),
            }
            let _ = fs::remove_file(Self::meta_path(&p));
            if let Some(d) = p.parent() {
                dirs.insert(d.to_path_buf());
                let _ = fsync_dir(d);
            }
        }
        // Remove folders left empty, deepest first, never the root.
        let mut dirs: Vec<_> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            remove_empty_dirs(&self.root, &d);
        }
        Ok(rep)
    }

    fn free_space(&self) -> Option<u64> {
        let mut p = self.root.clone();
        while !p.exists() {
            p = p.parent()?.to_path_buf();
            if p.as_os_str().is_empty() {
                p = PathBuf::from(".");
            }
        }
        free_bytes(&p)
    }
}

pub fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStorage::new("l", d.path());
        let mut w = s.create("pg/1/a.gz", &PutMeta::default()).unwrap();
        w.write_all(b"hello").unwrap();
        // Not visible before finish.
        assert!(s.head("pg/1/a.gz").unwrap().is_none());
        w.finish().unwrap();
        assert_eq!(s.head("pg/1/a.gz").unwrap().unwrap().size, 5);
        let aborted = s.create("pg/1/b.gz", &PutMeta::default()).unwrap();
        aborted.abort();
        let keys: Vec<_> = s.list("pg/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["pg/1/a.gz"]);
        assert!(s.put_if_absent("pg/w/x", b"1", &PutMeta::default()).is_ok());
        let e = s
            .put_if_absent("pg/w/x", b"2", &PutMeta::default())
            .unwrap_err();
        assert!(e.downcast_ref::<AlreadyExists>().is_some());
        // The loser of a create-if-absent never rewrites the winner's metadata.
        let m = |v: &str| PutMeta {
            metadata: [("sha256".to_string(), v.to_string())].into(),
            ..Default::default()
        };
        s.put_if_absent("pg/w/y", b"A", &m("a")).unwrap();
        assert!(s.put_if_absent("pg/w/y", b"B", &m("b")).is_err());
        assert_eq!(s.metadata("pg/w/y").unwrap()["sha256"], "a");
        s.delete(&["pg/1/a.gz".into(), "pg/w/x".into(), "pg/w/y".into()])
            .unwrap();
        assert!(s.list("").unwrap().is_empty());
        assert!(d.path().exists());
    }
}
