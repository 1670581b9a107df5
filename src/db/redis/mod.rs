//! Redis: everything the tool knows about it lives in this folder.
//!
//! - `mod.rs`: the target's options, the connection (URL without its password, the
//!   password apart), the [`Redis`] engine value and the capabilities it hands out.
//! - `rdb.rs`: a streaming RDB reader (verify, manifest facts, restore payloads).
//! - `sync.rs`: the snapshot pulled over the replication protocol, as a `DumpStream`.
//! - `scan.rs`: `mode = "scan"`: SCAN + DUMP + PTTL written as an RDB file.
//! - `counts.rs`: key counts per database, as the manifest records them and compared.
//! - `logical.rs`: [`LogicalEngine`]: backup, verify and network restore (`RESTORE`).
//! - `by_file.rs`: `restore --by-file`: the data file (and AOF) replaced on this host;
//!   `files.rs`: its files (where they are, the RDB written beside them, the swap).
//! - `select.rs`: partial restores (`--db`, `--match` globs) and the empty-destination rule.
//! - `scratch.rs`: [`ScratchEngine`]: test-restore into a throwaway `redis-server`.
//! - `tls.rs`: `rediss://`: the TLS files, for both kinds of connection.
//!
//! Ordinary commands go through the `redis` crate (sync API). The replication stream
//! is raw RESP over a `TcpStream`: the crate does not expose SYNC/PSYNC payloads.
//! A password never reaches a command line or a log: it is taken out of the URL at
//! once and sent only inside the `AUTH` command.

mod by_file;
mod counts;
mod files;
mod logical;
pub mod rdb;
mod scan;
mod scratch;
mod select;
mod sync;
mod tls;

use super::{Engine, LogicalEngine, ScratchEngine, Target};
use crate::config::TargetConfig;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The keys of a `engine = "redis"` target.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `redis://[user@]host:port` or `rediss://...` for TLS (default
    /// `redis://127.0.0.1:6379`). A password in it is moved out at once.
    #[serde(default)]
    pub url: Option<String>,
    /// File whose first line is the password (else the URL's, else `REDISCLI_AUTH`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to check the server's certificate (default: the system's).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (with `tls_key_file`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS (with `tls_cert_file`).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Do not check the server's certificate (never in production).
    #[serde(default)]
    pub tls_insecure: bool,
    /// `rdb` (default): a snapshot over the replication protocol. `scan`: SCAN + DUMP
    /// per key, for servers that refuse SYNC (not a point-in-time snapshot).
    #[serde(default)]
    pub mode: Mode,
    /// `restore --by-file`: how to stop this host's server, as a program and its
    /// arguments, run without a shell (e.g. `["systemctl", "stop", "redis-server"]`).
    /// If the server still answers afterwards, the tool sends `SHUTDOWN NOSAVE`.
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    /// `restore --by-file`: how to start it again, run without a shell (e.g.
    /// `["systemctl", "start", "redis-server"]`); it must start the server with its
    /// usual config file (same `dir`, `dbfilename`, `appendonly`).
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Rdb,
    Scan,
}

const URL_HINT: &str = "write redis://[USER@]HOST:PORT";

