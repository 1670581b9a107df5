//! The seam between the database-agnostic engine library and the databases.
//!
//! An engine wraps the native tools of one database. What engines can do differs, so
//! the seam is a small set of capability traits, handed out per target by
//! [`registry`]:
//!
//! - [`LogicalEngine`], every engine: a logical backup as a stream, the engine's own
//!   check of an artifact, a restore from a verified local file, facts for the manifest.
//! - [`PhysicalEngine`], some engines: a physical backup with a log archive beside it
//!   and point-in-time recovery (PostgreSQL: base backups + WAL).
//! - [`LogArchive`], engines with a log archive: how far each backup can be recovered
//!   (`list`), whether the archive is whole (`verify`), what retention may drop (`prune`).
//! - [`ScratchEngine`], engines that can start a throwaway instance: `test-restore`.
//! - [`StreamSetEngine`], engines whose logical backup is a set of named streams (one
//!   per table), so that a partial restore reads only the streams it needs.
//!
//! A command asks the registry for the capability it needs; a target whose engine
//! lacks it gets one line and exit 2 ([`lacks`]), never a panic or a database error.
//! This module names no database and imports nothing but leaf modules, so the engine
//! library can use these traits while each `db::<engine>` uses the engine library.

pub mod clickhouse;
pub mod mongodb;
pub mod postgres;
pub mod recovery;
pub mod redis;
pub mod registry;

use crate::config::{Config, TestRestoreConfig};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, Manifest, RunOutcome, TableFact};
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use recovery::{FetchOutcome, Goal, PitrOutcome, PitrRequest, PushOutcome};

/// A target resolved once: its name, its config and the whole config (for storages,
/// state and notifiers). Engines and the engine library take this, never a name to
/// look up again.
#[derive(Clone, Copy)]
pub struct Target<'c> {
    pub name: &'c str,
    pub cfg: &'c crate::config::TargetConfig,
    pub config: &'c Config,
}

impl<'c> Target<'c> {
    pub fn resolve(config: &'c Config, name: &'c str) -> Result<Target<'c>> {
        Ok(Target {
            name,
            cfg: config.target(name)?,
            config,
        })
    }

    /// Opens every storage of the target, in the configured order.
    pub fn open_storages(&self) -> Result<Vec<Box<dyn Storage>>> {
        self.cfg
            .storages
            .iter()
            .map(|s| crate::storage::open(self.config, s))
            .collect()
    }

    /// The target's own storage names, local ones first (faster to read).
    pub fn storages_local_first(&self) -> Vec<String> {
        Self::local_first(self.config, self.cfg.storages.clone())
    }

    /// Every storage holding the target's backups (its own, then its copies'), local
    /// ones first: where restores, pitr and wal-fetch look.
    pub fn readable_storages_local_first(&self) -> Vec<String> {
        Self::local_first(self.config, self.cfg.all_storages())
    }

    /// Opens every storage holding the target's backups, local ones first.
    pub fn open_readable_storages(&self) -> Result<Vec<Box<dyn Storage>>> {
        self.readable_storages_local_first()
            .iter()
            .map(|s| crate::storage::open(self.config, s))
            .collect()
    }

    fn local_first(config: &Config, mut names: Vec<String>) -> Vec<String> {
        names.sort_by_key(|n| {
            !matches!(
                config.storages.get(n),
                Some(crate::config::StorageConfig::Local { .. })
            )
        });
        names
    }

    /// Opens every storage of the target, local ones first.
    pub fn open_storages_local_first(&self) -> Result<Vec<Box<dyn Storage>>> {
        self.storages_local_first()
            .iter()
            .map(|s| crate::storage::open(self.config, s))
            .collect()
    }
}

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
    /// File name in the backup folder. A compressed artifact's name ends in `.gz`;
    /// [`ArtifactSpec::stored`] swaps that for the target's `compression`.
    pub name: String,
    /// Compressed on the way to storage (gzip unless the target's `compression` says
    /// otherwise, where the engine allows it).
    pub gzip: bool,
    pub content: String,
    pub format: String,
}

impl ArtifactSpec {
    /// The name and compression this artifact is stored with under `c` (the target's
    /// `compression`): `dump.sql.gz` becomes `dump.sql.zst` with zstd, `dump.sql` with
    /// none; an artifact the engine does not compress stays as it is.
    pub fn stored(
        &self,
        c: crate::compress::Compression,
    ) -> (String, crate::compress::Compression) {
        use crate::compress::Compression;
        if !self.gzip {
            return (self.name.clone(), Compression::None);
        }
        let base = self.name.strip_suffix(".gz").unwrap_or(&self.name);
        (format!("{base}{}", c.ext()), c)
    }
}

