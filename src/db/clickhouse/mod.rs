//! ClickHouse: everything the tool knows about it lives in this folder.
//!
//! - `mod.rs`: the target's options, the connection (URL without its password, the
//!   password apart) and the [`ClickHouse`] engine with the capabilities it hands out.
//! - `http.rs`: the HTTP interface (ureq): queries, result streams, streamed inserts.
//! - `native.rs`: a bounded reader of the Native format, block by block.
//! - `schema.rs`: which objects a backup holds (tables, inner tables of materialized
//!   views, views, engines without local data), their artifacts and DDL rewriting.
//! - `logical.rs`: the logical backup as a set of streams (DDL and `SELECT * FORMAT
//!   Native` per table), verify, and the restore in dependency order.
//! - `stream.rs`: those streams as `DumpStream`s, the Native one parsed by a thread.
//!
//! Everything goes over HTTP, so a backup runs from any host against any server
//! version. The password is taken out of the URL at once and sent only in a header.

mod http;
mod logical;
pub mod native;
mod native_kind;
mod parts;
mod physical;
mod schema;
mod scratch;
mod server_backup;
mod stream;

use super::{Engine, LogicalEngine, ScratchEngine, StreamSetEngine, Target};
use crate::config::TargetConfig;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// The keys of a `engine = "clickhouse"` target.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `http://host:8123` (default `http://127.0.0.1:8123`) or `https://...`. A user
    /// and password in it are moved out at once.
    #[serde(default)]
    pub url: Option<String>,
    /// The user (default: the URL's, else `default`).
    #[serde(default)]
    pub user: Option<String>,
    /// File whose first line is the password (else `CLICKHOUSE_PASSWORD`, else the URL's).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Databases to back up (default: every one but `system` and the information schemas).
    #[serde(default)]
    pub databases: Option<Vec<String>>,
    /// Only tables matching one of these globs (`db.table`, or `table` in any database;
    /// `*` and `?`). Default: every table.
    #[serde(default)]
    pub include_tables: Vec<String>,
    /// Leave out tables matching one of these globs.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// CA certificate(s) (PEM) to check an https server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Part-level backups: the server's data folder as this host sees it (default:
    /// the server's own, from `system.tables.data_path`).
    #[serde(default)]
    pub data_path: Option<PathBuf>,
}

const URL_HINT: &str = "write http://HOST:8123 or https://HOST:8443";

impl Options {
    /// Checks what the keys' types cannot: (key under the target, message).
    pub fn validate(&self, t: &TargetConfig) -> std::result::Result<(), (String, String)> {
        if !matches!(t.kind.as_str(), "logical" | "physical" | "native") {
            return Err((
                "kind".into(),
                format!(
                    "`{}`: a ClickHouse target is kind = \"logical\" (the default), \"physical\" (part-level, on the ClickHouse host) or \"native\" (BACKUP ... TO S3, ClickHouse 22.8+)",
                    t.kind
                ),
            ));
        }
        if self.data_path.is_some() && t.kind != "physical" {
            return Err((
                "data_path".into(),
                "is for part-level backups (kind = \"physical\")".into(),
            ));
        }
        if let Some(u) = t.test_restore.as_ref().and_then(|tr| tr.url.as_deref()) {
            parse_url(u).map_err(|e| ("test_restore".to_string(), format!("url: {e:#}")))?;
        }
        let url = parse_url(self.url.as_deref().unwrap_or(DEFAULT_URL))
            .map_err(|e| ("url".to_string(), format!("{e:#}")))?;
        if self.tls_ca_file.is_some() && url.0.scheme() != "https" {
            return Err((
                "tls_ca_file".into(),
                "is a TLS setting but the url is not https://".into(),
            ));
        }
        if self.databases.as_ref().is_some_and(|d| d.is_empty()) {
            return Err((
                "databases".into(),
                "is empty; name at least one database or remove the key (every database)".into(),
            ));
        }
        Ok(())
    }
}

const DEFAULT_URL: &str = "http://127.0.0.1:8123";

