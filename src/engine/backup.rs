//! `backup run`: one streaming pass from the engine's dump to every storage.
//!
//! engine stdout -> compression (gzip, zstd or none) -> SHA-256 -> each storage's writer, in bounded
//! memory. The manifest is written only after the tool exited cleanly and every
//! storage confirmed its copy; a failed dump leaves nothing behind. A storage that
//! fails mid-way is dropped from the run (its partial object removed) while the others
//! carry on, and the run exits non-zero naming it.

use crate::compress::Compression;
use crate::db::{ArtifactSpec, LogicalEngine, Target};
use crate::engine::catalog;
use crate::engine::lock::{hostname, Lock};
use crate::error::Fail;
use crate::manifest::{self, Artifact, Kind, Manifest, RunOutcome, MANIFEST_FILE};
use crate::storage::{self, ObjectWriter, PutMeta, Storage};
use crate::ui::{Progress, Ui};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '@'));
    if !ok {
        return Err(Fail::Usage(format!(
            "tag `{tag}` must be 1-128 characters of letters, digits and . - _ + @ (e.g. pre-deployment-v1.2.3)"
        ))
        .into());
    }
    Ok(())
}

/// The manifest as written to one storage (each storage's copy describes itself:
/// an encrypted copy records its recipients and stored digests).
pub type ManifestFor<'a> = dyn Fn(&dyn Storage) -> Result<Vec<u8>> + 'a;

/// Storages that failed, with the reason.
pub type Failures = Vec<(String, String)>;
pub type Storages = Vec<Box<dyn Storage>>;

