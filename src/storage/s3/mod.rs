//! S3 and S3-compatible object storage through aws-sdk-s3.
//!
//! This module owns the `S3Storage` type: the client built from the storage's config
//! (region, endpoint, checksums, retries, timeouts), the mapping of storage keys onto
//! the bucket's prefix, and the `Storage` calls that read, list and put small objects
//! and abort unfinished multipart uploads.
//! The pieces with rules of their own live beside it: `upload` (streaming multipart
//! uploads and their checks), `delete` (deletes that respect Object Lock) and `errors`
//! (how failed requests are worded and classified).

mod delete;
mod deleted;
mod errors;
mod lock;
mod upload;

use super::{
    AlreadyExists, DeleteReport, LockPolicy, NotFound, ObjectInfo, ObjectLock, ObjectWriter,
    PutMeta, Storage,
};
use crate::config::S3Config;
use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use base64::Engine as _;
use errors::{err_text, is_not_found, is_precondition_failed};
use md5::{Digest, Md5};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;
use tokio::runtime::Runtime;
use upload::S3Writer;

/// A bucket (and optional prefix) as a `Storage`. Calls block on a runtime of its own,
/// which also carries the concurrent part uploads of its writers.
pub struct S3Storage {
    name: String,
    cfg: S3Config,
    prefix: String,
    client: Client,
    rt: Arc<Runtime>,
    /// Whether the bucket has Object Lock enabled (asked once, on the first delete).
    object_lock: std::sync::OnceLock<bool>,
    /// `[storages.NAME.object_lock]`: the lock put on every object written.
    lock: Option<LockPolicy>,
    /// Set for the read-only "before the deletions" view (`--deleted`): what it
    /// learned of each key's newest data version.
    versions: Option<std::sync::Mutex<HashMap<String, deleted::Version>>>,
}

impl S3Storage {
    pub fn new(name: &str, cfg: &S3Config, lock: Option<LockPolicy>) -> Result<S3Storage> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("backup-s3")
            .build()
            .context("starting the S3 runtime")?;
        let client = rt.block_on(Self::client(cfg))?;
        let prefix = cfg
            .prefix
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string();
        Ok(S3Storage {
            name: name.to_string(),
            cfg: cfg.clone(),
            prefix,
            client,
            rt: Arc::new(rt),
            object_lock: std::sync::OnceLock::new(),
            lock,
            versions: None,
        })
    }

    async fn client(cfg: &S3Config) -> Result<Client> {
        use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        b = b.force_path_style(cfg.force_path_style);
        let when_required = match cfg.request_checksum_calculation.as_deref() {
            Some("when_required") => true,
            Some(_) => false,
            None => cfg.endpoint.is_some(),
        };
        if when_required {
            b = b
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        b = b.retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts.unwrap_or(5).max(1))
                .with_initial_backoff(std::time::Duration::from_millis(200)),
        );
        // A store that accepts and then never answers must fail the attempt (which the
        // retry policy may repeat), never hang the command.
        let t = std::time::Duration::from_secs(cfg.timeout_seconds.unwrap_or(60));
        b = b.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(t.min(std::time::Duration::from_secs(10)))
                .read_timeout(t)
                .build(),
        );
        Ok(Client::from_conf(b.build()))
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    fn strip(&self, full: &str) -> String {
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(full)
                .to_string()
        }
    }

    /// The version to read: the newest data version in the `--deleted` view.
    fn read_version(&self, key: &str) -> Result<Option<String>> {
        if self.versions.is_none() {
            return Ok(None);
        }
        match self.view_version(key)? {
            Some(v) => Ok(Some(v.id)),
            None => Err(NotFound(self.url(key)).into()),
        }
    }

    fn refuse_write(&self, key: &str) -> Result<()> {
        if self.versions.is_some() {
            bail!(
                "{}: the --deleted view of storage `{}` is read-only",
                self.url(key),
                self.name
            );
        }
        Ok(())
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.cfg.bucket, self.full_key(key))
    }

    fn tagging(&self, meta: &PutMeta) -> Option<String> {
        let mut all: BTreeMap<String, String> = self.cfg.tags.clone();
        all.extend(meta.tags.clone());
        if all.is_empty() {
            return None;
        }
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &all {
            ser.append_pair(k, v);
        }
        Some(ser.finish())
    }

    fn sse(&self) -> Option<ServerSideEncryption> {
        self.cfg
            .server_side_encryption
            .as_deref()
            .map(ServerSideEncryption::from)
    }
}

impl Storage for S3Storage {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        let mut s = format!("s3://{}", self.cfg.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        if let Some(ep) = &self.cfg.endpoint {
            s.push_str(&format!(" (endpoint {})", crate::redact::url(ep)));
        }
        s
    }

    fn create(&self, key: &str, meta: &PutMeta) -> Result<Box<dyn ObjectWriter>> {
        self.refuse_write(key)?;
        Ok(Box::new(S3Writer::new(self, key, meta)))
    }

