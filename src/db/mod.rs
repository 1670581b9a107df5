//! Database engine seam. An engine wraps the native tools of one database: it checks
//! what can be checked before a byte is written, produces a dump stream, restores
//! from a (verified, local) artifact, and reports what it knew for the manifest.
//!
//! Logical engines (this version: PostgreSQL via pg_dump) implement [`LogicalEngine`].
//! Physical backups (a base backup plus a WAL archive) fit the same shape: the base
//! backup is the dump stream, and the WAL range goes into [`crate::manifest::WalRange`].

pub mod postgres;

use crate::manifest::DatabaseFacts;
use anyhow::Result;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// What the pre-checks learned.
#[derive(Debug, Clone, Default)]
pub struct EngineInfo {
    /// e.g. `pg_dump` -> `15.19`, `server` -> `15.19`.
    pub versions: BTreeMap<String, String>,
    pub database: Option<String>,
    pub size_bytes: Option<u64>,
}

/// How the engine's output is stored.
#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    /// File name in the backup folder.
    pub name: String,
    /// Compress with gzip on the way to storage.
    pub gzip: bool,
    pub content: String,
    pub format: String,
}

/// A running dump. Read it to the end, then `finish` to learn whether it succeeded.
pub trait DumpStream: Read + Send {
    /// Waits for the tool; an error carries the tool's own message.
    fn finish(self: Box<Self>) -> Result<DatabaseFacts>;
    /// Stops the tool (after a storage failure, or on Ctrl-C).
    fn kill(self: Box<Self>);
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore into this database instead of the one in the target's connection.
    pub to_database: Option<String>,
    /// Only these tables (`name` or `schema.name`).
    pub tables: Vec<String>,
    /// Drop objects before recreating them.
    pub clean: bool,
    pub jobs: u32,
}

pub trait LogicalEngine {
    fn artifact(&self) -> ArtifactSpec;
    /// Tools found, versions compatible, server reachable. Writes nothing.
    fn precheck(&mut self) -> Result<EngineInfo>;
    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>>;
    /// Checks that the engine's own tools can read the artifact (decompressed stream).
    fn check_artifact(&self, artifact: &mut dyn Read) -> Result<String>;
    /// Checks the restore side before anything is touched: tools, server, database.
    fn restore_precheck(&mut self, opts: &RestoreOptions, manifest_format: &str) -> Result<String>;
    /// Restores from a verified local file.
    fn restore(&mut self, file: &Path, gzip: bool, opts: &RestoreOptions) -> Result<()>;
    /// Row counts of the restored tables, for comparison with the manifest.
    fn count_rows(&mut self, opts: &RestoreOptions) -> Result<Vec<crate::manifest::TableFact>>;
}

/// Builds the engine for a target.
pub fn logical_engine(
    target: &str,
    cfg: &crate::config::TargetConfig,
) -> Result<Box<dyn LogicalEngine>> {
    match cfg.engine.as_str() {
        "postgres" => Ok(Box::new(postgres::Postgres::new(target, cfg)?)),
        other => Err(crate::error::Fail::Config(format!(
            "engine `{other}` of target `{target}` is not supported by this version"
        ))
        .into()),
    }
}
