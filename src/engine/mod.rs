//! The engine library: everything the subcommands do, without clap types.

pub mod backup;
pub mod catalog;
pub mod lock;
pub mod physical;
pub mod pitr;
pub mod restore;
pub mod tar;
pub mod verify;
pub mod wal;
