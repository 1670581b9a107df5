//! `backup undelete`: bring backups hidden behind S3 delete markers back (the
//! ransomware runbook), by removing the markers over their objects and over the log
//! archive beside them. Works on the storage's `--deleted` view (`storage::open_deleted`).

use crate::engine::catalog;
use crate::error::Fail;
use crate::manifest::{parse_backup_id, MANIFEST_FILE};
use crate::storage::Storage;
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Undeleted {
    pub target: String,
    pub storage: String,
    /// Backups whose manifest was hidden and is visible again (or would be: dry run).
    pub backups: Vec<String>,
    /// Objects whose delete markers were removed (backups and log archive).
    pub objects: usize,
    pub dry_run: bool,
}

/// `which`: None for every hidden backup, else `latest`, an id or a unique prefix
/// among the hidden ones.
pub fn undelete(
    view: &dyn Storage,
    target: &str,
    which: Option<&str>,
    dry_run: bool,
) -> Result<Undeleted> {
    let cat = catalog::scan(view, target)?;
    let hidden: Vec<_> = cat
        .backups
        .iter()
        .filter(|m| view.is_deleted(&catalog::artifact_key(target, &m.id, MANIFEST_FILE)))
        .collect();
    let chosen: Vec<_> = match which {
        None => hidden,
        Some(w) => {
            let sub = catalog::Catalog {
                backups: hidden.into_iter().cloned().collect(),
                incomplete: vec![],
            };
            let m = catalog::pick(&sub, w).cloned().ok_or_else(|| {
                Fail::Usage(format!(
                    "no deleted backup `{w}` of {target} on `{}` (see `backup list {target} --storage {} --deleted`)",
                    view.name(),
                    view.name()
                ))
            })?;
            return finish(view, target, vec![m], dry_run);
        }
    };
    let chosen = chosen.into_iter().cloned().collect();
    finish(view, target, chosen, dry_run)
}

fn finish(
    view: &dyn Storage,
    target: &str,
    chosen: Vec<crate::manifest::Manifest>,
    dry_run: bool,
) -> Result<Undeleted> {
    let prefix = format!("{target}/");
    let ids: Vec<String> = chosen.iter().map(|m| m.id.clone()).collect();
    let mut keys: Vec<String> = Vec::new();
    if !ids.is_empty() {
        for o in view.list(&prefix)? {
            let first = o.key[prefix.len()..].split('/').next().unwrap_or("");
            // The chosen backups' objects, and the log archive (a base backup needs
            // its WAL; segments are never a backup folder).
            let wanted = ids.iter().any(|i| i == first) || parse_backup_id(first).is_none();
            if wanted && view.is_deleted(&o.key) {
                keys.push(o.key);
            }
        }
    }
    let objects = if dry_run {
        keys.len()
    } else {
        view.undelete(&keys)?
    };
    Ok(Undeleted {
        target: target.into(),
        storage: view.name().into(),
        backups: ids,
        objects,
        dry_run,
    })
}
