//! `backup run` for `kind = "physical"` targets: a PostgreSQL base backup.
//!
//! `pg_basebackup -D - -Ft -X none -c fast` streams one tar (the main data directory)
//! to stdout -> gzip -> every storage (the same [`Upload`] as logical dumps). WAL is
//! not in the tar: the server's archive_command (`backup wal-push`) puts it in the
//! same storages, and pg_basebackup waits until the backup's last segment is archived.
//!
//! The WAL range is read from the stream itself while it passes: the start LSN and
//! timeline from `backup_label` (the first entry) and the stop LSN from the WAL-Ranges
//! of `backup_manifest` (the last entry; only its tail is kept). On PG15 this is exact
//! and needs no extra connection; when the manifest is missing (`--no-manifest` style
//! setups) `pg_current_wal_lsn()` after the backup is used instead, an upper bound.

use super::tools::newer_tool;
use super::{find_tool, quote_literal, tar, wal, ConnInfo, Options, Psql, Tool};
use crate::db::Target;
use crate::engine::backup::{self, Upload};
use crate::engine::catalog;
use crate::engine::lock::hostname;
use crate::error::Fail;
use crate::manifest::{self, Artifact, DatabaseFacts, Kind, Manifest, RunOutcome, WalRange};
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

pub const ARTIFACT: &str = "base.tar.gz";

/// What the server says about its WAL and archiving.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ServerWal {
    pub version_num: u32,
    pub version: String,
    pub wal_level: String,
    pub archive_mode: String,
    pub archive_command: String,
    pub max_wal_senders: i64,
    pub wal_segment_size: u64,
    pub system_identifier: String,
    pub in_recovery: bool,
    pub tablespaces: i64,
    pub size: Option<u64>,
}

const SERVER_WAL_SQL: &str = "SELECT json_build_object(\
 'version_num', current_setting('server_version_num')::int,\
 'version', current_setting('server_version'),\
 'wal_level', current_setting('wal_level'),\
 'archive_mode', current_setting('archive_mode'),\
 'archive_command', current_setting('archive_command'),\
 'max_wal_senders', current_setting('max_wal_senders')::int,\
 'wal_segment_size', (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),\
 'system_identifier', (SELECT system_identifier::text FROM pg_control_system()),\
 'in_recovery', pg_is_in_recovery(),\
 'tablespaces', (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')),\
 'size', (SELECT sum(pg_database_size(oid))::bigint FROM pg_database))";

pub fn connect(opts: &Options) -> Result<(Tool, ConnInfo, Psql)> {
    let psql = find_tool("psql", opts.bin_dir.as_deref())?;
    let conn = ConnInfo::from_options(opts)?;
    let session = Psql::connect(&psql, &conn, None)?;
    Ok((psql, conn, session))
}

pub fn server_wal(session: &mut Psql) -> Result<ServerWal> {
    let line = session.query_one(SERVER_WAL_SQL)?;
    serde_json::from_str(&line).context("reading the server's WAL settings")
}

/// The archive settings a base backup (and PITR) depends on. Errors are one line
/// with the fix; warnings are returned.
pub fn check_settings(target: &str, s: &ServerWal) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let fix = format!(
        "set wal_level = replica, max_wal_senders = 5, archive_mode = on and \
         archive_command = 'backup --config /etc/backup/backup.toml wal-push {target} %p' in postgresql.conf \
         and restart PostgreSQL (see docs/pitr.md)"
    );
    if s.wal_level == "minimal" {
        return Err(Fail::Config(format!(
            "the server has wal_level = minimal, which cannot be archived or used for point-in-time recovery; {fix}"
        ))
        .into());
    }
    if s.max_wal_senders <= 0 {
        return Err(Fail::Config(format!(
            "the server has max_wal_senders = 0, so pg_basebackup cannot connect; {fix}"
        ))
        .into());
    }
    if s.archive_mode == "off" || s.archive_command.trim().is_empty() {
        return Err(Fail::Config(format!(
            "WAL archiving is not set up (archive_mode = {}, archive_command = '{}'): a base backup taken without WAL \
             cannot be restored unless the archive holds the WAL written during and after it; {fix}",
            s.archive_mode, s.archive_command
        ))
        .into());
    }
    if !s.archive_command.contains("wal-push") || !s.archive_command.contains(target) {
        warnings.push(format!(
            "archive_command is '{}', which does not look like `backup ... wal-push {target} %p`: PITR needs the WAL in this target's storages",
            s.archive_command
        ));
    }
    if s.tablespaces > 0 {
        return Err(Fail::Config(format!(
            "the server has {} tablespace(s) besides pg_default/pg_global; physical backups of this version (method = \"stream\" \
             and \"files\") cover only the main data directory: use a logical target for this cluster",
            s.tablespaces
        ))
        .into());
    }
    Ok(warnings)
}

