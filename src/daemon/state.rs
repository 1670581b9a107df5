//! The daemon's memory across restarts: each job's last scheduled fire time, kept in
//! `<state_dir>/daemon.json`, so a run missed while the daemon was down is caught up.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FireState {
    /// Job id -> the last fire time the daemon acted on (or first saw the job).
    pub last: BTreeMap<String, DateTime<Utc>>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.json")
}

impl FireState {
    /// An unreadable file starts afresh: catching up is a convenience, not a duty.
    pub fn load(state_dir: &Path) -> FireState {
        std::fs::read(path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        crate::watch::sink::write_atomic(&path(state_dir), &json)
    }
}
