//! MongoDB: everything the tool knows about it lives in this folder.
//!
//! - `mod.rs`: the target's options, the connection (URI without its password, the
//!   password apart), the [`Mongo`] engine value and the capabilities it hands out.
//! - `archive.rs`: a streaming reader of mongodump's archive format (prelude,
//!   collection metadata, interleaved namespace blocks, EOF headers with CRC-64).
//! - `tools.rs`: finding mongodump/mongorestore/mongosh and their versions, the 0600
//!   `--config` file that carries the password, and the mongosh scripts (role,
//!   version, document counts, dropping the scratch database).
//! - `dump.rs`: `mongodump --archive` as a `DumpStream`, read by the archive reader on
//!   the way for the manifest facts.
//! - `logical.rs`: [`LogicalEngine`]: precheck, verify, restore with mongorestore.
//! - `names.rs`: namespace patterns (`--ns-include`, `--ns-from/--ns-to`) as
//!   mongorestore matches and renames them, for comparing counts afterwards.
//! - `scratch.rs`: [`ScratchEngine`]: test-restore into a scratch database.
//!
//! The native tools are the only writers and readers of the server: no driver crate.
//! A password never reaches a command line or a log: it is taken out of the URI at
//! once and given to mongodump/mongorestore in a `--config` file of mode 0600 that is
//! removed when the tool exits, and to mongosh in its environment.

pub mod archive;
mod dump;
mod logical;
pub mod names;
mod scratch;
mod tools;

use super::{Engine, LogicalEngine, ScratchEngine, Target};
use crate::config::TargetConfig;
use anyhow::{bail, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The environment variable read for the password when neither `password_file` nor
/// the URI gives one.
pub const PASSWORD_ENV: &str = "MONGODB_PASSWORD";

/// The keys of a `engine = "mongodb"` target.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `mongodb://[user@]host:port/?replicaSet=rs0` or `mongodb+srv://...` (default
    /// `mongodb://127.0.0.1:27017`). A password in it is moved out at once.
    #[serde(default)]
    pub uri: Option<String>,
    /// File whose first line is the password (else the URI's, else `MONGODB_PASSWORD`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Dump only this database (mongodump `--db`; mongodump takes one). Default: all.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Dump only this collection of that database (mongodump `--collection`).
    #[serde(default)]
    pub collections: Vec<String>,
    /// Leave these collections of that database out (mongodump `--excludeCollection`).
    #[serde(default)]
    pub exclude_collections: Vec<String>,
    /// `auto` (default): `--oplog` when the server is a replica-set member and the dump
    /// covers the whole deployment; `true`: always (refused where mongodump would
    /// refuse it); `false`: never.
    #[serde(default)]
    pub oplog: OplogSetting,
}

/// `oplog = "auto" | true | false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OplogSetting {
    #[default]
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for OplogSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(true) => Ok(OplogSetting::On),
            Raw::B(false) => Ok(OplogSetting::Off),
            Raw::S(s) if s == "auto" => Ok(OplogSetting::Auto),
            Raw::S(_) => Err(serde::de::Error::custom(
                "oplog must be \"auto\", true or false",
            )),
        }
    }
}

const URI_HINT: &str = "write mongodb://[USER@]HOST:PORT/?replicaSet=NAME or mongodb+srv://";

