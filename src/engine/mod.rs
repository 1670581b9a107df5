//! The engine library: everything the subcommands do, without clap types, and without
//! naming a database. Engines are reached through the traits of [`crate::db`].

pub mod backup;
pub mod catalog;
pub mod cleanup;
pub mod copy;
pub mod lock;
pub mod locks;
pub mod prune;
pub mod readers;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod status;
pub mod stream_set;
pub mod test_restore;
pub mod undelete;
pub mod verify;
