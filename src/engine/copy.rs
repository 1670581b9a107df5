//! `backup copy`: stream backups from one storage to another (the off-site copy).
//!
//! Database-agnostic: a backup is its manifest's artifacts, and a target's archive
//! (objects under `<target>/` outside any backup folder: PostgreSQL's WAL) is copied
//! first, so a physical backup is never complete at the destination before the WAL it
//! needs. Every object is read through the source storage (opened: decrypted when the
//! source is sealed) and written through the destination (sealed to the destination's
//! own recipients when it encrypts), so a copy re-encrypts whenever the two differ.
//!
//! Nothing is trusted on the way: the source bytes must hash to the manifest's
//! SHA-256 (a damaged source is never propagated), and each object is read back from
//! the destination and hashed again before the manifest is written there, last. A copy
//! that stops midway leaves an incomplete backup (no manifest) at the destination; the
//! next copy resumes it, keeping every object that reads back whole.

use crate::engine::backup::object_meta;
use crate::engine::catalog::{self, artifact_key};
use crate::error::Fail;
use crate::manifest::{parse_backup_id, Manifest, MANIFEST_FILE};
use crate::storage::{PutMeta, Storage};
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};

/// Which backups to copy.
#[derive(Debug, Clone)]
pub enum Which {
    /// `latest`, an id or a unique id prefix.
    One(String),
    All,
}

/// What happened to one backup.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedBackup {
    pub id: String,
    /// `copied`, `skipped` (already complete there), `would copy` (dry run), `failed`.
    pub action: String,
    /// Objects written now.
    pub objects_copied: usize,
    /// Objects an interrupted copy had already stored, read back whole and kept.
    pub objects_kept: usize,
    /// Bytes read from the source (as the manifest records them).
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The archive beside the backups (WAL).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveCopy {
    pub objects_copied: usize,
    /// Already at the destination (objects appear whole or not at all).
    pub objects_present: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub target: String,
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub backups: Vec<CopiedBackup>,
    pub archive: ArchiveCopy,
}

impl CopyReport {
    pub fn failures(&self) -> Vec<&CopiedBackup> {
        self.backups
            .iter()
            .filter(|b| b.action == "failed")
            .collect()
    }
}

/// Copies `which` backups of `target` from `src` to `dst`.
pub fn copy(
    target: &str,
    src: &dyn Storage,
    dst: &dyn Storage,
    which: &Which,
    dry_run: bool,
    state_dir: &std::path::Path,
    ui: &Ui,
) -> Result<CopyReport> {
    if src.name() == dst.name() {
        return Err(Fail::Usage(format!(
            "--from and --to are both `{}`: name two different storages",
            src.name()
        ))
        .into());
    }
    if !dry_run {
        dst.check_lock_promise()?;
    }
    let cat = catalog::scan(src, target)
        .with_context(|| format!("listing {target} on `{}`", src.name()))?;
    let chosen: Vec<&Manifest> = match which {
        Which::All => cat.backups.iter().collect(),
        Which::One(w) => vec![catalog::pick(&cat, w).ok_or_else(|| {
            Fail::Usage(format!(
                "no complete backup `{w}` of {target} on `{}` (see `backup list {target} --storage {}`)",
                src.name(),
                src.name()
            ))
        })?],
    };
    let chosen = with_dependencies(&cat.backups, chosen)?;
    // Held from here until the copy is done: a prune keeps these source backups.
    let _reading = if dry_run {
        vec![]
    } else {
        chosen
            .iter()
            .map(|m| crate::engine::readers::read(state_dir, target, &m.id, "backup copy"))
            .collect::<Result<Vec<_>>>()?
    };
    let there: BTreeSet<String> = catalog::scan(dst, target)
        .with_context(|| format!("listing {target} on `{}`", dst.name()))?
        .backups
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut report = CopyReport {
        target: target.into(),
        from: src.name().into(),
        to: dst.name().into(),
        dry_run,
        backups: vec![],
        archive: ArchiveCopy::default(),
    };
    let pending: Vec<&Manifest> = chosen
        .iter()
        .copied()
        .filter(|m| !there.contains(&m.id))
        .collect();
    if !pending.is_empty() {
        // The archive first: a backup complete at the destination must find its WAL.
        report.archive = copy_archive(target, src, dst, dry_run, ui)?;
    }
    for m in chosen {
        let mut b = CopiedBackup {
            id: m.id.clone(),
            action: String::new(),
            objects_copied: 0,
            objects_kept: 0,
            bytes: m.size_bytes(),
            error: None,
        };
        if there.contains(&m.id) {
            b.action = "skipped".into();
            ui.info(format!(
                "{target} {}: already complete on `{}`",
                m.id,
                dst.name()
            ));
        } else if dry_run {
            b.action = "would copy".into();
            ui.info(format!(
                "{target} {}: would copy {} object(s), {} to `{}`",
                m.id,
                m.artifacts.len() + 1,
                crate::duration::bytes(m.size_bytes()),
                dst.name()
            ));
        } else {
            match copy_backup(m, src, dst, &mut b, ui) {
                Ok(()) => b.action = "copied".into(),
                Err(e) => {
                    b.action = "failed".into();
                    b.error = Some(format!("{e:#}"));
                    ui.error(format!("{target} {}: copy failed: {e:#}", m.id));
                }
            }
        }
        report.backups.push(b);
    }
    Ok(report)
}

