//! Configuration: one TOML file resolved into one settings struct.
//!
//! Lookup order: `--config FILE`, then `$BACKUP_CONFIG`, then `./backup.toml`, then
//! `/etc/backup/backup.toml`. Without any file the embedded default applies: a local
//! repository `./backups` and a `postgres` target on libpq defaults (PGHOST, PGDATABASE...).

use crate::error::Fail;
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where locks and run state live (default: /var/lib/backup for root, else
    /// $XDG_STATE_HOME/backup or ~/.local/state/backup).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub storages: BTreeMap<String, StorageConfig>,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Defaults for `backup test-restore` (a target's own `[targets.T.test_restore]` wins).
    #[serde(default)]
    pub test_restore: Option<TestRestoreConfig>,
    /// Prometheus textfile and/or Pushgateway.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Notification channels, named by targets' `notify = [...]`.
    #[serde(default)]
    pub notifiers: BTreeMap<String, NotifierConfig>,
    /// Where the file came from (None: embedded default).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    Local {
        path: PathBuf,
        #[serde(default)]
        retention: Option<Retention>,
    },
    S3(Box<S3Config>),
}

impl StorageConfig {
    pub fn retention(&self) -> Option<&Retention> {
        match self {
            StorageConfig::Local { retention, .. } => retention.as_ref(),
            StorageConfig::S3(s3) => s3.retention.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms` (with `kms_key_id`).
    #[serde(default)]
    pub server_side_encryption: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// `when_required` or `when_supported`. Default: `when_required` when `endpoint`
    /// is set (S3-compatible stores often reject the SDK's default checksums),
    /// `when_supported` otherwise.
    #[serde(default)]
    pub request_checksum_calculation: Option<String>,
    /// Named profile from ~/.aws/config (default: the standard chain).
    #[serde(default)]
    pub profile: Option<String>,
    /// Multipart part size in MiB (5..=5120, default 8; grows for very large objects).
    #[serde(default)]
    pub part_size_mb: Option<u64>,
    /// Parts uploaded at once (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Attempts per request, with backoff on throttling and 5xx (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Extra object tags added to every object.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub retention: Option<Retention>,
}

/// A retention policy (restic-style forget rules over calendar periods in UTC).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    #[serde(default)]
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_within_hourly: Option<String>,
    #[serde(default)]
    pub keep_within_daily: Option<String>,
    #[serde(default)]
    pub keep_within_weekly: Option<String>,
    #[serde(default)]
    pub keep_within_monthly: Option<String>,
    #[serde(default)]
    pub keep_within_yearly: Option<String>,
    /// Keep tagged backups for this long (e.g. `90d`), whatever the other rules say.
    #[serde(default)]
    pub keep_tagged: Option<String>,
    /// Which backup represents a calendar period: `newest` (default, as restic) or `first`,
    /// for every period, or per period: `{ monthly = "first", yearly = "first" }`.
    #[serde(default)]
    pub period_representative: Option<PeriodRepresentative>,
    /// Never delete backups younger than this (default `1h`).
    #[serde(default)]
    pub min_age: Option<String>,
    /// Incomplete backups (no manifest) older than this are garbage (default `24h`).
    #[serde(default)]
    pub incomplete_grace: Option<String>,
}

/// `period_representative`: one word for every period, or a table per period.
#[derive(Debug, Clone, PartialEq)]
pub enum PeriodRepresentative {
    All(String),
    PerPeriod(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for PeriodRepresentative {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PeriodRepresentative;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""newest", "first" or a table such as { monthly = "first" }"#)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(PeriodRepresentative::All(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(PeriodRepresentative::PerPeriod(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    #[default]
    Plain,
    Custom,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RowCounts {
    /// Exact `count(*)` per table in the dump's own snapshot.
    #[default]
    Exact,
    /// No counting (very large databases where a second scan is too costly).
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub engine: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Connection URL. A password in it is stripped and passed by environment.
    #[serde(default)]
    pub url: Option<String>,
    /// File whose first line is the password (passed to tools as PGPASSWORD).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub format: DumpFormat,
    #[serde(default)]
    pub storages: Vec<String>,
    /// gzip level 1..=9 for plain dumps (default 6, as gzip).
    #[serde(default)]
    pub compression_level: Option<u32>,
    #[serde(default)]
    pub row_counts: RowCounts,
    /// Directory holding pg_dump, pg_restore, psql... (default: found on PATH).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Extra arguments for the dump tool, e.g. ["--no-owner", "--no-acl"].
    #[serde(default)]
    pub dump_args: Vec<String>,
    /// Parallel jobs for pg_restore into a fresh database (default 2).
    #[serde(default)]
    pub restore_jobs: Option<u32>,
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
}

/// Where and how `backup test-restore` proves a backup. Every key is optional; a
/// target's section overrides the global one key by key.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestRestoreConfig {
    /// Restore into a scratch database on this server instead of a temporary cluster.
    #[serde(default)]
    pub url: Option<String>,
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
}

impl TestRestoreConfig {
    /// `self` over `base`, key by key.
    pub fn over(&self, base: &TestRestoreConfig) -> TestRestoreConfig {
        TestRestoreConfig {
            url: self.url.clone().or_else(|| base.url.clone()),
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
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// File for node_exporter's textfile collector (written atomically).
    #[serde(default)]
    pub textfile: Option<PathBuf>,
    /// Pushgateway base URL, e.g. http://pushgateway:9091.
    #[serde(default)]
    pub pushgateway: Option<String>,
    /// Pushgateway job name (default `backup`).
    #[serde(default)]
    pub job: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// `slack`, `webhook`, `pagerduty` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Slack incoming webhook or generic webhook URL (a secret: never logged).
    #[serde(default)]
    pub url: Option<String>,
    /// PagerDuty Events API v2 routing (integration) key.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// PagerDuty events endpoint (default https://events.pagerduty.com/v2/enqueue).
    #[serde(default)]
    pub events_url: Option<String>,
    /// Which outcomes to send: `failure`, `success`, `recovery` (default failure + recovery).
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// SMTP server (email).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File whose first line is the SMTP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Upgrade the SMTP connection with STARTTLS (default true; needed before AUTH).
    #[serde(default)]
    pub starttls: Option<bool>,
    /// `starttls` (default, port 587), `implicit` (TLS from the first byte, port 465) or
    /// `none` (port 25); overrides `starttls`, which must not contradict it.
    #[serde(default)]
    pub tls: Option<String>,
    /// PEM file of CA certificates trusted for the SMTP server in addition to the Mozilla
    /// roots (a private CA or a self-signed certificate).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Seconds before a send gives up (default 10).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

fn default_kind() -> String {
    "logical".into()
}
fn default_true() -> bool {
    true
}

pub const ENGINES: &[&str] = &["postgres"];

impl Config {
    /// The embedded default: `./backups` and a `postgres` target on libpq defaults.
    pub fn embedded_default() -> Config {
        let mut storages = BTreeMap::new();
        storages.insert(
            "local".to_string(),
            StorageConfig::Local {
                path: PathBuf::from("./backups"),
                retention: None,
            },
        );
        let mut targets = BTreeMap::new();
        targets.insert(
            "postgres".to_string(),
            TargetConfig {
                engine: "postgres".into(),
                kind: "logical".into(),
                url: None,
                password_file: None,
                format: DumpFormat::Plain,
                storages: vec!["local".into()],
                compression_level: None,
                row_counts: RowCounts::Exact,
                bin_dir: None,
                dump_args: vec![],
                restore_jobs: None,
                disk_check: true,
                retention: BTreeMap::new(),
                prune_after_run: false,
                test_restore: None,
                notify: vec![],
            },
        );
        Config {
            state_dir: None,
            storages,
            targets,
            source: None,
            ..Default::default()
        }
    }

    /// Finds and loads the configuration (see module docs for the order).
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        if let Some(p) = explicit {
            return Config::from_file(p);
        }
        if let Some(p) = std::env::var_os("BACKUP_CONFIG").filter(|v| !v.is_empty()) {
            return Config::from_file(Path::new(&p));
        }
        for p in ["./backup.toml", "/etc/backup/backup.toml"] {
            if Path::new(p).exists() {
                return Config::from_file(Path::new(p));
            }
        }
        Ok(Config::embedded_default())
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Fail::Config(format!(
                "cannot read config file {}: {e}; pass --config FILE or set BACKUP_CONFIG",
                path.display()
            ))
        })?;
        let mut cfg = Config::parse(&text, &path.display().to_string())?;
        cfg.source = Some(path.to_path_buf());
        // Relative local paths are relative to the config file's folder.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for s in cfg.storages.values_mut() {
            if let StorageConfig::Local { path, .. } = s {
                if path.is_relative() && !base.as_os_str().is_empty() {
                    *path = base.join(&*path);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and validates; every error is one line naming the file and the key.
    pub fn parse(text: &str, file: &str) -> Result<Config> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().replace('\n', " ");
            let mut line = inner
                .span()
                .map(|s| {
                    format!(
                        ":{}",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            // Internally tagged tables lose spans: name the unknown key itself, and
            // its line when it appears once.
            if let Some(field) = msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                if path.is_empty() || path == "." {
                    path = field.to_string();
                } else if path != field && !path.ends_with(&format!(".{field}")) {
                    path = format!("{path}.{field}");
                }
                let hits: Vec<usize> = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| {
                        l.trim_start()
                            .strip_prefix(field)
                            .is_some_and(|r| r.trim_start().starts_with('='))
                    })
                    .map(|(i, _)| i + 1)
                    .collect();
                if hits.len() == 1 {
                    line = format!(":{}", hits[0]);
                }
            }
            if path.is_empty() || path == "." {
                Fail::Config(format!("{file}{line}: {}", msg.trim()))
            } else {
                Fail::Config(format!("{file}{line}: key `{path}`: {}", msg.trim()))
            }
        })?;
        cfg.validate(file)?;
        cfg.validate_watch(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<()> {
        let bad = |key: String, msg: String| -> anyhow::Error {
            Fail::Config(format!("{file}: key `{key}`: {msg}")).into()
        };
        for (name, s) in &self.storages {
            if let StorageConfig::S3(s3) = s {
                if s3.bucket.trim().is_empty() {
                    return Err(bad(
                        format!("storages.{name}.bucket"),
                        "must not be empty".into(),
                    ));
                }
                if let Some(ep) = &s3.endpoint {
                    let u = url::Url::parse(ep).map_err(|e| {
                        bad(
                            format!("storages.{name}.endpoint"),
                            format!(
                                "`{}` is not a URL ({e}); write e.g. http://127.0.0.1:9000",
                                crate::redact::url(ep)
                            ),
                        )
                    })?;
                    if !matches!(u.scheme(), "http" | "https") {
                        return Err(bad(
                            format!("storages.{name}.endpoint"),
                            "must start with http:// or https://".into(),
                        ));
                    }
                }
                if let Some(sse) = &s3.server_side_encryption {
                    if sse != "AES256" && sse != "aws:kms" {
                        return Err(bad(
                            format!("storages.{name}.server_side_encryption"),
                            format!("`{sse}` is not AES256 or aws:kms"),
                        ));
                    }
                }
                if let Some(c) = &s3.request_checksum_calculation {
                    if c != "when_required" && c != "when_supported" {
                        return Err(bad(
                            format!("storages.{name}.request_checksum_calculation"),
                            format!("`{c}` is not when_required or when_supported"),
                        ));
                    }
                }
                if let Some(p) = s3.part_size_mb {
                    if !(5..=5120).contains(&p) {
                        return Err(bad(
                            format!("storages.{name}.part_size_mb"),
                            format!("{p} is outside 5..=5120 (S3's part size limits)"),
                        ));
                    }
                }
                if s3.concurrency == Some(0) {
                    return Err(bad(
                        format!("storages.{name}.concurrency"),
                        "must be at least 1".into(),
                    ));
                }
            }
            if let Some(r) = s.retention() {
                r.validate()
                    .map_err(|m| bad(format!("storages.{name}.retention"), m))?;
            }
        }
        for (name, t) in &self.targets {
            if !ENGINES.contains(&t.engine.as_str()) {
                let planned = ["mongodb", "redis", "clickhouse"];
                let hint = if planned.contains(&t.engine.as_str()) {
                    "is not supported by this version yet".to_string()
                } else {
                    format!("is not an engine; use one of {}", ENGINES.join(", "))
                };
                return Err(bad(
                    format!("targets.{name}.engine"),
                    format!("`{}` {hint}", t.engine),
                ));
            }
            if t.kind != "logical" && t.kind != "physical" {
                return Err(bad(
                    format!("targets.{name}.kind"),
                    format!("`{}` is not logical or physical", t.kind),
                ));
            }
            if t.kind == "physical" && t.engine != "postgres" {
                return Err(bad(
                    format!("targets.{name}.kind"),
                    format!(
                        "physical backups are supported for engine postgres only, not `{}`",
                        t.engine
                    ),
                ));
            }
            if t.storages.is_empty() {
                return Err(bad(
                    format!("targets.{name}.storages"),
                    "lists no storage; name at least one of [storages.*]".into(),
                ));
            }
            for s in &t.storages {
                if !self.storages.contains_key(s) {
                    let known: Vec<_> = self.storages.keys().cloned().collect();
                    return Err(bad(
                        format!("targets.{name}.storages"),
                        format!(
                            "names storage `{s}`, which is not defined; defined: [{}]",
                            known.join(", ")
                        ),
                    ));
                }
            }
            for s in t.retention.keys() {
                if !t.storages.contains(s) {
                    return Err(bad(
                        format!("targets.{name}.retention.{s}"),
                        format!("storage `{s}` is not one of this target's storages"),
                    ));
                }
            }
            for (s, r) in &t.retention {
                r.validate()
                    .map_err(|m| bad(format!("targets.{name}.retention.{s}"), m))?;
            }
            if let Some(u) = &t.url {
                crate::db::postgres::ConnInfo::parse_url(u)
                    .map_err(|e| bad(format!("targets.{name}.url"), format!("{e:#}")))?;
            }
            for n in &t.notify {
                if !self.notifiers.contains_key(n) {
                    return Err(bad(
                        format!("targets.{name}.notify"),
                        format!("names notifier `{n}`, which is not defined in [notifiers.*]"),
                    ));
                }
            }
            if let Some(tr) = &t.test_restore {
                tr.validate()
                    .map_err(|m| bad(format!("targets.{name}.test_restore"), m))?;
            }
            if let Some(l) = t.compression_level {
                if !(1..=9).contains(&l) {
                    return Err(bad(
                        format!("targets.{name}.compression_level"),
                        format!("{l} is outside 1..=9"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the sections of issue 5 (test-restore, metrics, notifiers).
    fn validate_watch(&self, file: &str) -> Result<()> {
        let bad = |key: String, msg: String| -> anyhow::Error {
            Fail::Config(format!("{file}: key `{key}`: {msg}")).into()
        };
        if let Some(tr) = &self.test_restore {
            tr.validate().map_err(|m| bad("test_restore".into(), m))?;
        }
        if let Some(m) = &self.metrics {
            if let Some(u) = &m.pushgateway {
                check_http_url(u).map_err(|e| bad("metrics.pushgateway".into(), e))?;
            }
        }
        for (name, n) in &self.notifiers {
            let key = |k: &str| format!("notifiers.{name}.{k}");
            for o in n.on.iter().flatten() {
                if !["failure", "success", "recovery"].contains(&o.as_str()) {
                    return Err(bad(
                        key("on"),
                        format!("`{o}` is not failure, success or recovery"),
                    ));
                }
            }
            match n.kind.as_str() {
                "slack" | "webhook" => {
                    let u = n.url.as_deref().ok_or_else(|| {
                        bad(key("url"), format!("a {} notifier needs a url", n.kind))
                    })?;
                    check_http_url(u).map_err(|e| bad(key("url"), e))?;
                }
                "pagerduty" => {
                    if n.routing_key.as_deref().unwrap_or("").is_empty() {
                        return Err(bad(
                            key("routing_key"),
                            "a pagerduty notifier needs the integration's routing_key".into(),
                        ));
                    }
                    if let Some(u) = &n.events_url {
                        check_http_url(u).map_err(|e| bad(key("events_url"), e))?;
                    }
                }
                "email" => {
                    if n.host.is_none() {
                        return Err(bad(
                            key("host"),
                            "an email notifier needs the SMTP host".into(),
                        ));
                    }
                    if n.from.is_none() {
                        return Err(bad(
                            key("from"),
                            "an email notifier needs a from address".into(),
                        ));
                    }
                    if n.to.is_empty() {
                        return Err(bad(
                            key("to"),
                            "an email notifier needs at least one recipient".into(),
                        ));
                    }
                    crate::engine::email::security(n).map_err(|m| bad(key("tls"), m))?;
                }
                other => {
                    return Err(bad(
                        key("type"),
                        format!("`{other}` is not slack, webhook, pagerduty or email"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The effective test-restore settings of a target.
    pub fn test_restore_for(&self, target: &str) -> TestRestoreConfig {
        let base = self.test_restore.clone().unwrap_or_default();
        match self
            .targets
            .get(target)
            .and_then(|t| t.test_restore.as_ref())
        {
            Some(t) => t.over(&base),
            None => base,
        }
    }

    pub fn target(&self, name: &str) -> Result<&TargetConfig> {
        self.targets.get(name).ok_or_else(|| {
            let known: Vec<_> = self.targets.keys().cloned().collect();
            Fail::Usage(format!(
                "no target `{name}` in {}; defined targets: [{}]",
                self.describe_source(),
                known.join(", ")
            ))
            .into()
        })
    }

    pub fn storage(&self, name: &str) -> Result<&StorageConfig> {
        self.storages.get(name).ok_or_else(|| {
            let known: Vec<_> = self.storages.keys().cloned().collect();
            Fail::Usage(format!(
                "no storage `{name}` in {}; defined storages: [{}]",
                self.describe_source(),
                known.join(", ")
            ))
            .into()
        })
    }

    pub fn describe_source(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "the embedded default configuration (no config file found)".into(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("BACKUP_STATE_DIR").filter(|v| !v.is_empty()) {
            return PathBuf::from(d);
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/backup");
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(d).join("backup");
        }
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(".local/state/backup");
        }
        std::env::temp_dir().join("backup-state")
    }

    /// The effective retention for a target on a storage (target override first).
    pub fn retention_for(&self, target: &str, storage: &str) -> Option<Retention> {
        if let Some(t) = self.targets.get(target) {
            if let Some(r) = t.retention.get(storage) {
                return Some(r.clone());
            }
        }
        self.storages
            .get(storage)
            .and_then(|s| s.retention().cloned())
    }
}

fn check_http_url(u: &str) -> std::result::Result<(), String> {
    match url::Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!(
            "`{}` must start with http:// or https://",
            crate::redact::secret_url(u)
        )),
        Err(e) => Err(format!(
            "`{}` is not a URL ({e})",
            crate::redact::secret_url(u)
        )),
    }
}

impl TestRestoreConfig {
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
        if let Some(u) = &self.url {
            crate::db::postgres::ConnInfo::parse_url(u).map_err(|e| format!("url: {e:#}"))?;
        }
        Ok(())
    }
}

impl Retention {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("keep_within", &self.keep_within),
            ("keep_within_hourly", &self.keep_within_hourly),
            ("keep_within_daily", &self.keep_within_daily),
            ("keep_within_weekly", &self.keep_within_weekly),
            ("keep_within_monthly", &self.keep_within_monthly),
            ("keep_within_yearly", &self.keep_within_yearly),
            ("keep_tagged", &self.keep_tagged),
            ("min_age", &self.min_age),
            ("incomplete_grace", &self.incomplete_grace),
        ] {
            if let Some(v) = v {
                crate::duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            }
        }
        let word = |w: &str, key: &str| {
            if w != "newest" && w != "first" {
                return Err(format!("{key}: `{w}` is not newest or first"));
            }
            Ok(())
        };
        match &self.period_representative {
            None => {}
            Some(PeriodRepresentative::All(w)) => word(w, "period_representative")?,
            Some(PeriodRepresentative::PerPeriod(m)) => {
                for (period, w) in m {
                    if !["hourly", "daily", "weekly", "monthly", "yearly"]
                        .contains(&period.as_str())
                    {
                        return Err(format!(
                            "period_representative: `{period}` is not hourly, daily, weekly, monthly or yearly"
                        ));
                    }
                    word(w, &format!("period_representative.{period}"))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text, "b.toml").unwrap_err())
    }

    #[test]
    fn parses_the_issue_example() {
        let cfg = Config::parse(
            r#"
[storages.local]
type = "local"
path = "/backups"

[storages.s3]
type = "s3"
bucket = "my-saas-chat-backups"
prefix = "prod"
region = "us-east-1"
endpoint = "http://127.0.0.1:9000"
force_path_style = true
storage_class = "STANDARD_IA"
server_side_encryption = "AES256"

[targets.postgres]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:5432/saas_db"
format = "plain"
storages = ["local", "s3"]
"#,
            "b.toml",
        )
        .unwrap();
        assert_eq!(cfg.targets["postgres"].storages, vec!["local", "s3"]);
        assert!(matches!(cfg.storages["s3"], StorageConfig::S3(_)));
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = err("[storages.s3]\ntype = \"s3\"\nbukcet = \"x\"\n");
        assert!(e.contains("b.toml"), "{e}");
        assert!(e.contains("bukcet"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn notifiers_and_test_restore_are_checked() {
        let base = "[storages.l]\ntype=\"local\"\npath=\"/x\"\n[targets.pg]\nengine = \"postgres\"\nstorages = [\"l\"]\n";
        let e = err(&format!("{base}notify = [\"ops\"]\n"));
        assert!(e.contains("targets.pg.notify") && e.contains("ops"), "{e}");
        let e = err(&format!("{base}[notifiers.ops]\ntype = \"sms\"\n"));
        assert!(e.contains("notifiers.ops.type"), "{e}");
        let e = err(&format!("{base}[notifiers.ops]\ntype = \"slack\"\nurl = \"ftp://hooks.example.com/services/SECRET\"\n"));
        assert!(
            e.contains("notifiers.ops.url") && !e.contains("SECRET"),
            "{e}"
        );
        let e = err(&format!(
            "{base}[notifiers.ops]\ntype = \"slack\"\nurl = \"https://h/x\"\non = [\"always\"]\n"
        ));
        assert!(e.contains("notifiers.ops.on"), "{e}");
        let e = err(&format!(
            "{base}[targets.pg.test_restore]\nfreshness = [\"created_at\"]\n"
        ));
        assert!(
            e.contains("targets.pg.test_restore") && e.contains("table.column"),
            "{e}"
        );
        let e = err(&format!("{base}[test_restore]\nrto = \"soon\"\n"));
        assert!(e.contains("test_restore") && e.contains("rto"), "{e}");
        let cfg = Config::parse(
            &format!("{base}[targets.pg.test_restore]\nrto = \"1h\"\n[test_restore]\nrto = \"3h\"\nos_user = \"pg\"\n"),
            "b.toml",
        )
        .unwrap();
        let t = cfg.test_restore_for("pg");
        assert_eq!(
            (t.rto.as_deref(), t.os_user.as_deref()),
            (Some("1h"), Some("pg"))
        );
    }

    #[test]
    fn missing_storage_is_named() {
        let e = err("[targets.pg]\nengine = \"postgres\"\nstorages = [\"nowhere\"]\n");
        assert!(
            e.contains("targets.pg.storages") && e.contains("nowhere"),
            "{e}"
        );
    }

    #[test]
    fn malformed_url_is_named() {
        let e = err(
            "[storages.l]\ntype=\"local\"\npath=\"/x\"\n[targets.pg]\nengine = \"postgres\"\nurl = \"mysql://x\"\nstorages = [\"l\"]\n",
        );
        assert!(e.contains("targets.pg.url"), "{e}");
    }
}