impl Options {
    /// Checks what the keys' types cannot: (key under the target, message).
    pub fn validate(&self, t: &TargetConfig) -> std::result::Result<(), (String, String)> {
        if t.kind != "logical" {
            return Err((
                "kind".into(),
                format!(
                    "`{}`: Redis targets take logical snapshots only; remove `kind` or write kind = \"logical\"",
                    t.kind
                ),
            ));
        }
        if t.test_restore.as_ref().is_some_and(|tr| tr.url.is_some()) {
            return Err((
                "test_restore".into(),
                "url: a Redis test-restore always starts its own scratch redis-server; remove test_restore.url".into(),
            ));
        }
        let url = match &self.url {
            Some(u) => Some(Conn::parse_url(u).map_err(|e| ("url".to_string(), format!("{e:#}")))?),
            None => None,
        };
        let tls = url.as_ref().is_some_and(|c| c.tls);
        for (key, set) in [
            ("tls_ca_file", self.tls_ca_file.is_some()),
            ("tls_cert_file", self.tls_cert_file.is_some()),
            ("tls_key_file", self.tls_key_file.is_some()),
            ("tls_insecure", self.tls_insecure),
        ] {
            if set && !tls {
                return Err((
                    key.into(),
                    "is a TLS setting but the url is not rediss://".into(),
                ));
            }
        }
        for (key, cmd) in [
            ("stop_command", &self.stop_command),
            ("start_command", &self.start_command),
        ] {
            if cmd
                .as_ref()
                .is_some_and(|c| c.first().map_or(true, |p| p.is_empty()))
            {
                return Err((
                    key.into(),
                    "is empty; write the program and its arguments, e.g. [\"systemctl\", \"stop\", \"redis-server\"]".into(),
                ));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err((
                "tls_cert_file".into(),
                "tls_cert_file and tls_key_file go together (mutual TLS); set both or neither"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Where the server is and how to log in. The password is never displayed.
#[derive(Clone)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    password: Option<String>,
    pub tls: bool,
    tls_files: tls::TlsFiles,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.display())
    }
}

impl Conn {
    /// Parses `redis://[user[:password]@]host[:port][/0]`; the password is moved out.
    pub fn parse_url(s: &str) -> Result<Conn> {
        let u = url::Url::parse(s)
            .map_err(|e| anyhow!("`{}` is not a URL ({e}); {URL_HINT}", crate::redact::url(s)))?;
        let tls = match u.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => bail!(
                "`{}` must start with redis:// or rediss:// ({URL_HINT})",
                crate::redact::url(s)
            ),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| anyhow!("`{}` names no host ({URL_HINT})", crate::redact::url(s)))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        if !matches!(u.path(), "" | "/" | "/0") || u.query().is_some() {
            bail!(
                "`{}`: a backup covers every logical database; remove the /DB path and query ({URL_HINT})",
                crate::redact::url(s)
            );
        }
        let dec = |x: &str| {
            percent_encoding::percent_decode_str(x)
                .decode_utf8_lossy()
                .into_owned()
        };
        Ok(Conn {
            host,
            port: u.port().unwrap_or(6379),
            user: Some(dec(u.username())).filter(|x| !x.is_empty()),
            password: u.password().map(dec),
            tls,
            tls_files: tls::TlsFiles::default(),
        })
    }

    /// The target's connection: URL, then `password_file`, the URL's password, or
    /// `REDISCLI_AUTH` (as redis-cli reads it), in that order.
    pub fn from_options(o: &Options) -> Result<Conn> {
        let mut c = Conn::parse_url(o.url.as_deref().unwrap_or("redis://127.0.0.1:6379"))?;
        if let Some(pf) = &o.password_file {
            c.password = Some(crate::redact::read_password_file(pf)?);
        } else if c.password.is_none() {
            c.password = std::env::var("REDISCLI_AUTH")
                .ok()
                .filter(|p| !p.is_empty());
        }
        if c.tls {
            c.tls_files = tls::TlsFiles::read(o)?;
        }
        Ok(c)
    }

    /// Another server (`restore --to-url`): its password from the URL, else
    /// `REDISCLI_AUTH`; the TLS files stay the target's.
    pub fn retarget(&self, url: &str) -> Result<Conn> {
        let mut c = Conn::parse_url(url)?;
        if c.password.is_none() {
            c.password = std::env::var("REDISCLI_AUTH")
                .ok()
                .filter(|p| !p.is_empty());
        }
        c.tls_files = self.tls_files.clone();
        Ok(c)
    }

    /// `redis://user@host:port` (never the password).
    pub fn display(&self) -> String {
        format!(
            "{}://{}{}:{}",
            if self.tls { "rediss" } else { "redis" },
            self.user
                .as_deref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            self.host,
            self.port
        )
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// An ordinary command connection (the `redis` crate).
    pub fn connect(&self) -> Result<redis::Connection> {
        let redis_info = redis::RedisConnectionInfo {
            db: 0,
            username: self.user.clone(),
            password: self.password.clone(),
            protocol: Default::default(),
        };
        let client = if self.tls {
            // The redis crate builds its rustls config from the process-wide provider,
            // which rustls cannot pick when the build links two (ring here, aws-lc-rs
            // for the S3 SDK). ring is what tls.rs uses; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let info = redis::ConnectionInfo {
                addr: redis::ConnectionAddr::TcpTls {
                    host: self.host.clone(),
                    port: self.port,
                    insecure: self.tls_files.insecure,
                    tls_params: None,
                },
                redis: redis_info,
            };
            redis::Client::build_with_tls(info, self.tls_files.certificates())
        } else {
            redis::Client::open(redis::ConnectionInfo {
                addr: redis::ConnectionAddr::Tcp(self.host.clone(), self.port),
                redis: redis_info,
            })
        }
        .map_err(|e| anyhow!("{}: {}", self.display(), one_line(&e)))?;
        let con = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .map_err(|e| anyhow!("cannot connect to {}: {}", self.display(), one_line(&e)))?;
        con.set_read_timeout(Some(Duration::from_secs(300)))?;
        Ok(con)
    }
}

/// A redis error on one line, without anything but the server's words.
pub(crate) fn one_line(e: &redis::RedisError) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// What `INFO` says, as `field -> value` (all sections).
pub(crate) fn info(con: &mut redis::Connection) -> Result<BTreeMap<String, String>> {
    let text: String = redis::cmd("INFO")
        .arg("everything")
        .query(con)
        .or_else(|_| redis::cmd("INFO").query(con))
        .map_err(|e| anyhow!("INFO failed: {}", one_line(&e)))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// `db3:keys=10,expires=2,avg_ttl=0` lines of `INFO keyspace`: db -> (keys, expires).
pub(crate) fn keyspace(info: &BTreeMap<String, String>) -> BTreeMap<u64, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (k, v) in info {
        let Some(db) = k.strip_prefix("db").and_then(|d| d.parse::<u64>().ok()) else {
            continue;
        };
        let field = |name: &str| {
            v.split(',')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(keys) = field("keys") {
            out.insert(db, (keys, field("expires").unwrap_or(0)));
        }
    }
    out
}

/// The newest RDB version a Redis release loads (`rdb.h` RDB_VERSION per release).
pub fn rdb_version_of(redis_version: &str) -> u16 {
    let mut it = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    match (major, minor) {
        (0..=3, _) => 7,
        (4, _) => 8,
        (5 | 6, _) => 9,
        (7, 0 | 1) => 10,
        (7, 2 | 3) => 11,
        _ => 12,
    }
}

/// The Redis engine for one target.
pub struct Redis {
    conn: Conn,
    mode: Mode,
    /// From the precheck: version, role, memory; reused in the manifest facts.
    server: BTreeMap<String, String>,
    /// Keys skipped at restore because they had expired, per db.
    skipped_expired: BTreeMap<u64, u64>,
    /// `restore --by-file`: the commands, and the server's files once asked.
    by_file: by_file::ByFile,
}

impl Redis {
    pub fn new(t: &Target) -> Result<Redis> {
        let opts: Options = crate::db::registry::options(t.config, t.name, t.cfg)?;
        let mut r = Redis::with_conn(Conn::from_options(&opts)?)?;
        r.mode = opts.mode;
        r.by_file = by_file::ByFile::new(t.name, opts.stop_command, opts.start_command);
        Ok(r)
    }

    /// An engine on another server (test-restore's scratch server).
    pub fn with_conn(conn: Conn) -> Result<Redis> {
        Ok(Redis {
            conn,
            mode: Mode::Rdb,
            server: BTreeMap::new(),
            skipped_expired: BTreeMap::new(),
            by_file: Default::default(),
        })
    }
}

impl Engine for Redis {
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
    fn password_is_moved_out_of_the_url() {
        let c = Conn::parse_url("redis://app:s%40c+ret@cache:6380").unwrap();
        assert_eq!(c.password(), Some("s@c+ret"));
        assert_eq!(c.display(), "redis://app@cache:6380");
        assert!(!format!("{c:?}").contains("ret"));
        let c = Conn::parse_url("redis://:pw@cache").unwrap();
        assert_eq!((c.user.as_deref(), c.port), (None, 6379));
        assert!(Conn::parse_url("rediss://cache:6379").unwrap().tls);
        let e = Conn::parse_url("http://u:secret@x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis://") && !e.contains("secret"), "{e}");
        assert!(Conn::parse_url("redis://x/3").is_err());
    }

    #[test]
    fn rdb_versions_per_release() {
        assert_eq!(rdb_version_of("7.0.15"), 10);
        assert_eq!(rdb_version_of("7.2.4"), 11);
        assert_eq!(rdb_version_of("6.2.14"), 9);
        assert_eq!(rdb_version_of("7.4.0"), 12);
    }

    #[test]
    fn keyspace_lines() {
        let mut m = BTreeMap::new();
        m.insert("db0".into(), "keys=10,expires=2,avg_ttl=5".into());
        m.insert("db12".into(), "keys=1,expires=0,avg_ttl=0".into());
        m.insert("dbfilename".into(), "dump.rdb".into());
        let k = keyspace(&m);
        assert_eq!(k[&0], (10, 2));
        assert_eq!(k[&12], (1, 0));
        assert_eq!(k.len(), 2);
    }
}
