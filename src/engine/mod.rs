//! The engine library: everything the subcommands do, without clap types.

pub mod backup;
pub mod catalog;
pub mod email;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod physical;
pub mod pitr;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod scratch;
pub mod status;
pub mod tar;
pub mod test_restore;
pub mod verify;
pub mod wal;
pub mod watch;
