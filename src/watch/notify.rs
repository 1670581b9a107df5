//! Notifications: Slack incoming webhooks, generic JSON webhooks, PagerDuty Events API
//! v2 and email over SMTP. A notification that fails is logged and never changes the
//! run's exit code. Webhook URLs and keys are secrets: logs name the notifier only.
//!
//! `recovery` is a success after a failure of the same target and operation (the last
//! outcome is kept in the state dir). PagerDuty triggers on failure with one dedup key
//! per host, target and operation, and resolves that incident on the next success.

use crate::config::{Config, NotifierConfig};
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// What happened, for people and machines.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `backup` or `test-restore`.
    pub operation: String,
    pub target: String,
    pub id: Option<String>,
    pub success: bool,
    pub size_bytes: Option<u64>,
    pub duration_seconds: f64,
    pub storages: Vec<String>,
    pub error: Option<String>,
    /// Extra lines (e.g. failed checks of a test-restore).
    pub details: Vec<String>,
    pub host: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

impl Notice {
    /// An operation that failed before it produced anything.
    pub fn failed(operation: &str, target: &str, seconds: f64, error: String) -> Notice {
        Notice {
            operation: operation.into(),
            target: target.into(),
            id: None,
            success: false,
            size_bytes: None,
            duration_seconds: seconds,
            storages: vec![],
            error: Some(error),
            details: vec![],
            host: crate::engine::lock::hostname(),
            time: chrono::Utc::now(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Failure,
    Success,
    Recovery,
}

impl EventKind {
    fn as_str(&self) -> &'static str {
        match self {
            EventKind::Failure => "failure",
            EventKind::Success => "success",
            EventKind::Recovery => "recovery",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LastOutcome {
    success: bool,
}

/// Sends the notice to the target's notifiers. Never fails: problems are logged.
pub fn notify(cfg: &Config, notice: &Notice, ui: &Ui) {
    let Some(tcfg) = cfg.targets.get(&notice.target) else {
        return;
    };
    // Remember the outcome even without notifiers, so a later recovery is known.
    let state = cfg
        .state_dir()
        .join("notify")
        .join(format!("{}-{}.json", notice.target, notice.operation));
    let previous: Option<LastOutcome> = std::fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let kind = match (notice.success, previous) {
        (false, _) => EventKind::Failure,
        (true, Some(LastOutcome { success: false })) => EventKind::Recovery,
        (true, _) => EventKind::Success,
    };
    if let Ok(b) = serde_json::to_vec(&LastOutcome {
        success: notice.success,
    }) {
        if let Err(e) = super::sink::write_atomic(&state, &b) {
            ui.warn(format!(
                "cannot record the outcome for notifications: {e:#}"
            ));
        }
    }
    for name in &tcfg.notify {
        let Some(n) = cfg.notifiers.get(name) else {
            continue;
        };
        if !wanted(n, kind) {
            continue;
        }
        match send(n, notice, kind) {
            Ok(()) => ui.info(format!(
                "notified `{name}` ({}) of {} {}",
                n.kind,
                notice.operation,
                kind.as_str()
            )),
            Err(e) => ui.warn(format!(
                "notifier `{name}` ({}) failed, the run's outcome is unchanged: {e:#}",
                n.kind
            )),
        }
    }
}

fn wanted(n: &NotifierConfig, kind: EventKind) -> bool {
    let on: Vec<&str> = match &n.on {
        Some(v) => v.iter().map(String::as_str).collect(),
        None => vec!["failure", "recovery"],
    };
    match kind {
        EventKind::Failure => on.contains(&"failure"),
        // A recovery is also a success; PagerDuty must resolve what it triggered.
        EventKind::Recovery => {
            on.contains(&"recovery")
                || on.contains(&"success")
                || (n.kind == "pagerduty" && on.contains(&"failure"))
        }
        EventKind::Success => on.contains(&"success"),
    }
}

fn post_json(n: &NotifierConfig, url: &str, body: &serde_json::Value) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(n.timeout_seconds.unwrap_or(10)))
        .build();
    agent
        .post(url)
        .set("Content-Type", "application/json")
        .set("User-Agent", concat!("backup/", env!("CARGO_PKG_VERSION")))
        .send_string(&body.to_string())
        .map_err(|e| {
            anyhow!(
                "{} {}",
                crate::redact::secret_url(url),
                super::sink::http_error(e)
            )
        })?;
    Ok(())
}

pub fn send(n: &NotifierConfig, notice: &Notice, kind: EventKind) -> Result<()> {
    match n.kind.as_str() {
        "slack" => post_json(
            n,
            n.url.as_deref().unwrap_or(""),
            &slack_payload(notice, kind),
        ),
        "webhook" => post_json(
            n,
            n.url.as_deref().unwrap_or(""),
            &webhook_payload(notice, kind),
        ),
        "pagerduty" => post_json(
            n,
            n.events_url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL),
            &pagerduty_payload(n.routing_key.as_deref().unwrap_or(""), notice, kind),
        ),
        "email" => send_email(n, notice, kind),
        other => bail!("unknown notifier type `{other}`"),
    }
}

fn headline(notice: &Notice, kind: EventKind) -> String {
    let what = match kind {
        EventKind::Failure => "FAILED",
        EventKind::Success => "succeeded",
        EventKind::Recovery => "recovered",
    };
    format!(
        "{} of target {} {what} on {}",
        notice.operation, notice.target, notice.host
    )
}

fn facts(notice: &Notice) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(id) = &notice.id {
        v.push(format!("id: {id}"));
    }
    if let Some(s) = notice.size_bytes {
        v.push(format!("size: {}", crate::duration::bytes(s)));
    }
    v.push(format!(
        "duration: {}",
        crate::duration::human(Duration::from_secs_f64(notice.duration_seconds.max(0.0)))
    ));
    if !notice.storages.is_empty() {
        v.push(format!("storages: {}", notice.storages.join(", ")));
    }
    v.extend(notice.details.iter().cloned());
    if let Some(e) = &notice.error {
        v.push(format!("error: {e}"));
    }
    v
}

pub fn slack_payload(notice: &Notice, kind: EventKind) -> serde_json::Value {
    let icon = match kind {
        EventKind::Failure => ":red_circle:",
        EventKind::Success => ":large_green_circle:",
        EventKind::Recovery => ":white_check_mark:",
    };
    let mut text = format!("{icon} *{}*", headline(notice, kind));
    for f in facts(notice) {
        match f.strip_prefix("error: ") {
            Some(e) => text.push_str(&format!("\n• error: ```{}```", e.replace("```", "'''"))),
            None => text.push_str(&format!("\n• {f}")),
        }
    }
    serde_json::json!({ "text": text })
}

pub fn webhook_payload(notice: &Notice, kind: EventKind) -> serde_json::Value {
    let mut v = serde_json::to_value(notice).unwrap_or_default();
    v["event"] = serde_json::json!(kind.as_str());
    v["summary"] = serde_json::json!(headline(notice, kind));
    v
}

pub fn pagerduty_payload(routing_key: &str, notice: &Notice, kind: EventKind) -> serde_json::Value {
    let dedup = format!(
        "backup/{}/{}/{}",
        notice.host, notice.target, notice.operation
    );
    match kind {
        EventKind::Failure => serde_json::json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup,
            "payload": {
                "summary": format!("{}: {}", headline(notice, kind),
                    notice.error.as_deref().unwrap_or("").chars().take(700).collect::<String>()),
                "source": notice.host,
                "severity": "critical",
                "component": notice.target,
                "group": "backup",
                "class": notice.operation,
                "custom_details": serde_json::to_value(notice).unwrap_or_default(),
            }
        }),
        _ => serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup,
        }),
    }
}

