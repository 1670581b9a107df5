//! The catalog: which backups a storage holds, read from their manifests.
//!
//! Layout (relative to a storage root: a local folder, or bucket + prefix):
//! ```text
//! <target>/<backup id>/manifest.json   written last: the backup's commit point
//! <target>/<backup id>/dump.sql.gz     plain format (gunzip -c | psql)
//! <target>/<backup id>/dump.pgdump     custom format (pg_restore)
//! ```
//! A folder without a manifest is an incomplete backup: never listed as good, never
//! restored, shown by `list --all` and removed by `prune` after a grace period.

use crate::manifest::{parse_backup_id, Manifest, MANIFEST_FILE};
use crate::storage::{read_all, Storage};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Incomplete {
    pub target: String,
    pub id: String,
    pub keys: Vec<String>,
    pub size_bytes: u64,
    pub newest: Option<DateTime<Utc>>,
    /// Why it is not a good backup.
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// Complete backups, oldest first.
    pub backups: Vec<Manifest>,
    pub incomplete: Vec<Incomplete>,
}

pub fn artifact_key(target: &str, id: &str, name: &str) -> String {
    format!("{target}/{id}/{name}")
}

/// Reads every backup of `target` on a storage.
pub fn scan(storage: &dyn Storage, target: &str) -> Result<Catalog> {
    let objects = storage.list(&format!("{target}/"))?;
    let mut groups: BTreeMap<String, Vec<crate::storage::ObjectInfo>> = BTreeMap::new();
    for o in objects {
        let rest = &o.key[target.len() + 1..];
        let Some((id, _file)) = rest.split_once('/') else {
            continue;
        };
        if parse_backup_id(id).is_none() {
            continue; // not a backup folder (e.g. wal/)
        }
        groups.entry(id.to_string()).or_default().push(o);
    }
    let mut cat = Catalog::default();
    for (id, objs) in groups {
        let has_manifest = objs
            .iter()
            .any(|o| o.key.ends_with(&format!("/{MANIFEST_FILE}")));
        let size: u64 = objs.iter().map(|o| o.size).sum();
        let newest = objs.iter().filter_map(|o| o.modified).max();
        let keys: Vec<String> = objs.iter().map(|o| o.key.clone()).collect();
        let mk_incomplete = |reason: String| Incomplete {
            target: target.to_string(),
            id: id.clone(),
            keys: keys.clone(),
            size_bytes: size,
            newest,
            reason,
        };
        if !has_manifest {
            cat.incomplete.push(mk_incomplete(
                "no manifest (interrupted or failed run)".into(),
            ));
            continue;
        }
        let key = artifact_key(target, &id, MANIFEST_FILE);
        match read_all(storage, &key).and_then(|b| Manifest::from_json(&b, &key)) {
            Ok(m) if m.id == id && m.target == target => cat.backups.push(m),
            Ok(m) => cat.incomplete.push(mk_incomplete(format!(
                "manifest names {}/{} but sits in {target}/{id}",
                m.target, m.id
            ))),
            Err(e) => cat
                .incomplete
                .push(mk_incomplete(format!("unreadable manifest: {e:#}"))),
        }
    }
    cat.backups.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(cat)
}

/// Resolves `latest`, an id, or an id prefix to one backup.
pub fn pick<'a>(cat: &'a Catalog, which: &str) -> Option<&'a Manifest> {
    if which == "latest" {
        return cat.backups.last();
    }
    if let Some(m) = cat.backups.iter().find(|m| m.id == which) {
        return Some(m);
    }
    let matches: Vec<_> = cat
        .backups
        .iter()
        .filter(|m| m.id.starts_with(which))
        .collect();
    if matches.len() == 1 {
        return Some(matches[0]);
    }
    None
}
