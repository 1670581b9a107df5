//! `async = true`: `wal-push` hands the other segments already waiting in
//! `pg_wal/archive_status` (`*.ready`) to a background worker that pushes them in
//! parallel, and later calls for them answer from the worker's markers at once (the
//! way pgBackRest's archive-async does), so a burst of writes or a slow S3 does not
//! make PostgreSQL's one-file-at-a-time archiver fall behind and fill pg_wal.
//!
//! `archive_queue_max` (with or without async): when pg_wal holds more unarchived WAL
//! than that, `wal-push` reports success for a segment WITHOUT archiving it, loudly,
//! so PostgreSQL can recycle it: a broken storage then costs the archive a gap (which
//! `verify` and `list` report) instead of a full disk and a stopped database.
//!
//! Spool, per target: `<state_dir>/wal-spool/<target>/`
//! - `NAME.ok`: the worker stored NAME durably on every storage; holds its SHA-256.
//! - `NAME.error`: the worker's push failed; holds why (reported once, then retried).
//! - `NAME.busy`: the worker is pushing NAME right now.
//! - `worker.log`: the worker's own output.
//!
//! One worker per target at a time (flock on `<state_dir>/locks/<target>.wal-push.lock`).
//! Correctness never depends on it: a call that finds no usable marker pushes its file
//! itself, synchronously, exactly as without async, and a marker is trusted only when
//! its SHA-256 is the file's own.

use super::wal::{self, is_archive_name, parse_segment, DEFAULT_SEGMENT_SIZE};
use super::Options;
use crate::db::{PushOutcome, Target};
use crate::engine::lock::Lock;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The worker's parallel pushes when `archive_jobs` is not set.
pub const DEFAULT_JOBS: usize = 4;
/// How long the worker waits for new `.ready` files before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(3);
/// The longest a call waits for the worker's push of its file before pushing it itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub jobs: usize,
    pub queue_max: Option<u64>,
}

impl Settings {
    pub fn of(o: &Options) -> Settings {
        Settings {
            enabled: o.archive_async,
            jobs: o.archive_jobs.map_or(DEFAULT_JOBS, |j| j.max(1) as usize),
            // Checked when the configuration is loaded.
            queue_max: o
                .archive_queue_max
                .as_deref()
                .and_then(|q| crate::duration::parse_bytes(q).ok()),
        }
    }
}

pub fn spool_dir(t: &Target) -> PathBuf {
    t.config.state_dir().join("wal-spool").join(t.name)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))
}

fn sha_of(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// The names waiting in `pg_wal/archive_status` (`*.ready`), oldest first, with the
/// size of each file in pg_wal.
fn ready(pg_wal: &Path) -> Vec<(String, u64)> {
    let Ok(rd) = std::fs::read_dir(pg_wal.join("archive_status")) else {
        return vec![];
    };
    let mut out: Vec<(String, u64)> = rd
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            let name = n.strip_suffix(".ready")?.to_string();
            let size = std::fs::metadata(pg_wal.join(&name)).ok()?.len();
            is_archive_name(&name).then_some((name, size))
        })
        .collect();
    // Timeline history files first (PostgreSQL archives them first too), then by name.
    out.sort_by_key(|(n, _)| (!n.ends_with(".history"), n.clone()));
    out
}

/// Writes `text` to `path` atomically (a reader sees all of it or nothing).
fn write_marker(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// archive_command with the async and queue settings.
pub fn push(t: &Target, s: &Settings, path: &Path) -> Result<PushOutcome> {
    let name = file_name(path)?;
    let pg_wal = path.parent().unwrap_or(Path::new("."));
    let spool = spool_dir(t);
    let (ok, err, busy) = markers(&spool, &name);
    if s.enabled {
        std::fs::create_dir_all(&spool).with_context(|| {
            format!("creating the WAL spool {} (set state_dir)", spool.display())
        })?;
        // The worker may be pushing this very file: wait for its answer.
        let waited = Instant::now();
        while busy.exists() && waited.elapsed() < WAIT_FOR_WORKER && worker_running(t) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(text) = std::fs::read_to_string(&err) {
            let _ = std::fs::remove_file(&err);
            bail!("the background push failed: {}", text.trim());
        }
        if let Ok(recorded) = std::fs::read_to_string(&ok) {
            let _ = std::fs::remove_file(&ok);
            if recorded.trim() == sha_of(path)? {
                return Ok(PushOutcome::StoredInBackground);
            }
            // A marker for other content (a leftover from another cluster's file of
            // this name): push this one for real.
        }
    }
    let waiting = ready(pg_wal);
    if let Some(max) = s.queue_max {
        // Only segments are ever let go: history and backup-label files are tiny and
        // recovery cannot do without them.
        let queued: u64 = waiting.iter().map(|(_, n)| n).sum();
        if queued > max && parse_segment(&name, DEFAULT_SEGMENT_SIZE).is_some() {
            return Ok(PushOutcome::Dropped { queued, max });
        }
    }
    // Others waiting besides this one: let the worker take them in parallel.
    if s.enabled && waiting.iter().any(|(n, _)| *n != name) {
        if let Err(e) = start_worker(t, path) {
            eprintln!(
                "wal-push: could not start the background worker (pushing in the foreground): {e:#}"
            );
        }
    }
    let out = wal::push(t, path);
    // The worker may have stored it meanwhile; the answer above stands either way.
    let _ = std::fs::remove_file(&ok);
    out
}

fn markers(spool: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        spool.join(format!("{name}.ok")),
        spool.join(format!("{name}.error")),
        spool.join(format!("{name}.busy")),
    )
}