// ---- email over SMTP ----

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Reads one SMTP reply (all continuation lines); returns (code, text).
fn reply(c: &mut Conn) -> Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = c.read(&mut b).context("reading from the SMTP server")?;
            if n == 0 {
                bail!("the SMTP server closed the connection");
            }
            line.push(b[0]);
            if b[0] == b'\n' {
                break;
            }
            if line.len() > 4096 {
                bail!("SMTP reply line too long");
            }
        }
        let l = String::from_utf8_lossy(&line).trim_end().to_string();
        let code: u16 = l
            .get(..3)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad SMTP reply `{l}`"))?;
        text.push_str(l.get(4..).unwrap_or(""));
        text.push('\n');
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
    }
}

fn cmd(c: &mut Conn, line: &str, expect: u16, shown: &str) -> Result<String> {
    c.write_all(format!("{line}\r\n").as_bytes())?;
    c.flush()?;
    let (code, text) = reply(c)?;
    if code / 100 != expect / 100 {
        bail!("SMTP {shown} answered {code} {}", text.trim());
    }
    Ok(text)
}

fn smtp_password(n: &NotifierConfig) -> Result<Option<String>> {
    if let Some(v) = &n.password_env {
        return std::env::var(v)
            .map(Some)
            .map_err(|_| anyhow!("environment variable {v} (password_env) is not set"));
    }
    if let Some(f) = &n.password_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading password_file {}", f.display()))?;
        return Ok(Some(t.lines().next().unwrap_or("").to_string()));
    }
    Ok(None)
}

