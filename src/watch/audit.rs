//! The audit trail: one JSON line per destructive or privileged act (restore, pitr, a
//! prune deletion, daemon start and reload; later copy and undelete) appended to the
//! file named by the top-level `audit_log` key, fsynced before the command goes on.
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

/// Appends the acts when `audit_log` is set. A failure to write is an error on stderr,
/// not a reason to undo what was done.
pub fn record(cfg: &Config, acts: &[Act], ui: &Ui) {
    let Some(path) = &cfg.audit_log else {
        return;
    };
    if acts.is_empty() {
        return;
    }
    if let Err(e) = append(path, acts) {
        ui.error(format!("audit log {} not written: {e:#}", path.display()));
    }
}

/// One `write` of whole lines with O_APPEND, then fsync: concurrent writers never
/// interleave inside a line, and a line reported written survives a crash.
pub fn append(path: &Path, acts: &[Act]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let (user, host, pid) = (
        user_name(uid),
        crate::engine::lock::hostname(),
        std::process::id(),
    );
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut buf = Vec::new();
    for act in acts {
        let line = Line {
            ts: ts.clone(),
            user: user.clone(),
            uid,
            sudo_user: std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()),
            host: host.clone(),
            pid,
            act,
        };
        serde_json::to_writer(&mut buf, &line)?;
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
