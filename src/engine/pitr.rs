//! `backup pitr`: restore a physical base backup into a new data directory and
//! configure PostgreSQL (12+) to replay the WAL archive up to a target.
//!
//! The backup is the newest one whose *stop* time (or stop LSN) is before the target:
//! a target inside or before a base backup's own span is silently ignored by
//! PostgreSQL, which would replay to the end of the WAL instead. The archive is
//! checked for gaps before anything is written. With `--start` the server is started
//! and its log followed until recovery stops; the run fails, quoting the server, when
//! recovery ended without reaching the target.

use crate::config::Config;
use crate::engine::physical::{self, seg_size_of};
use crate::engine::verify::Hashing;
use crate::engine::{catalog, tar, wal};
use crate::error::Fail;
use crate::manifest::{Kind, Manifest};
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Goal {
    Time(DateTime<Utc>),
    Name(String),
    Xid(String),
    Lsn(u64),
    Immediate,
}

impl Goal {
    pub fn describe(&self) -> String {
        match self {
            Goal::Time(t) => format!("time {}", fmt_time(*t)),
            Goal::Name(n) => format!("restore point `{n}`"),
            Goal::Xid(x) => format!("transaction {x}"),
            Goal::Lsn(l) => format!("LSN {}", wal::format_lsn(*l)),
            Goal::Immediate => "the end of the base backup (immediate)".into(),
        }
    }

