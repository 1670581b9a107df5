//! PostgreSQL: everything the tool knows about it lives in this folder.
//!
//! - `mod.rs`: the target's options, the connection (URL, password kept apart), the
//!   [`Postgres`] engine value and the capabilities it hands out.
//! - `tools.rs`: finding pg_dump/psql/... and their versions, a psql session.
//! - `logical.rs`, `toc.rs`: pg_dump backups and their restore ([`LogicalEngine`]).
//! - `physical.rs`, `wal.rs`, `pitr.rs`, `tar.rs`: base backups, the WAL archive and
//!   point-in-time recovery ([`PhysicalEngine`], [`LogArchive`]).
//! - `analyze.rs`: the planner's statistics after a restore.
//! - `scratch.rs`, `test_restore.rs`, `checks.rs`: test-restores in a temporary cluster
//!   or a scratch database ([`ScratchEngine`]).
//!
//! Every connection goes through libpq (via the tools), so PGHOST, PGPORT, PGUSER,
//! PGDATABASE, PGSERVICE, ~/.pgpass and sslmode behave exactly as operators expect.
//! A password is never put on a command line: it is stripped from the URL and passed
//! as PGPASSWORD in the child's environment.

mod analyze;
pub mod archive;
mod checks;
pub mod files;
mod logical;
pub mod physical;
pub mod pitr;
mod pitr_plan;
mod restore;
mod scratch;
pub mod tar;
mod test_restore;
mod toc;
pub mod tools;
pub mod wal;
pub mod wal_async;
pub mod wal_codec;
pub mod walname;

use super::{
    Engine, FetchOutcome, LogicalEngine, PhysicalEngine, PitrOutcome, PitrRequest, PushOutcome,
    ScratchEngine, Target,
};
use crate::config::TargetConfig;
use crate::manifest::RunOutcome;
use crate::ui::Ui;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
pub use tools::{find_tool, one_paragraph, quote_ident, quote_literal, Psql, Tool};

/// The keys of a `engine = "postgres"` target.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Connection URL. A password in it is stripped and passed by environment.
    #[serde(default)]
    pub url: Option<String>,
    /// File whose first line is the password (passed to tools as PGPASSWORD).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub format: DumpFormat,
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
    /// Statistics after a restore: `auto` (ANALYZE, in stages above 1 GiB), `stages`,
    /// `single` or `off`.
    #[serde(default)]
    pub analyze: analyze::Mode,
    /// Physical targets: `wal-push` hands the other `.ready` segments to a background
    /// worker and answers later calls from its results (see `wal_async`).
    #[serde(default, rename = "async")]
    pub archive_async: bool,
    /// Parallel pushes of the background worker (default 4).
    #[serde(default)]
    pub archive_jobs: Option<u32>,
    /// Unarchived WAL allowed to pile up in pg_wal (e.g. "4GiB"); past it `wal-push`
    /// drops segments from the archive (loudly) rather than fill the disk.
    #[serde(default)]
    pub archive_queue_max: Option<String>,
    /// Physical backups: `stream` (pg_basebackup, default; works remotely) or `files`
    /// (the tool reads PGDATA on the database host: full/diff/incr, parallel, zstd).
    #[serde(default)]
    pub method: Method,
    /// `method = "files"`: workers copying (and restoring) files at once (default 2).
    #[serde(default)]
    pub jobs: Option<u32>,
    /// `method = "files"`: the data directory (default: the server's `data_directory`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Stream,
    Files,
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

