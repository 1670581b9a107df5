//! `backup prune`: read each storage, plan with the retention engine, then delete.
//!
//! Deletion order keeps the catalog honest at every instant: first the manifests of
//! every backup to remove (one batched delete per storage), so an interrupted prune
//! never leaves a half-deleted backup that still looks good; then the remaining
//! objects of those backups and the incomplete folders past their grace period.
//! Objects an S3 Object Lock still holds are reported as retained by the lock; the
//! rest of the prune carries on.
//!
//! WAL (issue 4) hooks in after the backups: segments older than the oldest kept
//! physical backup's `wal.start_segment` on its timeline may go. `StoragePlan::kept`
//! gives that set; the dependency of a base backup on its WAL and incrementals lives in
//! the manifests' `wal` and `depends_on`, which the plan already honours.

use crate::config::Config;
use crate::db::{LogArchive, Target};
use crate::engine::catalog;
use crate::engine::lock::Lock;
use crate::engine::retention::{self, Action, Backup, Policy, State};
use crate::error::Fail;
use crate::manifest::{parse_backup_id, MANIFEST_FILE};
use crate::storage::{self, Storage};
use crate::ui::Ui;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Removed,
    /// An object lock or legal hold keeps (part of) it.
    Retained,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub target: String,
    pub storage: String,
    pub id: String,
    pub time: DateTime<Utc>,
    pub tag: Option<String>,
    pub incomplete: bool,
    pub action: Action,
    pub reasons: Vec<String>,
    pub size_bytes: u64,
    /// What happened when the plan was carried out (None: nothing was done).
    pub result: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// This entry is the WAL archive below the oldest kept base backup, not a backup.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wal: bool,
    /// `--extend-locks`: the Object Lock this kept backup now holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockNote>,
    #[serde(skip)]
    pub(crate) keys: Vec<String>,
}

/// What `--extend-locks` did for one kept backup.
#[derive(Debug, Clone, Serialize)]
pub struct LockNote {
    /// The lock every object of the backup now holds at least until.
    pub until: DateTime<Utc>,
    /// Objects whose lock was extended (0: all already ran long enough).
    pub extended: usize,
    /// Objects that could not be extended (with the first reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct StoragePlan {
    pub target: String,
    pub storage: String,
    pub location: String,
    pub policy: String,
    pub empty_policy: bool,
    /// Newest first.
    pub entries: Vec<Entry>,
    pub(crate) handle: Box<dyn Storage>,
    /// Exclusive holds on the backups to remove, until the prune is done.
    held: Vec<crate::engine::readers::BackupLock>,
}

/// Takes every backup to remove exclusively; one a reader (restore, test-restore,
/// pitr, copy, verify) holds is kept instead, and the plan says by whom.
fn hold_removals(p: &mut StoragePlan, state_dir: &std::path::Path) {
    for e in p.entries.iter_mut() {
        if e.action != Action::Remove || e.wal {
            continue;
        }
        match crate::engine::readers::for_removal(state_dir, &p.target, &e.id) {
            Ok(l) => p.held.push(l),
            Err(holder) => {
                e.action = Action::Keep;
                e.reasons.push(format!("in use, kept: {holder}"));
            }
        }
    }
}

impl StoragePlan {
    /// Backups that stay (for WAL pruning: the oldest kept base backup bounds it).
    pub fn kept(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.action == Action::Keep && !e.incomplete)
    }
}

pub struct Prune {
    pub plans: Vec<StoragePlan>,
    /// Storages that could not be read (the prune fails at the end, after the others).
    pub errors: Vec<String>,
    _locks: Vec<Lock>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub keep: usize,
    pub remove: usize,
    pub remove_bytes: u64,
    pub removed: usize,
    pub removed_bytes: u64,
    pub retained: usize,
    pub failed: usize,
}

impl Totals {
    /// What a carried-out prune did, for the log line.
    pub fn done(&self) -> String {
        let mut s = format!(
            "removed {} ({})",
            self.removed,
            crate::duration::bytes(self.removed_bytes)
        );
        if self.retained > 0 {
            s.push_str(&format!(", {} retained by object lock", self.retained));
        }
        if self.failed > 0 {
            s.push_str(&format!(", {} failed", self.failed));
        }
        s
    }
}

pub struct Request<'a> {
    pub target: Option<&'a str>,
    pub storage: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// Take each target's lock (not for a dry run: it may run beside a backup).
    pub lock: bool,
    /// The log archive of a target, when its engine has one (the registry's
    /// `log_archive`): its files are pruned along with the backups.
    pub archives: &'a dyn Fn(&Target) -> Option<Box<dyn LogArchive>>,
}

