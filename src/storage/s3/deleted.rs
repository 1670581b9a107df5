//! The bucket as it was before objects were deleted: for the ransomware runbook.
//!
//! On a versioned bucket (every Object Lock bucket is one) a plain delete only adds a
//! delete marker; the data versions stay, and locked ones cannot be removed at all. This
//! view lists every key that still has a data version (the newest one), whether or not a
//! delete marker hides it now, and reads that version: `list --deleted` and `restore
//! --deleted` see the backups an attacker "deleted" with the backup role's keys. The
//! view is read-only. `undelete` removes the delete markers (a role with
//! s3:DeleteObjectVersion on them may), which makes the data versions current again.

use super::errors::err_text;
use super::S3Storage;
use crate::storage::ObjectInfo;
use anyhow::{anyhow, Result};
use std::collections::HashMap;

/// What the view knows of a key: its newest data version, and whether a delete marker
/// hides it now.
#[derive(Debug, Clone)]
pub(super) struct Version {
    pub id: String,
    pub deleted: bool,
}

struct Listing {
    /// Key -> newest data version (size, modified, version id).
    data: HashMap<String, (ObjectInfo, String)>,
    /// Key -> ids of every delete marker; `latest_marker`: keys a marker hides now.
    markers: HashMap<String, Vec<String>>,
    latest_marker: std::collections::HashSet<String>,
}

impl S3Storage {
    /// This storage as the read-only "before the deletions" view.
    pub fn with_deleted(mut self) -> S3Storage {
        self.versions = Some(std::sync::Mutex::new(HashMap::new()));
        self
    }

    fn list_versions(&self, prefix: &str) -> Result<Listing> {
        let full = self.full_key(prefix);
        let mut out = Listing {
            data: HashMap::new(),
            markers: HashMap::new(),
            latest_marker: Default::default(),
        };
        let (mut key_marker, mut vid_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_object_versions()
                        .bucket(&self.cfg.bucket)
                        .prefix(&full)
                        .set_key_marker(key_marker.clone())
                        .set_version_id_marker(vid_marker.clone())
                        .send(),
                )
                .map_err(|e| {
                    anyhow!(
                        "listing object versions under {}: {} (the bucket must be versioned, and the role needs s3:ListBucketVersions)",
                        self.url(prefix),
                        err_text(&e)
                    )
                })?;
            // Versions of a key come newest first: the first one seen is the newest.
            for v in page.versions() {
                let (Some(k), Some(id)) = (v.key(), v.version_id()) else {
                    continue;
                };
                let key = self.strip(k);
                out.data.entry(key.clone()).or_insert_with(|| {
                    (
                        ObjectInfo {
                            key,
                            size: v.size().unwrap_or(0).max(0) as u64,
                            modified: v
                                .last_modified()
                                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                        },
                        id.to_string(),
                    )
                });
            }
            for m in page.delete_markers() {
                let (Some(k), Some(id)) = (m.key(), m.version_id()) else {
                    continue;
                };
                let key = self.strip(k);
                if m.is_latest() == Some(true) {
                    out.latest_marker.insert(key.clone());
                }
                out.markers.entry(key).or_default().push(id.to_string());
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            vid_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// `list` of the view: every key with a data version, sorted.
    pub(super) fn view_list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let l = self.list_versions(prefix)?;
        let mut out = Vec::with_capacity(l.data.len());
        if let Some(map) = &self.versions {
            let mut map = map.lock().unwrap();
            for (key, (info, id)) in l.data {
                map.insert(
                    key.clone(),
                    Version {
                        id,
                        deleted: l.latest_marker.contains(&key),
                    },
                );
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The newest data version of `key` (None: the key never had one).
    pub(super) fn view_version(&self, key: &str) -> Result<Option<Version>> {
        let known = |s: &Self| {
            s.versions
                .as_ref()
                .and_then(|m| m.lock().unwrap().get(key).cloned())
        };
        if let Some(v) = known(self) {
            return Ok(Some(v));
        }
        self.view_list(key)?;
        Ok(known(self))
    }

    /// Removes every delete marker of `keys`; returns how many keys became visible.
    pub(super) fn remove_delete_markers(&self, keys: &[String]) -> Result<usize> {
        let mut n = 0;
        for key in keys {
            let l = self.list_versions(key)?;
            let Some(ids) = l.markers.get(key) else {
                continue;
            };
            for id in ids {
                self.rt
                    .block_on(
                        self.client
                            .delete_object()
                            .bucket(&self.cfg.bucket)
                            .key(self.full_key(key))
                            .version_id(id)
                            .send(),
                    )
                    .map_err(|e| {
                        anyhow!(
                            "removing the delete marker of {}: {} (the role needs s3:DeleteObjectVersion)",
                            self.url(key),
                            err_text(&e)
                        )
                    })?;
            }
            if l.data.contains_key(key) {
                n += 1;
            }
        }
        Ok(n)
    }
}
