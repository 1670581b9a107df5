//! The engine library: everything the subcommands do, without clap types.

pub mod backup;
pub mod catalog;
pub mod lock;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod verify;