fn send_email(n: &NotifierConfig, notice: &Notice, kind: EventKind) -> Result<()> {
    let host = n.host.as_deref().unwrap_or("localhost");
    let starttls = n.starttls.unwrap_or(true);
    let port = n.port.unwrap_or(if starttls { 587 } else { 25 });
    let from = n.from.as_deref().unwrap_or("");
    let timeout = Duration::from_secs(n.timeout_seconds.unwrap_or(10));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .with_context(|| format!("resolving SMTP host {host}"))?
        .next()
        .ok_or_else(|| anyhow!("SMTP host {host} has no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to SMTP {host}:{port}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut c = Conn::Plain(tcp);
    let (code, text) = reply(&mut c)?;
    if code != 220 {
        bail!("SMTP greeting {code} {}", text.trim());
    }
    let me = crate::engine::lock::hostname();
    let mut ehlo = cmd(&mut c, &format!("EHLO {me}"), 250, "EHLO")?;
    if starttls {
        if !ehlo.to_ascii_uppercase().contains("STARTTLS") {
            bail!("SMTP server {host}:{port} does not offer STARTTLS; set starttls = false only for a trusted local relay");
        }
        cmd(&mut c, "STARTTLS", 220, "STARTTLS")?;
        let Conn::Plain(tcp) = c else { unreachable!() };
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| anyhow!("SMTP host {host}: {e}"))?;
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
        c = Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        ehlo = cmd(&mut c, &format!("EHLO {me}"), 250, "EHLO after STARTTLS")?;
    }
    let _ = ehlo;
    if let Some(user) = &n.username {
        if !starttls {
            bail!("refusing to send the SMTP password without TLS; set starttls = true");
        }
        let pass = smtp_password(n)?.unwrap_or_default();
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        cmd(&mut c, &format!("AUTH PLAIN {token}"), 235, "AUTH PLAIN")?;
    }
    cmd(&mut c, &format!("MAIL FROM:<{from}>"), 250, "MAIL FROM")?;
    for to in &n.to {
        cmd(&mut c, &format!("RCPT TO:<{to}>"), 250, "RCPT TO")?;
    }
    cmd(&mut c, "DATA", 354, "DATA")?;
    let subject = format!("[backup] {}", headline(notice, kind));
    let mut body = facts(notice).join("\r\n");
    body.push_str("\r\n");
    let msg = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{}.{}@{me}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        n.to.join(", "),
        subject.replace(['\r', '\n'], " "),
        chrono::Utc::now().to_rfc2822(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id(),
        body.lines()
            .map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\r\n")
    );
    c.write_all(msg.as_bytes())?;
    cmd(&mut c, "\r\n.", 250, "end of DATA")?;
    let _ = cmd(&mut c, "QUIT", 221, "QUIT");
    Ok(())
}
