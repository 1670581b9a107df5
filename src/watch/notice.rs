//! What a notification says: the notice (what happened, for people and machines), the
//! kind of event, and the headline and fact lines every channel shares.

use serde::Serialize;
use std::time::Duration;

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
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Failure => "failure",
            EventKind::Success => "success",
            EventKind::Recovery => "recovery",
        }
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
