//! Client-side encryption with age, as a storage wrapper.
//!
//! A storage with `[storages.NAME.encryption]` is opened as a [`Sealed`] wrapper
//! around the real backend: every object it stores, except manifests, is an age file
//! sealed to the configured X25519 recipients and stored under its key plus `.age`
//! (`dump.sql.gz.age`, `000000010000000000000003.gz.age`), so `age -d -i key.txt`
//! reads it without this tool. Wrapping the storage rather than the pipeline means
//! every engine, `wal-push` and every later artifact kind is encrypted without
//! knowing about it, and a storage configured to encrypt has no code path that
//! writes plaintext. Encryption is the last step before the backend (after
//! compression), streamed in age's 64 KiB chunks: memory stays bounded.
//!
//! Reads decrypt with the identity from `BACKUP_AGE_IDENTITY` or `age_identity_file`.
//! Objects stored before encryption was turned on (no `.age` object) are still read
//! as they are. Manifests stay plaintext: they hold no user data, and `list` and
//! retention must work on hosts that hold recipients only.
//!
//! The wrapper remembers the size and SHA-256 of the stored (encrypted) bytes of every
//! object it wrote or read to the end ([`Storage::stored_digest`]): the pipeline puts
//! them in that storage's manifest, `verify` compares them.

use super::{DeleteReport, ObjectInfo, ObjectWriter, PutMeta, Storage, StoredDigest};
use crate::config::EncryptionConfig;
use crate::error::Fail;
use crate::manifest::MANIFEST_FILE;
use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The suffix of an encrypted object's key.
pub const SUFFIX: &str = ".age";

/// The environment variable naming an identity file (overrides `age_identity_file`).
pub const IDENTITY_ENV: &str = "BACKUP_AGE_IDENTITY";

/// Parses the configured recipients (the list and the file). Errors are
/// (key, message) for the config's one-line error.
pub fn recipients(
    cfg: &EncryptionConfig,
) -> std::result::Result<Vec<age::x25519::Recipient>, (String, String)> {
    let mut out = Vec::new();
    for r in &cfg.age_recipients {
        out.push(parse_recipient(r).map_err(|m| ("age_recipients".to_string(), m))?);
    }
    if let Some(f) = &cfg.age_recipients_file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            (
                "age_recipients_file".to_string(),
                format!("cannot read {}: {e}", f.display()),
            )
        })?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(parse_recipient(line).map_err(|m| {
                (
                    "age_recipients_file".to_string(),
                    format!("{}: {m}", f.display()),
                )
            })?);
        }
    }
    if out.is_empty() {
        return Err((
            "age_recipients".into(),
            "no recipient given; add age_recipients = [\"age1...\"] (from `age-keygen -y key.txt`) \
             or age_recipients_file"
                .into(),
        ));
    }
    Ok(out)
}

fn parse_recipient(r: &str) -> std::result::Result<age::x25519::Recipient, String> {
    if r.starts_with("AGE-SECRET-KEY-") {
        // Never echo it: it is a secret key in the wrong place.
        return Err("holds a secret key (AGE-SECRET-KEY-...), not a recipient; use the public \
                    key printed by `age-keygen -y key.txt`, and keep the secret key out of the config"
            .into());
    }
    let shown: String = r.chars().take(12).collect();
    age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
        format!("`{shown}...` is not an age X25519 recipient ({e}); it should look like age1... (from `age-keygen -y`)")
    })
}

/// Whether `key` is stored encrypted: everything but manifests.
fn sealed_key(key: &str) -> bool {
    !key.ends_with(MANIFEST_FILE)
}

fn stored_key(key: &str) -> String {
    if sealed_key(key) {
        format!("{key}{SUFFIX}")
    } else {
        key.to_string()
    }
}

/// The key callers know for a stored key (`x.gz.age` -> `x.gz`).
fn logical_key(stored: &str) -> String {
    stored.strip_suffix(SUFFIX).unwrap_or(stored).to_string()
}

type Digests = Arc<Mutex<HashMap<String, StoredDigest>>>;

/// A storage whose objects are sealed with age.
pub struct Sealed {
    inner: Box<dyn Storage>,
    recipients: Vec<age::x25519::Recipient>,
    identity_file: Option<PathBuf>,
    digests: Digests,
}

impl Sealed {
    pub fn new(inner: Box<dyn Storage>, cfg: &EncryptionConfig) -> Result<Sealed> {
        let recipients = recipients(cfg).map_err(|(key, msg)| {
            Fail::Config(format!("storages.{}.encryption.{key}: {msg}", inner.name()))
        })?;
        let identity_file = std::env::var_os(IDENTITY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| cfg.age_identity_file.clone());
        Ok(Sealed {
            inner,
            recipients,
            identity_file,
            digests: Arc::default(),
        })
    }