/// The chosen backups and, transitively, every backup they depend on (a part-level
/// ClickHouse backup references parts stored by earlier ones): a copy must be
/// restorable at the destination on its own. Oldest first, so a dependency is
/// complete there before what needs it.
fn with_dependencies<'a>(
    all: &'a [Manifest],
    chosen: Vec<&'a Manifest>,
) -> Result<Vec<&'a Manifest>> {
    let mut want: BTreeSet<&str> = chosen.iter().map(|m| m.id.as_str()).collect();
    let mut todo: Vec<&Manifest> = chosen;
    while let Some(m) = todo.pop() {
        for d in &m.depends_on {
            if want.contains(d.as_str()) {
                continue;
            }
            let dep = all.iter().find(|x| &x.id == d).ok_or_else(|| {
                Fail::Verify(format!(
                    "{} {} depends on backup {d}, which is not complete on the source: it cannot be copied restorable",
                    m.target, m.id
                ))
            })?;
            want.insert(dep.id.as_str());
            todo.push(dep);
        }
    }
    Ok(all
        .iter()
        .filter(|m| want.contains(m.id.as_str()))
        .collect())
}

fn copy_backup(
    m: &Manifest,
    src: &dyn Storage,
    dst: &dyn Storage,
    b: &mut CopiedBackup,
    ui: &Ui,
) -> Result<()> {
    let meta = object_meta(&m.target, &m.engine, &m.id, m.tag.as_deref());
    for art in &m.artifacts {
        let key = artifact_key(&m.target, &m.id, &art.name);
        // Resume: an object is visible only once whole, but it may have been damaged
        // since; keep it only when it reads back with the manifest's checksum.
        if dst.head(&key)?.is_some() {
            if let Ok((size, sha)) = read_digest(dst, &key) {
                if size == art.size_bytes && sha == art.sha256 {
                    b.objects_kept += 1;
                    continue;
                }
            }
        }
        let (size, sha) = stream_object(src, dst, &key, &meta)?;
        if size != art.size_bytes || sha != art.sha256 {
            // The bad object must not stay where a resume could take it for good.
            let _ = dst.delete(std::slice::from_ref(&key));
            return Err(Fail::Verify(format!(
                "the source copy of {key} on `{}` is damaged ({size} bytes, SHA-256 {sha}; the manifest says {} bytes, {}): nothing was copied from it; run `backup verify {} {} --storage {}`",
                src.name(),
                art.size_bytes,
                art.sha256,
                m.target,
                m.id,
                src.name()
            ))
            .into());
        }
        let (dsize, dsha) = read_digest(dst, &key)
            .with_context(|| format!("reading {key} back from `{}`", dst.name()))?;
        if dsize != art.size_bytes || dsha != art.sha256 {
            bail!(
                "{key} reads back from `{}` as {dsize} bytes with SHA-256 {dsha}, not {} bytes with {}: the destination damaged it; run the copy again",
                dst.name(),
                art.size_bytes,
                art.sha256
            );
        }
        b.objects_copied += 1;
        ui.info(format!(
            "{}: {} copied to `{}` and read back",
            key,
            crate::duration::bytes(size),
            dst.name()
        ));
    }
    // Last: the destination's own manifest (its encryption, its stored digests).
    let key = artifact_key(&m.target, &m.id, MANIFEST_FILE);
    let json = m.for_storage(dst).to_json()?;
    dst.put(&key, &json, &crate::manifest::manifest_meta(&meta, &json))
        .with_context(|| format!("writing {key} on `{}`", dst.name()))?;
    b.objects_copied += 1;
    Ok(())
}

