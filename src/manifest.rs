//! The backup manifest: the one file that makes a backup real.
//!
//! A backup folder without `manifest.json` is incomplete and is never listed as good
//! or restored. The manifest is written last, after every artifact has been stored
//! and confirmed, so its presence is the commit point of a backup.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_FILE: &str = "manifest.json";
/// Object metadata key (S3 user metadata; a side file locally) holding the SHA-256 of
/// the manifest as written, so `verify` detects a manifest edited afterwards.
pub const MANIFEST_SHA_META: &str = "manifest-sha256";

/// `meta` plus the manifest checksum, for writing manifest `bytes`.
pub fn manifest_meta(meta: &crate::storage::PutMeta, bytes: &[u8]) -> crate::storage::PutMeta {
    use sha2::Digest;
    let mut m = meta.clone();
    m.metadata.insert(
        MANIFEST_SHA_META.into(),
        hex::encode(sha2::Sha256::digest(bytes)),
    );
    m
}
pub const MANIFEST_VERSION: u32 = 1;

/// Logical dump or physical base backup (plus WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Logical,
    Physical,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Logical => "logical",
            Kind::Physical => "physical",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name inside the backup folder, e.g. `dump.sql.gz`.
    pub name: String,
    /// Bytes as stored (after compression).
    pub size_bytes: u64,
    /// SHA-256 of the stored bytes, lower-case hex.
    pub sha256: String,
    /// `gzip` or `none`.
    pub compression: String,
    /// Bytes the engine produced before compression.
    pub raw_size_bytes: u64,
    /// What the artifact is: `pg_dump plain`, `pg_dump custom`, `pg_basebackup tar`...
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFact {
    pub schema: String,
    pub name: String,
    /// Exact row count taken in the same snapshot as the dump (None when counting was off).
    pub rows: Option<u64>,
}

/// What the engine knew about the database when it took the backup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableFact>,
    /// Engine-specific facts (snapshot id, LSNs, system identifier...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// WAL range a physical backup needs (PostgreSQL). Present only for physical backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_segment: String,
    pub stop_segment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub id: String,
    pub target: String,
    pub engine: String,
    pub kind: Kind,
    /// `plain`, `custom`, `tar`...
    pub format: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Versions: this tool, the native tools used and the server.
    pub versions: BTreeMap<String, String>,
    pub artifacts: Vec<Artifact>,
    pub database: DatabaseFacts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalRange>,
    /// Ids of backups this one needs to be restorable (e.g. a base backup for an
    /// incremental). Retention never deletes a backup that a kept backup depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Host that ran the backup.
    #[serde(default)]
    pub host: String,
    /// Client-side encryption of this storage's copy (None: stored as written).
    /// Each storage's manifest describes its own copy: recipients differ per storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Sealing>,
}

/// How a storage's copy of a backup is sealed: the recipients (public keys, never an
/// identity) and, per artifact, the stored (encrypted) bytes. The artifacts'
/// own `sha256` stays the plaintext's, so `verify` checks both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sealing {
    /// `age`.
    pub method: String,
    pub recipients: Vec<String>,
    /// Artifact name -> the encrypted object as stored (`NAME.age`).
    pub stored: BTreeMap<String, crate::storage::StoredDigest>,
}

impl Manifest {
    /// This manifest as written to storage `s`: with the sealing of its copy there.
    pub fn for_storage(&self, s: &dyn crate::storage::Storage) -> Manifest {
        let mut m = self.clone();
        m.encryption = s.sealed_to().map(|recipients| Sealing {
            method: "age".into(),
            recipients,
            stored: self
                .artifacts
                .iter()
                .filter_map(|a| {
                    let key = format!("{}/{}/{}", self.target, self.id, a.name);
                    Some((a.name.clone(), s.stored_digest(&key)?))
                })
                .collect(),
        });
        m
    }

    /// `full`, `diff` or `incr` for backups that can be differential or incremental
    /// (`database.extra.backup_type`); None for the others, which are all full.
    pub fn backup_type(&self) -> Option<&str> {
        self.database
            .extra
            .get("backup_type")
            .and_then(|v| v.as_str())
    }

    /// Saturating: found by fuzzing, sizes near u64::MAX in a damaged or hand-edited
    /// manifest overflowed the sum (a panic in debug builds, a wrong total in release).
    pub fn size_bytes(&self) -> u64 {
        self.artifacts
            .iter()
            .fold(0u64, |n, a| n.saturating_add(a.size_bytes))
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self).context("serialising manifest")?;
        v.push(b'\n');
        Ok(v)
    }

    pub fn from_json(bytes: &[u8], what: &str) -> Result<Manifest> {
        let m: Manifest =
            serde_json::from_slice(bytes).with_context(|| format!("parsing manifest {what}"))?;
        if m.manifest_version > MANIFEST_VERSION {
            anyhow::bail!(
                "manifest {what} has version {} but this backup tool reads up to {}; upgrade the tool",
                m.manifest_version,
                MANIFEST_VERSION
            );
        }
        Ok(m)
    }
}

/// Backup ids sort by time: `20261124T020000Z`.
pub fn backup_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Parses the time encoded in a backup id (the part before any suffix).
pub fn parse_backup_id(id: &str) -> Option<DateTime<Utc>> {
    let head = id.get(..16)?;
    chrono::NaiveDateTime::parse_from_str(head, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| n.and_utc())
}

/// What `backup run` produced: the manifest and where it is stored.
#[derive(Debug)]
pub struct RunOutcome {
    pub manifest: Manifest,
    pub stored_on: Vec<String>,
    /// Storages that failed, with the reason; the run fails when any did.
    pub failed: Vec<(String, String)>,
}

/// What `backup verify` found about one backup (or a log archive) on one storage.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub target: String,
    pub id: String,
    pub storage: String,
    pub ok: bool,
    pub checks: Vec<String>,
    pub problems: Vec<String>,
    /// The copy could not be read for a reason the operator must fix first (no or
    /// the wrong age identity): exit 2, not a damaged backup.
    #[serde(skip)]
    pub unreadable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let a = Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap();
        let b = Utc.with_ymd_and_hms(2026, 11, 24, 14, 0, 0).unwrap();
        assert_eq!(backup_id(a), "20261124T020000Z");
        assert!(backup_id(a) < backup_id(b));
        assert_eq!(parse_backup_id("20261124T020000Z"), Some(a));
        assert_eq!(parse_backup_id("garbage"), None);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/manifest.rs): two artifacts of u64::MAX
    /// bytes in a hand-edited manifest overflowed `size_bytes`.
    #[test]
    fn fuzz_artifact_sizes_near_u64_max_do_not_overflow() {
        let art = r#"{"name": "a", "size_bytes": 18446744073709551615, "sha256": "",
            "compression": "gzip", "raw_size_bytes": 0, "content": ""}"#;
        let text = format!(
            r#"{{"manifest_version": 1, "id": "20261124T020000Z", "target": "t", "engine": "redis",
            "kind": "logical", "format": "rdb", "started_at": "2026-11-24T02:00:00Z",
            "finished_at": "2026-11-24T02:00:00Z", "duration_seconds": 1, "versions": {{}},
            "artifacts": [{art}, {art}], "database": {{}}}}"#
        );
        let m = Manifest::from_json(text.as_bytes(), "huge").unwrap();
        assert_eq!(m.size_bytes(), u64::MAX);
    }
}