    fn settings(&self) -> Vec<(String, String)> {
        match self {
            Goal::Time(t) => vec![("recovery_target_time".into(), fmt_time(*t))],
            Goal::Name(n) => vec![("recovery_target_name".into(), n.clone())],
            Goal::Xid(x) => vec![("recovery_target_xid".into(), x.clone())],
            Goal::Lsn(l) => vec![("recovery_target_lsn".into(), wal::format_lsn(*l))],
            Goal::Immediate => vec![("recovery_target".into(), "immediate".into())],
        }
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// Accepts RFC 3339 (`2026-11-24T14:05:00Z`), `2026-11-24 14:05:00+02`, and a time
/// without zone, read as UTC (said so in the plan).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let spaced = s.replacen('T', " ", 1);
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(&spaced, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    let plain = spaced.trim_end_matches(" UTC").trim_end_matches('Z');
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(plain, f) {
            return Ok(t.and_utc());
        }
    }
    Err(Fail::Usage(format!(
        "`{s}` is not a time; write e.g. 2026-11-24T14:05:00Z or '2026-11-24 14:05:00+00' (UTC unless a zone is given)"
    ))
    .into())
}

pub struct PitrRequest {
    pub target: String,
    pub goal: Goal,
    pub data_dir: PathBuf,
    pub action: String,
    pub timeline: Option<String>,
    pub backup: Option<String>,
    pub start: bool,
    pub port: Option<u16>,
    pub owner: Option<String>,
    pub timeout: Duration,
    /// Extra `-c name=value` server options for `--start` (test-restore: a private
    /// socket, no TCP, no archiving).
    pub server_opts: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PitrOutcome {
    pub target: String,
    pub backup_id: String,
    pub storage: String,
    pub data_dir: String,
    pub goal: String,
    pub settings: Vec<String>,
    pub done: Vec<String>,
    pub next: Option<String>,
    pub started: bool,
    /// The server's own line saying where recovery stopped.
    pub stopped_at: Option<String>,
    /// Time of the last replayed transaction (as pg_last_xact_replay_timestamp()).
    pub last_transaction: Option<String>,
}

/// A backup found on some storage.
struct Found {
    m: Manifest,
    storage: usize,
}

fn physical_catalog(storages: &[Box<dyn Storage>], target: &str) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    let mut errors = Vec::new();
    for (i, s) in storages.iter().enumerate() {
        match catalog::scan(s.as_ref(), target) {
            Ok(cat) => {
                for m in cat.backups {
                    if m.kind == Kind::Physical
                        && m.wal.is_some()
                        && !out.iter().any(|f| f.m.id == m.id)
                    {
                        out.push(Found { m, storage: i });
                    }
                }
            }
            Err(e) => errors.push(format!("storage `{}`: {e:#}", s.name())),
        }
    }
    if out.is_empty() && !errors.is_empty() {
        bail!(
            "cannot read the backups of `{target}`: {}",
            errors.join("; ")
        );
    }
    out.sort_by(|a, b| a.m.id.cmp(&b.m.id));
    Ok(out)
}

fn stop_lsn(m: &Manifest) -> u64 {
    m.wal
        .as_ref()
        .and_then(|w| wal::parse_lsn(&w.stop_lsn).ok())
        .unwrap_or(u64::MAX)
}

/// Can this backup reach the goal at all?
fn eligible(m: &Manifest, goal: &Goal) -> std::result::Result<(), String> {
    match goal {
        Goal::Time(t) if m.finished_at >= *t => Err(format!(
            "base backup {} finished at {}, not before the target {}: PostgreSQL cannot stop before the end of a base backup",
            m.id,
            m.finished_at.to_rfc3339(),
            fmt_time(*t)
        )),
        Goal::Lsn(l) if stop_lsn(m) > *l => Err(format!(
            "base backup {} ends at LSN {}, after the target LSN {}",
            m.id,
            m.wal.as_ref().map(|w| w.stop_lsn.as_str()).unwrap_or("?"),
            wal::format_lsn(*l)
        )),
        _ => Ok(()),
    }
}

fn choose<'a>(found: &'a [Found], req: &PitrRequest) -> Result<&'a Found> {
    if found.is_empty() {
        bail!(
            "target `{}` has no physical base backup; run `backup run {}` first (with WAL archiving set up)",
            req.target,
            req.target
        );
    }
    if let Some(which) = &req.backup {
        let f = if which == "latest" {
            found.last()
        } else {
            found.iter().find(|f| f.m.id == *which).or_else(|| {
                let m: Vec<_> = found
                    .iter()
                    .filter(|f| f.m.id.starts_with(which.as_str()))
                    .collect();
                (m.len() == 1).then(|| m[0])
            })
        }
        .ok_or_else(|| {
            Fail::Usage(format!(
                "no physical backup `{which}` of `{}`; `backup list {}` shows them",
                req.target, req.target
            ))
        })?;
        eligible(&f.m, &req.goal)
            .map_err(|e| anyhow!("refusing: {e}; pick an older backup or drop --backup"))?;
        return Ok(f);
    }
    match found
        .iter()
        .rev()
        .find(|f| eligible(&f.m, &req.goal).is_ok())
    {
        Some(f) => Ok(f),
        None => {
            let oldest = &found[0].m;
            bail!(
                "refusing: no base backup of `{}` ends before the target {} (the oldest, {}, finished at {}); \
                 PostgreSQL would ignore the target and replay to the end of the WAL. Choose a later target",
                req.target,
                req.goal.describe(),
                oldest.id,
                oldest.finished_at.to_rfc3339()
            )
        }
    }
}

/// Was an object stored at `when` surely before `t`? S3 keeps upload times to the
/// second (a time with no fraction may be truncated), local files to the nanosecond.
fn surely_before(when: DateTime<Utc>, t: DateTime<Utc>) -> bool {
    use chrono::Timelike;
    if when.nanosecond() == 0 {
        when + chrono::Duration::seconds(1) <= t
    } else {
        when <= t
    }
}

