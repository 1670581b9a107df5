//! `[targets.NAME]`: the keys every engine shares, plus the engine's own keys, which
//! are kept as a table here and parsed and checked by the engine (see `crate::db`).

use super::retention::Retention;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The keys every target has. Anything else in the table belongs to the engine.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetConfig {
    pub engine: String,
    /// `logical` (default) or `physical`, where the engine has physical backups.
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub storages: Vec<String>,
    /// `zstd`, `gzip` or `none` (default: gzip for dumps and WAL, zstd for
    /// `method = "files"` physical backups). See `crate::compress`.
    #[serde(default)]
    pub compression: Option<String>,
    /// Level for `compression`: gzip 1..=9 (default 6), zstd 1..=19 (default 3).
    #[serde(default)]
    pub compression_level: Option<u32>,
    /// Check free space on local storages before a run (default true).
    #[serde(default = "default_true")]
    pub disk_check: bool,
    /// Per-storage retention overrides: `[targets.T.retention.STORAGE]`.
    #[serde(default)]
    pub retention: BTreeMap<String, Retention>,
    /// Prune this target's storages after every successful run.
    #[serde(default)]
    pub prune_after_run: bool,
    /// `backup test-restore` settings for this target (over the global `[test_restore]`).
    #[serde(default)]
    pub test_restore: Option<TestRestoreConfig>,
    /// Notifiers (names of `[notifiers.*]`) told about this target's runs.
    #[serde(default)]
    pub notify: Vec<String>,
    /// When `backup daemon` backs this target up (cron, five fields or six with seconds).
    #[serde(default)]
    pub schedule: Option<String>,
    /// IANA time zone the schedules are read in (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Several backup schedules: `[{ cron = "0 2 * * *", type = "full" }]`.
    #[serde(default)]
    pub schedules: Vec<super::ScheduleEntry>,
    /// When the daemon runs `backup verify` (latest backup).
    #[serde(default)]
    pub verify_schedule: Option<String>,
    /// When the daemon runs `backup test-restore` (e.g. first Sunday: `0 10 * * SUN#1`).
    #[serde(default)]
    pub test_restore_schedule: Option<String>,
    /// When the daemon runs `backup prune --yes`.
    #[serde(default)]
    pub prune_schedule: Option<String>,
    /// When the daemon runs `backup copy TARGET --all` (to the `copy_to` storages).
    #[serde(default)]
    pub copy_schedule: Option<String>,
    /// Storages `backup copy` writes to when `--to` is not given (off-site copies).
    #[serde(default)]
    pub copy_to: Vec<String>,
    /// Storages every successful `backup run` is copied to afterwards.
    #[serde(default)]
    pub copy_after_run: Vec<String>,
    /// The oldest acceptable newest backup for `backup status` and `/healthz` (default:
    /// `[daemon] max_age` for /healthz, else 26h; `status --max-age` overrides it).
    #[serde(default)]
    pub max_age: Option<String>,
    /// The engine's own keys (`url`, `password_file`, `format`...), checked by the
    /// engine when the configuration is loaded.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// The shared keys, for messages that list what a target table may hold.
pub const COMMON_KEYS: &[&str] = &[
    "engine",
    "kind",
    "storages",
    "compression",
    "compression_level",
    "disk_check",
    "retention",
    "prune_after_run",
    "test_restore",
    "notify",
    "schedule",
    "timezone",
    "schedules",
    "verify_schedule",
    "test_restore_schedule",
    "prune_schedule",
    "copy_schedule",
    "copy_to",
    "copy_after_run",
    "max_age",
];

impl TargetConfig {
    /// A target with the shared defaults and no engine keys.
    pub fn new(engine: &str, storages: Vec<String>) -> TargetConfig {
        TargetConfig {
            engine: engine.into(),
            kind: default_kind(),
            storages,
            compression: None,
            compression_level: None,
            disk_check: true,
            retention: BTreeMap::new(),
            prune_after_run: false,
            test_restore: None,
            notify: vec![],
            schedule: None,
            timezone: None,
            schedules: vec![],
            verify_schedule: None,
            test_restore_schedule: None,
            prune_schedule: None,
            copy_schedule: None,
            copy_to: vec![],
            copy_after_run: vec![],
            max_age: None,
            options: toml::Table::new(),
        }
    }
}

impl TargetConfig {
    /// The configured compression, or `default` (each kind of artifact has its own).
    /// The key is checked when the configuration is loaded.
    pub fn compression_or(
        &self,
        default: crate::compress::Compression,
    ) -> crate::compress::Compression {
        self.compression
            .as_deref()
            .and_then(|c| crate::compress::Compression::parse(c).ok())
            .unwrap_or(default)
    }

    /// Checks `compression` and `compression_level` together.
    pub fn check_compression(&self) -> std::result::Result<(), (&'static str, String)> {
        use crate::compress::Compression;
        let c = match self.compression.as_deref() {
            Some(c) => Compression::parse(c).map_err(|e| ("compression", e))?,
            None => Compression::Gzip,
        };
        if let Some(l) = self.compression_level {
            c.check_level(l as i32)
                .map_err(|e| ("compression_level", e))?;
        }
        // ClickHouse backups are many gzip streams read back by name (`*.native.gz`).
        if self.engine == "clickhouse" && c != Compression::Gzip {
            return Err((
                "compression",
                format!(
                    "clickhouse targets store gzip only; remove the key (or set \"gzip\") instead of \"{}\"",
                    c.name()
                ),
            ));
        }
        Ok(())
    }

    /// Every storage holding this target's backups: its own, then its copies'
    /// destinations (`copy_after_run`, `copy_to`). Listing, status and prune cover
    /// them all, so a copy follows its storage's retention.
    pub fn all_storages(&self) -> Vec<String> {
        let mut out = self.storages.clone();
        for s in self.copy_after_run.iter().chain(&self.copy_to) {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

fn default_kind() -> String {
    "logical".into()
}
fn default_true() -> bool {
    true
}

/// Where and how `backup test-restore` proves a backup. Every key is optional; a
/// target's section overrides the global one key by key.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestRestoreConfig {
    /// Restore into a scratch database on this server instead of a temporary cluster.
    #[serde(default)]
    pub url: Option<String>,
    /// MongoDB: the server (`mongodb://...`) to restore into a scratch database.
    #[serde(default)]
    pub uri: Option<String>,
    /// Folder with initdb/pg_ctl/postgres for the temporary cluster.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// OS user that runs the temporary cluster when started as root (default `postgres`).
    #[serde(default)]
    pub os_user: Option<String>,
    /// Parent folder of the temporary cluster (default: $TMPDIR).
    #[serde(default)]
    pub temp_dir: Option<PathBuf>,
    /// Longest acceptable restore (default `2h`).
    #[serde(default)]
    pub rto: Option<String>,
    /// `table.column` or `schema.table.column` whose newest value must be close to the backup time.
    #[serde(default)]
    pub freshness: Option<Vec<String>>,
    /// Largest allowed gap between the newest freshness value and the backup (default `26h`).
    #[serde(default)]
    pub freshness_max_lag: Option<String>,
    /// SQL file whose statements must each return `true` or no rows.
    #[serde(default)]
    pub checks_sql: Option<PathBuf>,
    /// Redis: keys that must exist in the restored data (in any logical database).
    #[serde(default)]
    pub must_exist: Option<Vec<String>>,
    /// Queries run on the restored data after the checks, each timed (PostgreSQL).
    #[serde(default)]
    pub benchmark_sql: Option<Vec<String>>,
}

impl TestRestoreConfig {
    /// `self` over `base`, key by key.
    pub fn over(&self, base: &TestRestoreConfig) -> TestRestoreConfig {
        TestRestoreConfig {
            url: self.url.clone().or_else(|| base.url.clone()),
            uri: self.uri.clone().or_else(|| base.uri.clone()),
            bin_dir: self.bin_dir.clone().or_else(|| base.bin_dir.clone()),
            os_user: self.os_user.clone().or_else(|| base.os_user.clone()),
            temp_dir: self.temp_dir.clone().or_else(|| base.temp_dir.clone()),
            rto: self.rto.clone().or_else(|| base.rto.clone()),
            freshness: self.freshness.clone().or_else(|| base.freshness.clone()),
            freshness_max_lag: self
                .freshness_max_lag
                .clone()
                .or_else(|| base.freshness_max_lag.clone()),
            checks_sql: self.checks_sql.clone().or_else(|| base.checks_sql.clone()),
            must_exist: self.must_exist.clone().or_else(|| base.must_exist.clone()),
            benchmark_sql: self
                .benchmark_sql
                .clone()
                .or_else(|| base.benchmark_sql.clone()),
        }
    }
}

impl TestRestoreConfig {
    /// The engine-independent checks; the engine checks `url` and the like.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("rto", &self.rto),
            ("freshness_max_lag", &self.freshness_max_lag),
        ] {
            if let Some(v) = v {
                crate::duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            }
        }
        for f in self.freshness.iter().flatten() {
            let parts = f.split('.').count();
            if !(2..=3).contains(&parts) || f.split('.').any(str::is_empty) {
                return Err(format!(
                    "freshness: `{f}` must be table.column or schema.table.column"
                ));
            }
        }
        if self.must_exist.iter().flatten().any(String::is_empty) {
            return Err("must_exist: an empty key name; list the keys, e.g. must_exist = [\"config:global\"]".into());
        }
        if self
            .benchmark_sql
            .iter()
            .flatten()
            .any(|q| q.trim().is_empty())
        {
            return Err("benchmark_sql: an empty query; list the queries, e.g. benchmark_sql = [\"SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day'\"]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TargetConfig;

    #[test]
    fn compression_is_checked_with_its_level_and_engine() {
        let mut t = TargetConfig::new("postgres", vec![]);
        t.compression = Some("zstd".into());
        t.compression_level = Some(19);
        assert!(t.check_compression().is_ok());
        t.compression_level = Some(20);
        assert_eq!(t.check_compression().unwrap_err().0, "compression_level");
        t.compression = Some("lz4".into());
        assert_eq!(t.check_compression().unwrap_err().0, "compression");
        let mut ch = TargetConfig::new("clickhouse", vec![]);
        ch.compression = Some("zstd".into());
        let (key, msg) = ch.check_compression().unwrap_err();
        assert_eq!(key, "compression");
        assert!(msg.contains("gzip only"), "{msg}");
        ch.compression = Some("gzip".into());
        assert!(ch.check_compression().is_ok());
    }
}
