//! The audit trail: one JSON line per destructive or privileged act (restore, pitr, a
//! prune deletion, daemon start and reload; later copy and undelete) appended to the
//! file named by the top-level `audit_log` key, fsynced before the command goes on,
//! and/or sent to syslog (`audit_syslog = true`: the local socket, `/dev/log`, so that
//! the host's syslog daemon ships it where a local root cannot rewrite it).
//!
//! A line says when, who (OS user, the sudo user behind it, host, pid), what (command,
//! target, backup id, storage, details) and the outcome. It never holds a secret: the
//! fields are names and ids, and error texts are the tool's own, which redact
//! credentials everywhere (`crate::redact`).

use crate::config::Config;
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// One act. `details` holds command-specific facts (never a secret).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Act {
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// `ok`, `failed`, `retained` (an object lock kept it)...
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Act {
    pub fn new(command: &str, target: Option<&str>) -> Act {
        Act {
            command: command.into(),
            target: target.map(str::to_string),
            ..Default::default()
        }
    }

    /// Sets the outcome (and error text) from a command's result.
    pub fn outcome_of<T>(mut self, res: &Result<T>) -> Act {
        match res {
            Ok(_) => self.outcome = "ok".into(),
            Err(e) => {
                self.outcome = "failed".into();
                self.error = Some(format!("{e:#}"));
            }
        }
        self
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    user: String,
    uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    sudo_user: Option<String>,
    host: String,
    pid: u32,
    #[serde(flatten)]
    act: &'a Act,
}

/// Writes the acts where the config says (`audit_log`, `audit_syslog`). A failure to
/// write is an error on stderr, not a reason to undo what was done.
pub fn record(cfg: &Config, acts: &[Act], ui: &Ui) {
    if let Err(e) = write(cfg, acts) {
        ui.error(format!("audit trail not written: {e:#}"));
    }
}

/// Appends the acts to `audit_log` and sends them to syslog, as configured; an error
/// names each destination that failed (both are tried).
pub fn write(cfg: &Config, acts: &[Act]) -> Result<()> {
    if acts.is_empty() {
        return Ok(());
    }
    let mut errors = Vec::new();
    if let Some(path) = &cfg.audit_log {
        if let Err(e) = append(path, acts) {
            errors.push(format!("audit log {}: {e:#}", path.display()));
        }
    }
    if cfg.audit_syslog {
        let socket = cfg
            .audit_syslog_socket
            .as_deref()
            .unwrap_or(Path::new("/dev/log"));
        if let Err(e) = syslog(socket, acts) {
            errors.push(format!("audit syslog {}: {e:#}", socket.display()));
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(())
}
/// One `write` of whole lines with O_APPEND, then fsync: concurrent writers never
/// interleave inside a line, and a line reported written survives a crash.
pub fn append(path: &Path, acts: &[Act]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut buf = Vec::new();
    for line in lines(acts)? {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(&buf)?;
    f.sync_data()?;
    Ok(())
}

/// The acts as JSON lines (without the newline), with who and when.
fn lines(acts: &[Act]) -> Result<Vec<String>> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let (user, host, pid) = (
        user_name(uid),
        crate::engine::lock::hostname(),
        std::process::id(),
    );
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let sudo_user = std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty());
    acts.iter()
        .map(|act| {
            let line = Line {
                ts: ts.clone(),
                user: user.clone(),
                uid,
                sudo_user: sudo_user.clone(),
                host: host.clone(),
                pid,
                act,
            };
            Ok(serde_json::to_string(&line)?)
        })
        .collect()
}

/// Facility authpriv (10): security messages, kept apart from the general log.
const AUTHPRIV: u8 = 10;

/// One datagram per act on the local syslog socket, in the format glibc's syslog(3)
/// writes there (`<PRI>Mmm dd hh:mm:ss backup[PID]: MESSAGE`, RFC 3164 without the
/// host, which the syslog daemon adds), so rsyslog, syslog-ng and journald all read it.
/// Severity: info when the act succeeded, warning otherwise. No crate for this: it is
/// one `sendto` per line.
pub fn syslog(socket: &Path, acts: &[Act]) -> Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound().context("creating a socket")?;
    let ts = chrono::Local::now().format("%b %e %H:%M:%S");
    let pid = std::process::id();
    for (act, line) in acts.iter().zip(lines(acts)?) {
        let severity = if act.outcome == "ok" { 6 } else { 4 };
        let msg = format!("<{}>{ts} backup[{pid}]: {line}", AUTHPRIV * 8 + severity);
        sock.send_to(msg.as_bytes(), socket)
            .with_context(|| format!("sending to {}", socket.display()))?;
    }
    Ok(())
}

/// The login name of `uid` from the password database, else `$USER`, else the number.
fn user_name(uid: u32) -> String {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the result points into `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    std::env::var("USER").unwrap_or_else(|_| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_whole_with_who_and_what() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit/audit.jsonl");
        let mut a = Act::new("restore", Some("pg"));
        a.backup_id = Some("20261130T020000Z".into());
        a = a.outcome_of(&Ok::<(), anyhow::Error>(()));
        append(&p, &[a.clone()]).unwrap();
        append(&p, &[a.outcome_of(&Err::<(), _>(anyhow::anyhow!("boom")))]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "ok");
        assert_eq!(lines[1]["error"], "boom");
        assert!(lines[0]["user"].as_str().is_some_and(|u| !u.is_empty()));
        assert!(lines[0]["host"].is_string() && lines[0]["ts"].is_string());
    }
}
