//! Email notifications over SMTP, sent with lettre over rustls.
//!
//! Three ways to reach the server: STARTTLS (default, port 587), implicit TLS (`tls =
//! "implicit"`, port 465) and plain (`starttls = false` or `tls = "none"`, port 25, for a
//! trusted local relay). Certificates are checked against the Mozilla roots (webpki-roots,
//! the same on every machine) plus `tls_ca_file` for a private CA, so a private relay never
//! needs verification turned off. The password is never sent without TLS, and never shown:
//! errors pass through [`scrub`] before they reach the log.

use super::notice::{facts, headline, EventKind, Notice};
use crate::config::{NotifierConfig, SmtpSecurity as Security};
use anyhow::{anyhow, bail, Context, Result};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;

/// How the connection is secured, and its default port.
trait SecurityExt {
    fn default_port(self) -> u16;
    fn name(self) -> &'static str;
}

impl SecurityExt for Security {
    fn default_port(self) -> u16 {
        match self {
            Security::StartTls => 587,
            Security::Implicit => 465,
            Security::Plain => 25,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Security::StartTls => "STARTTLS",
            Security::Implicit => "implicit TLS",
            Security::Plain => "plain",
        }
    }
}

fn smtp_password(n: &NotifierConfig) -> Result<Option<String>> {
    if let Some(v) = &n.password_env {
        return std::env::var(v)
            .map(Some)
            .map_err(|_| anyhow!("environment variable {v} (password_env) is not set"));
    }
    if let Some(f) = &n.password_file {
        return crate::redact::read_password_file(f).map(Some);
    }
    Ok(None)
}

/// The message: subject `[backup] <headline>`, one fact per line, as plain UTF-8 text.
fn message(n: &NotifierConfig, notice: &Notice, kind: EventKind) -> Result<Message> {
    let from = n.from.as_deref().unwrap_or("");
    let from: Mailbox = from
        .parse()
        .map_err(|e| anyhow!("from address `{from}`: {e}"))?;
    let me = crate::engine::lock::hostname();
    let mut b = Message::builder()
        .from(from)
        // A header line must not break: target and host names come from configuration.
        .subject(format!("[backup] {}", headline(notice, kind)).replace(['\r', '\n'], " "))
        .message_id(Some(format!(
            "<{}.{}@{me}>",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            std::process::id()
        )))
        .header(ContentType::TEXT_PLAIN);
    for to in &n.to {
        let mb: Mailbox = to
            .parse()
            .map_err(|e| anyhow!("recipient address `{to}`: {e}"))?;
        b = b.to(mb);
    }
    let mut body = facts(notice).join("\n");
    body.push('\n');
    b.body(body).context("building the email")
}

fn tls_parameters(n: &NotifierConfig, host: &str) -> Result<TlsParameters> {
    // Explicitly the webpki roots: the same trust on every machine, no OpenSSL store.
    let mut p =
        TlsParameters::builder(host.to_string()).certificate_store(CertificateStore::WebpkiRoots);
    if let Some(f) = &n.tls_ca_file {
        let pem =
            std::fs::read(f).with_context(|| format!("reading tls_ca_file {}", f.display()))?;
        // lettre accepts a file without any certificate and would then trust nothing extra.
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            bail!("tls_ca_file {} holds no PEM certificate", f.display());
        }
        let cert =
            Certificate::from_pem(&pem).map_err(|e| anyhow!("tls_ca_file {}: {e}", f.display()))?;
        p = p.add_root_certificate(cert);
    }
    p.build_rustls()
        .map_err(|e| anyhow!("TLS settings for {host}: {e}"))
}

