//! `backup verify`: read every artifact back from storage and prove it whole.
//!
//! For each artifact: it exists with the manifest's size; its SHA-256 matches; a gzip
//! stream decompresses to the end with a good CRC and the recorded raw size; the
//! engine's own tools can read it (pg_dump's completion line for SQL, `pg_restore
//! --list` for custom archives). One pass over the bytes does all of it.

use crate::compress::Compression;
use crate::db::LogicalEngine;
use crate::manifest::{Artifact, DatabaseFacts, Manifest, VerifyReport};
use crate::storage::Storage;
use sha2::{Digest, Sha256};
use std::io::Read;

pub struct Hashing<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

struct CountingRead<R> {
    inner: R,
    bytes: u64,
}
impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Checks one artifact stream against the manifest's artifact entry and its database
/// facts (`expected`: the engine compares what it counts while reading); returns
/// (checks passed, problems found).
pub fn check_stream(
    stream: Box<dyn Read + Send>,
    art: &Artifact,
    engine: &dyn LogicalEngine,
    expected: &DatabaseFacts,
) -> (Vec<String>, Vec<String>) {
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    let mut hashing = Hashing {
        inner: stream,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let gz_result: Option<std::result::Result<(String, u64), String>>;
    {
        let c = Compression::from_manifest(&art.compression);
        if c != Compression::None {
            let dec = match c.decoder(std::io::BufReader::with_capacity(1 << 20, &mut hashing)) {
                Ok(d) => d,
                Err(e) => Box::new(FailingRead(format!("{e:#}"))),
            };
            let mut counted = CountingRead {
                inner: dec,
                bytes: 0,
            };
            let r = engine.check_named(&art.name, &mut counted, expected);
            // Drain whatever the check did not read, to finish the compressed stream.
            let mut sink = [0u8; 65536];
            let drained: std::io::Result<()> = loop {
                match counted.read(&mut sink) {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
            };
            gz_result = Some(match (r, drained) {
                (Ok(msg), Ok(())) => Ok((msg, counted.bytes)),
                (Err(e), _) => Err(format!("{e:#}")),
                (_, Err(e)) => Err(format!("{} stream is damaged: {e}", c.name())),
            });
        } else {
            let r = engine.check_named(&art.name, &mut hashing, expected);
            gz_result = Some(r.map(|m| (m, 0)).map_err(|e| format!("{e:#}")));
        }
    }
    // Read the rest (the engine check may stop early) so the checksum covers all.
    let mut rest = Vec::new();
    if let Err(e) = hashing.read_to_end(&mut rest) {
        problems.push(format!("{}: reading from storage failed: {e}", art.name));
    }
    let got = hex::encode(hashing.hasher.finalize());
    if hashing.bytes != art.size_bytes {
        problems.push(format!(
            "{}: size is {} bytes, the manifest says {}",
            art.name, hashing.bytes, art.size_bytes
        ));
    } else {
        checks.push(format!("{}: size {} bytes", art.name, art.size_bytes));
    }
    if got != art.sha256 {
        problems.push(format!(
            "{}: SHA-256 is {got}, the manifest says {}",
            art.name, art.sha256
        ));
    } else {
        checks.push(format!("{}: SHA-256 matches", art.name));
    }
    match gz_result {
        Some(Ok((msg, raw))) => {
            if Compression::from_manifest(&art.compression) != Compression::None {
                if raw != art.raw_size_bytes {
                    problems.push(format!(
                        "{}: decompresses to {raw} bytes, the manifest says {}",
                        art.name, art.raw_size_bytes
                    ));
                } else {
                    checks.push(format!(
                        "{}: {} stream whole ({raw} bytes)",
                        art.name, art.compression
                    ));
                }
            }
            checks.push(format!("{}: {msg}", art.name));
        }
        Some(Err(e)) => problems.push(format!("{}: {e}", art.name)),
        None => {}
    }
    (checks, problems)
}

/// For an encrypted copy, read to the end through `storage`: do the stored (encrypted)
/// bytes match what this storage's manifest recorded? None when not encrypted.
pub fn check_sealed(
    storage: &dyn Storage,
    m: &Manifest,
    artifact: &str,
) -> Option<std::result::Result<String, String>> {
    let sealing = m.encryption.as_ref()?;
    let key = crate::engine::catalog::artifact_key(&m.target, &m.id, artifact);
    let Some(want) = sealing.stored.get(artifact) else {
        return Some(Err(format!(
            "{artifact}: the manifest on `{}` records no encrypted copy of it",
            storage.name()
        )));
    };
    Some(match storage.stored_digest(&key) {
        Some(got) if &got == want => Ok(format!(
            "{artifact}: encrypted copy ({} bytes, sealed to {} recipient{}) matches its SHA-256",
            got.size_bytes,
            sealing.recipients.len(),
            if sealing.recipients.len() == 1 { "" } else { "s" }
        )),
        Some(got) => Err(format!(
            "{artifact}: the encrypted copy is {} bytes with SHA-256 {}, the manifest says {} bytes with {}",
            got.size_bytes, got.sha256, want.size_bytes, want.sha256
        )),
        None => Err(format!(
            "{artifact}: `{}` does not hold it encrypted although its manifest says so",
            storage.name()
        )),
    })
}

/// Does the manifest still hash to the checksum recorded when it was written? None
/// when none was recorded (backups from before it was, or stores without metadata).
pub fn check_manifest(storage: &dyn Storage, m: &Manifest) -> Option<Result<String, String>> {
    use crate::manifest::{MANIFEST_FILE, MANIFEST_SHA_META};
    let key = crate::engine::catalog::artifact_key(&m.target, &m.id, MANIFEST_FILE);
    let meta = storage.metadata(&key).ok()?;
    let want = meta.get(MANIFEST_SHA_META)?;
    let bytes = match crate::storage::read_all(storage, &key) {
        Ok(b) => b,
        Err(e) => return Some(Err(format!("{MANIFEST_FILE}: {e:#}"))),
    };
    let got = hex::encode(Sha256::digest(&bytes));
    Some(if &got == want {
        Ok(format!(
            "{MANIFEST_FILE}: SHA-256 matches the one recorded when it was written"
        ))
    } else {
        Err(format!(
            "{MANIFEST_FILE}: changed since it was written (SHA-256 {got}, recorded {want}): do not trust this copy; restore from another storage or take a new backup"
        ))
    })
}

pub fn verify_backup(
    storage: &dyn Storage,
    m: &Manifest,
    engine: &dyn LogicalEngine,
) -> VerifyReport {
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    let mut unreadable = false;
    match check_manifest(storage, m) {
        Some(Ok(c)) => checks.push(c),
        Some(Err(p)) => problems.push(p),
        None => {}
    }
    for art in &m.artifacts {
        let key = crate::engine::catalog::artifact_key(&m.target, &m.id, &art.name);
        match storage.open(&key) {
            Ok(stream) => {
                let (c, p) = check_stream(stream, art, engine, &m.database);
                checks.extend(c);
                problems.extend(p);
                match check_sealed(storage, m, &art.name) {
                    Some(Ok(c)) => checks.push(c),
                    Some(Err(p)) => problems.push(p),
                    None => {}
                }
            }
            Err(e) => {
                unreadable |= crate::error::exit_code(&e) == 2;
                problems.push(format!("{}: {e:#}", art.name));
            }
        }
    }
    // Artifacts a backup references instead of storing again live in the backups it
    // depends on: a restore needs those on the same storage.
    for dep in &m.depends_on {
        let key =
            crate::engine::catalog::artifact_key(&m.target, dep, crate::manifest::MANIFEST_FILE);
        match storage.head(&key) {
            Ok(Some(_)) => checks.push(format!("depends on {dep}: present")),
            Ok(None) => problems.push(format!(
                "depends on backup {dep}, which is missing on `{}`: what it references cannot be restored",
                storage.name()
            )),
            Err(e) => problems.push(format!("depends on {dep}: {e:#}")),
        }
    }
    VerifyReport {
        unreadable,
        target: m.target.clone(),
        id: m.id.clone(),
        storage: storage.name().to_string(),
        ok: problems.is_empty(),
        checks,
        problems,
    }
}

/// A reader that only fails (a decompressor that could not start).
struct FailingRead(String);

impl Read for FailingRead {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.clone()))
    }
}