/// `local (file:///backups), s3 (s3://bucket/prefix)`.
pub fn describe_storages(storages: &[Box<dyn Storage>]) -> String {
    storages
        .iter()
        .map(|s| format!("{} ({})", s.name(), s.location()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes to every live storage writer; drops a storage that fails.
struct FanOut {
    writers: Vec<(String, Option<Box<dyn ObjectWriter>>)>,
    failed: Vec<(String, String)>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for FanOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        for (name, slot) in self.writers.iter_mut() {
            if let Some(w) = slot {
                if let Err(e) = w.write_all(buf) {
                    self.failed.push((name.clone(), e.to_string()));
                    if let Some(w) = slot.take() {
                        w.abort();
                    }
                }
            }
        }
        if self.writers.iter().all(|(_, w)| w.is_none()) {
            return Err(std::io::Error::other("every storage failed"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies `source` into `out` in 256 KiB chunks, counting what was read.
fn pump(
    source: &mut dyn Read,
    out: &mut dyn Write,
    progress: &mut Progress,
    raw: &mut u64,
) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = source.read(&mut buf).context("reading the dump")?;
        if n == 0 {
            return Ok(());
        }
        *raw += n as u64;
        progress.inc(n as u64);
        out.write_all(&buf[..n])?;
    }
}

/// One artifact streamed to every storage at once (bounded memory), then committed
/// with its manifest. Shared by logical dumps and physical base backups.
pub struct Upload<'s> {
    storages: &'s [Box<dyn Storage>],
    key: String,
    fan: FanOut,
    /// Bytes read from the source (before compression).
    pub raw_bytes: u64,
}

impl<'s> Upload<'s> {
    /// Opens a writer on every storage; fails only when none accepted.
    /// `left_out` are storages already excluded (with the reason): they are reported
    /// as failed at commit, so the run exits non-zero naming them.
    pub fn start(
        storages: &'s [Box<dyn Storage>],
        key: &str,
        meta: &PutMeta,
        left_out: Failures,
    ) -> Result<Upload<'s>> {
        let mut failed = left_out;
        let mut writers = Vec::new();
        for s in storages {
            match s.create(key, meta) {
                Ok(w) => writers.push((s.name().to_string(), Some(w))),
                Err(e) => failed.push((s.name().to_string(), format!("{e:#}"))),
            }
        }
        if writers.is_empty() {
            bail!(
                "no storage accepted the backup: {}",
                describe_failures(&failed)
            );
        }
        Ok(Upload {
            storages,
            key: key.to_string(),
            fan: FanOut {
                writers,
                failed,
                hasher: Sha256::new(),
                bytes: 0,
            },
            raw_bytes: 0,
        })
    }

    /// Copies `source` to every storage, gzip-compressed at `gzip` level when set.
    pub fn copy(
        &mut self,
        source: &mut dyn Read,
        gzip: Option<u32>,
        progress: &mut Progress,
    ) -> Result<()> {
        match gzip {
            Some(l) => self.copy_with(source, Compression::Gzip, Some(l as i32), progress),
            None => self.copy_with(source, Compression::None, None, progress),
        }
    }

    /// Copies `source` to every storage, compressed with `c` at `level` (None: its default).
    pub fn copy_with(
        &mut self,
        source: &mut dyn Read,
        c: Compression,
        level: Option<i32>,
        progress: &mut Progress,
    ) -> Result<()> {
        let mut raw = 0u64;
        let res: Result<()> = (|| {
            let mut enc = c.encoder(&mut self.fan, level)?;
            pump(source, &mut enc, progress, &mut raw).context("compressing/storing the dump")?;
            enc.finish().context("finishing compression")?;
            Ok(())
        })();
        self.raw_bytes += raw;
        res
    }

    /// Bytes as stored and their SHA-256 (call after `copy`).
    pub fn stored(&self) -> (u64, String) {
        (
            self.fan.bytes,
            hex::encode(self.fan.hasher.clone().finalize()),
        )
    }

    /// Storage failures so far, as one line.
    pub fn failures(&self) -> String {
        describe_failures(&self.fan.failed)
    }

    /// Throws every partial object away.
    pub fn abort(self) {
        for (_, w) in self.fan.writers {
            if let Some(w) = w {
                w.abort();
            }
        }
    }

    /// Commits with `m` as the manifest; fails when no storage holds the backup.
    pub fn commit_manifest(
        self,
        m: &Manifest,
        meta: &PutMeta,
        ui: &Ui,
    ) -> Result<(Vec<String>, Failures)> {
        let manifest_key = catalog::artifact_key(&m.target, &m.id, MANIFEST_FILE);
        let (stored_on, failed) =
            self.commit(&manifest_key, &|s| m.for_storage(s).to_json(), meta, ui);
        if stored_on.is_empty() {
            bail!(
                "backup {} {} failed on every storage: {}",
                m.target,
                m.id,
                describe_failures(&failed)
            );
        }
        Ok((stored_on, failed))
    }

    /// Completes the artifact on each live storage, then writes the manifest there.
    /// Returns (stored on, failed).
    pub fn commit(
        self,
        manifest_key: &str,
        manifest_bytes: &ManifestFor<'_>,
        meta: &PutMeta,
        ui: &Ui,
    ) -> (Vec<String>, Failures) {
        self.complete(Some((manifest_key, manifest_bytes, meta)), ui)
    }

    /// Completes the artifact on each live storage without a manifest (one of several
    /// artifacts of a backup). Returns (stored on, failed).
    pub fn finish_artifact(self, ui: &Ui) -> (Vec<String>, Failures) {
        self.complete(None, ui)
    }

    fn complete(
        self,
        manifest: Option<(&str, &ManifestFor<'_>, &PutMeta)>,
        ui: &Ui,
    ) -> (Vec<String>, Failures) {
        let stored_bytes = self.fan.bytes;
        let mut failed = self.fan.failed;
        let mut stored_on = Vec::new();
        for (name, w) in self.fan.writers {
            let Some(w) = w else { continue };
            let s = self
                .storages
                .iter()
                .find(|s| s.name() == name)
                .expect("storage exists");
            let res = w
                .finish()
                .and_then(|info| {
                    if info.size != stored_bytes {
                        Err(anyhow!(
                            "stored {} bytes but produced {stored_bytes}",
                            info.size
                        ))
                    } else {
                        Ok(())
                    }
                })
                .and_then(|_| match manifest {
                    Some((key, bytes, meta)) => bytes(s.as_ref()).and_then(|bytes| {
                        s.put(key, &bytes, &manifest::manifest_meta(meta, &bytes))
                            .map(|_| ())
                    }),
                    None => Ok(()),
                });
            match res {
                Ok(()) => {
                    if manifest.is_some() {
                        ui.info(format!(
                            "stored {} on `{name}` ({})",
                            crate::duration::bytes(stored_bytes),
                            s.location()
                        ));
                    }
                    stored_on.push(name);
                }
                Err(e) => {
                    // No manifest there: remove the artifact so nothing half-made lingers.
                    let mut keys = vec![self.key.clone()];
                    keys.extend(manifest.map(|m| m.0.to_string()));
                    let _ = s.delete(&keys);
                    failed.push((name, format!("{e:#}")));
                }
            }
        }
        (stored_on, failed)
    }
}

/// Removes what an interrupted run left of backup `id` when the process is stopped by
/// SIGINT, SIGTERM or SIGHUP (temporary files, unfinished multipart uploads), so a
/// Ctrl-C or a service stop leaves nothing behind. A storage that already holds the
/// manifest is left alone: that copy is a good backup. The commit step holds a lock the
/// cleanup also takes, so the two never interleave.
pub struct InterruptCleanup {
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    commit: std::sync::Arc<std::sync::Mutex<()>>,
    _guard: crate::engine::cleanup::CleanupGuard,
}

impl InterruptCleanup {
    pub fn new(t: &Target, storages: &[Box<dyn Storage>], id: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let armed = std::sync::Arc::new(AtomicBool::new(true));
        let commit = std::sync::Arc::new(std::sync::Mutex::new(()));
        let (flag, lock) = (armed.clone(), commit.clone());
        let cfg = t.config.clone();
        let names: Vec<String> = storages.iter().map(|s| s.name().to_string()).collect();
        let prefix = format!("{}/{id}/", t.name);
        let guard = crate::engine::cleanup::CleanupGuard::new(move || {
            let _commit = lock.lock().unwrap_or_else(|p| p.into_inner());
            if !flag.swap(false, Ordering::SeqCst) {
                return;
            }
            for n in &names {
                let Ok(s) = storage::open(&cfg, n) else {
                    continue;
                };
                let _ = s.abort_uploads(&prefix);
                let Ok(objs) = s.list(&prefix) else { continue };
                if objs.iter().any(|o| o.key.ends_with(MANIFEST_FILE)) {
                    continue;
                }
                let keys: Vec<String> = objs.into_iter().map(|o| o.key).collect();
                let _ = s.delete(&keys);
                eprintln!("interrupted: removed the partial backup {prefix} from `{n}`");
            }
        });
        InterruptCleanup {
            armed,
            commit,
            _guard: guard,
        }
    }

    /// Runs the commit step so that an interruption cannot interleave with it.
    pub fn committing<T>(&self, f: impl FnOnce() -> T) -> T {
        let _commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let out = f();
        self.disarm();
        out
    }

    pub fn disarm(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for InterruptCleanup {
    fn drop(&mut self) {
        // Normal exits (success, or a failure the error path cleaned up) never run it.
        self.disarm();
    }
}

/// A new backup id, later than `last` (ids sort by time; two runs within a second
/// wait a moment rather than reuse one).
/// A new backup id after `last` (the newest id on any storage, complete or not): the
/// current second, or one second after `last` when that is not later. Two runs in the
/// same second, or a clock stepped back (NTP, a VM restored), never reuse an id (and
/// never write into a leftover folder); the manifest keeps the real start time.
pub fn allocate_id(last: Option<&str>) -> (chrono::DateTime<chrono::Utc>, String) {
    let started = chrono::Utc::now();
    let mut id = manifest::backup_id(started);
    if let Some(l) = last.filter(|l| *l >= id.as_str()) {
        if let Some(t) = manifest::parse_backup_id(l) {
            id = manifest::backup_id(t + chrono::Duration::seconds(1));
        }
    }
    (started, id)
}

/// Tags every object of a backup carries (S3 object tags).
pub fn object_meta(target: &str, engine: &str, id: &str, tag: Option<&str>) -> PutMeta {
    let mut tags = BTreeMap::new();
    tags.insert("target".to_string(), target.to_string());
    tags.insert("engine".to_string(), engine.to_string());
    tags.insert("backup-id".to_string(), id.to_string());
    if let Some(t) = tag {
        tags.insert("tag".to_string(), t.to_string());
    }
    PutMeta {
        tags,
        metadata: BTreeMap::new(),
    }
}

/// Opens a target's storages, checks free space on local ones (against the last
/// backup's size plus 20%, else `db_size`), and returns the newest backup id there.
pub fn open_and_check(
    t: &Target,
    db_size: Option<u64>,
    ui: &Ui,
) -> Result<(Storages, Option<String>, Failures)> {
    let (tcfg, target) = (t.cfg, t.name);
    let storages = t.open_storages()?;

    // Free space on local storages: against the last backup's size when there is
    // one (with 20% headroom), else against the database's size.
    // A storage that cannot be read now (bucket missing, store down, credentials) is
    // left out of this run, which still fails in the end: one storage being down must
    // not cost the backup on the others.
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut usable: Storages = Vec::new();
    let mut last_id: Option<String> = None;
    for s in storages {
        // A storage that promises Object Lock on a bucket that cannot keep it is a
        // configuration error (exit 2) before any byte is stored; one that cannot be
        // asked is left out like any unreachable storage.
        if let Err(e) = s.check_lock_promise() {
            if crate::error::exit_code(&e) == 2 {
                return Err(e);
            }
            let why = format!("{e:#}");
            ui.warn(format!(
                "storage `{}` is left out of this run: {why}",
                s.name()
            ));
            failed.push((s.name().to_string(), why));
            continue;
        }
        let cat = match catalog::scan(s.as_ref(), target) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("reading {}: {e:#}", s.location());
                ui.warn(format!(
                    "storage `{}` is left out of this run: {why}",
                    s.name()
                ));
                failed.push((s.name().to_string(), why));
                continue;
            }
        };
        // Leftover folders count too: a new backup must never land in one.
        let newest = cat
            .backups
            .iter()
            .map(|m| m.id.as_str())
            .chain(cat.incomplete.iter().map(|i| i.id.as_str()))
            .max();
        if let Some(n) = newest {
            if last_id.as_deref().map_or(true, |l| l < n) {
                last_id = Some(n.to_string());
            }
        }
        if tcfg.disk_check && s.is_local() {
            if let Some(free) = s.free_space() {
                let need = match cat.backups.last() {
                    Some(m) => m.size_bytes() + m.size_bytes() / 5,
                    None => db_size.unwrap_or(0),
                };
                if free < need {
                    bail!(
                        "storage `{}` ({}) has {} free but this backup needs about {} ({}); free space there or set disk_check = false for target `{target}`",
                        s.name(),
                        s.location(),
                        crate::duration::bytes(free),
                        crate::duration::bytes(need),
                        if cat.backups.is_empty() { "the database's size" } else { "the last backup's size plus 20%" }
                    );
                }
            }
        }
        usable.push(s);
    }
    if usable.is_empty() {
        bail!(
            "no storage can take the backup: {}",
            describe_failures(&failed)
        );
    }
    Ok((usable, last_id, failed))
}

/// Takes the run lock of a target (one run, prune or physical backup at a time).
pub fn lock_target(t: &Target) -> Result<Lock> {
    Lock::acquire(
        &t.config.state_dir(),
        t.name,
        &format!("backup run {}", t.name),
    )
}

/// `backup run` of a logical target: the engine's dump stream -> compression ->
/// SHA-256 -> every storage, then the manifest.
pub fn run(
    t: &Target,
    engine: &mut dyn LogicalEngine,
    tag: Option<&str>,
    ui: &Ui,
) -> Result<RunOutcome> {
    let (tcfg, target) = (t.cfg, t.name);
    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    let _lock = lock_target(t)?;

    let info = engine.precheck()?;
    let spec: ArtifactSpec = engine.artifact();

    let (storages, last_id, left_out) = open_and_check(t, info.size_bytes, ui)?;

    let (started, id) = allocate_id(last_id.as_deref());
    let meta = object_meta(target, &tcfg.engine, &id, tag);
    ui.info(format!(
        "backup {target} {id}: {} of database {} ({}) to {}",
        spec.content,
        info.database.as_deref().unwrap_or("?"),
        crate::duration::bytes(info.size_bytes.unwrap_or(0)),
        describe_storages(&storages)
    ));

    // The engine's compressed output goes out with the target's `compression` (gzip by
    // default: the runbooks read dumps with gunzip).
    let (art_name, compression) = spec.stored(tcfg.compression_or(Compression::Gzip));
    let key = catalog::artifact_key(target, &id, &art_name);
    // The cleanup first: a signal right after the first byte is stored must find it.
    let interrupted = InterruptCleanup::new(t, &storages, &id);
    let mut upload = Upload::start(&storages, &key, &meta, left_out)?;
    let mut dump = engine.start_dump()?;
    let mut progress = ui.progress(&format!("{target} {id}"), None);
    let level = tcfg.compression_level.map(|l| l as i32);
    let copy_result = upload.copy_with(&mut dump, compression, level, &mut progress);
    progress.finish();

    if let Err(e) = copy_result {
        dump.kill();
        let storage_errors = upload.failures();
        upload.abort();
        return Err(e.context(if storage_errors.is_empty() {
            format!("backup {target} {id} failed; nothing was kept")
        } else {
            format!("backup {target} {id} failed ({storage_errors}); nothing was kept")
        }));
    }
    // The tool's verdict before anything becomes visible.
    let facts = match dump.finish() {
        Ok(f) => f,
        Err(e) => {
            upload.abort();
            return Err(e.context(format!("backup {target} {id} failed; nothing was kept")));
        }
    };
    let (stored_bytes, sha256) = upload.stored();
    let raw_bytes = upload.raw_bytes;
    let finished = chrono::Utc::now();

    let mut versions = info.versions.clone();
    versions.insert("backup".into(), env!("CARGO_PKG_VERSION").into());
    let m = Manifest {
        manifest_version: manifest::MANIFEST_VERSION,
        id: id.clone(),
        target: target.to_string(),
        engine: tcfg.engine.clone(),
        kind: Kind::Logical,
        format: spec.format.clone(),
        tag: tag.map(str::to_string),
        started_at: started,
        finished_at: finished,
        duration_seconds: (finished - started).num_milliseconds() as f64 / 1000.0,
        versions,
        artifacts: vec![Artifact {
            name: art_name,
            size_bytes: stored_bytes,
            sha256,
            compression: compression.name().into(),
            raw_size_bytes: raw_bytes,
            content: spec.content.clone(),
        }],
        database: facts,
        wal: None,
        depends_on: vec![],
        host: hostname(),
        encryption: None,
    };
    let (stored_on, failed) = interrupted.committing(|| upload.commit_manifest(&m, &meta, ui))?;
    Ok(RunOutcome {
        manifest: m,
        stored_on,
        failed,
    })
}

pub fn describe_failures(f: &[(String, String)]) -> String {
    f.iter()
        .map(|(s, e)| format!("storage `{s}`: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}
