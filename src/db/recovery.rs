//! The vocabulary of point-in-time recovery and log archiving, shared by the CLI and
//! the engines that have them: where to stop, what was asked, what was done.

use crate::error::Fail;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Where recovery stops.
#[derive(Debug, Clone)]
pub enum Goal {
    Time(DateTime<Utc>),
    /// A named restore point.
    Name(String),
    /// A transaction id.
    Xid(String),
    /// A log position, as the operator wrote it (the engine parses it).
    Lsn(String),
    /// The end of the backup itself: its earliest consistent point.
    Immediate,
    /// Everything the archive holds, on the newest timeline (no recovery target).
    Latest,
}

impl Goal {
    pub fn describe(&self) -> String {
        match self {
            Goal::Time(t) => format!("time {}", fmt_time(*t)),
            Goal::Name(n) => format!("restore point `{n}`"),
            Goal::Xid(x) => format!("transaction {x}"),
            Goal::Lsn(l) => format!("LSN {l}"),
            Goal::Immediate => "the end of the base backup (immediate)".into(),
            Goal::Latest => "the end of the archived WAL (latest)".into(),
        }
    }
}

/// Microseconds and an explicit `+00`: what recovery settings need to be exact.
pub fn fmt_time(t: DateTime<Utc>) -> String {
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
    /// Restore into an existing data directory, rewriting only the files that differ
    /// (file-level backups).
    pub delta: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored (durably) on every storage.
    Stored,
    /// Every storage already held an identical copy (a re-push after a crash).
    AlreadyArchived,
    /// Stored earlier by the background worker (`async = true`).
    StoredInBackground,
    /// NOT archived: pg_wal held more unarchived WAL than `archive_queue_max` bytes, so
    /// the file was let go to protect the disk. The archive has a gap from here.
    Dropped { queued: u64, max: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Fetched from this storage, checksum verified, in place.
    Fetched(String),
    /// No storage has it (every storage answered).
    Missing,
}

/// A different file already sits under this name in the log archive: never overwritten.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct WalConflict(pub String);

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
}