impl Options {
    /// Checks what the keys' types cannot: (key under the target, message).
    pub fn validate(&self, t: &TargetConfig) -> std::result::Result<(), (String, String)> {
        if t.kind != "logical" && t.kind != "physical" {
            return Err((
                "kind".into(),
                format!("`{}` is not logical or physical", t.kind),
            ));
        }
        if let Some(u) = &self.url {
            ConnInfo::parse_url(u).map_err(|e| ("url".to_string(), format!("{e:#}")))?;
        }
        if let Some(q) = &self.archive_queue_max {
            crate::duration::parse_bytes(q).map_err(|e| ("archive_queue_max".to_string(), e))?;
        }
        if self.archive_jobs == Some(0) {
            return Err(("archive_jobs".into(), "must be at least 1".into()));
        }
        if t.kind != "physical"
            && (self.archive_async
                || self.archive_jobs.is_some()
                || self.archive_queue_max.is_some())
        {
            return Err((
                "async".into(),
                "async, archive_jobs and archive_queue_max are for WAL archiving: set kind = \"physical\" or remove them".into(),
            ));
        }
        if t.test_restore
            .as_ref()
            .is_some_and(|tr| tr.must_exist.is_some())
        {
            return Err((
                "test_restore".into(),
                "must_exist: is for Redis targets (keys that must exist); for PostgreSQL write the check in checks_sql".into(),
            ));
        }
        if let Some(u) = t.test_restore.as_ref().and_then(|tr| tr.url.as_ref()) {
            ConnInfo::parse_url(u)
                .map_err(|e| ("test_restore".to_string(), format!("url: {e:#}")))?;
        }
        Ok(())
    }
}

/// Connection settings: a URL without its password, plus the password apart.
#[derive(Clone, Default)]
pub struct ConnInfo {
    url: Option<url::Url>,
    password: Option<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnInfo({})", self.display())
    }
}

