//! Storage seam: where backup objects live. Keys are `/`-separated paths relative to
//! the storage root (`<target>/<backup id>/<file>`); each backend maps them onto its
//! own namespace (a directory, or a bucket and prefix).

pub mod local;
#[cfg(test)]
pub mod memory;
pub mod s3;
pub mod seal;

use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use thiserror::Error;

/// The object does not exist (as opposed to a storage that cannot be reached).
#[derive(Debug, Error)]
#[error("{0} does not exist")]
pub struct NotFound(pub String);

/// `put_if_absent` found an object already there.
#[derive(Debug, Error)]
#[error("{0} already exists")]
pub struct AlreadyExists(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// Size and SHA-256 of the bytes a storage really holds for an object (the encrypted
/// bytes on a sealed storage).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredDigest {
    pub size_bytes: u64,
    pub sha256: String,
}

/// An S3 Object Lock on one object: nobody (COMPLIANCE) or only a privileged role
/// (GOVERNANCE) may delete or overwrite that version before `retain_until`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectLock {
    pub mode: String,
    pub retain_until: DateTime<Utc>,
}

/// The lock a storage puts on every object it writes: `mode` until now + `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: String,
    pub period: std::time::Duration,
}

/// What is attached to a stored object (S3 tags and metadata; ignored locally).
#[derive(Debug, Clone, Default)]
pub struct PutMeta {
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
}

/// Outcome of a delete: keys that could not be deleted with the reason.
#[derive(Debug, Default)]
pub struct DeleteReport {
    pub deleted: Vec<String>,
    /// Kept by an object lock or legal hold (not an error of the whole operation).
    pub retained: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
}

/// A streaming upload. Nothing is visible under the final key until `finish` returns.
pub trait ObjectWriter: Write + Send {
    /// Completes the object and confirms it (size, and checksum where the store allows).
    fn finish(self: Box<Self>) -> Result<ObjectInfo>;
    /// Throws the partial object away.
    fn abort(self: Box<Self>);
}

pub trait Storage: Send + Sync {
    /// The storage's name in the config.
    fn name(&self) -> &str;
    /// `file:///backups` or `s3://bucket/prefix` (never with secrets).
    fn location(&self) -> String;
    fn is_local(&self) -> bool {
        false
    }
    /// Local filesystem path of a key, when the storage is a directory.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
    fn create(&self, key: &str, meta: &PutMeta) -> Result<Box<dyn ObjectWriter>>;
    /// Writes a small object atomically, replacing any previous one.
    fn put(&self, key: &str, data: &[u8], meta: &PutMeta) -> Result<ObjectInfo> {
        let mut w = self.create(key, meta)?;
        if let Err(e) = w.write_all(data) {
            w.abort();
            return Err(e.into());
        }
        w.finish()
    }
    /// Writes a small object only if no object has that key; `AlreadyExists` otherwise.
    fn put_if_absent(&self, key: &str, data: &[u8], meta: &PutMeta) -> Result<ObjectInfo>;
    /// Streams an object. A missing object is a `NotFound` error.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;
    /// Object metadata set at upload (S3 user metadata; a side file locally).
    fn metadata(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let _ = key;
        Ok(BTreeMap::new())
    }
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    fn delete(&self, keys: &[String]) -> Result<DeleteReport>;
    /// Aborts unfinished multipart uploads under `prefix` (S3); returns how many.
    fn abort_uploads(&self, prefix: &str) -> Result<usize> {
        let _ = prefix;
        Ok(0)
    }
    /// Free bytes where the storage has a meaningful answer (local disks).
    fn free_space(&self) -> Option<u64> {
        None
    }
    /// The Object Lock every object written here gets (None: not locked).
    fn lock_policy(&self) -> Option<LockPolicy> {
        None
    }
    /// Refuses (exit 2) when the storage promises Object Lock but the bucket cannot
    /// keep the promise (no versioning, Object Lock not enabled).
    fn check_lock_promise(&self) -> Result<()> {
        Ok(())
    }
    /// The lock on an object, None when it has none (or the storage has no locks).
    fn lock_of(&self, key: &str) -> Result<Option<ObjectLock>> {
        let _ = key;
        Ok(None)
    }
    /// Extends an object's lock to `until`; never shortens one. Ok(false) when it
    /// already ran at least that long.
    fn extend_lock(&self, key: &str, until: DateTime<Utc>) -> Result<bool> {
        let _ = (key, until);
        anyhow::bail!("storage `{}` has no object locks", self.name())
    }
    /// In the `--deleted` view: a delete marker hides this key now.
    fn is_deleted(&self, key: &str) -> bool {
        let _ = key;
        false
    }
    /// Removes the delete markers hiding `keys` (versioned S3); returns how many keys
    /// are visible again.
    fn undelete(&self, keys: &[String]) -> Result<usize> {
        let _ = keys;
        anyhow::bail!(
            "storage `{}` keeps no deleted versions: undelete needs a versioned S3 bucket",
            self.name()
        )
    }
    /// The age recipients objects are sealed to (None: stored as they are).
    fn sealed_to(&self) -> Option<Vec<String>> {
        None
    }
    /// The stored bytes of an object this process wrote or read to the end, when
    /// they differ from what the caller wrote or read (sealed storages).
    fn stored_digest(&self, key: &str) -> Option<StoredDigest> {
        let _ = key;
        None
    }
}

/// Reads a whole (small) object.
pub fn read_all(s: &dyn Storage, key: &str) -> Result<Vec<u8>> {
    let mut r = s.open(key)?;
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<NotFound>().is_some())
}

/// Opens every storage a command needs from the config.
pub fn open(cfg: &crate::config::Config, name: &str) -> Result<Box<dyn Storage>> {
    open_as(cfg, name, false)
}

/// Opens a storage as it was before objects were deleted (versioned S3 only): the
/// read-only view `list --deleted`, `restore --deleted` and `undelete` use.
pub fn open_deleted(cfg: &crate::config::Config, name: &str) -> Result<Box<dyn Storage>> {
    open_as(cfg, name, true)
}

fn open_as(cfg: &crate::config::Config, name: &str, deleted: bool) -> Result<Box<dyn Storage>> {
    use crate::config::StorageConfig;
    use anyhow::Context;
    let sc = cfg.storage(name)?;
    let backend: Box<dyn Storage> = match sc {
        StorageConfig::Local { .. } if deleted => {
            return Err(crate::error::Fail::Usage(format!(
                "storage `{name}` is a local folder, which keeps nothing once deleted: --deleted and undelete read the old versions of a versioned S3 bucket"
            ))
            .into())
        }
        StorageConfig::Local { path, .. } => Box::new(local::LocalStorage::new(name, path)),
        StorageConfig::S3(c) => {
            // Validation refused a lock period that cannot be derived.
            let lock = c.object_lock.as_ref().and_then(|l| {
                Some(LockPolicy {
                    mode: l.mode.clone(),
                    period: cfg.lock_period(name).ok().flatten()?,
                })
            });
            let s = s3::S3Storage::new(name, c, lock)
                .with_context(|| format!("opening S3 storage `{name}`"))?;
            Box::new(if deleted { s.with_deleted() } else { s })
        }
    };
    Ok(match sc.encryption() {
        Some(enc) => Box::new(seal::Sealed::new(backend, enc)?),
        None => backend,
    })
}
