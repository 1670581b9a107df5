//! `/metrics` (the textfile's series, rendered from the same state) and `/healthz`
//! (503 when a scheduled target's newest backup is older than `[daemon] max_age`).

use super::log::Log;
use crate::config::Config;
use crate::engine::{schedule, status};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub const DEFAULT_MAX_AGE: &str = "26h";

/// Binds now (so a taken port fails the start), serves on a thread until `stop`.
pub fn serve(
    addr: &str,
    cfg: Arc<RwLock<Config>>,
    stop: Arc<AtomicBool>,
    log: Log,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ([daemon] listen): {e}"))?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let req = match server.recv_timeout(Duration::from_millis(250)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    log.event("http_error", &[("error", json!(e.to_string()))]);
                    continue;
                }
            };
            let cfg = cfg.read().map(|c| c.clone());
            let (code, ctype, body) = match (cfg, req.url()) {
                (Ok(cfg), "/metrics") => (200, "text/plain; version=0.0.4", metrics(&cfg)),
                (Ok(cfg), "/healthz") => {
                    let (ok, body) = health(&cfg);
                    (
                        if ok { 200 } else { 503 },
                        "text/plain; charset=utf-8",
                        body,
                    )
                }
                _ => (
                    404,
                    "text/plain",
                    "not found: try /metrics or /healthz\n".into(),
                ),
            };
            let header = tiny_http::Header::from_bytes("Content-Type", ctype)
                .expect("a static header is valid");
            let resp = tiny_http::Response::from_string(body)
                .with_status_code(code)
                .with_header(header);
            let _ = req.respond(resp);
        }
    }))
}

fn metrics(cfg: &Config) -> String {
    let state = crate::watch::metrics::load_state(cfg);
    crate::watch::metrics::render(&state, chrono::Utc::now().timestamp())
}

/// Every target with a backup schedule, on every storage: newest backup within the age.
pub fn health(cfg: &Config) -> (bool, String) {
    let max_age = cfg
        .daemon
        .as_ref()
        .and_then(|d| d.max_age.as_deref())
        .unwrap_or(DEFAULT_MAX_AGE);
    let max = crate::duration::parse(max_age).unwrap_or(Duration::from_secs(26 * 3600));
    let mut targets: Vec<String> = schedule::jobs(cfg)
        .into_iter()
        .filter(|j| j.kind == schedule::JobKind::Backup)
        .map(|j| j.target)
        .collect();
    targets.dedup();
    let mut ok = true;
    let mut body = String::new();
    for t in targets {
        // The target's own max_age wins over [daemon] max_age.
        match status::status(cfg, Some(&t), None, max) {
            Ok(st) => {
                for (s, limit) in st
                    .iter()
                    .flat_map(|t| t.storages.iter().map(|s| (s, t.max_age_seconds)))
                {
                    ok &= !s.stale;
                    let max_age = crate::duration::spec(Duration::from_secs(limit));
                    let age = s
                        .age_seconds
                        .map(|a| format!("newest backup {a}s old"))
                        .unwrap_or_else(|| "no backup".into());
                    body.push_str(&format!(
                        "{} {t} on {}: {age} (max {max_age}){}\n",
                        if s.stale { "STALE" } else { "ok" },
                        s.storage,
                        s.error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ));
                }
            }
            Err(e) => {
                ok = false;
                body.push_str(&format!("ERROR {t}: {e:#}\n"));
            }
        }
    }
    if body.is_empty() {
        body.push_str("ok: no scheduled backups to watch\n");
    }
    (ok, body)
}
