//! Deletes that respect Object Lock.
//!
//! Keys are deleted with DeleteObjects, 1000 at a time; keys the batch could not
//! delete, and every key of a batch the store refused (some stores deny bulk deletes),
//! are retried one DeleteObject at a time, where a key already gone counts as deleted.
//! Refusals that name a lock or retention are reported as retained, not failed.
//!
//! On an Object Lock bucket (always versioned) a plain delete succeeds by adding a
//! delete marker while the locked data stays: the backup would vanish from listings yet
//! keep costing, and count as deleted. So on such buckets each key is checked first,
//! and held keys are reported as retained instead of deleted.

use super::errors::{err_text, is_not_found};
use super::S3Storage;
use crate::storage::DeleteReport;
use anyhow::Result;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

impl S3Storage {
    /// Whether the bucket has Object Lock enabled: asked once, and taken as no when the
    /// store does not say (no configuration, or no permission to read it).
    fn object_lock_enabled(&self) -> bool {
        *self.object_lock.get_or_init(|| {
            self.rt
                .block_on(
                    self.client
                        .get_object_lock_configuration()
                        .bucket(&self.cfg.bucket)
                        .send(),
                )
                .ok()
                .and_then(|o| {
                    o.object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        .map(|e| e.as_str() == "Enabled")
                })
                .unwrap_or(false)
        })
    }

    /// Why an object cannot be deleted yet (retention date in the future, legal hold).
    fn lock_hold(&self, key: &str) -> Option<String> {
        let h = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.cfg.bucket)
                    .key(self.full_key(key))
                    .send(),
            )
            .ok()?;
        if h.object_lock_legal_hold_status().map(|s| s.as_str()) == Some("ON") {
            return Some("object lock legal hold is on".into());
        }
        let until = h.object_lock_retain_until_date()?;
        let until = chrono::DateTime::from_timestamp(until.secs(), 0)?;
        (until > chrono::Utc::now()).then(|| {
            format!(
                "object lock ({}) until {}",
                h.object_lock_mode()
                    .map(|m| m.as_str())
                    .unwrap_or("retention"),
                until.format("%Y-%m-%dT%H:%M:%SZ")
            )
        })
    }

    /// `Storage::delete`.
    pub(super) fn delete_keys(&self, keys: &[String]) -> Result<DeleteReport> {
        let mut rep = DeleteReport::default();
        let mut singles: Vec<String> = Vec::new();
        let mut free: Vec<String> = Vec::new();
        if !keys.is_empty() && self.object_lock_enabled() {
            for k in keys {
                match self.lock_hold(k) {
                    Some(why) => rep.retained.push((k.clone(), why)),
                    None => free.push(k.clone()),
                }
            }
        } else {
            free = keys.to_vec();
        }
        for chunk in free.chunks(1000) {
            let objs: Vec<ObjectIdentifier> = chunk
                .iter()
                .filter_map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.full_key(k))
                        .build()
                        .ok()
                })
                .collect();
            let del = Delete::builder()
                .set_objects(Some(objs))
                .quiet(false)
                .build()?;
            match self.rt.block_on(
                self.client
                    .delete_objects()
                    .bucket(&self.cfg.bucket)
                    .delete(del)
                    .send(),
            ) {
                Ok(out) => {
                    for d in out.deleted() {
                        if let Some(k) = d.key() {
                            rep.deleted.push(self.strip(k));
                        }
                    }
                    for e in out.errors() {
                        let k = self.strip(e.key().unwrap_or(""));
                        let code = e.code().unwrap_or("");
                        let msg = format!("{code}: {}", e.message().unwrap_or(""));
                        if code == "AccessDenied" && msg.to_ascii_lowercase().contains("lock")
                            || code.contains("ObjectLock")
                            || code == "InvalidRequest"
                                && msg.to_ascii_lowercase().contains("retention")
                        {
                            rep.retained.push((k, msg));
                        } else {
                            singles.push(k);
                        }
                    }
                }
                // Some stores deny bulk deletes: fall back to one request per key.
                Err(_) => singles.extend(chunk.iter().cloned()),
            }
        }
        for k in singles {
            match self.rt.block_on(
                self.client
                    .delete_object()
                    .bucket(&self.cfg.bucket)
                    .key(self.full_key(&k))
                    .send(),
            ) {
                Ok(_) => rep.deleted.push(k),
                Err(e) if is_not_found(&e) => rep.deleted.push(k),
                Err(e) => {
                    let t = err_text(&e);
                    if t.to_ascii_lowercase().contains("lock") || t.contains("retention") {
                        rep.retained.push((k, t));
                    } else {
                        rep.failed.push((k, t));
                    }
                }
            }
        }
        Ok(rep)
    }
}