/// Splits a URL into the base (no user, password, path or query) and its user and
/// password (percent-decoded).
fn parse_url(s: &str) -> Result<(url::Url, Option<String>, Option<String>)> {
    let shown = crate::redact::url(s);
    let mut u =
        url::Url::parse(s).map_err(|e| anyhow!("`{shown}` is not a URL ({e}); {URL_HINT}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        bail!("`{shown}` must start with http:// or https:// ({URL_HINT})");
    }
    if u.host_str().map_or(true, str::is_empty) {
        bail!("`{shown}` names no host ({URL_HINT})");
    }
    if u.query().is_some() || !matches!(u.path(), "" | "/") {
        bail!("`{shown}`: remove the path and query; settings and the password do not go in the URL ({URL_HINT})");
    }
    let dec = |x: &str| {
        percent_encoding::percent_decode_str(x)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = Some(dec(u.username())).filter(|x| !x.is_empty());
    let password = u.password().map(dec);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    Ok((u, user, password))
}

/// The target's client: URL, user, then `password_file`, `CLICKHOUSE_PASSWORD` or the
/// URL's password, in that order.
fn client(o: &Options) -> Result<http::Client> {
    let (base, url_user, url_password) = parse_url(o.url.as_deref().unwrap_or(DEFAULT_URL))?;
    let password = match &o.password_file {
        Some(pf) => Some(crate::redact::read_password_file(pf)?),
        None => std::env::var("CLICKHOUSE_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .or(url_password),
    };
    let user = o.user.clone().or(url_user);
    http::Client::new(base, user, password, o.tls_ca_file.as_deref())
}

/// The ClickHouse engine of one target.
pub struct ClickHouse {
    o: Options,
    logical: logical::Logical,
    /// A `kind = "physical"` (part-level) or `"native"` (BACKUP SQL) target's engine.
    other: Option<Box<dyn StreamSetEngine>>,
}

impl ClickHouse {
    pub fn new(t: &Target) -> Result<ClickHouse> {
        let o: Options = super::registry::options(t.config, t.name, t.cfg)?;
        let c = client(&o)?;
        let l = || logical::Logical::new(o.clone(), c.clone());
        let other: Option<Box<dyn StreamSetEngine>> = match t.cfg.kind.as_str() {
            "physical" => Some(Box::new(physical::Physical::new(
                l(),
                o.data_path.clone(),
                t,
            ))),
            "native" => Some(Box::new(native_kind::NativeKind::new(l(), t))),
            _ => None,
        };
        Ok(ClickHouse {
            logical: l(),
            o,
            other,
        })
    }

    /// An engine of backup `m`'s kind that restores into `<prefix><database>` on `c`.
    /// `own_server`: `c` is the target's server (whose `data_path` applies).
    fn scratch_engine(
        &self,
        t: &Target,
        m: &crate::manifest::Manifest,
        c: http::Client,
        prefix: String,
        own_server: bool,
    ) -> Box<dyn StreamSetEngine> {
        let l = logical::Logical::scratch(self.o.clone(), c, prefix);
        if m.format == native_kind::FORMAT {
            return Box::new(native_kind::NativeKind::new(l, t));
        }
        match m.kind {
            crate::manifest::Kind::Logical => Box::new(l),
            crate::manifest::Kind::Physical => Box::new(physical::Physical::new(
                l,
                self.o.data_path.clone().filter(|_| own_server),
                t,
            )),
        }
    }
}

impl Engine for ClickHouse {
    fn logical(&mut self) -> &mut dyn LogicalEngine {
        match &mut self.other {
            Some(e) => e.as_logical(),
            None => &mut self.logical,
        }
    }
    fn stream_set(&mut self) -> Option<&mut dyn StreamSetEngine> {
        match &mut self.other {
            Some(e) => Some(e.as_mut()),
            None => Some(&mut self.logical),
        }
    }
    fn scratch(&mut self) -> Option<&mut dyn ScratchEngine> {
        Some(self)
    }
}

/// Does `pattern` (`*` any run, `?` one character) match `s`?
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url() {
        let (u, user, pw) = parse_url("http://bob:s%40cret@ch:8123").unwrap();
        assert_eq!(u.as_str(), "http://ch:8123/");
        assert_eq!(
            (user.as_deref(), pw.as_deref()),
            (Some("bob"), Some("s@cret"))
        );
        let e = format!(
            "{:#}",
            parse_url("http://ch:8123/?password=zz").unwrap_err()
        );
        assert!(
            !e.contains("zz") && e.contains("remove the path and query"),
            "{e}"
        );
        assert!(parse_url("tcp://ch:9000").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("db.*", "db.events"));
        assert!(glob("*.ev?nts", "db.events"));
        assert!(!glob("db.*", "other.events"));
        assert!(glob("*", ""));
    }
}
