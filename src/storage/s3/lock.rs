//! S3 Object Lock: the lock every upload carries, the check that the bucket can keep
//! the promise, and reading and extending an object's lock.
//!
//! A lock is set at upload (`x-amz-object-lock-mode` / `-retain-until-date` on the
//! PUT or on CreateMultipartUpload; S3 demands Content-MD5 or a checksum on those
//! requests, which every upload here sends), so no object of a locked storage is ever
//! unlocked, not even for a moment. Extending uses PutObjectRetention and never
//! shortens: a later date only, and COMPLIANCE is never turned into GOVERNANCE.

use super::errors::{err_text, is_not_found};
use super::S3Storage;
use crate::error::Fail;
use crate::storage::ObjectLock;
use anyhow::{anyhow, Result};
use aws_sdk_s3::primitives::DateTime as SdkTime;
use aws_sdk_s3::types::{ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode};
use chrono::{DateTime, Utc};

fn from_sdk(t: &SdkTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), 0)
}

impl S3Storage {
    /// The lock mode for new objects.
    pub(super) fn lock_mode(&self) -> Option<ObjectLockMode> {
        self.lock
            .as_ref()
            .map(|l| ObjectLockMode::from(l.mode.as_str()))
    }

    /// The retain-until date for an object written now: now + the lock period.
    pub(super) fn lock_until(&self) -> Option<SdkTime> {
        let l = self.lock.as_ref()?;
        let until = Utc::now() + chrono::Duration::from_std(l.period).ok()?;
        Some(SdkTime::from_secs(until.timestamp()))
    }

    /// Versioning and Object Lock must both be enabled on the bucket, or a lock is a
    /// promise nobody keeps: refused before anything is stored. S3 enables versioning
    /// with Object Lock and never lets it be suspended afterwards, so the lock
    /// configuration alone answers; versioning is asked only to say what is missing.
    pub(super) fn check_lock(&self) -> Result<()> {
        let Some(l) = &self.lock else {
            return Ok(());
        };
        let bucket = &self.cfg.bucket;
        let enabled = match self.rt.block_on(
            self.client
                .get_object_lock_configuration()
                .bucket(bucket)
                .send(),
        ) {
            Ok(o) => o
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled"),
            // No configuration at all is how S3 answers for a bucket without the lock.
            Err(e) if err_text(&e).contains("ObjectLockConfigurationNotFound") => false,
            Err(e) => {
                return Err(anyhow!(
                "storage `{}`: cannot read the Object Lock configuration of bucket {bucket}: {}",
                self.name,
                err_text(&e)
            ))
            }
        };
        if enabled {
            return Ok(());
        }
        let versioning = self
            .rt
            .block_on(self.client.get_bucket_versioning().bucket(bucket).send())
            .ok()
            .map(|v| {
                v.status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "never enabled".into())
            })
            .unwrap_or_else(|| "unknown".into());
        Err(Fail::Config(format!(
            "storage `{}` promises {} object locks, but bucket {bucket} does not have Object Lock enabled (versioning: {versioning}): create the bucket with Object Lock enabled (aws s3api create-bucket --bucket {bucket} --object-lock-enabled-for-bucket), or remove [storages.{}.object_lock]",
            self.name, l.mode, self.name
        ))
        .into())
    }

    pub(super) fn object_lock_of(&self, key: &str) -> Result<Option<ObjectLock>> {
        let h = match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.cfg.bucket)
                .key(self.full_key(key))
                .send(),
        ) {
            Ok(h) => h,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(anyhow!("reading {}: {}", self.url(key), err_text(&e))),
        };
        Ok(
            match (h.object_lock_mode(), h.object_lock_retain_until_date()) {
                (Some(m), Some(t)) => from_sdk(t).map(|retain_until| ObjectLock {
                    mode: m.as_str().to_string(),
                    retain_until,
                }),
                _ => None,
            },
        )
    }

    pub(super) fn extend_object_lock(&self, key: &str, until: DateTime<Utc>) -> Result<bool> {
        let current = self.object_lock_of(key)?;
        if let Some(c) = &current {
            if c.retain_until >= until {
                return Ok(false);
            }
        }
        // Keep the object's own mode: COMPLIANCE must never become GOVERNANCE.
        let mode = current
            .map(|c| c.mode)
            .or_else(|| self.lock.as_ref().map(|l| l.mode.clone()))
            .unwrap_or_else(|| "GOVERNANCE".into());
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::from(mode.as_str()))
            .retain_until_date(SdkTime::from_secs(until.timestamp()))
            .build();
        self.rt
            .block_on(
                self.client
                    .put_object_retention()
                    .bucket(&self.cfg.bucket)
                    .key(self.full_key(key))
                    .retention(retention)
                    .send(),
            )
            .map_err(|e| {
                anyhow!(
                    "extending the lock of {} to {}: {}",
                    self.url(key),
                    until.format("%Y-%m-%dT%H:%M:%SZ"),
                    err_text(&e)
                )
            })?;
        Ok(true)
    }
}