/// Reads the storages and plans; holds the targets' locks until dropped.
pub fn prepare(cfg: &Config, req: &Request) -> Result<Prune> {
    let targets: Vec<String> = match req.target {
        Some(t) => {
            cfg.target(t)?;
            vec![t.to_string()]
        }
        None => cfg.targets.keys().cloned().collect(),
    };
    if let Some(s) = req.storage {
        cfg.storage(s)?;
        if let Some(t) = req.target {
            if !cfg.target(t)?.all_storages().iter().any(|x| x == s) {
                return Err(Fail::Usage(format!(
                    "storage `{s}` is not one of target `{t}`'s storages [{}]",
                    cfg.target(t)?.all_storages().join(", ")
                ))
                .into());
            }
        }
    }
    let mut locks = Vec::new();
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for t in &targets {
        let target = Target::resolve(cfg, t)?;
        let archive = (req.archives)(&target);
        let tcfg = target.cfg;
        let all = tcfg.all_storages();
        let names: Vec<&String> = all
            .iter()
            .filter(|s| match req.storage {
                Some(only) => only == s.as_str(),
                None => true,
            })
            .collect();
        if names.is_empty() {
            continue;
        }
        if req.lock {
            locks.push(Lock::acquire(
                &cfg.state_dir(),
                t,
                &format!("backup prune {t}"),
            )?);
        }
        for sname in names {
            let policy =
                Policy::from_config(cfg.retention_for(t, sname).as_ref()).map_err(|m| {
                    Fail::Config(format!("retention of target `{t}` on `{sname}`: {m}"))
                })?;
            let handle = match storage::open(cfg, sname) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("storage `{sname}`: {e:#}"));
                    continue;
                }
            };
            match plan_storage(handle, t, archive.as_deref(), &policy, req.now) {
                Ok(mut p) => {
                    hold_removals(&mut p, &cfg.state_dir());
                    plans.push(p)
                }
                Err(e) => errors.push(format!("storage `{sname}`: {e:#}")),
            }
        }
    }
    Ok(Prune {
        plans,
        errors,
        _locks: locks,
    })
}

fn plan_storage(
    handle: Box<dyn Storage>,
    target: &str,
    archive: Option<&dyn LogArchive>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<StoragePlan> {
    let ctx = || format!("reading {} for target `{target}`", handle.location());
    let cat = catalog::scan(handle.as_ref(), target).with_context(ctx)?;
    // Every key of every backup folder (side files and leftovers included).
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for o in handle.list(&format!("{target}/")).with_context(ctx)? {
        let rest = &o.key[target.len() + 1..];
        if let Some((id, _)) = rest.split_once('/') {
            keys.entry(id.to_string()).or_default().push(o.key.clone());
        }
    }
    let mut input = Vec::new();
    let mut extra: BTreeMap<String, (Option<String>, u64)> = BTreeMap::new();
    for m in &cat.backups {
        input.push(Backup {
            id: m.id.clone(),
            time: m.started_at,
            tag: m.tag.clone(),
            state: State::Complete { verified: None },
            depends_on: m.depends_on.clone(),
        });
        extra.insert(m.id.clone(), (m.tag.clone(), m.size_bytes()));
    }
    for inc in &cat.incomplete {
        let has_manifest = inc
            .keys
            .iter()
            .any(|k| k.ends_with(&format!("/{MANIFEST_FILE}")));
        input.push(Backup {
            id: inc.id.clone(),
            time: parse_backup_id(&inc.id).unwrap_or(now),
            tag: None,
            state: if has_manifest {
                State::Unreadable {
                    why: inc.reason.clone(),
                }
            } else {
                State::Incomplete {
                    last_write: inc.newest,
                    why: inc.reason.clone(),
                }
            },
            depends_on: vec![],
        });
        extra.insert(inc.id.clone(), (None, inc.size_bytes));
    }
    let entries = retention::plan(&input, policy, now)
        .into_iter()
        .map(|d| {
            let (tag, size) = extra.get(&d.id).cloned().unwrap_or_default();
            Entry {
                target: target.to_string(),
                storage: handle.name().to_string(),
                keys: keys.remove(&d.id).unwrap_or_default(),
                id: d.id,
                time: d.time,
                tag,
                incomplete: d.incomplete,
                action: d.action,
                reasons: d.reasons,
                size_bytes: size,
                result: None,
                detail: None,
                wal: false,
                lock: None,
            }
        })
        .collect::<Vec<_>>();
    let mut entries = entries;
    if let Some(a) = archive {
        if let Some(w) = plan_log(handle.as_ref(), a, target, &cat, &entries, &mut keys, now)? {
            entries.push(w);
        }
    }
    Ok(StoragePlan {
        target: target.to_string(),
        storage: handle.name().to_string(),
        location: handle.location(),
        policy: policy.describe(),
        empty_policy: policy.is_empty(),
        entries,
        handle,
        held: vec![],
    })
}

/// The log archive's part: what its engine says no kept backup needs. With no kept
/// backup that needs the archive, nothing is removed: an archive is never pruned blind.
fn plan_log(
    s: &dyn Storage,
    archive: &dyn LogArchive,
    target: &str,
    cat: &catalog::Catalog,
    entries: &[Entry],
    keys: &mut HashMap<String, Vec<String>>,
    now: DateTime<Utc>,
) -> Result<Option<Entry>> {
    let kept: Vec<&crate::manifest::Manifest> = cat
        .backups
        .iter()
        .filter(|m| m.wal.is_some())
        .filter(|m| {
            entries
                .iter()
                .any(|e| e.id == m.id && e.action == Action::Keep && !e.incomplete)
        })
        .collect();
    let log_keys = keys.remove(archive.folder()).unwrap_or_default();
    if log_keys.is_empty() {
        return Ok(None);
    }
    let p = archive.prune(s, target, &kept, log_keys)?;
    Ok(Some(Entry {
        target: target.to_string(),
        storage: s.name().to_string(),
        id: archive.folder().into(),
        time: p.oldest_kept.as_ref().map(|k| k.1).unwrap_or(now),
        tag: None,
        incomplete: false,
        action: if p.remove.is_empty() {
            Action::Keep
        } else {
            Action::Remove
        },
        reasons: vec![p.reason],
        size_bytes: p.remove_bytes,
        result: None,
        detail: None,
        wal: true,
        lock: None,
        keys: p.remove,
    }))
}

impl Prune {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for e in self.plans.iter().flat_map(|p| &p.entries) {
            match e.action {
                Action::Keep => t.keep += 1,
                Action::Remove => {
                    t.remove += 1;
                    t.remove_bytes = t.remove_bytes.saturating_add(e.size_bytes);
                }
            }
            match e.result {
                Some(Outcome::Removed) => {
                    t.removed += 1;
                    t.removed_bytes = t.removed_bytes.saturating_add(e.size_bytes);
                }
                Some(Outcome::Retained) => t.retained += 1,
                Some(Outcome::Failed) => t.failed += 1,
                None => {}
            }
        }
        t
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.plans.iter().flat_map(|p| &p.entries)
    }

    /// Deletes what the plan removes. Failures are recorded per entry; the caller
    /// decides the exit status from `totals()`.
    pub fn execute(&mut self, ui: &Ui) {
        for p in &mut self.plans {
            execute_storage(p, ui);
        }
    }
}

