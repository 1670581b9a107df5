//! S3 and S3-compatible object storage through aws-sdk-s3.
//!
//! Uploads stream as multipart uploads: the writer fills one part at a time and hands
//! full parts to the async runtime, which uploads up to `concurrency` of them at once.
//! Memory stays bounded by (concurrency + 1) parts whatever the object's size; the part
//! size grows for very large objects (S3 allows 10,000 parts) and the concurrency shrinks
//! with it so the bytes in flight stay within the same budget.
//!
//! Every part carries Content-MD5 (the store rejects a part damaged in transit, and
//! stores that demand Content-MD5 are satisfied); after completion the object's size
//! and ETag (the MD5 of the part MD5s for multipart objects) are compared with what was
//! sent before the upload counts. With SSE-KMS the ETag is not an MD5 and only the size
//! is compared.

use super::{AlreadyExists, DeleteReport, NotFound, ObjectInfo, ObjectWriter, PutMeta, Storage};
use crate::config::S3Config;
use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
    StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use md5::{Digest, Md5};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const MIB: usize = 1024 * 1024;
const MAX_PART: usize = 512 * MIB;

pub struct S3Storage {
    name: String,
    cfg: S3Config,
    prefix: String,
    client: Client,
    rt: Arc<Runtime>,
    /// Whether the bucket has Object Lock enabled (asked once, on the first delete).
    object_lock: std::sync::OnceLock<bool>,
}

fn err_text<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if let Some(code) = e.as_service_error().and_then(|s| s.code()) {
        let msg = e.as_service_error().and_then(|s| s.message()).unwrap_or("");
        return format!("{code}: {msg}")
            .trim_end_matches([':', ' '])
            .to_string();
    }
    if let SdkError::ServiceError(se) = e {
        let raw = se.raw();
        if let Some(c) = raw_status(raw) {
            return format!("HTTP {c}");
        }
    }
    format!("{}", DisplayErrorContext(e))
}

fn raw_status<R: std::fmt::Debug>(raw: &R) -> Option<u16> {
    // The raw response type is opaque here; its Debug output carries the status, as
    // `status: StatusCode(404)` (or `status: 404`).
    let d = format!("{raw:?}");
    let i = d.find("status: ")?;
    let rest = &d[i + 8..];
    let rest = rest.strip_prefix("StatusCode(").unwrap_or(rest);
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

fn is_not_found<E, R>(e: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    if let Some(se) = e.as_service_error() {
        if matches!(se.code(), Some("NoSuchKey") | Some("NotFound")) {
            return true;
        }
    }
    if let SdkError::ServiceError(se) = e {
        return raw_status(se.raw()) == Some(404);
    }
    false
}

impl S3Storage {
    pub fn new(name: &str, cfg: &S3Config) -> Result<S3Storage> {
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
        })
    }

    /// On an Object Lock bucket (always versioned) a plain delete succeeds by adding a
    /// delete marker while the locked data stays: the backup would vanish from listings
    /// yet keep costing, and count as deleted. So on such buckets each key is checked
    /// first, and held keys are reported as retained instead of deleted.
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
        b = b.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
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

    fn etag_is_md5(&self) -> bool {
        self.cfg.server_side_encryption.as_deref() != Some("aws:kms")
    }

    fn part_size(&self) -> usize {
        self.cfg.part_size_mb.unwrap_or(8) as usize * MIB
    }
}

fn clean_etag(e: Option<&str>) -> String {
    e.unwrap_or("").trim_matches('"').to_ascii_lowercase()
}

struct S3Writer {
    client: Client,
    rt: Arc<Runtime>,
    bucket: String,
    key: String,
    rel_key: String,
    url: String,
    meta: PutMeta,
    tagging: Option<String>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    storage_class: Option<String>,
    etag_is_md5: bool,
    base_part: usize,
    budget: usize,
    buf: Vec<u8>,
    upload_id: Option<String>,
    next_part: i32,
    inflight: JoinSet<Result<(i32, String)>>,
    done: Vec<CompletedPart>,
    part_md5s: Vec<[u8; 16]>,
    total: u64,
    failed: Option<String>,
}

