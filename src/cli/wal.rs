//! `wal-push` (archive_command) and `wal-fetch` (restore_command).
//!
//! These two answer PostgreSQL, not a person, so they have their own exit codes and
//! bypass the normal exit-code mapping:
//!
//! | command | code | meaning |
//! |---|---|---|
//! | wal-push | 0 | durable on every storage of the target (or an identical copy already was); or, past `archive_queue_max`, dropped from the archive (logged loudly) |
//! | wal-push | 1 | anything else, including a different file under the same name (PostgreSQL retries) |
//! | wal-fetch | 0 | fetched, SHA-256 verified, renamed into place |
//! | wal-fetch | 1 | no storage has the file (PostgreSQL: end of archive) |
//! | wal-fetch | 126 | storage, configuration or checksum error: PostgreSQL aborts recovery instead of ending it early |
//!
//! 126 is the lowest code PostgreSQL treats as fatal for restore_command (above 125,
//! like the shell's "command not executable"), and it is not a signal number, so it
//! cannot be mistaken for one in logs.

use crate::db::recovery::WalConflict;
use crate::db::{lacks, registry, FetchOutcome, PhysicalEngine, PushOutcome, Target};
use crate::ui::Ui;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// restore_command's code for "stop recovery, something is broken".
pub const FETCH_ABORT: u8 = 126;

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// Target name (a kind = "physical" target).
    pub target: String,
    /// The file PostgreSQL hands over (%p).
    pub path: PathBuf,
    /// Run as the background worker of `async = true` (started by wal-push itself).
    #[arg(long, hide = true)]
    pub background: bool,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// Target name (a kind = "physical" target).
    pub target: String,
    /// The WAL file name PostgreSQL asks for (%f).
    pub name: String,
    /// Where to put it (%p).
    pub destination: PathBuf,
}

/// Loads the configuration and runs `f` with the target's physical capability.
fn with_physical<T>(
    config: Option<&Path>,
    target: &str,
    f: impl FnOnce(&mut dyn PhysicalEngine, &Target) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let cfg = super::load_config(config)?;
    let t = Target::resolve(&cfg, target)?;
    let mut engine = registry::open(&t)?;
    match engine.physical() {
        Some(p) => f(p, &t),
        None => Err(lacks(
            &t,
            "WAL archive",
            "; set kind = \"physical\" (see docs/pitr.md)",
        )),
    }
}

pub fn push_main(config: Option<&Path>, args: WalPushArgs, ui: &Ui) -> ExitCode {
    let started = std::time::Instant::now();
    if args.background {
        return match with_physical(config, &args.target, |p, t| p.archive_worker(t, &args.path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                ui.error(format!("wal-push {} background worker: {e:#}", args.target));
                ExitCode::from(1)
            }
        };
    }
    let res = with_physical(config, &args.target, |p, t| p.archive_push(t, &args.path));
    let name = args
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match res {
        Ok(PushOutcome::Stored) => {
            ui.info(format!(
                "wal-push {} {name}: stored in {} ms",
                args.target,
                started.elapsed().as_millis()
            ));
            ExitCode::SUCCESS
        }
        Ok(PushOutcome::StoredInBackground) => {
            ui.info(format!(
                "wal-push {} {name}: stored earlier by the background worker",
                args.target
            ));
            ExitCode::SUCCESS
        }
        Ok(PushOutcome::Dropped { queued, max }) => {
            // Success on purpose: PostgreSQL may now recycle the segment. Loud, because
            // point-in-time recovery across this segment is no longer possible.
            ui.error(format!(
                "WAL DROPPED: wal-push {} {name} was NOT archived: pg_wal holds {} of unarchived WAL,                  more than archive_queue_max ({}); the archive has a gap here, so point-in-time recovery                  cannot cross it: fix the storage, then take a new base backup",
                args.target,
                crate::duration::bytes(queued),
                crate::duration::bytes(max)
            ));
            ExitCode::SUCCESS
        }
        Ok(PushOutcome::AlreadyArchived) => {
            ui.info(format!(
                "wal-push {} {name}: already archived with identical content",
                args.target
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            if e.chain().any(|c| c.downcast_ref::<WalConflict>().is_some()) {
                ui.error(format!("wal-push {} {name}: {e:#}", args.target));
            } else {
                ui.error(format!(
                    "wal-push {} {name} failed (PostgreSQL will retry): {e:#}",
                    args.target
                ));
            }
            ExitCode::from(1)
        }
    }
}

pub fn fetch_main(config: Option<&Path>, args: WalFetchArgs, ui: &Ui) -> ExitCode {
    let res = with_physical(config, &args.target, |p, t| {
        p.archive_fetch(t, &args.name, &args.destination)
    });
    match res {
        Ok(FetchOutcome::Fetched(s)) => {
            ui.info(format!(
                "wal-fetch {} {}: fetched from `{s}`",
                args.target, args.name
            ));
            ExitCode::SUCCESS
        }
        Ok(FetchOutcome::Missing) => {
            ui.info(format!(
                "wal-fetch {} {}: not in the archive",
                args.target, args.name
            ));
            ExitCode::from(1)
        }
        Err(e) => {
            ui.error(format!(
                "wal-fetch {} {}: {e:#} (exit {FETCH_ABORT}: PostgreSQL stops recovery rather than end it early)",
                args.target, args.name
            ));
            ExitCode::from(FETCH_ABORT)
        }
    }
}