impl ConnInfo {
    pub fn parse_url(s: &str) -> Result<ConnInfo> {
        let mut u = url::Url::parse(s).map_err(|e| {
            anyhow!(
                "`{}` is not a URL ({e}); write postgresql://USER@HOST:PORT/DATABASE",
                crate::redact::url(s)
            )
        })?;
        if u.scheme() != "postgresql" && u.scheme() != "postgres" {
            bail!(
                "`{}` must start with postgresql:// (write postgresql://USER@HOST:PORT/DATABASE)",
                crate::redact::url(s)
            );
        }
        let mut password = u.password().map(percent_decode);
        let _ = u.set_password(None);
        // A password given as a query parameter is moved out too.
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.iter().any(|(k, _)| k == "password") {
            let kept: Vec<_> = pairs
                .iter()
                .filter(|(k, v)| {
                    if k == "password" {
                        password = Some(v.clone());
                        false
                    } else {
                        true
                    }
                })
                .cloned()
                .collect();
            if kept.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        Ok(ConnInfo {
            url: Some(u),
            password,
        })
    }

    pub fn from_options(cfg: &Options) -> Result<ConnInfo> {
        let mut c = match &cfg.url {
            Some(u) => ConnInfo::parse_url(u)?,
            None => ConnInfo::default(),
        };
        if let Some(pf) = &cfg.password_file {
            c.password = Some(crate::redact::read_password_file(pf)?);
        }
        Ok(c)
    }

    /// The conninfo for the tools' `--dbname`, optionally for another database.
    /// Empty means libpq defaults.
    pub fn conninfo(&self, dbname: Option<&str>) -> String {
        match (&self.url, dbname) {
            (Some(u), None) => u.to_string(),
            (Some(u), Some(db)) => {
                let mut u = u.clone();
                u.set_path(&format!("/{}", utf8_percent_encode(db)));
                u.to_string()
            }
            (None, None) => String::new(),
            (None, Some(db)) => {
                format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
    }

    pub fn display(&self) -> String {
        match &self.url {
            Some(u) => u.to_string(),
            None => "libpq defaults (PGHOST, PGPORT, PGUSER, PGDATABASE)".into(),
        }
    }

    pub(crate) fn apply(&self, cmd: &mut Command) {
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        // Never wait for a password prompt under cron.
        cmd.env(
            "PGCONNECT_TIMEOUT",
            std::env::var("PGCONNECT_TIMEOUT").unwrap_or_else(|_| "10".into()),
        );
    }
}

/// Userinfo is percent-encoded, not form-encoded: a `+` in a password is a plus.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn utf8_percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The PostgreSQL engine for one target: its options and connection, and the tools
/// and server facts learned on the way (looked up once, when first needed).
pub struct Postgres {
    target: String,
    kind: String,
    opts: Options,
    conn: ConnInfo,
    psql: Option<Tool>,
    pg_dump: Option<Tool>,
    pg_restore: Option<Tool>,
    server: Option<logical::ServerFacts>,
}

impl Postgres {
    pub fn new(t: &Target) -> Result<Postgres> {
        let opts: Options = crate::db::registry::options(t.config, t.name, t.cfg)?;
        Postgres::with_options(t.name, &t.cfg.kind, opts)
    }

    /// An engine on other connection settings (test-restore's scratch server).
    pub fn with_options(target: &str, kind: &str, opts: Options) -> Result<Postgres> {
        Ok(Postgres {
            target: target.to_string(),
            kind: kind.to_string(),
            conn: ConnInfo::from_options(&opts)?,
            opts,
            psql: None,
            pg_dump: None,
            pg_restore: None,
            server: None,
        })
    }

    fn tool(&self, name: &str) -> Result<Tool> {
        find_tool(name, self.opts.bin_dir.as_deref())
    }

    fn psql(&mut self) -> Result<Tool> {
        if self.psql.is_none() {
            self.psql = Some(self.tool("psql")?);
        }
        Ok(self.psql.clone().unwrap())
    }
}

impl Engine for Postgres {
    fn logical(&mut self) -> &mut dyn LogicalEngine {
        self
    }
    fn physical(&mut self) -> Option<&mut dyn PhysicalEngine> {
        (self.kind == "physical").then_some(self as &mut dyn PhysicalEngine)
    }
    fn scratch(&mut self) -> Option<&mut dyn ScratchEngine> {
        Some(self)
    }
}

/// Base backups, the WAL archive and PITR: `physical.rs`, `wal.rs`, `pitr.rs`.
impl PhysicalEngine for Postgres {
    fn backup(
        &mut self,
        t: &Target,
        tag: Option<&str>,
        kind: Option<&str>,
        ui: &Ui,
    ) -> Result<RunOutcome> {
        let kind = files::BackupType::parse(kind.unwrap_or("full"))
            .map_err(|e| crate::error::Fail::Usage(format!("--type: {e}")))?;
        match self.opts.method {
            Method::Files => files::backup::run(&self.opts, t, tag, kind, ui),
            Method::Stream if kind != files::BackupType::Full => Err(crate::error::Fail::Usage(format!(
                "--type {}: target `{}` takes pg_basebackup streams (method = \"stream\"), which are always full; \
                 set method = \"files\" for differential and incremental backups",
                kind.as_str(),
                t.name
            ))
            .into()),
            Method::Stream => physical::run(&self.opts, t, tag, ui),
        }
    }

    fn check_archiving(
        &mut self,
        t: &Target,
        timeout: std::time::Duration,
        ui: &Ui,
    ) -> Result<Vec<String>> {
        physical::check(&self.opts, t, timeout, ui)
    }

    fn recover(&mut self, t: &Target, req: PitrRequest, ui: &Ui) -> Result<PitrOutcome> {
        pitr::pitr(t, &self.opts, req, ui)
    }

    fn archive_push(&mut self, t: &Target, path: &std::path::Path) -> Result<PushOutcome> {
        wal_async::push(t, &wal_async::Settings::of(&self.opts), path)
    }

    fn archive_worker(&mut self, t: &Target, path: &std::path::Path) -> Result<()> {
        wal_async::worker(t, &wal_async::Settings::of(&self.opts), path)
    }

    fn archive_fetch(
        &mut self,
        t: &Target,
        name: &str,
        dest: &std::path::Path,
    ) -> Result<FetchOutcome> {
        wal::fetch(t, name, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_moved_out_of_the_url() {
        let c = ConnInfo::parse_url(
            "postgresql://app:s%40cret@db:5432/saas?sslmode=require&password=x",
        )
        .unwrap();
        let ci = c.conninfo(None);
        assert!(!ci.contains("cret") && !ci.contains("password"), "{ci}");
        assert!(ci.contains("sslmode=require"));
        assert_eq!(c.password.as_deref(), Some("x"));
        let c = ConnInfo::parse_url("postgresql://app:a+b@db/saas").unwrap();
        assert_eq!(
            c.password.as_deref(),
            Some("a+b"),
            "a plus in a password is a plus"
        );
        let c = ConnInfo::parse_url("postgresql://app:s%40cret@db/saas").unwrap();
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert!(c.conninfo(Some("other db")).ends_with("/other%20db"));
        assert!(ConnInfo::parse_url("mysql://x").is_err());
    }
}
