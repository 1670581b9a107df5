//! ClickHouse's HTTP interface (ureq): queries as text, result streams, and inserts
//! with a streamed body. The user and password go in the `X-ClickHouse-User` and
//! `X-ClickHouse-Key` headers, never in the URL (which servers log) or an error.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How to reach the server. The password is never displayed.
#[derive(Clone)]
pub struct Client {
    /// `http(s)://host:port/` without user, password or query.
    pub base: url::Url,
    pub user: Option<String>,
    password: Option<String>,
    agent: ureq::Agent,
    /// A cleanup's client: it still runs statements after a signal arrived.
    cleanup: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.display())
    }
}

impl Client {
    pub fn new(
        base: url::Url,
        user: Option<String>,
        password: Option<String>,
        ca: Option<&Path>,
    ) -> Result<Client> {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            // A long SELECT may pause between blocks while the server reads parts.
            .timeout_read(Duration::from_secs(600));
        if let Some(ca) = ca {
            b = b.tls_config(Arc::new(tls_config(ca)?));
        }
        Ok(Client {
            base,
            user,
            password,
            agent: b.build(),
            cleanup: false,
        })
    }

    /// This client for a cleanup action, which must still reach the server after a
    /// signal (every other client stops sending statements then, so that nothing new,
    /// such as another scratch database, appears while the cleanup runs).
    pub fn for_cleanup(&self) -> Client {
        Client {
            cleanup: true,
            ..self.clone()
        }
    }

    /// `http://user@host:8123` (never the password).
    pub fn display(&self) -> String {
        let mut u = self.base.clone();
        if let Some(user) = &self.user {
            let _ = u.set_username(user);
        }
        u.to_string()
    }

    fn request(&self, params: &[(&str, &str)]) -> Result<ureq::Request> {
        if !self.cleanup && crate::engine::cleanup::terminating() {
            bail!(
                "interrupted: not sending more statements to {}",
                self.display()
            );
        }
        let mut r = self.agent.request_url("POST", &self.base);
        for (k, v) in params {
            r = r.query(k, v);
        }
        if let Some(u) = &self.user {
            r = r.set("X-ClickHouse-User", u);
        }
        if let Some(p) = &self.password {
            r = r.set("X-ClickHouse-Key", p);
        }
        Ok(r)
    }

    /// Runs `sql` (the body) and returns the response as a stream once the server
    /// answered 200; an error carries the server's message.
    pub fn stream(&self, sql: &str) -> Result<Box<dyn Read + Send + Sync>> {
        match self.request(&[])?.send_string(sql) {
            Ok(resp) => Ok(resp.into_reader()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Runs `sql` and returns the whole answer as text (small answers only).
    pub fn text(&self, sql: &str) -> Result<String> {
        let mut s = String::new();
        self.stream(sql)?
            .take(64 << 20)
            .read_to_string(&mut s)
            .with_context(|| format!("reading the answer of {}", self.display()))?;
        Ok(s)
    }

    /// [`Client::text`] with `database` as the default database of the query.
    pub fn text_in(&self, database: &str, sql: &str) -> Result<String> {
        let mut s = String::new();
        match self.request(&[("database", database)])?.send_string(sql) {
            Ok(resp) => resp
                .into_reader()
                .take(64 << 20)
                .read_to_string(&mut s)
                .with_context(|| format!("reading the answer of {}", self.display()))?,
            Err(e) => return Err(self.error(e)),
        };
        Ok(s)
    }

    /// Runs a query whose answer is `FORMAT JSONEachRow` (appended here).
    pub fn rows(&self, sql: &str) -> Result<Vec<serde_json::Value>> {
        self.text(&format!("{sql} FORMAT JSONEachRow"))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| anyhow!("an answer line is not JSON ({e})"))
            })
            .collect()
    }

    /// Runs a statement that returns nothing.
    pub fn exec(&self, sql: &str) -> Result<()> {
        self.text(sql).map(|_| ())
    }

    /// `INSERT ... FORMAT Native` with the data streamed as the body (chunked).
    pub fn insert(&self, sql: &str, body: impl Read) -> Result<()> {
        match self.request(&[("query", sql)])?.send(body) {
            Ok(resp) => {
                let mut s = String::new();
                let _ = resp.into_reader().take(1 << 20).read_to_string(&mut s);
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Status(code, resp) => {
                let mut s = String::new();
                let _ = resp.into_reader().take(4096).read_to_string(&mut s);
                let msg = s.lines().next().unwrap_or("").trim().to_string();
                let hint = if code == 516 || msg.contains("Code: 192") || msg.contains("Code: 193")
                {
                    " (check user and password_file / CLICKHOUSE_PASSWORD)"
                } else {
                    ""
                };
                anyhow!(
                    "ClickHouse at {} answered {code}: {msg}{hint}",
                    self.display()
                )
            }
            ureq::Error::Transport(t) => {
                anyhow!("cannot reach ClickHouse at {}: {t}", self.display())
            }
        }
    }
}

fn tls_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(ca).with_context(|| format!("reading tls_ca_file {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for c in rustls_pemfile_certs(&pem) {
        roots
            .add(c)
            .with_context(|| format!("tls_ca_file {}: a certificate is malformed", ca.display()))?;
        n += 1;
    }
    if n == 0 {
        bail!("tls_ca_file {} holds no PEM certificate", ca.display());
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(cfg)
}

/// The certificates of a PEM file (what `rustls-pemfile` does, via the pki types).
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .collect()
}

/// A quoted identifier: `` `name` `` with backquotes and backslashes escaped.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A quoted string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}
