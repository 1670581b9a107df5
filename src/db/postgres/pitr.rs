//! `backup pitr`: restore a physical base backup into a new data directory and
//! configure PostgreSQL (12+) to replay the WAL archive up to a target.
//!
//! The backup is chosen and the archive checked for gaps before anything is written
//! (`pitr_plan.rs`). With `--start` the server is started and its log followed until
//! recovery stops; the run fails, quoting the server, when recovery ended without
//! reaching the target.

use super::archive::{scan, seg_size_of, Archive};
use super::physical::{self, tool_for};
use super::pitr_plan::{check_archive, choose, goal_settings, physical_catalog};
use super::{files, tar, wal, Options};
use crate::db::{Goal, PitrOutcome, PitrRequest, Target};
use crate::engine::catalog;
use crate::engine::verify::Hashing;
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn dir_is_empty(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut r) => Ok(r.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read immediately.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(Fail::Usage(format!(
            "OS user `{name}` does not exist; pass --owner with the user PostgreSQL runs as"
        ))
        .into());
    }
    // SAFETY: pw is non-null and points to a valid passwd.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", p.display()))?;
    let md = std::fs::symlink_metadata(p)?;
    if md.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

pub fn pitr(t: &Target, opts: &Options, req: PitrRequest, ui: &Ui) -> Result<PitrOutcome> {
    let cfg = t.config;
    if let Goal::Lsn(l) = &req.goal {
        wal::parse_lsn(l).map_err(|e| Fail::Usage(format!("--target-lsn: {e:#}")))?;
    }
    if !matches!(req.action.as_str(), "promote" | "pause" | "shutdown") {
        return Err(Fail::Usage(format!(
            "--target-action `{}` is not promote, pause or shutdown",
            req.action
        ))
        .into());
    }
    let config_path = cfg
        .source
        .as_ref()
        .ok_or_else(|| {
            Fail::Usage(
                "pitr needs a config file (--config or BACKUP_CONFIG): the restore_command it writes must find the same storages"
                    .into(),
            )
        })?
        .canonicalize()
        .context("resolving the config file's path")?;
    let data_dir = std::path::absolute(&req.data_dir)
        .with_context(|| format!("resolving {}", req.data_dir.display()))?;
    if !dir_is_empty(&data_dir)? {
        if !req.delta {
            return Err(Fail::Usage(format!(
                "refusing: data directory {} is not empty; give a new or empty directory (never the running cluster's), \
                 or --delta to rewrite a stopped cluster's changed files",
                data_dir.display()
            ))
            .into());
        }
        files::check_delta_dir(&data_dir, postmaster_running(&data_dir))?;
    }
    let owner = if is_root() {
        let name = req.owner.clone().unwrap_or_else(|| "postgres".into());
        let ids = lookup_user(&name)?;
        Some((name, ids))
    } else {
        None
    };

    let storages = t.open_readable_storages()?;
    let found = physical_catalog(&storages, &req.target)?;
    let chosen = choose(&found, &req)?;
    let m = chosen.m.clone();
    let _reading =
        crate::engine::readers::read(&t.config.state_dir(), t.name, &m.id, "backup pitr")?;
    let storage = &storages[chosen.storage];
    let seg = seg_size_of(&m);
    let mut archive = Archive::default();
    let mut scan_errors = Vec::new();
    for s in &storages {
        match scan(s.as_ref(), &req.target, seg) {
            Ok(a) => archive.merge(a),
            Err(e) => scan_errors.push(format!("storage `{}`: {e:#}", s.name())),
        }
    }
    if archive.segments.is_empty() && !scan_errors.is_empty() {
        bail!("cannot read the WAL archive: {}", scan_errors.join("; "));
    }
    let mut done = Vec::new();
    let mut notes = check_archive(&archive, &m, &req.goal)?;
    for e in scan_errors {
        notes.push(format!("warning: could not list WAL on {e}"));
    }
    let w = m.wal.clone().expect("physical");
    ui.info(format!(
        "recovering {} to {} from base backup {} (finished {}, timeline {}, {}..{}) on `{}`",
        req.target,
        req.goal.describe(),
        m.id,
        m.finished_at.to_rfc3339(),
        w.timeline,
        w.start_lsn,
        w.stop_lsn,
        storage.name()
    ));
    for n in &notes {
        if n.starts_with("warning") {
            ui.warn(n);
        } else {
            ui.info(n);
        }
    }

    // Restore the base backup, verifying its checksum on the way.
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let files = if files::is_files(&m) {
        files::restore_for_pitr(storage.as_ref(), &m, &data_dir, req.delta, opts.jobs, ui)?
    } else if req.delta {
        return Err(Fail::Usage(format!(
            "--delta needs a file-level backup (method = \"files\"); {} is a pg_basebackup stream: restore it into an empty directory",
            m.id
        ))
        .into());
    } else {
        unpack_base(storage.as_ref(), &req.target, &m, &data_dir)?
    };
    tar::sync_tree(&data_dir)?;
    done.push(format!(
        "restored base backup {} ({} files, sha256 verified) into {}",
        m.id,
        files,
        data_dir.display()
    ));
    if !data_dir.join("backup_label").exists() {
        bail!("the restored base backup has no backup_label; it cannot be recovered");
    }
    for d in ["pg_wal", "pg_wal/archive_status"] {
        std::fs::create_dir_all(data_dir.join(d))?;
    }
    let _ = std::fs::remove_file(data_dir.join("standby.signal"));

    // Recovery settings.
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding this program's path for restore_command")?;
    let restore_command = format!(
        "{} --config {} wal-fetch {} %f %p",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&config_path.to_string_lossy()),
        shell_quote(&req.target)
    );
    let mut settings: Vec<(String, String)> = vec![("restore_command".into(), restore_command)];
    settings.extend(goal_settings(&req.goal));
    if !matches!(req.goal, Goal::Latest) {
        // Without a target the server promotes at the end of the archive.
        settings.push(("recovery_target_action".into(), req.action.clone()));
    }
    settings.push((
        "recovery_target_timeline".into(),
        req.timeline.clone().unwrap_or_else(|| "latest".into()),
    ));
    let auto = data_dir.join("postgresql.auto.conf");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&auto)
            .with_context(|| format!("opening {}", auto.display()))?;
        writeln!(
            f,
            "\n# Added by `backup pitr` at {}: recover target `{}` from base backup {} to {}.",
            Utc::now().to_rfc3339(),
            req.target,
            m.id,
            req.goal.describe()
        )?;
        for (k, v) in &settings {
            writeln!(f, "{k} = {}", conf_quote(v))?;
        }
        f.sync_all()?;
    }
    done.push(format!("wrote recovery settings into {}", auto.display()));
    std::fs::File::create(data_dir.join("recovery.signal"))?.sync_all()?;
    done.push("created recovery.signal".into());
    if let Some((name, (uid, gid))) = &owner {
        chown_tree(&data_dir, *uid, *gid)?;
        done.push(format!(
            "gave {} to OS user `{name}` (mode 0700)",
            data_dir.display()
        ));
    } else {
        done.push(format!("{} has mode 0700", data_dir.display()));
    }
    tar::sync_tree(&data_dir)?;
    let setting_lines: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!("{k} = {}", conf_quote(v)))
        .collect();

    let major: u32 = m
        .versions
        .get("server")
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap_or(0);
    let pg_ctl = tool_for("pg_ctl", opts.bin_dir.as_deref(), major, true).ok();
    let pg_ctl_path = pg_ctl
        .as_ref()
        .map(|t| t.path.display().to_string())
        .unwrap_or_else(|| "pg_ctl".into());
    let log = data_dir.join("pitr-recovery.log");
    let port_opt = req
        .port
        .map(|p| format!(" -o '-p {p}'"))
        .unwrap_or_default();
    let as_user = owner
        .as_ref()
        .map(|(n, _)| format!("runuser -u {n} -- "))
        .unwrap_or_default();
    let next = format!(
        "{as_user}{pg_ctl_path} -D {} -l {}{port_opt} start   # then watch the log until recovery stops at the target",
        shell_quote(&data_dir.to_string_lossy()),
        shell_quote(&log.to_string_lossy())
    );

    let mut outcome = PitrOutcome {
        target: req.target.clone(),
        backup_id: m.id.clone(),
        storage: storage.name().to_string(),
        data_dir: data_dir.display().to_string(),
        goal: req.goal.describe(),
        settings: setting_lines,
        done,
        next: Some(next),
        started: false,
        stopped_at: None,
        last_transaction: None,
    };
    if !req.start {
        return Ok(outcome);
    }
    let pg_ctl = pg_ctl.ok_or_else(|| {
        Fail::Config(format!(
            "pg_ctl for PostgreSQL {major} not found; install the PostgreSQL {major} server or set bin_dir, \
             then start the server yourself: the data directory is ready"
        ))
    })?;
    start_and_follow(
        &pg_ctl.path,
        &data_dir,
        &log,
        &req,
        owner.as_ref().map(|(n, ids)| (n.as_str(), *ids)),
        &mut outcome,
        ui,
    )?;
    outcome.next = None;
    Ok(outcome)
}