/// A server tool whose major version matches (pg_basebackup may be newer, pg_ctl must match).
pub fn tool_for(
    name: &str,
    bin_dir: Option<&std::path::Path>,
    major: u32,
    exact: bool,
) -> Result<Tool> {
    if bin_dir.is_none() {
        let versioned = std::path::PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
        if versioned.exists() {
            return find_tool(name, Some(versioned.parent().unwrap()));
        }
    }
    let t = find_tool(name, bin_dir)?;
    if (exact && t.major == major) || (!exact && t.major >= major) {
        return Ok(t);
    }
    if !exact && bin_dir.is_none() {
        if let Some(n) = newer_tool(name, major) {
            return Ok(n);
        }
    }
    Err(Fail::Config(format!(
        "{name} {} ({}) does not match PostgreSQL {major}: install the PostgreSQL {major} server/client tools or set bin_dir",
        t.version,
        t.path.display()
    ))
    .into())
}

/// Keeps pg_basebackup's stderr for the error message, and passes its warnings on
/// at once: when WAL archiving is broken the server makes pg_basebackup wait for the
/// last segment indefinitely, and its "still waiting for all required WAL segments to
/// be archived" warning is the only sign of it.
fn relay_warnings(
    stderr: std::process::ChildStderr,
    buf: Arc<Mutex<String>>,
    ui: Ui,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("WARNING") {
                ui.warn(format!("pg_basebackup: {}", line.trim()));
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
            if b.len() > 65536 {
                let cut = b.len() - 65536;
                let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(0);
                b.drain(..cut);
            }
        }
    })
}

/// `KEY: value` lines of a backup_label.
pub fn label_field<'a>(label: &'a str, key: &str) -> Option<&'a str> {
    label
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

fn manifest_field(tail: &str, key: &str) -> Option<String> {
    let i = tail.rfind(&format!("\"{key}\""))?;
    let rest = &tail[i + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_string())
    } else {
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        Some(rest[..end].to_string())
    }
}

/// The WAL a base backup needs: from the segment holding its start LSN to the one
/// holding the byte before its stop LSN (a stop exactly on a boundary needs no more).
pub fn wal_range(
    timeline: u32,
    start_lsn: String,
    stop_tli: u32,
    stop_lsn: String,
    seg_size: u64,
) -> Result<WalRange> {
    let start = wal::parse_lsn(&start_lsn)?;
    let stop = wal::parse_lsn(&stop_lsn)?;
    Ok(WalRange {
        timeline,
        start_segment: wal::segment_name(timeline, wal::segno_of(start, seg_size), seg_size),
        stop_segment: wal::segment_name(
            stop_tli,
            wal::segno_of(stop.saturating_sub(1).max(start), seg_size),
            seg_size,
        ),
        start_lsn,
        stop_lsn,
    })
}