impl Options {
    /// Checks what the keys' types cannot: (key under the target, message).
    pub fn validate(&self, t: &TargetConfig) -> std::result::Result<(), (String, String)> {
        if t.kind != "logical" {
            return Err((
                "kind".into(),
                format!(
                    "`{}`: MongoDB targets take logical dumps (mongodump --archive); remove `kind` or write kind = \"logical\"",
                    t.kind
                ),
            ));
        }
        if t.test_restore.as_ref().is_some_and(|tr| tr.url.is_some()) {
            return Err((
                "test_restore".into(),
                "url: a MongoDB test-restore restores into a scratch database on test_restore.uri; write uri = \"mongodb://...\" instead".into(),
            ));
        }
        if let Some(u) = &self.uri {
            Conn::parse_uri(u).map_err(|e| ("uri".to_string(), format!("{e:#}")))?;
        }
        if let Some(u) = t.test_restore.as_ref().and_then(|tr| tr.uri.as_ref()) {
            Conn::parse_uri(u).map_err(|e| ("test_restore".to_string(), format!("uri: {e:#}")))?;
        }
        if self.databases.len() > 1 {
            return Err((
                "databases".into(),
                "mongodump dumps one database (--db) or all of them; list one, or make one target per database".into(),
            ));
        }
        if self.collections.len() > 1 {
            return Err((
                "collections".into(),
                "mongodump dumps one collection (--collection) or a whole database; list one, or use exclude_collections".into(),
            ));
        }
        let needs_db = !self.collections.is_empty() || !self.exclude_collections.is_empty();
        if needs_db && self.databases.is_empty() {
            return Err((
                if self.collections.is_empty() { "exclude_collections" } else { "collections" }.into(),
                "names collections of one database; set databases = [\"DB\"] too (mongodump needs --db)".into(),
            ));
        }
        if !self.collections.is_empty() && !self.exclude_collections.is_empty() {
            return Err((
                "exclude_collections".into(),
                "cannot be combined with collections (mongodump refuses --collection with --excludeCollection)".into(),
            ));
        }
        for (key, names) in [
            ("databases", &self.databases),
            ("collections", &self.collections),
            ("exclude_collections", &self.exclude_collections),
        ] {
            if names.iter().any(|n| n.is_empty() || n.contains('\0')) {
                return Err((key.into(), "an empty name; list real names".into()));
            }
        }
        if self.oplog == OplogSetting::On && !self.databases.is_empty() {
            return Err((
                "oplog".into(),
                "true cannot be combined with databases: mongodump takes --oplog on full dumps only; set oplog = \"auto\" or false, or remove databases".into(),
            ));
        }
        Ok(())
    }

    /// Whether the dump covers the whole deployment (the condition for `--oplog`).
    pub fn whole(&self) -> bool {
        self.databases.is_empty()
    }
}

/// Where the server is and how to log in. The password is never displayed.
#[derive(Clone)]
pub struct Conn {
    /// The URI without its password (user, hosts and options kept).
    uri: String,
    /// The user (percent-decoded), if the URI names one.
    pub user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.display())
    }
}

fn decode(x: &str) -> String {
    percent_encoding::percent_decode_str(x)
        .decode_utf8_lossy()
        .into_owned()
}

impl Conn {
    /// Parses `mongodb://[user[:password]@]host[:port][,host...]/[db][?options]`; the
    /// password is moved out. Seed lists are not one host for the url crate, so the
    /// authority is split by hand.
    pub fn parse_uri(s: &str) -> Result<Conn> {
        let shown = crate::redact::url(s);
        let Some((scheme, rest)) = s
            .split_once("://")
            .filter(|(sc, _)| matches!(*sc, "mongodb" | "mongodb+srv"))
        else {
            bail!("`{shown}` must start with mongodb:// or mongodb+srv:// ({URI_HINT})");
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
            bail!("`{shown}` names no host ({URI_HINT})");
        }
        if scheme == "mongodb+srv" && (hosts.contains(',') || hosts.contains(':')) {
            bail!("`{shown}`: mongodb+srv:// takes one host name without a port ({URI_HINT})");
        }
        if hosts.chars().any(|c| c.is_whitespace()) || tail.chars().any(|c| c.is_whitespace()) {
            bail!("`{shown}` contains spaces ({URI_HINT})");
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((name, pw)) => (Some(name), Some(decode(pw))),
                None => (Some(u), None),
            },
        };
        let user_part = user.map(|u| format!("{u}@")).unwrap_or_default();
        let tail = if tail.is_empty() { "/" } else { tail };
        Ok(Conn {
            uri: format!("{scheme}://{user_part}{hosts}{tail}"),
            user: user.map(decode).filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
        })
    }

    /// The target's connection: URI, then `password_file`, the URI's password, or
    /// `MONGODB_PASSWORD`, in that order.
    pub fn from_options(o: &Options) -> Result<Conn> {
        let mut c = Conn::parse_uri(o.uri.as_deref().unwrap_or("mongodb://127.0.0.1:27017"))?;
        if let Some(pf) = &o.password_file {
            c.password = Some(crate::redact::read_password_file(pf)?);
        } else if c.password.is_none() {
            c.password = env_password();
        }
        Ok(c)
    }

    /// Another server (`restore --to-uri`, `test_restore.uri`): its password from the
    /// URI, else `MONGODB_PASSWORD`.
    pub fn other(uri: &str) -> Result<Conn> {
        let mut c = Conn::parse_uri(uri)?;
        if c.password.is_none() {
            c.password = env_password();
        }
        Ok(c)
    }

    /// The URI as shown and as given to the tools (`--uri`): never the password.
    pub fn display(&self) -> String {
        self.uri.clone()
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The URI with the password put back, for mongosh's environment only.
    pub(crate) fn uri_with_password(&self) -> String {
        match (&self.password, &self.user) {
            (Some(pw), Some(_)) => {
                let (scheme, rest) = self.uri.split_once("://").unwrap_or(("mongodb", ""));
                let (user, hosts) = rest.split_once('@').unwrap_or(("", rest));
                let enc =
                    percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC);
                format!("{scheme}://{user}:{enc}@{hosts}")
            }
            _ => self.uri.clone(),
        }
    }
}