/// Unpacks a pg_basebackup stream (`base.tar.gz`) into the empty `data_dir`, verifying
/// its checksum on the way; on any failure or signal the directory is emptied.
fn unpack_base(storage: &dyn Storage, target: &str, m: &Manifest, data_dir: &Path) -> Result<u64> {
    let art = m
        .artifacts
        .iter()
        .find(|a| a.name == physical::ARTIFACT)
        .ok_or_else(|| anyhow!("backup {} has no {}", m.id, physical::ARTIFACT))?;
    let key = catalog::artifact_key(target, &m.id, &art.name);
    // A signal while unpacking empties the data directory: a half-restored cluster
    // must never be started by mistake. (Only on a signal: the guard also runs when it
    // goes out of scope.)
    let dir = data_dir.to_path_buf();
    let unpacking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = unpacking.clone();
    let interrupted_unpack = crate::engine::cleanup::CleanupGuard::new(move || {
        if crate::engine::cleanup::terminating() {
            // The unpacker stops at its next entry (tar::extract checks); wait for it,
            // or a file it creates after the emptying would stay.
            let t0 = Instant::now();
            while still.load(std::sync::atomic::Ordering::SeqCst)
                && t0.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            empty_dir(&dir);
            eprintln!(
                "interrupted: the base backup was not fully restored; {} was emptied",
                dir.display()
            );
        }
    });
    let unpack = (|| -> Result<u64> {
        let stream = storage.open(&key)?;
        let mut hashing = Hashing {
            inner: stream,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let files = {
            let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(
                1 << 20,
                &mut hashing,
            ));
            let files = tar::extract(&mut dec, data_dir);
            unpacking.store(false, std::sync::atomic::Ordering::SeqCst);
            files.and_then(|files| {
                std::io::copy(&mut dec, &mut std::io::sink())?;
                Ok(files)
            })
        };
        // On an unpacking error too, read the rest: a checksum mismatch says the
        // artifact is damaged (exit 3, named), which the tar error alone does not.
        let rest = std::io::copy(&mut hashing, &mut std::io::sink());
        let got = hex::encode(hashing.hasher.clone().finalize());
        let damaged = got != art.sha256 || hashing.bytes != art.size_bytes;
        let files = match (files, rest) {
            (Ok(f), Ok(_)) => f,
            (Err(e), _) if !damaged => return Err(e),
            (_, Err(e)) if !damaged => return Err(e.into()),
            _ => 0,
        };
        if damaged {
            return Err(Fail::Verify(format!(
                "{key} on `{}` is damaged: sha256 {got} ({} bytes), the manifest says {} ({} bytes); nothing was left in the data directory: pick another backup with --backup",
                storage.name(),
                hashing.bytes,
                art.sha256,
                art.size_bytes
            ))
            .into());
        }
        Ok(files)
    })();
    let files = match unpack {
        Ok(f) => f,
        Err(e) => {
            // Leave nothing half-restored behind.
            empty_dir(data_dir);
            return Err(e.context(format!(
                "restoring base backup {} into {}",
                m.id,
                data_dir.display()
            )));
        }
    };
    drop(interrupted_unpack);
    Ok(files)
}