pub(super) fn run(opts: &Options, t: &Target, tag: Option<&str>, ui: &Ui) -> Result<RunOutcome> {
    let (tcfg, target) = (t.cfg, t.name);
    if let Some(tag) = tag {
        backup::validate_tag(tag)?;
    }
    let _lock = backup::lock_target(t)?;
    let (_psql, conn, mut session) = connect(opts)?;
    let server = server_wal(&mut session)?;
    for w in check_settings(target, &server)? {
        ui.warn(w);
    }
    let major = server.version_num / 10000;
    let basebackup = tool_for("pg_basebackup", opts.bin_dir.as_deref(), major, false)?;

    let (storages, last_id, left_out) = backup::open_and_check(t, server.size, ui)?;
    let (started, id) = backup::allocate_id(last_id.as_deref());
    let meta = backup::object_meta(target, &tcfg.engine, &id, tag);
    ui.info(format!(
        "backup {target} {id}: physical base backup of {} (PostgreSQL {}, {}) to {}",
        conn.display(),
        server.version,
        crate::duration::bytes(server.size.unwrap_or(0)),
        backup::describe_storages(&storages)
    ));

    let key = catalog::artifact_key(target, &id, ARTIFACT);
    // The cleanup first: a signal right after the first byte is stored must find it.
    let interrupted = backup::InterruptCleanup::new(t, &storages, &id);
    let mut upload = Upload::start(&storages, &key, &meta, left_out)?;
    let mut cmd = Command::new(&basebackup.path);
    let ci = conn.conninfo(None);
    if !ci.is_empty() {
        cmd.arg(format!("--dbname={ci}"));
    }
    cmd.args([
        "-D",
        "-",
        "-Ft",
        "-X",
        "none",
        "-c",
        "fast",
        "--no-password",
        "-v",
    ])
    .arg(format!("--label=backup {target} {id}"));
    conn.apply(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", basebackup.path.display()))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_thread = relay_warnings(child.stderr.take().unwrap(), stderr.clone(), ui.clone());
    let mut sniffer = tar::Sniffer::new(child.stdout.take().unwrap());
    let mut progress = ui.progress(&format!("{target} {id}"), server.size);
    let level = tcfg.compression_level.unwrap_or(6);
    let copy = upload.copy(&mut sniffer, Some(level), &mut progress);
    progress.finish();
    let fail = |upload: Upload, e: anyhow::Error| -> anyhow::Error {
        let storage_errors = upload.failures();
        upload.abort();
        if storage_errors.is_empty() {
            e.context(format!("backup {target} {id} failed; nothing was kept"))
        } else {
            e.context(format!(
                "backup {target} {id} failed ({storage_errors}); nothing was kept"
            ))
        }
    };
    if let Err(e) = copy {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(upload, e));
    }
    let status = child.wait().context("waiting for pg_basebackup")?;
    let _ = stderr_thread.join();
    let err_text = stderr.lock().unwrap().clone();
    if !status.success() {
        let e = anyhow!(
            "pg_basebackup failed ({status}): {}",
            super::one_paragraph(&err_text)
        );
        return Err(fail(upload, e));
    }
    let facts = match sniffer.into_facts() {
        Ok((f, _)) => f,
        Err(e) => return Err(fail(upload, e)),
    };
    let finished = chrono::Utc::now();
    let Some(label) = facts.backup_label.clone() else {
        return Err(fail(
            upload,
            anyhow!(
                "pg_basebackup's tar stream has no backup_label; this is not a usable base backup"
            ),
        ));
    };
    let seg_size = server.wal_segment_size.max(1);
    let range = (|| -> Result<(WalRange, &'static str)> {
        let start_lsn = label_field(&label, "START WAL LOCATION")
            .and_then(|v| v.split_whitespace().next())
            .ok_or_else(|| anyhow!("backup_label has no START WAL LOCATION"))?
            .to_string();
        let timeline: u32 = label_field(&label, "START TIMELINE")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("backup_label has no START TIMELINE"))?;
        let (stop_lsn, stop_tli, source) = match facts
            .manifest_tail
            .as_deref()
            .and_then(|t| Some((manifest_field(t, "End-LSN")?, manifest_field(t, "Timeline"))))
        {
            Some((lsn, tli)) => (
                lsn,
                tli.and_then(|t| t.parse().ok()).unwrap_or(timeline),
                "backup_manifest WAL-Ranges",
            ),
            None => (
                session.query_one("SELECT pg_current_wal_lsn()")?,
                timeline,
                "pg_current_wal_lsn() after the backup (upper bound)",
            ),
        };
        Ok((
            wal_range(timeline, start_lsn, stop_tli, stop_lsn, seg_size)?,
            source,
        ))
    })();
    let (range, stop_source) = match range {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(
                upload,
                e.context("reading the WAL range of the base backup"),
            ))
        }
    };
    let _ = session.close();
    let (stored_bytes, sha256) = upload.stored();
    let mut extra: BTreeMap<String, Value> = BTreeMap::new();
    extra.insert("backup_label".into(), Value::String(label.clone()));
    extra.insert(
        "system_identifier".into(),
        Value::String(server.system_identifier.clone()),
    );
    extra.insert(
        "server_version".into(),
        Value::String(server.version.clone()),
    );
    extra.insert("wal_segment_size".into(), Value::from(seg_size));
    extra.insert("start_time".into(), Value::String(started.to_rfc3339()));
    extra.insert("stop_time".into(), Value::String(finished.to_rfc3339()));
    if let Some(t) = label_field(&label, "START TIME") {
        extra.insert(
            "backup_label_start_time".into(),
            Value::String(t.to_string()),
        );
    }
    extra.insert("stop_lsn_source".into(), Value::String(stop_source.into()));
    extra.insert("files".into(), Value::from(facts.files));
    if let Some(c) = facts
        .manifest_tail
        .as_deref()
        .and_then(|t| manifest_field(t, "Manifest-Checksum"))
    {
        extra.insert("backup_manifest_checksum".into(), Value::String(c));
    }
    let mut versions = BTreeMap::new();
    versions.insert("server".into(), server.version.clone());
    versions.insert("pg_basebackup".into(), basebackup.version.clone());
    versions.insert("backup".into(), env!("CARGO_PKG_VERSION").into());
    let m = Manifest {
        manifest_version: manifest::MANIFEST_VERSION,
        id: id.clone(),
        target: target.to_string(),
        engine: tcfg.engine.clone(),
        kind: Kind::Physical,
        format: "tar".into(),
        tag: tag.map(str::to_string),
        started_at: started,
        finished_at: finished,
        duration_seconds: (finished - started).num_milliseconds() as f64 / 1000.0,
        versions,
        artifacts: vec![Artifact {
            name: ARTIFACT.into(),
            size_bytes: stored_bytes,
            sha256,
            compression: "gzip".into(),
            raw_size_bytes: upload.raw_bytes,
            content: "pg_basebackup tar (main data directory, WAL in the archive)".into(),
        }],
        database: DatabaseFacts {
            name: None,
            size_bytes: server.size,
            tables: vec![],
            extra,
        },
        wal: Some(range),
        depends_on: vec![],
        host: hostname(),
        encryption: None,
    };
    let (stored_on, failed) = interrupted.committing(|| upload.commit_manifest(&m, &meta, ui))?;
    if let Some(w) = &m.wal {
        ui.info(format!(
            "WAL range: timeline {} {} ({}) .. {} ({})",
            w.timeline, w.start_lsn, w.start_segment, w.stop_lsn, w.stop_segment
        ));
    }
    Ok(RunOutcome {
        manifest: m,
        stored_on,
        failed,
    })
}