fn env_password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}

/// What the server is, from `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    /// A replica-set member that is neither (arbiter, recovering, ...).
    OtherMember,
    Mongos,
    Standalone,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::OtherMember => "replica-set member (not primary or secondary)",
            Role::Mongos => "mongos",
            Role::Standalone => "standalone",
        }
    }
    pub fn replica_member(self) -> bool {
        matches!(self, Role::Primary | Role::Secondary | Role::OtherMember)
    }
}

/// The server as the precheck found it.
#[derive(Debug, Clone)]
pub struct Server {
    pub role: Role,
    pub version: String,
    pub set_name: Option<String>,
}

/// The MongoDB engine for one target.
pub struct Mongo {
    pub(crate) target: String,
    pub(crate) opts: Options,
    pub(crate) conn: Conn,
    /// From the precheck.
    pub(crate) server: Option<Server>,
    pub(crate) tools: tools::Found,
    /// Whether the dump being taken uses `--oplog` (decided by the precheck).
    pub(crate) use_oplog: bool,
    /// Namespaces the restored archive's oplog touched (their counts may differ from
    /// the dump's after `--oplogReplay`).
    pub(crate) oplog_touched: BTreeSet<String>,
    /// The manifest format of the backup being restored (from `restore_precheck`).
    pub(crate) restore_format: String,
    /// Namespaces the last restore read from the archive.
    pub(crate) restored: Vec<String>,
    /// test-restore: restore every namespace into this scratch database, renamed.
    pub(crate) scratch_db: Option<String>,
}

impl Mongo {
    pub fn new(t: &Target) -> Result<Mongo> {
        let opts: Options = crate::db::registry::options(t.config, t.name, t.cfg)?;
        let conn = Conn::from_options(&opts)?;
        Ok(Mongo {
            target: t.name.to_string(),
            opts,
            conn,
            server: None,
            tools: Default::default(),
            use_oplog: false,
            oplog_touched: BTreeSet::new(),
            restore_format: String::new(),
            restored: Vec::new(),
            scratch_db: None,
        })
    }
}

impl Engine for Mongo {
    fn logical(&mut self) -> &mut dyn LogicalEngine {
        self
    }
    fn scratch(&mut self) -> Option<&mut dyn ScratchEngine> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_moved_out_of_the_uri() {
        let c = Conn::parse_uri("mongodb://app:s%40c+ret@h1:27017,h2:27018/admin?replicaSet=rs0")
            .unwrap();
        assert_eq!(c.password(), Some("s@c+ret"));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(
            c.display(),
            "mongodb://app@h1:27017,h2:27018/admin?replicaSet=rs0"
        );
        assert!(!format!("{c:?}").contains("ret"));
        assert!(c
            .uri_with_password()
            .contains("app:s%40c%2Bret@h1:27017,h2"));
        let c = Conn::parse_uri("mongodb+srv://cluster0.example.net").unwrap();
        assert_eq!(c.display(), "mongodb+srv://cluster0.example.net/");
        let e = Conn::parse_uri("postgres://u:secret@x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mongodb://") && !e.contains("secret"), "{e}");
        assert!(Conn::parse_uri("mongodb://u:p@/x").is_err());
        assert!(Conn::parse_uri("mongodb+srv://a:1/").is_err());
    }

    #[test]
    fn oplog_values() {
        #[derive(Deserialize)]
        struct T {
            oplog: OplogSetting,
        }
        let p = |s: &str| toml::from_str::<T>(s).map(|t| t.oplog);
        assert_eq!(p("oplog = true").unwrap(), OplogSetting::On);
        assert_eq!(p("oplog = false").unwrap(), OplogSetting::Off);
        assert_eq!(p("oplog = \"auto\"").unwrap(), OplogSetting::Auto);
        assert!(p("oplog = \"yes\"").is_err());
    }
}
