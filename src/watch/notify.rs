//! Notifications: Slack incoming webhooks, generic JSON webhooks, PagerDuty Events API
//! v2 and email over SMTP. A notification that fails is logged and never changes the
//! run's exit code. Webhook URLs and keys are secrets: logs name the notifier only.
//!
//! `recovery` is a success after a failure of the same target and operation (the last
//! outcome is kept in the state dir). PagerDuty triggers on failure with one dedup key
//! per host, target and operation, and resolves that incident on the next success.

use super::notice::{facts, headline};
pub use super::notice::{EventKind, Notice};
use crate::config::{Config, NotifierConfig};
use crate::ui::Ui;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

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
        "email" => super::email::send(n, notice, kind),
        other => bail!("unknown notifier type `{other}`"),
    }
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
