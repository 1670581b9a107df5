//! `[storages.NAME]`: a local folder or an S3 bucket, and what is checked about them.

use super::retention::Retention;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    Local {
        path: PathBuf,
        #[serde(default)]
        retention: Option<Retention>,
        #[serde(default)]
        encryption: Option<EncryptionConfig>,
    },
    S3(Box<S3Config>),
}

impl StorageConfig {
    pub fn retention(&self) -> Option<&Retention> {
        match self {
            StorageConfig::Local { retention, .. } => retention.as_ref(),
            StorageConfig::S3(s3) => s3.retention.as_ref(),
        }
    }

    pub fn encryption(&self) -> Option<&EncryptionConfig> {
        match self {
            StorageConfig::Local { encryption, .. } => encryption.as_ref(),
            StorageConfig::S3(s3) => s3.encryption.as_ref(),
        }
    }

    pub(super) fn encryption_mut(&mut self) -> Option<&mut EncryptionConfig> {
        match self {
            StorageConfig::Local { encryption, .. } => encryption.as_mut(),
            StorageConfig::S3(s3) => s3.encryption.as_mut(),
        }
    }
}

/// `[storages.NAME.encryption]`: client-side encryption with age. Everything stored
/// there except manifests is sealed to these recipients; reading needs an identity.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// X25519 recipients (`age1...`), as printed by `age-keygen -y`.
    #[serde(default)]
    pub age_recipients: Vec<String>,
    /// A file of recipients, one per line (`#` comments allowed), like `age -R`.
    #[serde(default)]
    pub age_recipients_file: Option<PathBuf>,
    /// The identity file (`AGE-SECRET-KEY-1...`) used to read; `BACKUP_AGE_IDENTITY`
    /// (a file path) overrides it. Only restore, verify, test-restore and wal-fetch
    /// need it, so backup hosts can hold recipients alone.
    #[serde(default)]
    pub age_identity_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms` (with `kms_key_id`).
    #[serde(default)]
    pub server_side_encryption: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// `when_required` or `when_supported`. Default: `when_required` when `endpoint`
    /// is set (S3-compatible stores often reject the SDK's default checksums),
    /// `when_supported` otherwise.
    #[serde(default)]
    pub request_checksum_calculation: Option<String>,
    /// Named profile from ~/.aws/config (default: the standard chain).
    #[serde(default)]
    pub profile: Option<String>,
    /// Multipart part size in MiB (5..=5120, default 8; grows for very large objects).
    #[serde(default)]
    pub part_size_mb: Option<u64>,
    /// Parts uploaded at once (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Attempts per request, with backoff on throttling and 5xx (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How long a request may wait for the store to answer (connecting, or between
    /// bytes of a response) before the attempt fails and is retried (default 60): a
    /// stalled endpoint fails the command instead of hanging it.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Extra object tags added to every object.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub retention: Option<Retention>,
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
    /// `[storages.NAME.object_lock]`: lock every object at upload (S3 Object Lock).
    #[serde(default)]
    pub object_lock: Option<ObjectLockConfig>,
}

/// `[storages.NAME.object_lock]`: `mode` with either `days` or `until = "retention"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// `GOVERNANCE` (a privileged role may lift it) or `COMPLIANCE` (nobody may).
    pub mode: String,
    #[serde(default)]
    pub days: Option<u32>,
    /// `retention`: the longest time the retention policy could keep a backup.
    #[serde(default)]
    pub until: Option<String>,
}

impl StorageConfig {
    /// Checks the keys; an error names the key (under `storages.NAME.`) and the fix.
    pub(super) fn validate(&self) -> std::result::Result<(), (String, String)> {
        let bad = |key: &str, msg: String| (key.to_string(), msg);
        if let Some(enc) = self.encryption() {
            // A storage that should encrypt must never write plaintext: the
            // recipients are checked before any command stores a byte.
            crate::storage::seal::recipients(enc)
                .map_err(|(key, msg)| bad(&format!("encryption.{key}"), msg))?;
        }
        if let StorageConfig::S3(s3) = self {
            if s3.bucket.trim().is_empty() {
                return Err(bad("bucket", "must not be empty".into()));
            }
            if let Some(ep) = &s3.endpoint {
                let u = url::Url::parse(ep).map_err(|e| {
                    bad(
                        "endpoint",
                        format!(
                            "`{}` is not a URL ({e}); write e.g. http://127.0.0.1:9000",
                            crate::redact::url(ep)
                        ),
                    )
                })?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(bad(
                        "endpoint",
                        "must start with http:// or https://".into(),
                    ));
                }
            }
            if let Some(sse) = &s3.server_side_encryption {
                if sse != "AES256" && sse != "aws:kms" {
                    return Err(bad(
                        "server_side_encryption",
                        format!("`{sse}` is not AES256 or aws:kms"),
                    ));
                }
            }
            if let Some(c) = &s3.request_checksum_calculation {
                if c != "when_required" && c != "when_supported" {
                    return Err(bad(
                        "request_checksum_calculation",
                        format!("`{c}` is not when_required or when_supported"),
                    ));
                }
            }
            if let Some(p) = s3.part_size_mb {
                if !(5..=5120).contains(&p) {
                    return Err(bad(
                        "part_size_mb",
                        format!("{p} is outside 5..=5120 (S3's part size limits)"),
                    ));
                }
            }
            if let Some(l) = &s3.object_lock {
                if l.mode != "GOVERNANCE" && l.mode != "COMPLIANCE" {
                    return Err(bad(
                        "object_lock.mode",
                        format!("`{}` is not GOVERNANCE or COMPLIANCE", l.mode),
                    ));
                }
                match (l.days, l.until.as_deref()) {
                    (Some(0), _) => {
                        return Err(bad("object_lock.days", "must be at least 1".into()))
                    }
                    (Some(_), None) | (None, Some("retention")) => {}
                    (None, Some(u)) => {
                        return Err(bad(
                            "object_lock.until",
                            format!("`{u}` is not \"retention\" (or set days = N instead)"),
                        ))
                    }
                    _ => {
                        return Err(bad(
                            "object_lock",
                            "needs exactly one of days = N or until = \"retention\"".into(),
                        ))
                    }
                }
            }
            if s3.timeout_seconds == Some(0) {
                return Err(bad("timeout_seconds", "must be at least 1".into()));
            }
            if s3.concurrency == Some(0) {
                return Err(bad("concurrency", "must be at least 1".into()));
            }
        }
        Ok(())
    }
}