/// A running dump. Read it to the end, then `finish` to learn whether it succeeded.
pub trait DumpStream: Read + Send {
    /// Waits for the tool; an error carries the tool's own message.
    fn finish(self: Box<Self>) -> Result<DatabaseFacts>;
    /// Stops the tool (after a storage failure, or on Ctrl-C).
    fn kill(self: Box<Self>);
}

#[derive(Clone, Default)]
pub struct RestoreOptions {
    /// Restore into this database instead of the one in the target's connection.
    pub to_database: Option<String>,
    /// Only these tables (`name` or `schema.name`).
    pub tables: Vec<String>,
    /// Drop objects before recreating them.
    pub clean: bool,
    /// Parallel restore jobs (None: the engine's configured default).
    pub jobs: Option<u32>,
    /// Restore into another server than the target's (a URL; any password in it is
    /// moved out by the engine, and this field is never displayed unredacted).
    pub to_url: Option<String>,
    /// Only these numbered databases (Redis logical dbs); empty: all.
    pub dbs: Vec<u64>,
    /// Only the keys matching this glob (Redis); never combined with `flush`.
    pub key_match: Option<String>,
    /// Empty the destination (the databases restored) first.
    pub flush: bool,
    /// Redis: replace the server's data file (`stop_command`/`start_command`).
    pub by_file: bool,
    /// The backup being restored (set by the restore command once it is located).
    pub backup_id: Option<String>,
    /// MongoDB: only the namespaces matching these patterns (`db.coll`, `*` wildcards).
    pub ns_include: Vec<String>,
    /// MongoDB: rename namespaces matching this pattern (`$var$` variables)...
    pub ns_from: Option<String>,
    /// ...to this one.
    pub ns_to: Option<String>,
    /// Do not rebuild the planner's statistics after the restore (`--no-analyze`).
    pub no_analyze: bool,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("to_database", &self.to_database)
            .field("tables", &self.tables)
            .field("clean", &self.clean)
            .field("jobs", &self.jobs)
            .field("to_url", &self.to_url.as_deref().map(crate::redact::url))
            .field("dbs", &self.dbs)
            .field("key_match", &self.key_match)
            .field("flush", &self.flush)
            .field("by_file", &self.by_file)
            .field("backup_id", &self.backup_id)
            .field("ns_include", &self.ns_include)
            .field("ns_from", &self.ns_from)
            .field("ns_to", &self.ns_to)
            .field("no_analyze", &self.no_analyze)
            .finish()
    }
}

/// What rebuilding the planner's statistics after a restore did (`backup restore --json`
/// shows it as `analyze`), so that the first queries do not run on empty statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Analyze {
    /// Whether the statistics were rebuilt.
    pub done: bool,
    /// `ANALYZE`, `ANALYZE in 3 stages`, `skipped (--no-analyze)`, or the error.
    pub detail: String,
    /// Passes over the data (1, or 3 in stages; 0 when not done).
    pub stages: u32,
    /// Tables analyzed (0: the whole database).
    pub tables: usize,
    pub seconds: f64,
}

/// Does a table selector (`name` or `schema.name`) pick this table?
pub fn table_selected(selector: &str, t: &TableFact) -> bool {
    match selector.split_once('.') {
        Some((s, n)) => s == t.schema && n == t.name,
        None => selector == t.name,
    }
}