    fn encryptor(&self) -> Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| anyhow!("age: {e}"))
    }

    fn identities(&self, key: &str) -> Result<Vec<Box<dyn age::Identity>>> {
        let Some(path) = &self.identity_file else {
            return Err(Fail::Usage(format!(
                "{key} on storage `{}` is age-encrypted and no identity is configured; set {IDENTITY_ENV}=PATH \
                 or age_identity_file under [storages.{}.encryption]",
                self.inner.name(),
                self.inner.name()
            ))
            .into());
        };
        let file = age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
            Fail::Usage(format!(
                "cannot read the age identity file {} ({e}); it should hold AGE-SECRET-KEY-1... lines \
                 (from `age-keygen -o`)",
                path.display()
            ))
        })?;
        file.into_identities().map_err(|e| {
            Fail::Usage(format!(
                "the age identity file {} is not usable ({e})",
                path.display()
            ))
            .into()
        })
    }

    fn decrypt(&self, key: &str, raw: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
        let identities = self.identities(key)?;
        let state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let hashing = HashRead {
            inner: raw,
            state: state.clone(),
        };
        let dec = age::Decryptor::new(hashing).map_err(|e| {
            Fail::Verify(format!(
                "{key} on storage `{}` is not a readable age file ({e})",
                self.inner.name()
            ))
        })?;
        let reader = dec
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => anyhow::Error::new(Fail::Usage(format!(
                    "{key} on storage `{}` is sealed to other recipients than the identity in {} can open; \
                     use the identity of one of the recipients `backup list` shows for this backup",
                    self.inner.name(),
                    self.identity_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ))),
                e => anyhow::Error::new(Fail::Verify(format!(
                    "{key} on storage `{}`: the age header is damaged ({e})",
                    self.inner.name()
                ))),
            })?;
        Ok(Box::new(OpenReader {
            inner: reader,
            state,
            key: key.to_string(),
            digests: self.digests.clone(),
        }))
    }
}

/// Hashes the stored (encrypted) bytes as they are read.
struct HashRead {
    inner: Box<dyn Read + Send>,
    state: Arc<Mutex<(Sha256, u64)>>,
}

impl Read for HashRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.update(&buf[..n]);
        st.1 += n as u64;
        Ok(n)
    }
}

/// The plaintext of an object; records the stored bytes' digest at its end.
struct OpenReader<R> {
    inner: R,
    state: Arc<Mutex<(Sha256, u64)>>,
    key: String,
    digests: Digests,
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            // age authenticates every chunk: invalid or missing chunks are damage
            // (exit 3); anything else is the storage's own read error, passed on.
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) {
                return e;
            }
            std::io::Error::new(
                e.kind(),
                Fail::Verify(format!(
                    "decrypting {}: {e} (the stored object is damaged or truncated)",
                    self.key
                )),
            )
        })?;
        if n == 0 && !buf.is_empty() {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let d = StoredDigest {
                size_bytes: st.1,
                sha256: hex::encode(st.0.clone().finalize()),
            };
            self.digests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.key.clone(), d);
        }
        Ok(n)
    }
}

/// The backend writer, shared so that an abort can reach it inside the age stream
/// (which has no abort of its own).
type Backend = Arc<Mutex<Option<Box<dyn ObjectWriter>>>>;

fn take(b: &Backend) -> Option<Box<dyn ObjectWriter>> {
    b.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Counts and hashes what goes to the backend writer.
struct HashWrite {
    inner: Backend,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let w = g
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the upload was aborted"))?;
        let n = w.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct SealWriter {
    enc: age::stream::StreamWriter<HashWrite>,
    backend: Backend,
    plain: u64,
    key: String,
    digests: Digests,
}

impl Write for SealWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.enc.write(buf)?;
        self.plain += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.enc.flush()
    }
}