/// Objects under `<target>/` that belong to no backup folder (the WAL archive).
fn copy_archive(
    target: &str,
    src: &dyn Storage,
    dst: &dyn Storage,
    dry_run: bool,
    ui: &Ui,
) -> Result<ArchiveCopy> {
    let prefix = format!("{target}/");
    let in_archive = |key: &str| {
        let rest = &key[prefix.len()..];
        match rest.split_once('/') {
            Some((first, _)) => parse_backup_id(first).is_none(),
            None => false,
        }
    };
    let want: Vec<_> = src
        .list(&prefix)
        .with_context(|| format!("listing {prefix} on `{}`", src.name()))?
        .into_iter()
        .filter(|o| in_archive(&o.key))
        .collect();
    if want.is_empty() {
        return Ok(ArchiveCopy::default());
    }
    let have: BTreeSet<String> = dst
        .list(&prefix)
        .with_context(|| format!("listing {prefix} on `{}`", dst.name()))?
        .into_iter()
        .filter(|o| in_archive(&o.key))
        .map(|o| o.key)
        .collect();
    let mut out = ArchiveCopy::default();
    for o in want {
        if have.contains(&o.key) {
            out.objects_present += 1;
            continue;
        }
        if dry_run {
            out.objects_copied += 1;
            out.bytes += o.size;
            continue;
        }
        // The object's own metadata goes along (wal-push's `sha256`, `raw-size`).
        let meta = PutMeta {
            metadata: src.metadata(&o.key).with_context(|| {
                format!("reading the metadata of {} on `{}`", o.key, src.name())
            })?,
            ..PutMeta::default()
        };
        let (size, sha) = stream_object(src, dst, &o.key, &meta)?;
        let (dsize, dsha) = read_digest(dst, &o.key)
            .with_context(|| format!("reading {} back from `{}`", o.key, dst.name()))?;
        if (dsize, &dsha) != (size, &sha) {
            let _ = dst.delete(std::slice::from_ref(&o.key));
            bail!(
                "{} reads back from `{}` as {dsize} bytes with SHA-256 {dsha}, not {size} bytes with {sha}: run the copy again",
                o.key,
                dst.name()
            );
        }
        out.objects_copied += 1;
        out.bytes += size;
    }
    if out.objects_copied > 0 {
        ui.info(format!(
            "{target}: {} archive object(s) ({}) {} `{}`, {} already there",
            out.objects_copied,
            crate::duration::bytes(out.bytes),
            if dry_run {
                "would be copied to"
            } else {
                "copied to"
            },
            dst.name(),
            out.objects_present
        ));
    }
    Ok(out)
}

