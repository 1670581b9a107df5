//! `[metrics]` and `[notifiers.NAME]`: where outcomes are reported.

use super::Config;
use anyhow::Result;
use serde::Deserialize;
use std::path::PathBuf;

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

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS before anything else is sent.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// No TLS at all.
    Plain,
}

impl NotifierConfig {
    /// The notifier's security from `tls` and the older `starttls`. Also called when the
    /// configuration is loaded, so a typo fails there and not silently after a backup.
    pub fn smtp_security(&self) -> std::result::Result<SmtpSecurity, String> {
        let n = self;
        let from_tls = match n.tls.as_deref() {
            None => None,
            Some("starttls") => Some(SmtpSecurity::StartTls),
            Some("implicit") => Some(SmtpSecurity::Implicit),
            Some("none") => Some(SmtpSecurity::Plain),
            Some(other) => {
                return Err(format!(
                    "`{other}` is not starttls, implicit (SMTPS, port 465) or none"
                ))
            }
        };
        match (from_tls, n.starttls) {
            (None, s) => Ok(if s.unwrap_or(true) {
                SmtpSecurity::StartTls
            } else {
                SmtpSecurity::Plain
            }),
            // `starttls = false` only says "no STARTTLS": it agrees with implicit and none.
            (Some(SmtpSecurity::StartTls), Some(false))
            | (Some(SmtpSecurity::Implicit | SmtpSecurity::Plain), Some(true)) => {
                Err("contradicts `starttls`; set only `tls`".into())
            }
            (Some(t), _) => Ok(t),
        }
    }
}

impl Config {
    /// Checks `[test_restore]`, `[metrics]` and `[notifiers.*]`.
    pub(super) fn validate_watch(&self) -> Result<()> {
        let bad = |key: String, msg: String| self.key_error(&key, msg);
        if let Some(tr) = &self.test_restore {
            tr.validate().map_err(|m| bad("test_restore".into(), m))?;
            if tr.must_exist.is_some() {
                return Err(bad(
                    "test_restore".into(),
                    "must_exist: names keys of one Redis target; move it to [targets.NAME.test_restore]".into(),
                ));
            }
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
                    n.smtp_security().map_err(|m| bad(key("tls"), m))?;
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