fn execute_storage(p: &mut StoragePlan, ui: &Ui) {
    let s = p.handle.as_ref();
    let remove: Vec<usize> = (0..p.entries.len())
        .filter(|&i| p.entries[i].action == Action::Remove)
        .collect();
    if remove.is_empty() {
        return;
    }
    // Phase 1: manifests, so nothing half-deleted is ever listed as good.
    let manifest_of = |e: &Entry| catalog::artifact_key(&e.target, &e.id, MANIFEST_FILE);
    let manifests: Vec<String> = remove
        .iter()
        .map(|&i| &p.entries[i])
        .filter(|e| !e.incomplete && !e.wal)
        .map(manifest_of)
        .collect();
    let first = match s.delete(&manifests) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("{e:#}");
            for &i in &remove {
                p.entries[i].result = Some(Outcome::Failed);
                p.entries[i].detail = Some(msg.clone());
            }
            ui.error(format!(
                "storage `{}`: deleting manifests: {msg}",
                p.storage
            ));
            return;
        }
    };
    let mut rest: Vec<String> = Vec::new();
    let mut second_phase = Vec::new();
    for &i in &remove {
        let e = &mut p.entries[i];
        if !e.incomplete && !e.wal {
            let mk = manifest_of(e);
            if let Some((_, why)) = first.retained.iter().find(|(k, _)| *k == mk) {
                e.result = Some(Outcome::Retained);
                e.detail = Some(format!("kept by the object lock: {why}"));
                continue;
            }
            if let Some((_, why)) = first.failed.iter().find(|(k, _)| *k == mk) {
                e.result = Some(Outcome::Failed);
                e.detail = Some(format!("deleting {mk}: {why}"));
                continue;
            }
        }
        let mk = manifest_of(e);
        rest.extend(e.keys.iter().filter(|k| **k != mk).cloned());
        second_phase.push(i);
    }
    // Phase 2: everything else of those backups, and incomplete folders.
    let second = if rest.is_empty() {
        Ok(Default::default())
    } else {
        s.delete(&rest)
    };
    for i in second_phase {
        let e = &mut p.entries[i];
        match &second {
            Err(err) => {
                e.result = Some(Outcome::Failed);
                e.detail = Some(format!("{err:#}"));
            }
            Ok(r) => {
                let retained: Vec<_> = r
                    .retained
                    .iter()
                    .filter(|(k, _)| e.keys.contains(k))
                    .collect();
                let failed: Vec<_> = r
                    .failed
                    .iter()
                    .filter(|(k, _)| e.keys.contains(k))
                    .collect();
                if let Some((k, why)) = failed.first() {
                    e.result = Some(Outcome::Failed);
                    e.detail = Some(format!("deleting {k}: {why}"));
                } else if let Some((k, why)) = retained.first() {
                    e.result = Some(Outcome::Retained);
                    e.detail = Some(format!(
                        "{} object(s) kept by the object lock (e.g. {k}: {why}); the manifest is gone, so it is listed as incomplete until the lock expires",
                        retained.len()
                    ));
                } else {
                    e.result = Some(Outcome::Removed);
                }
            }
        }
    }
    for &i in &remove {
        let e = &p.entries[i];
        let what = if e.wal {
            "WAL"
        } else if e.incomplete {
            "incomplete backup"
        } else {
            "backup"
        };
        match e.result {
            Some(Outcome::Removed) => ui.info(format!(
                "removed {what} {} {} from `{}` ({})",
                e.target,
                e.id,
                e.storage,
                crate::duration::bytes(e.size_bytes)
            )),
            Some(Outcome::Retained) => ui.warn(format!(
                "{what} {} {} on `{}` is retained: {}",
                e.target,
                e.id,
                e.storage,
                e.detail.as_deref().unwrap_or("")
            )),
            Some(Outcome::Failed) => ui.error(format!(
                "could not remove {what} {} {} from `{}`: {}",
                e.target,
                e.id,
                e.storage,
                e.detail.as_deref().unwrap_or("")
            )),
            None => {}
        }
    }
}