/// Refuses when the archive cannot carry recovery from the backup to the goal.
fn check_archive(archive: &wal::Archive, m: &Manifest, goal: &Goal) -> Result<Vec<String>> {
    let w = m.wal.as_ref().expect("physical backup has a WAL range");
    let seg = seg_size_of(m);
    let tli = w.timeline;
    let start = wal::parse_segment(&w.start_segment, seg)
        .map(|x| x.1)
        .unwrap_or(0);
    let stop = wal::parse_segment(&w.stop_segment, seg)
        .map(|x| x.1)
        .unwrap_or(start);
    let name = |n: u64| wal::segment_name(tli, n, seg);
    if let Some(g) = archive.first_gap(tli, start, stop) {
        bail!(
            "refusing: base backup {} needs WAL segment {} (its own WAL, {}..{}), which is missing from the archive; \
             this backup cannot be restored consistently: pick another with --backup",
            m.id,
            name(g),
            w.start_segment,
            w.stop_segment
        );
    }
    let end = archive.contiguous_end(tli, start).unwrap_or(stop);
    let max_on_tli = archive
        .segments
        .get(&tli)
        .and_then(|s| s.iter().next_back().copied())
        .unwrap_or(end);
    let mut notes = vec![format!(
        "WAL archive: timeline {tli} continuous from {} to {}",
        name(start),
        name(end)
    )];
    let has_gap = max_on_tli > end;
    let gap_msg = || {
        format!(
            "the WAL archive has a gap on timeline {tli}: segment {} is missing (segments up to {} exist), \
             so recovery from base backup {} cannot get past {}",
            name(end + 1),
            name(max_on_tli),
            m.id,
            name(end)
        )
    };
    match goal {
        Goal::Immediate => {}
        Goal::Lsn(l) => {
            let need = wal::segno_of(*l, seg);
            if need > end && archive.segments.values().all(|s| !s.contains(&need)) {
                if has_gap {
                    bail!(
                        "refusing: {}; the target LSN is in segment {}",
                        gap_msg(),
                        name(need)
                    );
                }
                bail!(
                    "refusing: the WAL archive ends at {} but the target LSN {} is in {}; archive more WAL \
                     (SELECT pg_switch_wal() on the server) and retry",
                    name(end),
                    wal::format_lsn(*l),
                    name(need)
                );
            }
        }
        Goal::Time(t) => {
            // A segment archived before the target holds only WAL from before it, so
            // recovery must read past it: it must not end at a gap.
            let end_time = archive.modified.get(&(tli, end)).copied();
            let later_timeline_reaches = archive
                .modified
                .iter()
                .any(|((tl, _), when)| *tl > tli && !surely_before(*when, *t));
            if let Some(et) = end_time {
                if surely_before(et, *t) && !later_timeline_reaches {
                    if has_gap {
                        bail!(
                            "refusing: {} (archived at {}, before the target)",
                            gap_msg(),
                            et.to_rfc3339()
                        );
                    }
                    bail!(
                        "refusing: the WAL archive ends at {} (archived {}), before the target {}: the WAL \
                         written after that is not archived yet (run SELECT pg_switch_wal() on the server, \
                         or wait for archive_timeout) and PostgreSQL would stop with \"recovery ended before \
                         configured recovery target was reached\"",
                        name(end),
                        et.to_rfc3339(),
                        fmt_time(*t)
                    );
                }
            }
        }
        Goal::Name(_) | Goal::Xid(_) => {
            if has_gap {
                bail!(
                    "refusing: {}; where the target lies is unknown until replay, so the gap may hide it \
                     (use --target-time or --target-lsn before {} if that is enough)",
                    gap_msg(),
                    name(end + 1)
                );
            }
        }
    }
    if has_gap {
        notes.push(format!("warning: {}", gap_msg()));
    }
    Ok(notes)
}

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