    fn put_if_absent(&self, key: &str, data: &[u8], meta: &PutMeta) -> Result<ObjectInfo> {
        self.refuse_write(key)?;
        let digest: [u8; 16] = Md5::digest(data).into();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.cfg.kms_key_id.clone())
            .set_tagging(self.tagging(meta))
            .set_storage_class(self.cfg.storage_class.as_deref().map(StorageClass::from))
            .set_object_lock_mode(self.lock_mode())
            .set_object_lock_retain_until_date(self.lock_until())
            .body(ByteStream::from(data.to_vec()));
        for (k, v) in &meta.metadata {
            req = req.metadata(k, v);
        }
        match self.rt.block_on(req.send()) {
            Ok(_) => {}
            Err(e) if is_precondition_failed(&e) => {
                return Err(AlreadyExists(key.to_string()).into());
            }
            Err(e) => bail!("uploading {}: {}", self.url(key), err_text(&e)),
        }
        let head = self.head(key)?.ok_or_else(|| {
            anyhow!(
                "confirming {}: the object is not there after upload",
                self.url(key)
            )
        })?;
        if head.size != data.len() as u64 {
            bail!(
                "confirming {}: the store holds {} bytes but {} were sent",
                self.url(key),
                head.size,
                data.len()
            );
        }
        Ok(head)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let version = self.read_version(key)?;
        let out = self
            .rt
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.cfg.bucket)
                    .key(self.full_key(key))
                    .set_version_id(version)
                    .send(),
            )
            .map_err(|e| {
                if is_not_found(&e) {
                    anyhow::Error::new(NotFound(self.url(key)))
                } else {
                    anyhow!("downloading {}: {}", self.url(key), err_text(&e))
                }
            })?;
        let reader = out.body.into_async_read();
        let bridge = tokio_util::io::SyncIoBridge::new_with_handle(
            Box::pin(reader) as std::pin::Pin<Box<dyn tokio::io::AsyncBufRead + Send>>,
            self.rt.handle().clone(),
        );
        Ok(Box::new(KeepAlive {
            inner: bridge,
            _rt: self.rt.clone(),
        }))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let version = match self.read_version(key) {
            Ok(v) => v,
            Err(e) if super::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.cfg.bucket)
                .key(self.full_key(key))
                .set_version_id(version)
                .send(),
        ) {
            Ok(h) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                modified: h
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => bail!("reading {}: {}", self.url(key), err_text(&e)),
        }
    }

    fn metadata(&self, key: &str) -> Result<BTreeMap<String, String>> {
        match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.cfg.bucket)
                .key(self.full_key(key))
                .send(),
        ) {
            Ok(h) => Ok(h
                .metadata()
                .map(|m: &HashMap<String, String>| {
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                })
                .unwrap_or_default()),
            Err(e) if is_not_found(&e) => Err(NotFound(self.url(key)).into()),
            Err(e) => bail!("reading {}: {}", self.url(key), err_text(&e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if self.versions.is_some() {
            return self.view_list(prefix);
        }
        let full = self.full_key(prefix);
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.cfg.bucket)
            .prefix(full)
            .into_paginator()
            .send();
        self.rt.block_on(async {
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    anyhow!(
                        "listing s3://{}/{}: {}",
                        self.cfg.bucket,
                        self.full_key(prefix),
                        err_text(&e)
                    )
                })?;
                for o in page.contents() {
                    let Some(k) = o.key() else { continue };
                    out.push(ObjectInfo {
                        key: self.strip(k),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o
                            .last_modified()
                            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                    });
                }
            }
            Ok::<(), anyhow::Error>(())
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn abort_uploads(&self, prefix: &str) -> Result<usize> {
        let full = self.full_key(prefix);
        let out = self
            .rt
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.cfg.bucket)
                    .prefix(&full)
                    .send(),
            )
            .map_err(|e| {
                anyhow!(
                    "listing uploads under {}: {}",
                    self.url(prefix),
                    err_text(&e)
                )
            })?;
        let mut n = 0;
        for u in out.uploads() {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            if self
                .rt
                .block_on(
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.cfg.bucket)
                        .key(key)
                        .upload_id(id)
                        .send(),
                )
                .is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn delete(&self, keys: &[String]) -> Result<DeleteReport> {
        if let Some(k) = keys.first() {
            self.refuse_write(k)?;
        }
        self.delete_keys(keys)
    }

    fn is_deleted(&self, key: &str) -> bool {
        self.versions
            .as_ref()
            .and_then(|m| m.lock().unwrap().get(key).map(|v| v.deleted))
            .unwrap_or(false)
    }

    fn undelete(&self, keys: &[String]) -> Result<usize> {
        self.remove_delete_markers(keys)
    }

    fn lock_policy(&self) -> Option<LockPolicy> {
        self.lock.clone()
    }

    fn check_lock_promise(&self) -> Result<()> {
        self.check_lock()
    }

    fn lock_of(&self, key: &str) -> Result<Option<ObjectLock>> {
        self.object_lock_of(key)
    }

    fn extend_lock(&self, key: &str, until: chrono::DateTime<chrono::Utc>) -> Result<bool> {
        self.extend_object_lock(key, until)
    }
}

/// Keeps the runtime alive as long as a download stream is read.
struct KeepAlive<R> {
    inner: R,
    _rt: Arc<Runtime>,
}

impl<R: Read> Read for KeepAlive<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}
