//! Streaming uploads: the `ObjectWriter` that `S3Storage::create` hands out.
//!
//! Uploads stream as multipart uploads: the writer fills one part at a time and hands
//! full parts to the async runtime, which uploads up to `concurrency` of them at once.
//! Memory stays bounded by (concurrency + 1) parts whatever the object's size; the part
//! size grows for very large objects (S3 allows 10,000 parts) and the concurrency shrinks
//! with it so the bytes in flight stay within the same budget. An object that fits in
//! the first part is sent as one PUT instead; the multipart upload is only started when
//! the first part is full.
//!
//! Every part carries Content-MD5 (the store rejects a part damaged in transit, and
//! stores that demand Content-MD5 are satisfied); after completion the object's size
//! and ETag (the MD5 of the part MD5s for multipart objects) are compared with what was
//! sent before the upload counts. With SSE-KMS the ETag is not an MD5 and only the size
//! is compared. A writer that fails, is aborted or is dropped unfinished aborts its
//! multipart upload.

use super::errors::{err_text, is_unparsed_success};
use super::S3Storage;
use crate::storage::{ObjectInfo, ObjectWriter, PutMeta};
use anyhow::{anyhow, bail, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::primitives::DateTime as SdkTime;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use md5::{Digest, Md5};
use std::io::Write;
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const MIB: usize = 1024 * 1024;
const MAX_PART: usize = 512 * MIB;

fn clean_etag(e: Option<&str>) -> String {
    e.unwrap_or("").trim_matches('"').to_ascii_lowercase()
}

pub(super) struct S3Writer {
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
    /// Object Lock mode and retain-until date, fixed when the writer is made.
    lock: (Option<ObjectLockMode>, Option<SdkTime>),
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
    pub(super) fn new(s: &S3Storage, key: &str, meta: &PutMeta) -> S3Writer {
        let base = s.cfg.part_size_mb.unwrap_or(8) as usize * MIB;
        let conc = s.cfg.concurrency.unwrap_or(4).max(1);
        S3Writer {
            client: s.client.clone(),
            rt: s.rt.clone(),
            bucket: s.cfg.bucket.clone(),
            key: s.full_key(key),
            rel_key: key.to_string(),
            url: s.url(key),
            meta: meta.clone(),
            tagging: s.tagging(meta),
            sse: s.sse(),
            kms_key: s.cfg.kms_key_id.clone(),
            storage_class: s.cfg.storage_class.clone(),
            lock: (s.lock_mode(), s.lock_until()),
            // With SSE-KMS the ETag is not the MD5 of the data.
            etag_is_md5: s.cfg.server_side_encryption.as_deref() != Some("aws:kms"),
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
        }
    }

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
            .set_storage_class(self.storage_class.as_deref().map(StorageClass::from))
            .set_object_lock_mode(self.lock.0.clone())
            .set_object_lock_retain_until_date(self.lock.1);
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
            .set_object_lock_mode(self.lock.0.clone())
            .set_object_lock_retain_until_date(self.lock.1)
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
                    // A store that answers 200 with a body the SDK cannot parse did
                    // complete the upload; the HEAD below checks size and ETag either way.
                    if !is_unparsed_success(&e) {
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