impl S3Writer {
    fn current_part_size(&self) -> usize {
        // 8 MiB parts for the first 1000, then doubling every 1000 parts: 10,000 parts
        // then cover far more than the 5 TiB S3 object limit.
        let doublings = (self.next_part as usize - 1) / 1000;
        (self.base_part << doublings.min(6)).min(MAX_PART)
    }

    fn max_inflight(&self) -> usize {
        (self.budget / self.current_part_size()).max(1)
    }

    fn start_upload(&mut self) -> Result<()> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_tagging(self.tagging.clone())
            .set_storage_class(self.storage_class.as_deref().map(StorageClass::from));
        for (k, v) in &self.meta.metadata {
            req = req.metadata(k, v);
        }
        let out = self.rt.block_on(req.send()).map_err(|e| {
            anyhow!(
                "starting multipart upload of {}: {}",
                self.url,
                err_text(&e)
            )
        })?;
        self.upload_id = Some(
            out.upload_id()
                .ok_or_else(|| anyhow!("{}: the store returned no upload id", self.url))?
                .to_string(),
        );
        Ok(())
    }

    fn reap_one(&mut self) -> Result<()> {
        if let Some(res) = self.rt.block_on(self.inflight.join_next()) {
            let (n, etag) = res.map_err(|e| anyhow!("upload task failed: {e}"))??;
            self.done
                .push(CompletedPart::builder().part_number(n).e_tag(etag).build());
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<()> {
        if self.upload_id.is_none() {
            self.start_upload()?;
        }
        while self.inflight.len() >= self.max_inflight() {
            self.reap_one()?;
        }
        let size = self.current_part_size();
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(size));
        let digest: [u8; 16] = Md5::digest(&data).into();
        self.part_md5s.push(digest);
        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let n = self.next_part;
        self.next_part += 1;
        let client = self.client.clone();
        let (bucket, key, upload_id, url) = (
            self.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone().unwrap(),
            self.url.clone(),
        );
        let expect = hex::encode(digest);
        let check_md5 = self.etag_is_md5;
        self.inflight.spawn_on(
            async move {
                let body = ByteStream::from(bytes::Bytes::from(data));
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(n)
                    .content_md5(md5_b64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| anyhow!("uploading part {n} of {url}: {}", err_text(&e)))?;
                let etag = out.e_tag().unwrap_or_default().to_string();
                if check_md5 && clean_etag(Some(&etag)) != expect {
                    bail!("part {n} of {url}: the store's ETag {etag} is not the MD5 of what was sent");
                }
                Ok((n, etag))
            },
            self.rt.handle(),
        );
        Ok(())
    }

    fn abort_inner(&mut self) {
        self.inflight.abort_all();
        if let Some(id) = self.upload_id.take() {
            let _ = self.rt.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(id)
                    .send(),
            );
        }
    }

    fn put_single(&mut self) -> Result<String> {
        let data = std::mem::take(&mut self.buf);
        let digest: [u8; 16] = Md5::digest(&data).into();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_tagging(self.tagging.clone())
            .set_storage_class(self.storage_class.as_deref().map(StorageClass::from))
            .body(ByteStream::from(bytes::Bytes::from(data)));
        for (k, v) in &self.meta.metadata {
            req = req.metadata(k, v);
        }
        self.rt
            .block_on(req.send())
            .map_err(|e| anyhow!("uploading {}: {}", self.url, err_text(&e)))?;
        Ok(hex::encode(digest))
    }
}