/// `backup check`: archive settings, then a forced WAL switch whose segment must
/// arrive in every storage of the target.
pub(super) fn check(
    opts: &Options,
    t: &Target,
    timeout: std::time::Duration,
    ui: &Ui,
) -> Result<Vec<String>> {
    let target = t.name;
    let mut report = Vec::new();
    let (_psql, conn, mut session) = connect(opts)?;
    let server = server_wal(&mut session)?;
    for w in check_settings(target, &server)? {
        ui.warn(&w);
        report.push(format!("warning: {w}"));
    }
    report.push(format!(
        "server {} (PostgreSQL {}): wal_level = {}, archive_mode = {}, max_wal_senders = {}, archive_command = '{}'",
        conn.display(),
        server.version,
        server.wal_level,
        server.archive_mode,
        server.max_wal_senders,
        server.archive_command
    ));
    if server.in_recovery {
        bail!("the server is a standby (in recovery): run `check` against the primary, which archives the WAL");
    }
    // A restore point guarantees the switch closes a segment with something in it.
    session.query_one(&format!(
        "SELECT pg_create_restore_point({})",
        quote_literal(&format!(
            "backup-check-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))
    ))?;
    let seg = session.query_one("SELECT pg_walfile_name(pg_switch_wal())")?;
    ui.info(format!(
        "forced a WAL switch; waiting for {seg} to reach every storage of `{target}`"
    ));
    // Under whichever name the target's compression gives it (`.gz`, `.zst`, bare).
    let keys = wal::wal_keys(target, &seg, wal::push_compression(t).0);
    let storages = t.open_storages_local_first()?;
    let t0 = std::time::Instant::now();
    let mut pending: Vec<&Box<dyn Storage>> = storages.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for s in pending {
            let found = keys.iter().try_fold(None, |hit, (k, _)| match hit {
                Some(h) => Ok(Some(h)),
                None => s.head(k),
            });
            match found {
                Ok(Some(_)) => report.push(format!(
                    "{seg} arrived on `{}` ({}) after {:.1}s",
                    s.name(),
                    s.location(),
                    t0.elapsed().as_secs_f64()
                )),
                Ok(None) => still.push(s),
                Err(e) => bail!("reading storage `{}`: {e:#}", s.name()),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if t0.elapsed() > timeout {
            let archiver = session
                .query_one(
                    "SELECT json_build_object('failed_count', failed_count, 'last_failed_wal', last_failed_wal, \
                     'last_failed_time', last_failed_time, 'last_archived_wal', last_archived_wal) FROM pg_stat_archiver",
                )
                .unwrap_or_default();
            bail!(
                "WAL archiving does not work end to end: {seg} did not reach storage(s) [{}] within {}s \
                 (pg_stat_archiver: {archiver}); check archive_command and the server log",
                pending.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
                timeout.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = session.close();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_label_and_manifest_tail() {
        let label =
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n";
        assert_eq!(
            label_field(label, "START WAL LOCATION"),
            Some("0/2000028 (file 000000010000000000000002)")
        );
        assert_eq!(label_field(label, "START TIMELINE"), Some("1"));
        let tail = r#"x" },
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
"Manifest-Checksum": "8eeb33"}"#;
        assert_eq!(
            manifest_field(tail, "End-LSN").as_deref(),
            Some("0/2000100")
        );
        assert_eq!(manifest_field(tail, "Timeline").as_deref(), Some("1"));
        assert_eq!(
            manifest_field(tail, "Manifest-Checksum").as_deref(),
            Some("8eeb33")
        );
    }
}