pub fn pitr(cfg: &Config, req: PitrRequest, ui: &Ui) -> Result<PitrOutcome> {
    let tcfg = cfg.target(&req.target)?;
    if tcfg.kind != "physical" {
        return Err(Fail::Usage(format!(
            "target `{}` is kind = \"{}\"; point-in-time recovery needs a kind = \"physical\" target (see docs/pitr.md)",
            req.target, tcfg.kind
        ))
        .into());
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
        return Err(Fail::Usage(format!(
            "refusing: data directory {} is not empty; give a new or empty directory (never the running cluster's)",
            data_dir.display()
        ))
        .into());
    }
    let owner = if is_root() {
        let name = req.owner.clone().unwrap_or_else(|| "postgres".into());
        let ids = lookup_user(&name)?;
        Some((name, ids))
    } else {
        None
    };

    let storages = wal::open_storages(cfg, &req.target)?;
    let found = physical_catalog(&storages, &req.target)?;
    let chosen = choose(&found, &req)?;
    let m = chosen.m.clone();
    let storage = &storages[chosen.storage];
    let seg = seg_size_of(&m);
    let mut archive = wal::Archive::default();
    let mut scan_errors = Vec::new();
    for s in &storages {
        match wal::scan(s.as_ref(), &req.target, seg) {
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
    let art = m
        .artifacts
        .iter()
        .find(|a| a.name == physical::ARTIFACT)
        .ok_or_else(|| anyhow!("backup {} has no {}", m.id, physical::ARTIFACT))?;
    let key = catalog::artifact_key(&req.target, &m.id, &art.name);
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
            let files = tar::extract(&mut dec, &data_dir)?;
            std::io::copy(&mut dec, &mut std::io::sink())?;
            files
        };
        std::io::copy(&mut hashing, &mut std::io::sink())?;
        let got = hex::encode(hashing.hasher.clone().finalize());
        if got != art.sha256 || hashing.bytes != art.size_bytes {
            return Err(Fail::Verify(format!(
                "{key} on `{}` is damaged: sha256 {got} ({} bytes), the manifest says {} ({} bytes)",
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
            if let Ok(r) = std::fs::read_dir(&data_dir) {
                for e in r.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            return Err(e.context(format!(
                "restoring base backup {} into {}",
                m.id,
                data_dir.display()
            )));
        }
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
    settings.extend(req.goal.settings());
    settings.push(("recovery_target_action".into(), req.action.clone()));
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
    let pg_ctl = physical::tool_for("pg_ctl", tcfg.bin_dir.as_deref(), major, true).ok();
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
        let stopped = line_with("recovery stopping");
        let last = text
            .lines()
            .filter_map(|l| {
                l.split("last completed transaction was at log time ")
                    .nth(1)
            })
            .next_back()
            .map(|s| s.trim().to_string());
        let reached = match req.action.as_str() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        let a = parse_time("2026-11-24T14:05:00Z").unwrap();
        assert_eq!(parse_time("2026-11-24 14:05:00+00").unwrap(), a);
        assert_eq!(parse_time("2026-11-24 16:05:00+02").unwrap(), a);
        assert_eq!(parse_time("2026-11-24 14:05:00").unwrap(), a);
        assert_eq!(parse_time("2026-11-24 14:05").unwrap(), a);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(fmt_time(a), "2026-11-24 14:05:00.000000+00");
    }

    #[test]
    fn second_precision_times_are_not_taken_as_before() {
        let t = parse_time("2026-11-24T23:21:25.367Z").unwrap();
        // S3's LastModified for an upload at 23:21:25.9 reads 23:21:25.
        assert!(!surely_before(
            parse_time("2026-11-24T23:21:25Z").unwrap(),
            t
        ));
        assert!(surely_before(
            parse_time("2026-11-24T23:21:24Z").unwrap(),
            t
        ));
        assert!(surely_before(
            parse_time("2026-11-24T23:21:25.2Z").unwrap(),
            t
        ));
        assert!(!surely_before(
            parse_time("2026-11-24T23:21:25.4Z").unwrap(),
            t
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("a'b"), "'a''b'");
        assert_eq!(shell_quote("/usr/bin/backup"), "/usr/bin/backup");
        assert_eq!(shell_quote("/a b/c'd"), "'/a b/c'\\''d'");
    }
}