impl Write for S3Writer {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(std::io::Error::other(f.clone()));
        }
        let n = data.len();
        while !data.is_empty() {
            let room = self.current_part_size() - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= self.current_part_size() {
                if let Err(e) = self.send_part() {
                    let msg = format!("{e:#}");
                    self.failed = Some(msg.clone());
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        self.total += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<ObjectInfo> {
        if let Some(f) = self.failed.clone() {
            self.abort_inner();
            bail!("{f}");
        }
        let expected_etag = if self.upload_id.is_none() {
            self.put_single()?
        } else {
            let res: Result<String> = (|| {
                if !self.buf.is_empty() {
                    self.send_part()?;
                }
                while !self.inflight.is_empty() {
                    self.reap_one()?;
                }
                let mut parts = std::mem::take(&mut self.done);
                parts.sort_by_key(|p| p.part_number());
                let count = parts.len();
                let completed = self.rt.block_on(
                    self.client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key)
                        .upload_id(self.upload_id.clone().unwrap())
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts))
                                .build(),
                        )
                        .send(),
                );
                if let Err(e) = completed {
                    // A store that answers 200 with a body the SDK cannot parse (moto 5
                    // names its root element CompleteMultipartUploadResponse) did complete
                    // the upload; the HEAD below checks size and ETag either way.
                    let answered_ok = e.raw_response().and_then(raw_status) == Some(200)
                        && e.as_service_error().and_then(|s| s.code()).is_none();
                    if !answered_ok {
                        bail!("completing upload of {}: {}", self.url, err_text(&e));
                    }
                }
                let mut all = Md5::new();
                for d in &self.part_md5s {
                    all.update(d);
                }
                Ok(format!("{}-{}", hex::encode(all.finalize()), count))
            })();
            match res {
                Ok(e) => {
                    self.upload_id = None;
                    e
                }
                Err(e) => {
                    self.abort_inner();
                    return Err(e);
                }
            }
        };
        // Confirm what the store now holds before the upload counts.
        let head = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .send(),
            )
            .map_err(|e| anyhow!("confirming {}: {}", self.url, err_text(&e)))?;
        let size = head.content_length().unwrap_or(-1);
        if size != self.total as i64 {
            bail!(
                "confirming {}: the store holds {} bytes but {} were sent",
                self.url,
                size,
                self.total
            );
        }
        if self.etag_is_md5 {
            let got = clean_etag(head.e_tag());
            if got != expected_etag {
                bail!(
                    "confirming {}: ETag {} differs from the MD5 of what was sent ({})",
                    self.url,
                    got,
                    expected_etag
                );
            }
        }
        Ok(ObjectInfo {
            key: self.rel_key.clone(),
            size: self.total,
            modified: Some(chrono::Utc::now()),
        })
    }

    fn abort(mut self: Box<Self>) {
        self.abort_inner();
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.upload_id.is_some() {
            self.abort_inner();
        }
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
        let base = self.part_size();
        let conc = self.cfg.concurrency.unwrap_or(4).max(1);
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            rt: self.rt.clone(),
            bucket: self.cfg.bucket.clone(),
            key: self.full_key(key),
            rel_key: key.to_string(),
            url: self.url(key),
            meta: meta.clone(),
            tagging: self.tagging(meta),
            sse: self.sse(),
            kms_key: self.cfg.kms_key_id.clone(),
            storage_class: self.cfg.storage_class.clone(),
            etag_is_md5: self.etag_is_md5(),
            base_part: base,
            budget: base * conc,
            buf: Vec::with_capacity(base),
            upload_id: None,
            next_part: 1,
            inflight: JoinSet::new(),
            done: Vec::new(),
            part_md5s: Vec::new(),
            total: 0,
            failed: None,
        }))
    }

    fn put_if_absent(&self, key: &str, data: &[u8], meta: &PutMeta) -> Result<ObjectInfo> {
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
            .body(ByteStream::from(data.to_vec()));
        for (k, v) in &meta.metadata {
            req = req.metadata(k, v);
        }
        match self.rt.block_on(req.send()) {
            Ok(_) => {}
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                let status = match &e {
                    SdkError::ServiceError(se) => raw_status(se.raw()),
                    _ => None,
                };
                if code == "PreconditionFailed" || status == Some(412) {
                    return Err(AlreadyExists(key.to_string()).into());
                }
                bail!("uploading {}: {}", self.url(key), err_text(&e));
            }
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
        let out = self
            .rt
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.cfg.bucket)
                    .key(self.full_key(key))
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
        match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.cfg.bucket)
                .key(self.full_key(key))
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
