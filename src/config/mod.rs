//! Configuration: one TOML file resolved into one settings struct.
//!
//! This module knows the shared keys (storages, retention, the keys every target has,
//! test-restore, metrics, notifiers). A target's engine keys (`url`, `format`...) are
//! kept as a table in [`TargetConfig::options`] and parsed by the engine itself
//! (`crate::db::registry::check_config`), so adding an engine never touches this module.
//!
//! Lookup order: `--config FILE`, then `$BACKUP_CONFIG`, then `./backup.toml`, then
//! `/etc/backup/backup.toml`. Without any file the embedded default applies: a local
//! repository `./backups` and a `postgres` target on libpq defaults (PGHOST, PGDATABASE...).

mod retention;
mod schedule;
mod storage;
mod target;
mod watch;

pub use retention::{PeriodRepresentative, Retention};
pub use schedule::{parse_cron, warnings as schedule_warnings, DaemonConfig, ScheduleEntry};
pub use storage::{EncryptionConfig, S3Config, StorageConfig};
pub use target::{TargetConfig, TestRestoreConfig, COMMON_KEYS};
pub use watch::{MetricsConfig, NotifierConfig, SmtpSecurity};

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
    /// Append-only JSON-lines audit trail of restores, PITR, prune deletions and daemon
    /// starts and reloads.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Also send each audit line to syslog (facility authpriv), on `audit_syslog_socket`.
    #[serde(default)]
    pub audit_syslog: bool,
    /// The local syslog socket (default `/dev/log`).
    #[serde(default)]
    pub audit_syslog_socket: Option<PathBuf>,
    /// `backup daemon`: HTTP listener, concurrency, jitter, grace period, health age.
    #[serde(default)]
    pub daemon: Option<DaemonConfig>,
    /// Where the file came from (None: embedded default).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The file's name and text, to point errors found after parsing at a line.
    #[serde(skip)]
    origin: Option<(String, String)>,
}

