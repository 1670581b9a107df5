//! Notifications: Slack incoming webhooks, generic JSON webhooks, PagerDuty Events API
//! v2 and email over SMTP. A notification that fails is logged and never changes the
//! run's exit code. Webhook URLs and keys are secrets: logs name the notifier only.
//!
//! `recovery` is a success after a failure of the same target and operation (the last
//! outcome is kept in the state dir). PagerDuty triggers on failure with one dedup key
//! per host, target and operation, and resolves that incident on the next success.

use crate::config::{Config, NotifierConfig};
use crate::ui::Ui;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
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
        if let Err(e) = crate::engine::metrics::write_atomic(&state, &b) {
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

/// An HTTP error without the URL (it may carry the secret).
pub fn http_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            format!("HTTP {code}: {}", body.trim())
        }
        ureq::Error::Transport(t) => match t.message() {
            Some(m) => format!("{}: {m}", t.kind()),
            None => t.kind().to_string(),
        },
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
        .map_err(|e| anyhow!("{} {}", crate::redact::secret_url(url), http_error(e)))?;
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
        "email" => crate::engine::email::send(n, notice, kind),
        other => bail!("unknown notifier type `{other}`"),
    }
}

pub(super) fn headline(notice: &Notice, kind: EventKind) -> String {
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

pub(super) fn facts(notice: &Notice) -> Vec<String> {
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