impl ObjectWriter for SealWriter {
    fn finish(self: Box<Self>) -> Result<ObjectInfo> {
        let SealWriter {
            enc,
            backend,
            plain,
            key,
            digests,
        } = *self;
        let hw = match enc.finish() {
            Ok(hw) => hw,
            Err(e) => {
                if let Some(w) = take(&backend) {
                    w.abort();
                }
                return Err(anyhow::Error::new(e).context("finishing the age stream"));
            }
        };
        let digest = StoredDigest {
            size_bytes: hw.bytes,
            sha256: hex::encode(hw.hasher.finalize()),
        };
        let w = take(&backend).ok_or_else(|| anyhow!("the upload of {key} was aborted"))?;
        let info = w.finish()?;
        if info.size != digest.size_bytes {
            return Err(anyhow!(
                "stored {} bytes of {key} but encrypted {}",
                info.size,
                digest.size_bytes
            ));
        }
        digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), digest);
        // Callers see the object they wrote: its plaintext size under their key.
        Ok(ObjectInfo {
            key,
            size: plain,
            modified: info.modified,
        })
    }
    fn abort(self: Box<Self>) {
        // The age stream is dropped unfinished; the backend throws its part away.
        if let Some(w) = take(&self.backend) {
            w.abort();
        }
    }
}