fn postmaster_running(data_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn start_and_follow(
    pg_ctl: &Path,
    data_dir: &Path,
    log: &Path,
    req: &PitrRequest,
    owner: Option<(&str, (u32, u32))>,
    outcome: &mut PitrOutcome,
    ui: &Ui,
) -> Result<()> {
    std::fs::File::create(log)?;
    let mut cmd = match owner {
        Some((name, (uid, gid))) => {
            std::os::unix::fs::chown(log, Some(uid), Some(gid))?;
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", name, "--"]).arg(pg_ctl);
            c
        }
        None => std::process::Command::new(pg_ctl),
    };
    // Log to our file in English whatever postgresql.conf says, so the outcome can be read.
    let mut opts = "-c logging_collector=off -c lc_messages=C".to_string();
    if let Some(p) = req.port {
        opts.push_str(&format!(" -p {p}"));
    }
    if let Some(extra) = &req.server_opts {
        opts.push(' ');
        opts.push_str(extra);
    }
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-l")
        .arg(log)
        .args(["-W", "-o", &opts, "start"])
        .stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .with_context(|| format!("running {}", pg_ctl.display()))?;
    if !out.status.success() {
        bail!(
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            crate::db::postgres::one_paragraph(&std::fs::read_to_string(log).unwrap_or_default())
        );
    }
    outcome.started = true;
    ui.info(format!("server starting; following {}", log.display()));
    // A signal while following: say what is left running, and how to stop it.
    let (dir, log_path) = (data_dir.to_path_buf(), log.to_path_buf());
    let _following = crate::engine::cleanup::CleanupGuard::new(move || {
        if crate::engine::cleanup::terminating() {
            eprintln!(
                "interrupted: the restored server keeps running recovery in {} (log {}); stop it with pg_ctl -D {} stop -m fast, or run pitr again into an empty directory",
                dir.display(),
                log_path.display(),
                dir.display()
            );
        }
    });
    let t0 = Instant::now();
    let mut grace: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line_with = |pat: &str| {
            text.lines()
                .find(|l| l.contains(pat))
                .map(|l| l.trim().to_string())
        };
        if let Some(l) = line_with("recovery ended before configured recovery target was reached") {
            bail!(
                "recovery did NOT reach the target {}: the server says \"{l}\"; the archive lacks the WAL up to the target \
                 (the server has stopped; see {})",
                req.goal.describe(),
                log.display()
            );
        }
        let latest = matches!(req.goal, Goal::Latest);
        // With no target, recovery ends where the archive does: "redo done at ...".
        let stopped = line_with(if latest {
            "redo done at"
        } else {
            "recovery stopping"
        });
        let last = text
            .lines()
            .filter_map(|l| {
                l.split("last completed transaction was at log time ")
                    .nth(1)
            })
            .next_back()
            .map(|s| s.trim().to_string());
        let reached = match if latest {
            "promote"
        } else {
            req.action.as_str()
        } {
            "promote" => {
                let promoted = text.contains("archive recovery complete")
                    || text.contains("selected new timeline ID");
                promoted && text.contains("database system is ready to accept connections")
            }
            "pause" => {
                text.contains("recovery has paused")
                    || text.contains("pausing at the end of recovery")
            }
            _ => text.contains("shutdown at recovery target") && !postmaster_running(data_dir),
        };
        if reached {
            let Some(stop) = stopped else {
                bail!(
                    "recovery finished without a \"recovery stopping\" line: the target {} was not reached (see {})",
                    req.goal.describe(),
                    log.display()
                );
            };
            ui.info(format!("the server says: {stop}"));
            if let Some(l) = &last {
                ui.info(format!("last replayed transaction committed at {l}"));
            }
            outcome.stopped_at = Some(stop);
            outcome.last_transaction = last;
            return Ok(());
        }
        if !postmaster_running(data_dir) {
            // pg_ctl -W returns before the pid file exists: give it a moment.
            let g = *grace.get_or_insert_with(Instant::now);
            if g.elapsed() > Duration::from_secs(10) {
                let why = text
                    .lines()
                    .rfind(|l| l.contains("FATAL") || l.contains("PANIC"))
                    .or_else(|| text.lines().next_back())
                    .unwrap_or("(empty log)")
                    .trim()
                    .to_string();
                bail!(
                    "the server stopped during recovery: \"{why}\" (see {})",
                    log.display()
                );
            }
        } else {
            grace = None;
        }
        if t0.elapsed() > req.timeout {
            bail!(
                "recovery has not reached the target after {}s; the server is still running (see {})",
                req.timeout.as_secs(),
                log.display()
            );
        }
    }
}

/// Removes everything inside `dir`, keeping `dir` itself.
fn empty_dir(dir: &Path) {
    if let Ok(r) = std::fs::read_dir(dir) {
        for e in r.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("a'b"), "'a''b'");
        assert_eq!(shell_quote("/usr/bin/backup"), "/usr/bin/backup");
        assert_eq!(shell_quote("/a b/c'd"), "'/a b/c'\\''d'");
    }
}
