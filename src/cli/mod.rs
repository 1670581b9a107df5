//! The command tree. Each subcommand is a thin module: parse, call the engine, print.

pub mod check;
pub mod completions;
pub mod copy;
pub mod daemon;
pub mod list;
pub mod pitr;
pub mod prune;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod status;
pub mod test_restore;
pub mod undelete;
pub mod verify;
pub mod wal;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// The configuration, parsed and with every target's engine keys checked by its engine.
pub fn load_config(explicit: Option<&Path>) -> anyhow::Result<crate::config::Config> {
    let cfg = crate::config::Config::load(explicit)?;
    crate::db::registry::check_config(&cfg)?;
    Ok(cfg)
}

/// Back up, verify, prune and restore PostgreSQL to local disk and S3-compatible storage.
#[derive(Debug, Parser)]
#[command(
    name = "backup",
    version,
    about,
    long_about = "Back up, verify, prune and restore PostgreSQL (logical dumps, base backups + WAL, point-in-time recovery) to local disk and S3-compatible storage.\n\n\
Configuration is read from --config FILE, then $BACKUP_CONFIG, then ./backup.toml, then /etc/backup/backup.toml; \
without any, a `postgres` target on libpq defaults (PGHOST, PGDATABASE...) backs up into ./backups.",
    after_help = "Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 verification failed, 4 target locked by another run, 5 not confirmed (use --yes), 6 test-restore check failed, 7 status: a backup is too old."
)]
pub struct Cli {
    /// Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml).
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "BACKUP_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Only warnings and errors on stderr.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// No progress bars (log lines only).
    #[arg(long, global = true)]
    pub no_progress: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a backup of a target and store it on every storage of the target.
    Run(run::RunArgs),
    /// List backups.
    List(list::ListArgs),
    /// Read backups back from storage and check them (size, SHA-256, stream, tools).
    Verify(verify::VerifyArgs),
    /// Restore a backup into a database (verified before anything is touched).
    Restore(restore::RestoreArgs),
    /// Restore a backup into a scratch cluster, check it, and remove the scratch copy.
    TestRestore(test_restore::TestRestoreArgs),
    /// Are we backed up? Last good backup per target and storage, its age, last test-restore.
    Status(status::StatusArgs),
    /// Remove backups the retention policy no longer keeps (prints the plan and why).
    Prune(prune::PruneArgs),
    /// Copy backups from one storage to another (off-site copies), verified at the destination.
    Copy(copy::CopyArgs),
    /// Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook).
    Undelete(undelete::UndeleteArgs),
    /// Restore a physical base backup and recover to a point in time (PostgreSQL PITR).
    Pitr(pitr::PitrArgs),
    /// archive_command: store a WAL file in every storage of a target (exit 0 only when durable).
    WalPush(wal::WalPushArgs),
    /// restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error).
    WalFetch(wal::WalFetchArgs),
    /// Check a physical target's WAL archiving end to end (forces a WAL switch).
    Check(check::CheckArgs),
    /// Every scheduled job and its next fire times (check a config before deploying it).
    Schedule(schedule::ScheduleArgs),
    /// Run every schedule in the foreground (for systemd and containers); /metrics, /healthz.
    Daemon(daemon::DaemonArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Write man pages into a folder.
    #[command(hide = true)]
    Man(completions::ManArgs),
}