/// The end of a prune: an error when a storage could not be read or a delete failed.
pub fn finish(prune: &Prune) -> Result<()> {
    let t = prune.totals();
    let mut problems = prune.errors.clone();
    if t.failed > 0 {
        problems.push(format!(
            "{} backup(s) could not be removed (see above)",
            t.failed
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    anyhow::bail!("prune incomplete: {}", problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::PutMeta;

    #[test]
    fn manifests_go_first_and_incomplete_garbage_goes_too() {
        let s = MemoryStorage::new("mem");
        let put = |k: &str| s.put(k, b"x", &PutMeta::default()).unwrap();
        let manifest = |id: &str, t: &str| {
            format!(
                r#"{{"manifest_version":1,"id":"{id}","target":"pg","engine":"postgres","kind":"logical","format":"plain","started_at":"{t}","finished_at":"{t}","duration_seconds":1.0,"versions":{{}},"artifacts":[],"database":{{}},"host":"h"}}"#
            )
        };
        for (id, t) in [
            ("20261120T020000Z", "2026-11-20T02:00:00Z"),
            ("20261121T020000Z", "2026-11-21T02:00:00Z"),
        ] {
            s.put(
                &format!("pg/{id}/manifest.json"),
                manifest(id, t).as_bytes(),
                &PutMeta::default(),
            )
            .unwrap();
            put(&format!("pg/{id}/dump.sql.gz"));
        }
        put("pg/20261119T020000Z/dump.sql.gz");
        let mut p = plan_storage(
            Box::new(s.clone()),
            "pg",
            None,
            &Policy {
                keep_last: 1,
                ..Policy::default()
            },
            // The memory store stamps objects with the real clock: look from after it.
            Utc::now() + chrono::Duration::days(2),
        )
        .unwrap();
        assert_eq!(
            p.entries
                .iter()
                .map(|e| (e.id.as_str(), e.action))
                .collect::<Vec<_>>(),
            [
                ("20261121T020000Z", Action::Keep),
                ("20261120T020000Z", Action::Remove),
                ("20261119T020000Z", Action::Remove),
            ]
        );
        execute_storage(&mut p, &Ui::new(true, true));
        let left: Vec<String> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(
            left,
            [
                "pg/20261121T020000Z/dump.sql.gz",
                "pg/20261121T020000Z/manifest.json"
            ]
        );
        assert!(p.entries[1..]
            .iter()
            .all(|e| e.result == Some(Outcome::Removed)));
        // The delete log shows the manifest went before its artifact.
        let log = s.deleted_log();
        let m = log
            .iter()
            .position(|k| k == "pg/20261120T020000Z/manifest.json")
            .unwrap();
        let a = log
            .iter()
            .position(|k| k == "pg/20261120T020000Z/dump.sql.gz")
            .unwrap();
        assert!(m < a, "{log:?}");
    }
}