/// Removes the password from a message, also in the base64 forms AUTH sends it in (a
/// server may echo what it got).
fn scrub(text: &str, user: &str, pass: &str) -> String {
    use base64::Engine;
    if pass.is_empty() {
        return text.to_string();
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut t = text.to_string();
    for s in [
        b64(&format!("\0{user}\0{pass}")),
        b64(pass),
        pass.to_string(),
    ] {
        t = t.replace(&s, "***");
    }
    t
}

pub fn send(n: &NotifierConfig, notice: &Notice, kind: EventKind) -> Result<()> {
    let host = n.host.as_deref().unwrap_or("localhost");
    let sec = n.smtp_security().map_err(|e| anyhow!("tls: {e}"))?;
    let port = n.port.unwrap_or(sec.default_port());
    let msg = message(n, notice, kind)?;
    let mut creds = None;
    if let Some(user) = &n.username {
        if sec == Security::Plain {
            bail!("refusing to send the SMTP password without TLS; use starttls = true or tls = \"implicit\"");
        }
        creds = Some((user.clone(), smtp_password(n)?.unwrap_or_default()));
    }
    let tls = match sec {
        Security::StartTls => Tls::Required(tls_parameters(n, host)?),
        Security::Implicit => Tls::Wrapper(tls_parameters(n, host)?),
        Security::Plain => Tls::None,
    };
    // `builder_dangerous` only means "no TLS chosen yet": it is set right here.
    let mut t = SmtpTransport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(n.timeout_seconds.unwrap_or(10))))
        .hello_name(ClientId::Domain(crate::engine::lock::hostname()));
    if let Some((user, pass)) = &creds {
        t = t.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    t.build().send(&msg).map_err(|e| {
        // Display only: lettre's Display already includes its source, so a chain would
        // repeat it; one line so the log line stays one line.
        let text = e.to_string().replace(['\r', '\n'], " ");
        let text = match &creds {
            Some((user, pass)) => scrub(&text, user, pass),
            None => text,
        };
        anyhow!("SMTP {host}:{port} ({}): {text}", sec.name())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "[storages.l]\ntype=\"local\"\npath=\"/x\"\n[targets.pg]\nengine = \"postgres\"\nstorages = [\"l\"]\nnotify = [\"m\"]\n[notifiers.m]\ntype = \"email\"\nhost = \"smtp.example.com\"\nfrom = \"backup@example.com\"\nto = [\"a@example.com\", \"B Ops <b@example.com>\"]\n";

    fn parse(extra: &str) -> std::result::Result<NotifierConfig, String> {
        Config::parse(&format!("{BASE}{extra}"), "b.toml")
            .map(|c| c.notifiers["m"].clone())
            .map_err(|e| format!("{e:#}"))
    }

    fn notice() -> Notice {
        let mut n = Notice::failed("backup", "pg", 1.5, "connection refused".into());
        n.host = "db1".into();
        n
    }

    #[test]
    fn notify_email_security_and_ports_from_tls_and_starttls() {
        let cases = [
            ("", Security::StartTls, 587),
            ("starttls = true\n", Security::StartTls, 587),
            ("starttls = false\n", Security::Plain, 25),
            ("tls = \"starttls\"\n", Security::StartTls, 587),
            ("tls = \"implicit\"\n", Security::Implicit, 465),
            (
                "tls = \"implicit\"\nstarttls = false\n",
                Security::Implicit,
                465,
            ),
            ("tls = \"none\"\n", Security::Plain, 25),
        ];
        for (extra, want, port) in cases {
            let n = parse(extra).unwrap();
            assert_eq!(n.smtp_security(), Ok(want), "{extra}");
            assert_eq!(want.default_port(), port);
        }
    }

    #[test]
    fn notify_email_bad_tls_settings_fail_at_load_naming_the_key() {
        let e = parse("tls = \"implict\"\n").unwrap_err();
        assert!(
            e.contains("notifiers.m.tls") && e.contains("implict") && !e.contains('\n'),
            "{e}"
        );
        let e = parse("tls = \"implicit\"\nstarttls = true\n").unwrap_err();
        assert!(
            e.contains("notifiers.m.tls") && e.contains("starttls"),
            "{e}"
        );
        let e = parse("tls = \"starttls\"\nstarttls = false\n").unwrap_err();
        assert!(e.contains("notifiers.m.tls"), "{e}");
    }

    #[test]
    fn notify_email_message_has_subject_facts_and_recipients() {
        let n = parse("").unwrap();
        let m = String::from_utf8(
            message(&n, &notice(), EventKind::Failure)
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(
            m.contains("Subject: [backup] backup of target pg FAILED on db1\r\n"),
            "{m}"
        );
        assert!(m.contains("From: backup@example.com\r\n"), "{m}");
        assert!(
            m.contains("a@example.com") && m.contains("<b@example.com>"),
            "{m}"
        );
        assert!(m.contains("Content-Type: text/plain; charset=utf-8"), "{m}");
        assert!(m.contains("Message-ID: <") && m.contains("Date: "), "{m}");
        let body = m.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            body, "duration: 1.5s\r\nerror: connection refused\r\n",
            "{m}"
        );
    }

    #[test]
    fn notify_email_bad_address_is_named() {
        let mut n = parse("").unwrap();
        n.to.push("not an address".into());
        let e = format!(
            "{:#}",
            message(&n, &notice(), EventKind::Failure).unwrap_err()
        );
        assert!(e.contains("recipient address `not an address`"), "{e}");
    }

    #[test]
    fn notify_email_password_never_sent_in_plain_and_scrubbed_from_errors() {
        let n = parse("starttls = false\nusername = \"u\"\npassword_file = \"/nonexistent\"\n")
            .unwrap();
        let e = format!("{:#}", send(&n, &notice(), EventKind::Failure).unwrap_err());
        assert!(
            e.contains("refusing to send the SMTP password without TLS"),
            "{e}"
        );
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("\0u\0hunter2");
        let s = scrub(&format!("535 bad {token} hunter2"), "u", "hunter2");
        assert_eq!(s, "535 bad *** ***");
        assert_eq!(scrub("x", "u", ""), "x");
    }

    #[test]
    fn notify_email_tls_ca_file_without_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let mut n = parse("").unwrap();
        n.tls_ca_file = Some(f);
        let Err(e) = tls_parameters(&n, "smtp.example.com") else {
            panic!("accepted a CA file without a certificate")
        };
        let e = format!("{e:#}");
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