fn worker_lock(t: &Target) -> Result<Lock> {
    Lock::acquire(
        &t.config.state_dir(),
        &format!("{}.wal-push", t.name),
        &format!("wal-push {} background worker", t.name),
    )
}

fn worker_running(t: &Target) -> bool {
    worker_lock(t).is_err()
}

/// Starts `backup wal-push --background TARGET PATH`, detached (its own process group,
/// so PostgreSQL stopping its archiver does not stop a push half-way), unless one runs.
fn start_worker(t: &Target, path: &Path) -> Result<()> {
    if worker_running(t) {
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let spool = spool_dir(t);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spool.join("worker.log"))
        .context("opening the worker log")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = &t.config.source {
        cmd.arg("--config")
            .arg(std::fs::canonicalize(c).unwrap_or(c.clone()));
    }
    cmd.args(["--no-progress", "wal-push", "--background", t.name])
        .arg(&abs)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().context("starting the background worker")?;
    // Reaped by init once this process exits; nobody waits for it here.
    drop(child);
    Ok(())
}

/// `wal-push --background TARGET PATH`: push every `.ready` file next to `PATH` (but
/// PATH itself, which its caller pushes), in parallel, until none is left for a while.
pub fn worker(t: &Target, s: &Settings, first: &Path) -> Result<()> {
    let Ok(_lock) = worker_lock(t) else {
        return Ok(()); // another worker is at it
    };
    let pg_wal = first.parent().unwrap_or(Path::new(".")).to_path_buf();
    let skip = file_name(first)?;
    let spool = spool_dir(t);
    std::fs::create_dir_all(&spool)?;
    // Holding the lock, no other worker runs: any `.busy` is a dead worker's.
    let mut idle_since = Instant::now();
    let mut round = 0u64;
    loop {
        let waiting = ready(&pg_wal);
        tidy(&spool, &waiting);
        let todo: Vec<String> = waiting
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !(round == 0 && *n == skip))
            .filter(|n| {
                let (ok, err, _) = markers(&spool, n);
                !ok.exists() && !err.exists()
            })
            .collect();
        round += 1;
        if todo.is_empty() {
            if idle_since.elapsed() > IDLE_EXIT {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..s.jobs.min(todo.len()) {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(name) = todo.get(i) else { return };
                    push_one(t, &spool, &pg_wal, name);
                });
            }
        });
        idle_since = Instant::now();
    }
}

/// One file by the worker: `.busy` while it runs, then `.ok` or `.error`.
fn push_one(t: &Target, spool: &Path, pg_wal: &Path, name: &str) {
    let (ok, err, busy) = markers(spool, name);
    let _ = std::fs::write(&busy, b"");
    let path = pg_wal.join(name);
    let res = sha_of(&path).and_then(|sha| wal::push(t, &path).map(|_| sha));
    let _ = match res {
        Ok(sha) => write_marker(&ok, &sha),
        Err(e) => {
            eprintln!("wal-push {} {name} (background): {e:#}", t.name);
            write_marker(&err, &format!("{e:#}"))
        }
    };
    let _ = std::fs::remove_file(&busy);
}

/// Removes markers no call will ask for: their file is no longer waiting (archived and
/// renamed `.done` by PostgreSQL, or recycled), and `.busy` left by a dead worker.
fn tidy(spool: &Path, waiting: &[(String, u64)]) {
    let Ok(rd) = std::fs::read_dir(spool) else {
        return;
    };
    for e in rd.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some((name, kind)) = f.rsplit_once('.') else {
            continue;
        };
        let stale = match kind {
            "busy" => true,
            "ok" | "error" => !waiting.iter().any(|(n, _)| n == name),
            _ => false,
        };
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lists_waiting_files_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("archive_status");
        std::fs::create_dir_all(&st).unwrap();
        for (n, done) in [
            ("000000010000000000000003", false),
            ("000000010000000000000001", true),
            ("000000010000000000000002", false),
            ("00000002.history", false),
        ] {
            std::fs::write(d.path().join(n), vec![0u8; 10]).unwrap();
            let ext = if done { "done" } else { "ready" };
            std::fs::write(st.join(format!("{n}.{ext}")), b"").unwrap();
        }
        let r: Vec<String> = ready(d.path()).into_iter().map(|x| x.0).collect();
        assert_eq!(
            r,
            [
                "00000002.history",
                "000000010000000000000002",
                "000000010000000000000003"
            ]
        );
        let spool = d.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        for f in [
            "000000010000000000000001.ok",
            "000000010000000000000002.ok",
            "000000010000000000000003.busy",
            "worker.log",
        ] {
            std::fs::write(spool.join(f), b"x").unwrap();
        }
        tidy(&spool, &ready(d.path()));
        let mut left: Vec<String> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["000000010000000000000002.ok", "worker.log"]);
    }
}