/// Every engine: logical backups and their restore.
pub trait LogicalEngine {
    fn artifact(&self) -> ArtifactSpec;
    /// Tools found, versions compatible, server reachable. Writes nothing.
    fn precheck(&mut self) -> Result<EngineInfo>;
    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>>;
    /// Checks that the engine's own tools can read the artifact (decompressed stream)
    /// and, where the engine counts something while reading, that the counts agree
    /// with the manifest's `expected` facts.
    fn check_artifact(&self, artifact: &mut dyn Read, expected: &DatabaseFacts) -> Result<String>;
    /// The same for one named artifact of a backup with several (a [`StreamSetEngine`]
    /// checks each by its name). Default: [`LogicalEngine::check_artifact`].
    fn check_named(
        &self,
        name: &str,
        artifact: &mut dyn Read,
        expected: &DatabaseFacts,
    ) -> Result<String> {
        let _ = name;
        self.check_artifact(artifact, expected)
    }
    /// Checks the restore side before anything is touched: tools, server, database.
    /// Returns the database that will be restored into.
    fn restore_precheck(&mut self, opts: &RestoreOptions, manifest_format: &str) -> Result<String>;
    /// One line for the restore plan: how the artifact goes into `database`.
    fn restore_plan(&self, opts: &RestoreOptions, manifest_format: &str, database: &str) -> String;
    /// Restores from a verified local file, stored with `compression`.
    fn restore(
        &mut self,
        file: &Path,
        compression: crate::compress::Compression,
        opts: &RestoreOptions,
    ) -> Result<()>;
    /// Row counts of the restored tables, for comparison with the manifest.
    fn count_rows(&mut self, opts: &RestoreOptions) -> Result<Vec<TableFact>>;
    /// Whether the post-restore comparison covers this manifest entry (a partial
    /// restore compares only what it restored). Default: the `--table` selection.
    fn compares(&self, opts: &RestoreOptions, t: &TableFact) -> bool {
        opts.tables.is_empty() || opts.tables.iter().any(|x| table_selected(x, t))
    }
    /// After a restore: rebuilds the planner's statistics of what was restored (`tables`:
    /// the manifest's entries this restore covers; every one for a whole restore).
    /// `None`: the engine keeps no statistics a restore loses.
    fn rebuild_statistics(
        &mut self,
        opts: &RestoreOptions,
        tables: &[TableFact],
        ui: &Ui,
    ) -> Result<Option<Analyze>> {
        let _ = (opts, tables, ui);
        Ok(None)
    }
}

/// Physical backups with a log archive and point-in-time recovery.
pub trait PhysicalEngine {
    /// `backup run` of a physical target: take the physical backup and store it.
    /// `kind`: `full` (None), `diff` or `incr` (`backup run --type`).
    fn backup(
        &mut self,
        t: &Target,
        tag: Option<&str>,
        kind: Option<&str>,
        ui: &Ui,
    ) -> Result<RunOutcome>;
    /// `backup check`: log archiving works end to end. Lines to print.
    fn check_archiving(&mut self, t: &Target, timeout: Duration, ui: &Ui) -> Result<Vec<String>>;
    /// `backup pitr`: restore a physical backup and recover to a point.
    fn recover(&mut self, t: &Target, req: PitrRequest, ui: &Ui) -> Result<PitrOutcome>;
    /// archive_command: store one log file on every storage.
    fn archive_push(&mut self, t: &Target, path: &Path) -> Result<PushOutcome>;
    /// `wal-push --background`: push the other files waiting next to `path` (async
    /// archiving). Default: the engine has none.
    fn archive_worker(&mut self, t: &Target, path: &Path) -> Result<()> {
        let _ = path;
        anyhow::bail!("target `{}` has no background WAL archiving", t.name)
    }
    /// restore_command: fetch one log file (Err: storage or checksum problem).
    fn archive_fetch(&mut self, t: &Target, name: &str, dest: &Path) -> Result<FetchOutcome>;
}

/// Until when a backup can be recovered from the log archive on one storage.
#[derive(Debug, Clone)]
pub struct Window {
    /// When the newest contiguous log file was stored (None: unknown).
    pub until: Option<DateTime<Utc>>,
    /// The newest contiguous log file.
    pub until_file: String,
}

/// What retention may remove from a log archive on one storage.
#[derive(Debug, Clone)]
pub struct LogPrune {
    /// The kept backup that bounds the archive (None: no kept backup needs it; the
    /// archive is then left alone).
    pub oldest_kept: Option<(String, DateTime<Utc>)>,
    pub remove: Vec<String>,
    pub remove_bytes: u64,
    pub reason: String,
}

/// The log archive's part in `list`, `verify` and `prune`.
pub trait LogArchive {
    /// The folder under the target that holds the archive (`wal`).
    fn folder(&self) -> &'static str;
    /// Per backup (in order): how far it can be recovered; None when a log file it
    /// needs is missing.
    fn windows(
        &self,
        s: &dyn Storage,
        target: &str,
        backups: &[Manifest],
    ) -> Result<Vec<Option<Window>>>;
    /// The archive's continuity: (checks passed, problems).
    fn verify(
        &self,
        s: &dyn Storage,
        target: &str,
        backups: &[Manifest],
    ) -> (Vec<String>, Vec<String>);
    /// Of the archive's `keys`, those no kept backup needs.
    fn prune(
        &self,
        s: &dyn Storage,
        target: &str,
        kept: &[&Manifest],
        keys: Vec<String>,
    ) -> Result<LogPrune>;
}

/// What `test-restore` asks of the engine: restore into a throwaway place and check.
pub struct ScratchRequest<'a> {
    pub settings: &'a TestRestoreConfig,
    /// The largest allowed gap between the newest freshness value and the backup.
    pub max_lag: Duration,
    /// The operator's checks (text of `checks_sql`).
    pub checks_sql: Option<&'a str>,
}

