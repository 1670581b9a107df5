//! `prune --extend-locks`: every backup the policy keeps stays under Object Lock.
//!
//! An upload is locked for the storage's period (`days`, or the retention horizon).
//! A backup the policy keeps longer than that (a monthly kept for a year on a 30-day
//! lock) would lose its protection while still being the one to restore; so a prune
//! with `--extend-locks` gives every object of every kept backup, and the WAL segments
//! a kept physical backup needs, a lock to a full period from now whenever less than
//! half a period is left. A lock is never shortened (the storage refuses to) and a
//! backup's dependencies are kept, and so extended, with it: they are locked as a whole.

use crate::engine::catalog;
use crate::engine::prune::{LockNote, Prune};
use crate::engine::retention::Action;
use crate::manifest::{parse_backup_id, Manifest};
use crate::storage::Storage;
use crate::ui::Ui;
use chrono::{DateTime, Utc};

/// Extends the locks of every kept backup on storages that lock. Returns how many
/// objects were extended and the errors met (the prune fails at the end on them).
pub fn extend(prune: &mut Prune, now: DateTime<Utc>, ui: &Ui) -> (usize, Vec<String>) {
    let mut total = 0;
    let mut errors = Vec::new();
    for p in prune.plans.iter_mut() {
        let Some(policy) = p.handle.lock_policy() else {
            continue;
        };
        let Ok(period) = chrono::Duration::from_std(policy.period) else {
            continue;
        };
        let until = now + period;
        let threshold = now + period / 2;
        let manifests = match catalog::scan(p.handle.as_ref(), &p.target) {
            Ok(c) => c.backups,
            Err(e) => {
                errors.push(format!("storage `{}`: {e:#}", p.storage));
                continue;
            }
        };
        let archive = archive_keys(p.handle.as_ref(), &p.target).unwrap_or_default();
        for e in p.entries.iter_mut() {
            if e.action != Action::Keep || e.incomplete || e.wal {
                continue;
            }
            let mut keys = e.keys.clone();
            if let Some(m) = manifests.iter().find(|m| m.id == e.id) {
                keys.extend(wal_needed(m, &archive));
            }
            let mut note = LockNote {
                until,
                extended: 0,
                error: None,
            };
            for k in &keys {
                let res = match p.handle.lock_of(k) {
                    Ok(Some(l)) if l.retain_until >= threshold => Ok(false),
                    Ok(_) => p.handle.extend_lock(k, until),
                    Err(e) => Err(e),
                };
                match res {
                    Ok(true) => note.extended += 1,
                    Ok(false) => {}
                    Err(err) => {
                        if note.error.is_none() {
                            note.error = Some(format!("{k}: {err:#}"));
                        }
                    }
                }
            }
            if let Some(err) = &note.error {
                errors.push(format!(
                    "extending the lock of {} {} on `{}`: {err}",
                    e.target, e.id, p.storage
                ));
            } else if note.extended > 0 {
                ui.info(format!(
                    "{} {} on `{}`: lock of {} object(s) extended to {}",
                    e.target,
                    e.id,
                    p.storage,
                    note.extended,
                    until.format("%Y-%m-%d %H:%M:%SZ")
                ));
            }
            total += note.extended;
            e.lock = Some(note);
        }
    }
    (total, errors)
}

/// Objects under `<target>/` outside every backup folder: the log archive.
fn archive_keys(s: &dyn Storage, target: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{target}/");
    Ok(s.list(&prefix)?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| {
            k[prefix.len()..]
                .split_once('/')
                .is_some_and(|(first, _)| parse_backup_id(first).is_none())
        })
        .collect())
}

/// The archived WAL segments a physical backup needs (its `wal` range), by name:
/// segment file names sort in WAL order within a timeline.
fn wal_needed(m: &Manifest, archive: &[String]) -> Vec<String> {
    let Some(w) = &m.wal else {
        return vec![];
    };
    archive
        .iter()
        .filter(|k| {
            let name = k.rsplit('/').next().unwrap_or("");
            let seg = name.get(..24).unwrap_or("");
            seg.len() == 24
                && seg.bytes().all(|b| b.is_ascii_hexdigit())
                && seg >= w.start_segment.as_str()
                && seg <= w.stop_segment.as_str()
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_range_selects_segments_by_name() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "manifest_version": 1, "id": "20261130T010000Z", "target": "pg",
            "engine": "postgres", "kind": "physical", "format": "tar",
            "started_at": "2026-11-30T01:00:00Z", "finished_at": "2026-11-30T01:00:05Z",
            "duration_seconds": 5.0, "versions": {}, "artifacts": [], "database": {},
            "wal": {"timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/3000100",
                    "start_segment": "000000010000000000000002",
                    "stop_segment": "000000010000000000000003"}
        }))
        .unwrap();
        let archive: Vec<String> = [
            "pg/wal/00000001/000000010000000000000001.gz",
            "pg/wal/00000001/000000010000000000000002.gz",
            "pg/wal/00000001/000000010000000000000003.gz",
            "pg/wal/00000001/000000010000000000000004.gz",
            "pg/wal/00000002/00000002.history.gz",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wal_needed(&m, &archive),
            vec![archive[1].clone(), archive[2].clone()]
        );
    }
}