impl Config {
    /// The embedded default: `./backups` and a `postgres` target on libpq defaults.
    pub fn embedded_default() -> Config {
        let mut storages = BTreeMap::new();
        storages.insert(
            "local".to_string(),
            StorageConfig::Local {
                path: PathBuf::from("./backups"),
                retention: None,
                encryption: None,
            },
        );
        let mut targets = BTreeMap::new();
        targets.insert(
            "postgres".to_string(),
            TargetConfig::new("postgres", vec!["local".into()]),
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
        // Relative local paths are relative to the config file's folder, or to
        // BACKUP_CONFIG_DIR: `backup daemon` runs its jobs on a snapshot of the last valid
        // file kept elsewhere, and names the original folder there.
        let base = std::env::var_os("BACKUP_CONFIG_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
        for s in cfg.storages.values_mut() {
            if let StorageConfig::Local { path, .. } = s {
                if path.is_relative() && !base.as_os_str().is_empty() {
                    *path = base.join(&*path);
                }
            }
            if let Some(enc) = s.encryption_mut() {
                for p in [&mut enc.age_recipients_file, &mut enc.age_identity_file]
                    .into_iter()
                    .flatten()
                {
                    if p.is_relative() && !base.as_os_str().is_empty() {
                        *p = base.join(&*p);
                    }
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
            let msg = crate::redact::serde_message(&inner.message().replace('\n', " "));
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
        let mut cfg = cfg;
        cfg.origin = Some((file.to_string(), text.to_string()));
        cfg.validate()?;
        cfg.validate_watch()?;
        cfg.validate_schedules()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        for (name, s) in &self.storages {
            if let Err((key, msg)) = s.validate() {
                return Err(self.key_error(&format!("storages.{name}.{key}"), msg));
            }
            if let Some(r) = s.retention() {
                r.validate()
                    .map_err(|m| self.key_error(&format!("storages.{name}.retention"), m))?;
            }
        }
        let bad = |key: String, msg: String| self.key_error(&key, msg);
        for name in self.storages.keys() {
            if self.lock_period(name).is_err() {
                return Err(bad(
                    format!("storages.{name}.object_lock.until"),
                    "\"retention\" needs a retention rule with a time bound on this storage (keep_daily, keep_within...; keep_last alone has none): add one, or set days = N".into(),
                ));
            }
        }
        for (name, t) in &self.targets {
            // Which kinds an engine takes is the engine's to say (registry::check_config).
            if !matches!(t.kind.as_str(), "logical" | "physical" | "native") {
                return Err(bad(
                    format!("targets.{name}.kind"),
                    format!("`{}` is not logical, physical or native", t.kind),
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
            for (k, list) in [
                ("copy_to", &t.copy_to),
                ("copy_after_run", &t.copy_after_run),
            ] {
                for s in list {
                    if !self.storages.contains_key(s) {
                        return Err(bad(
                            format!("targets.{name}.{k}"),
                            format!("names storage `{s}`, which is not defined in [storages.*]"),
                        ));
                    }
                    if t.storages.contains(s) {
                        return Err(bad(
                            format!("targets.{name}.{k}"),
                            format!("`{s}` is one of the target's own storages, which every run already writes; name an off-site storage"),
                        ));
                    }
                }
            }
            if t.copy_schedule.is_some() && t.copy_to.is_empty() {
                return Err(bad(
                    format!("targets.{name}.copy_schedule"),
                    "gives `backup copy` nowhere to copy to: set copy_to = [\"STORAGE\"] as well"
                        .into(),
                ));
            }
            for s in t.retention.keys() {
                if !t.all_storages().contains(s) {
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
            if let Some(a) = &t.max_age {
                crate::duration::parse(a).map_err(|e| bad(format!("targets.{name}.max_age"), e))?;
            }
            t.check_compression()
                .map_err(|(k, m)| bad(format!("targets.{name}.{k}"), m))?;
        }
        Ok(())
    }

    /// A one-line configuration error: the file, the key's line when it can be found,
    /// the key and the message. Engines use it for their own keys.
    pub fn key_error(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        let (file, line) = match &self.origin {
            Some((file, text)) => (
                file.clone(),
                line_of(text, key)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default(),
            ),
            None => (self.describe_source(), String::new()),
        };
        Fail::Config(format!("{file}{line}: key `{key}`: {msg}")).into()
    }

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

    /// The text the configuration was parsed from (None: embedded default).
    pub fn text(&self) -> Option<&str> {
        self.origin.as_ref().map(|(_, t)| t.as_str())
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

    /// The Object Lock period of a storage: `days`, or for `until = "retention"` the
    /// longest horizon of every policy that applies there (the storage's own and every
    /// target's override). Ok(None) without Object Lock; Err when "retention" has no
    /// time-bound rule to derive it from.
    pub fn lock_period(
        &self,
        storage: &str,
    ) -> std::result::Result<Option<std::time::Duration>, ()> {
        let Some(StorageConfig::S3(s3)) = self.storages.get(storage) else {
            return Ok(None);
        };
        let Some(l) = &s3.object_lock else {
            return Ok(None);
        };
        if let Some(d) = l.days {
            return Ok(Some(std::time::Duration::from_secs(d as u64 * 86_400)));
        }
        let policies = s3.retention.iter().chain(
            self.targets
                .values()
                .filter_map(|t| t.retention.get(storage)),
        );
        policies
            .filter_map(|r| r.horizon())
            .max()
            .map(Some)
            .ok_or(())
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
/// The line of `section.key` (`targets.pg.url`): the `key =` line inside the
/// `[section]` table, or the `[section.key]` header itself.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, leaf) = key.rsplit_once('.')?;
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.split(']').next()) {
            let h = h.trim_matches(['[', ' ']).replace('"', "");
            if h == key {
                return Some(i + 1);
            }
            inside = h == section;
            continue;
        }
        if inside
            && l.strip_prefix(leaf)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
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
    fn object_lock_period_and_copy_keys_are_checked() {
        let s3 = "[storages.s3]\ntype = \"s3\"\nbucket = \"b\"\n";
        let t = "[targets.pg]\nengine = \"postgres\"\nstorages = [\"s3\"]\n";
        let lock = |l: &str, ret: &str| format!("{s3}{ret}[storages.s3.object_lock]\n{l}\n{t}");
        let day = 86_400;
        let cfg = Config::parse(&lock("mode = \"GOVERNANCE\"\ndays = 30", ""), "b.toml").unwrap();
        assert_eq!(
            cfg.lock_period("s3"),
            Ok(Some(std::time::Duration::from_secs(30 * day)))
        );
        // until = "retention": the longest rule, counting one more calendar period.
        let cfg = Config::parse(
            &lock(
                "mode = \"COMPLIANCE\"\nuntil = \"retention\"",
                "retention = { keep_daily = 7, keep_within = \"3d\", keep_last = 100 }\n",
            ),
            "b.toml",
        )
        .unwrap();
        assert_eq!(
            cfg.lock_period("s3"),
            Ok(Some(std::time::Duration::from_secs(8 * day)))
        );
        let e = err(&lock(
            "mode = \"COMPLIANCE\"\nuntil = \"retention\"",
            "retention = { keep_last = 3 }\n",
        ));
        assert!(
            e.contains("storages.s3.object_lock.until") && e.contains("time bound"),
            "{e}"
        );
        let e = err(&lock("mode = \"governance\"\ndays = 3", ""));
        assert!(e.contains("object_lock.mode"), "{e}");
        let e = err(&lock(
            "mode = \"GOVERNANCE\"\ndays = 3\nuntil = \"retention\"",
            "",
        ));
        assert!(e.contains("exactly one"), "{e}");
        let e = err(&format!("{s3}{t}copy_after_run = [\"s3\"]\n"));
        assert!(
            e.contains("targets.pg.copy_after_run") && e.contains("own storages"),
            "{e}"
        );
        let e = err(&format!("{s3}{t}copy_to = [\"gcs\"]\n"));
        assert!(e.contains("targets.pg.copy_to") && e.contains("gcs"), "{e}");
    }
}