/// One check of a test-restore.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    #[serde(default)]
    pub figures: serde_json::Value,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed,
            detail: detail.into(),
            figures: serde_json::Value::Null,
        }
    }
}

/// What the engine did in its scratch place.
pub struct ScratchOutcome {
    /// Where it restored (`temporary cluster (PostgreSQL 15.19) in /tmp/...`).
    pub place: String,
    /// Seconds the restore itself took (the RTO is judged on it).
    pub restore_seconds: f64,
    /// Whether the restore worked (later checks are meaningless otherwise).
    pub restored: bool,
    /// The restore check first, then the engine's checks of the restored data.
    pub checks: Vec<Check>,
}

/// Engines that can start a throwaway instance for `test-restore`.
pub trait ScratchEngine {
    /// Whether the engine runs the operator's `benchmark_sql` queries (a target whose
    /// engine does not is refused before anything is restored).
    fn runs_benchmarks(&self) -> bool {
        false
    }
    /// Restores backup `m` from `storage` into a scratch place, checks it, removes it.
    /// Errors before the restore (no server binaries) are errors; from the restore
    /// on, every finding is a check.
    fn test_restore(
        &mut self,
        t: &Target,
        storage: &dyn Storage,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome>;
}

/// Engines whose logical backup is a set of named streams (one per table, one per
/// table's DDL...) stored as separate artifacts of one backup. The engine library
/// runs each stream through the same pipeline as a single dump, writes the manifest
/// after the last, and restores from the verified files a selection needs.
/// `LogicalEngine::precheck`, `restore_precheck`, `restore_plan`, `count_rows` and
/// `check_named` serve these engines too; `start_dump`/`restore` are not used.
pub trait StreamSetEngine: LogicalEngine {
    /// This engine as its `LogicalEngine` (for the library's shared verify and counts).
    fn as_logical(&mut self) -> &mut dyn LogicalEngine;
    /// After `precheck`: the streams of this backup, in the order to take them.
    fn streams(&mut self) -> Result<Vec<ArtifactSpec>>;
    /// The backup's id, once allocated (after `streams`, before the first stream).
    fn begin(&mut self, id: &str) {
        let _ = id;
    }
    /// Opens one stream; its `finish` reports what it counted (tables, rows).
    fn open_stream(&mut self, name: &str) -> Result<Box<dyn DumpStream>>;
    /// The manifest's facts, from every stream's facts (in `streams` order).
    fn facts(&mut self, per_stream: Vec<DatabaseFacts>) -> Result<DatabaseFacts>;
    /// Of the manifest's artifacts, the names a restore with `opts` reads; an error
    /// (e.g. a `--table` the backup lacks) is a usage error.
    fn needed(&self, m: &Manifest, opts: &RestoreOptions) -> Result<Vec<String>>;
    /// The manifest's kind for this engine's backups (default: logical).
    fn kind(&self) -> crate::manifest::Kind {
        crate::manifest::Kind::Logical
    }
    /// After `facts`: the earlier backups this one reads artifacts from (artifacts it
    /// referenced instead of storing again), for the manifest's `depends_on`.
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    /// The backup that stores artifact `name` of backup `m` when it is not `m`'s own
    /// (one of `m.depends_on`); None: `m` stores it.
    fn home(&self, m: &Manifest, name: &str) -> Option<String> {
        let _ = (m, name);
        None
    }
    /// Restores from verified local files (artifact name, path), as `needed` chose.
    fn restore_set(
        &mut self,
        m: &Manifest,
        files: &[(String, PathBuf)],
        opts: &RestoreOptions,
    ) -> Result<()>;
}

/// What the registry hands out for a target: the capabilities its engine has.
pub trait Engine {
    fn logical(&mut self) -> &mut dyn LogicalEngine;
    /// Engines whose logical backup is a set of streams (the library then uses this).
    fn stream_set(&mut self) -> Option<&mut dyn StreamSetEngine> {
        None
    }
    fn physical(&mut self) -> Option<&mut dyn PhysicalEngine> {
        None
    }
    fn scratch(&mut self) -> Option<&mut dyn ScratchEngine> {
        None
    }
}

/// The one-line refusal for a capability a target's engine does not have (exit 2).
pub fn lacks(t: &Target, what: &str, hint: &str) -> anyhow::Error {
    Fail::Usage(format!(
        "target `{}` ({}, kind = \"{}\") has no {what}{hint}",
        t.name, t.cfg.engine, t.cfg.kind
    ))
    .into()
}