/// Streams one object from `src` to `dst` in bounded memory; returns the size and
/// SHA-256 of the bytes read (as the source's manifest records them).
fn stream_object(
    src: &dyn Storage,
    dst: &dyn Storage,
    key: &str,
    meta: &PutMeta,
) -> Result<(u64, String)> {
    let mut r = src
        .open(key)
        .with_context(|| format!("reading {key} from `{}`", src.name()))?;
    let mut w = dst
        .create(key, meta)
        .with_context(|| format!("writing {key} on `{}`", dst.name()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                w.abort();
                return Err(anyhow!("reading {key} from `{}`: {e}", src.name()));
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        if let Err(e) = w.write_all(&buf[..n]) {
            w.abort();
            return Err(anyhow!("writing {key} on `{}`: {e}", dst.name()));
        }
    }
    w.finish()
        .with_context(|| format!("writing {key} on `{}`", dst.name()))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Size and SHA-256 of an object as the storage gives it back (decrypted if sealed).
fn read_digest(s: &dyn Storage, key: &str) -> Result<(u64, String)> {
    let mut r = s.open(key)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn ui() -> Ui {
        Ui::new(true, true)
    }

    fn state() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("backup-copy-test-{}", std::process::id()))
    }

    fn backup(s: &MemoryStorage, id: &str, body: &[u8]) -> Manifest {
        backup_on(s, id, body)
    }

    fn backup_on(s: &dyn Storage, id: &str, body: &[u8]) -> Manifest {
        let at = parse_backup_id(id).unwrap();
        let m = Manifest {
            manifest_version: crate::manifest::MANIFEST_VERSION,
            id: id.into(),
            target: "pg".into(),
            engine: "postgres".into(),
            kind: crate::manifest::Kind::Logical,
            format: "plain".into(),
            tag: None,
            started_at: at,
            finished_at: at,
            duration_seconds: 1.0,
            versions: Default::default(),
            artifacts: vec![crate::manifest::Artifact {
                name: "dump.sql.gz".into(),
                size_bytes: body.len() as u64,
                sha256: hex::encode(Sha256::digest(body)),
                compression: "gzip".into(),
                raw_size_bytes: 0,
                content: "pg_dump plain".into(),
            }],
            database: Default::default(),
            wal: None,
            depends_on: vec![],
            host: String::new(),
            encryption: None,
        };
        let name = m.artifacts[0].name.clone();
        s.put(&artifact_key("pg", id, &name), body, &PutMeta::default())
            .unwrap();
        s.put(
            &artifact_key("pg", id, MANIFEST_FILE),
            &m.to_json().unwrap(),
            &PutMeta::default(),
        )
        .unwrap();
        m
    }

    #[test]
    fn copies_archive_then_backups_and_skips_complete_ones() {
        let src = MemoryStorage::new("a");
        let dst = MemoryStorage::new("b");
        src.put("pg/wal/00000001/seg.gz", b"wal", &PutMeta::default())
            .unwrap();
        backup(&src, "20261130T010000Z", b"one");
        backup(&src, "20261130T020000Z", b"two");
        let r = copy("pg", &src, &dst, &Which::All, false, &state(), &ui()).unwrap();
        assert_eq!(r.archive.objects_copied, 1);
        assert!(r.backups.iter().all(|b| b.action == "copied"), "{r:?}");
        assert_eq!(catalog::scan(&dst, "pg").unwrap().backups.len(), 2);
        let again = copy("pg", &src, &dst, &Which::All, false, &state(), &ui()).unwrap();
        assert!(again.backups.iter().all(|b| b.action == "skipped"));
        assert_eq!(again.archive.objects_copied, 0);
    }

    #[test]
    fn damaged_source_is_not_propagated() {
        let src = MemoryStorage::new("a");
        let dst = MemoryStorage::new("b");
        let m = backup(&src, "20261130T010000Z", b"good bytes");
        let key = artifact_key("pg", &m.id, &m.artifacts[0].name);
        src.put(&key, b"bad bytes!", &PutMeta::default()).unwrap();
        let r = copy(
            "pg",
            &src,
            &dst,
            &Which::One("latest".into()),
            false,
            &state(),
            &ui(),
        )
        .unwrap();
        assert_eq!(r.backups[0].action, "failed");
        assert!(r.backups[0].error.as_deref().unwrap().contains("damaged"));
        assert!(dst.head(&key).unwrap().is_none());
        assert!(catalog::scan(&dst, "pg").unwrap().backups.is_empty());
    }

    #[test]
    fn resumes_keeping_whole_objects() {
        let src = MemoryStorage::new("a");
        let dst = MemoryStorage::new("b");
        let m = backup(&src, "20261130T010000Z", b"payload");
        let key = artifact_key("pg", &m.id, &m.artifacts[0].name);
        dst.put(&key, b"payload", &PutMeta::default()).unwrap();
        let r = copy("pg", &src, &dst, &Which::All, false, &state(), &ui()).unwrap();
        assert_eq!(r.backups[0].objects_kept, 1);
        assert_eq!(r.backups[0].objects_copied, 1); // the manifest
    }

    #[test]
    fn a_backup_brings_the_backups_it_depends_on() {
        let src = MemoryStorage::new("a");
        let dst = MemoryStorage::new("b");
        let base = backup(&src, "20261130T010000Z", b"base");
        let mut m = backup(&src, "20261130T020000Z", b"incr");
        m.depends_on = vec![base.id.clone()];
        src.put(
            &artifact_key("pg", &m.id, MANIFEST_FILE),
            &m.to_json().unwrap(),
            &PutMeta::default(),
        )
        .unwrap();
        let r = copy(
            "pg",
            &src,
            &dst,
            &Which::One("latest".into()),
            false,
            &state(),
            &ui(),
        )
        .unwrap();
        let ids: Vec<&str> = r.backups.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, vec![base.id.as_str(), m.id.as_str()]);
        assert_eq!(catalog::scan(&dst, "pg").unwrap().backups.len(), 2);
    }

    #[test]
    fn archive_objects_keep_their_metadata() {
        use crate::storage::local::LocalStorage;
        let dir = tempfile::tempdir().unwrap();
        let src = LocalStorage::new("a", &dir.path().join("a"));
        let dst = LocalStorage::new("b", &dir.path().join("b"));
        let mut meta = PutMeta::default();
        meta.metadata.insert("sha256".into(), "abc".into());
        src.put("pg/wal/00000001/seg.gz", b"wal", &meta).unwrap();
        let r = copy("pg", &src, &dst, &Which::All, false, &state(), &ui());
        // No backup to copy: the archive goes only along with one.
        assert!(r.is_err() || dst.list("pg/").unwrap().is_empty());
        let m = backup_on(&src, "20261130T010000Z", b"one");
        copy("pg", &src, &dst, &Which::One(m.id), false, &state(), &ui()).unwrap();
        assert_eq!(
            dst.metadata("pg/wal/00000001/seg.gz").unwrap()["sha256"],
            "abc"
        );
    }

    #[test]
    fn dry_run_writes_nothing() {
        let src = MemoryStorage::new("a");
        let dst = MemoryStorage::new("b");
        src.put("pg/wal/00000001/seg.gz", b"wal", &PutMeta::default())
            .unwrap();
        backup(&src, "20261130T010000Z", b"one");
        let r = copy("pg", &src, &dst, &Which::All, true, &state(), &ui()).unwrap();
        assert_eq!(r.backups[0].action, "would copy");
        assert!(dst.list("").unwrap().is_empty());
    }
}