impl Storage for Sealed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        // Encrypted objects are read through `open` (which decrypts), never in place.
        if sealed_key(key) {
            None
        } else {
            self.inner.local_path(key)
        }
    }
    fn create(&self, key: &str, meta: &PutMeta) -> Result<Box<dyn ObjectWriter>> {
        if !sealed_key(key) {
            return self.inner.create(key, meta);
        }
        let backend: Backend =
            Arc::new(Mutex::new(Some(self.inner.create(&stored_key(key), meta)?)));
        let hw = HashWrite {
            inner: backend.clone(),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let enc = match self.encryptor().and_then(|e| {
            e.wrap_output(hw)
                .with_context(|| format!("writing the age header of {key}"))
        }) {
            Ok(enc) => enc,
            Err(e) => {
                if let Some(w) = take(&backend) {
                    w.abort();
                }
                return Err(e);
            }
        };
        Ok(Box::new(SealWriter {
            enc,
            backend,
            plain: 0,
            key: key.to_string(),
            digests: self.digests.clone(),
        }))
    }
    fn put_if_absent(&self, key: &str, data: &[u8], meta: &PutMeta) -> Result<ObjectInfo> {
        if !sealed_key(key) {
            return self.inner.put_if_absent(key, data, meta);
        }
        let enc = self.encryptor()?;
        let mut out = Vec::with_capacity(data.len() + 256);
        let mut w = enc.wrap_output(&mut out)?;
        w.write_all(data)?;
        w.finish()?;
        let info = self.inner.put_if_absent(&stored_key(key), &out, meta)?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: data.len() as u64,
            modified: info.modified,
        })
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        if !sealed_key(key) {
            return self.inner.open(key);
        }
        match self.inner.open(&stored_key(key)) {
            Ok(raw) => self.decrypt(key, raw),
            // Stored before encryption was turned on: read it as it is.
            Err(e) if super::is_not_found(&e) => self.inner.open(key),
            Err(e) => Err(e),
        }
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        if sealed_key(key) {
            if let Some(mut i) = self.inner.head(&stored_key(key))? {
                i.key = key.to_string();
                return Ok(Some(i));
            }
        }
        self.inner.head(key)
    }
    fn metadata(&self, key: &str) -> Result<BTreeMap<String, String>> {
        if sealed_key(key) && self.inner.head(&stored_key(key))?.is_some() {
            return self.inner.metadata(&stored_key(key));
        }
        self.inner.metadata(key)
    }
    fn is_deleted(&self, key: &str) -> bool {
        self.inner.is_deleted(key) || sealed_key(key) && self.inner.is_deleted(&stored_key(key))
    }
    fn undelete(&self, keys: &[String]) -> Result<usize> {
        let mut all = Vec::with_capacity(keys.len() * 2);
        for k in keys {
            if sealed_key(k) {
                all.push(stored_key(k));
            }
            all.push(k.clone());
        }
        self.inner.undelete(&all)
    }
    fn lock_policy(&self) -> Option<super::LockPolicy> {
        self.inner.lock_policy()
    }
    fn check_lock_promise(&self) -> Result<()> {
        self.inner.check_lock_promise()
    }
    fn lock_of(&self, key: &str) -> Result<Option<super::ObjectLock>> {
        if sealed_key(key) && self.inner.head(&stored_key(key))?.is_some() {
            return self.inner.lock_of(&stored_key(key));
        }
        self.inner.lock_of(key)
    }
    fn extend_lock(&self, key: &str, until: chrono::DateTime<chrono::Utc>) -> Result<bool> {
        if sealed_key(key) && self.inner.head(&stored_key(key))?.is_some() {
            return self.inner.extend_lock(&stored_key(key), until);
        }
        self.inner.extend_lock(key, until)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut v = self.inner.list(prefix)?;
        for o in v.iter_mut() {
            o.key = logical_key(&o.key);
        }
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v.dedup_by(|a, b| a.key == b.key);
        Ok(v)
    }
    fn delete(&self, keys: &[String]) -> Result<DeleteReport> {
        // Both forms: an object may predate encryption.
        let mut all = Vec::with_capacity(keys.len() * 2);
        for k in keys {
            if sealed_key(k) {
                all.push(stored_key(k));
            }
            all.push(k.clone());
        }
        let rep = self.inner.delete(&all)?;
        let mut out = DeleteReport::default();
        let mut bad = std::collections::BTreeSet::new();
        for (k, why) in rep.retained {
            let k = logical_key(&k);
            if bad.insert(k.clone()) {
                out.retained.push((k, why));
            }
        }
        for (k, why) in rep.failed {
            let k = logical_key(&k);
            if bad.insert(k.clone()) {
                out.failed.push((k, why));
            }
        }
        out.deleted = keys.iter().filter(|k| !bad.contains(*k)).cloned().collect();
        Ok(out)
    }
    fn abort_uploads(&self, prefix: &str) -> Result<usize> {
        self.inner.abort_uploads(prefix)
    }
    fn free_space(&self) -> Option<u64> {
        self.inner.free_space()
    }
    fn sealed_to(&self) -> Option<Vec<String>> {
        Some(self.recipients.iter().map(|r| r.to_string()).collect())
    }
    fn stored_digest(&self, key: &str) -> Option<StoredDigest> {
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use age::secrecy::ExposeSecret;

    fn sealed(id: &age::x25519::Identity) -> Sealed {
        let cfg = EncryptionConfig {
            age_recipients: vec![id.to_public().to_string()],
            ..Default::default()
        };
        Sealed::new(Box::new(MemoryStorage::new("m")), &cfg).unwrap()
    }

    #[test]
    fn round_trip_names_digests_and_manifests_in_the_clear() {
        let id = age::x25519::Identity::generate();
        let s = sealed(&id);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = s.create("t/1/dump.sql.gz", &PutMeta::default()).unwrap();
        w.write_all(&data).unwrap();
        let info = w.finish().unwrap();
        assert_eq!(info.size, data.len() as u64);
        s.put("t/1/manifest.json", b"{}", &PutMeta::default())
            .unwrap();

        // The backend holds an age file under NAME.age, and the manifest as written.
        let raw = crate::storage::read_all(s.inner.as_ref(), "t/1/dump.sql.gz.age").unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n"));
        let d = s.stored_digest("t/1/dump.sql.gz").unwrap();
        assert_eq!(d.size_bytes, raw.len() as u64);
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&raw)));
        assert_eq!(
            crate::storage::read_all(s.inner.as_ref(), "t/1/manifest.json").unwrap(),
            b"{}"
        );
        let keys: Vec<String> = s.list("t/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["t/1/dump.sql.gz", "t/1/manifest.json"]);

        // Reading without an identity is a usage error (exit 2).
        let err = s.open("t/1/dump.sql.gz").err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2, "{err:#}");
        let rep = s.delete(&["t/1/dump.sql.gz".to_string()]).unwrap();
        assert_eq!(rep.deleted, ["t/1/dump.sql.gz"]);
        assert!(s.inner.head("t/1/dump.sql.gz.age").unwrap().is_none());
    }

    #[test]
    fn decrypts_with_the_identity_and_refuses_another() {
        let id = age::x25519::Identity::generate();
        let mut s = sealed(&id);
        s.put_if_absent("t/wal/0000/seg.gz", b"segment", &PutMeta::default())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.txt");
        std::fs::write(&good, format!("{}\n", id.to_string().expose_secret())).unwrap();
        s.identity_file = Some(good);
        assert_eq!(
            crate::storage::read_all(&s, "t/wal/0000/seg.gz").unwrap(),
            b"segment"
        );

        let other = age::x25519::Identity::generate();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, format!("{}\n", other.to_string().expose_secret())).unwrap();
        s.identity_file = Some(bad);
        let err = s.open("t/wal/0000/seg.gz").err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(format!("{err:#}").contains("other recipients"), "{err:#}");
    }

    #[test]
    fn recipients_are_checked_and_secret_keys_never_echoed() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string().expose_secret().to_string();
        let cfg = EncryptionConfig {
            age_recipients: vec![secret.clone()],
            ..Default::default()
        };
        let (key, msg) = recipients(&cfg).err().unwrap();
        assert_eq!(key, "age_recipients");
        assert!(!msg.contains(&secret[15..]), "{msg}");
        let (_, msg) = recipients(&EncryptionConfig::default()).err().unwrap();
        assert!(msg.contains("no recipient"), "{msg}");
    }
}
