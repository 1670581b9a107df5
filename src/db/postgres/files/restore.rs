//! Restoring a file-level backup of any type: every file is read once, from the
//! backup of the chain that holds its bytes, by `jobs` workers (one bundle each), and
//! checked against its SHA-256; each bundle's own SHA-256 is checked too.
//!
//! Before anything is written, every link of the chain and every bundle needed must
//! be present on the storage: a missing one is named (exit 3) and the data directory
//! is left as it was. `--delta` restores into an existing data directory, rewriting
//! only the files whose size or checksum differ and removing what the backup does not
//! have.

use super::bundle::{self, Wanted};
use super::{listing, FileEntry};
use crate::compress::Compression;
use crate::engine::catalog;
use crate::engine::verify::Hashing;
use crate::error::Fail;
use crate::manifest::{Artifact, Manifest};
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    /// Files written.
    pub files: u64,
    pub bytes: u64,
    /// `--delta`: files already right, left alone.
    pub unchanged: u64,
    /// `--delta`: files and directories the backup does not have, removed.
    pub removed: u64,
    /// Bundles read, and the backups of the chain they came from.
    pub bundles: usize,
    pub chain: Vec<String>,
}

/// One bundle to read: its key, its record in its backup's manifest, what to take.
struct Job {
    key: String,
    art: Artifact,
    wanted: Wanted,
}

/// Restores backup `m` (of any type) from `storage` into `data_dir`.
pub fn restore(
    storage: &dyn Storage,
    m: &Manifest,
    data_dir: &Path,
    delta: bool,
    jobs: usize,
    ui: &Ui,
) -> Result<Restored> {
    let list = listing(m)?;
    let jobs_list = plan(storage, m, &list.files)?;
    let mut out = Restored {
        chain: jobs_list
            .iter()
            .map(|j| {
                j.key
                    .split('/')
                    .rev()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        ..Default::default()
    };
    // Nothing was written so far: every link and bundle is there.
    let mut jobs_list = jobs_list;
    if delta {
        let (unchanged, removed) = prepare_delta(data_dir, &list.directories, &list.files, jobs)?;
        out.unchanged = unchanged.len() as u64;
        out.removed = removed;
        for j in &mut jobs_list {
            j.wanted.retain(|p, _| !unchanged.contains(p));
        }
        jobs_list.retain(|j| !j.wanted.is_empty());
    }
    for d in &list.directories {
        let p = data_dir.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
    }
    out.bundles = jobs_list.len();
    ui.info(format!(
        "restoring {} file(s) from {} bundle(s) of {} backup(s) with {jobs} worker(s)",
        jobs_list.iter().map(|j| j.wanted.len()).sum::<usize>(),
        jobs_list.len(),
        out.chain.len()
    ));
    let done = super::plan::parallel(jobs_list, jobs, |j| read_bundle(storage, &j, data_dir))?;
    for (files, bytes) in done {
        out.files += files;
        out.bytes += bytes;
    }
    Ok(out)
}

/// Checks, writing nothing, that every backup of `m`'s chain and every bundle it needs
/// is on `storage` (exit 3 naming the missing one otherwise).
pub fn check_chain(storage: &dyn Storage, m: &Manifest) -> Result<()> {
    plan(storage, m, &listing(m)?.files).map(|_| ())
}

/// The bundles to read, each with the files it must give, after checking that every
/// backup of the chain and every bundle is on the storage.
fn plan(storage: &dyn Storage, m: &Manifest, files: &[FileEntry]) -> Result<Vec<Job>> {
    let mut homes: BTreeMap<String, Manifest> = BTreeMap::new();
    homes.insert(m.id.clone(), m.clone());
    let mut jobs: BTreeMap<(String, String), Job> = BTreeMap::new();
    for f in files {
        let home = f.home(m).to_string();
        if !homes.contains_key(&home) {
            let key = catalog::artifact_key(&m.target, &home, crate::manifest::MANIFEST_FILE);
            let hm = match storage.head(&key)? {
                Some(_) => {
                    let bytes = crate::storage::read_all(storage, &key)?;
                    Manifest::from_json(&bytes, &key)?
                }
                None => {
                    return Err(Fail::Verify(format!(
                        "backup {} needs backup {home} (a link of its chain, holding {}), which is missing on `{}`; \
                         nothing was restored: pick another backup with --backup, or bring the missing one back (`backup undelete`)",
                        m.id,
                        f.path,
                        storage.name()
                    ))
                    .into())
                }
            };
            homes.insert(home.clone(), hm);
        }
        let hm = &homes[&home];
        let slot = (home.clone(), f.bundle.clone());
        if !jobs.contains_key(&slot) {
            let art = hm
                .artifacts
                .iter()
                .find(|a| a.name == f.bundle)
                .cloned()
                .ok_or_else(|| {
                    Fail::Verify(format!(
                        "backup {home}'s manifest has no bundle {} (needed for {}); nothing was restored",
                        f.bundle, f.path
                    ))
                })?;
            let key = catalog::artifact_key(&m.target, &home, &f.bundle);
            if storage.head(&key)?.is_none() {
                return Err(Fail::Verify(format!(
                    "{key} is missing on `{}` (backup {} needs it); nothing was restored: pick another backup with --backup",
                    storage.name(),
                    m.id
                ))
                .into());
            }
            jobs.insert(
                slot.clone(),
                Job {
                    key,
                    art,
                    wanted: Wanted::new(),
                },
            );
        }
        jobs.get_mut(&slot)
            .expect("inserted")
            .wanted
            .insert(f.path.clone(), (f.size, f.sha256.clone(), f.mtime_ns));
    }
    // Largest last: `parallel` takes from the end.
    let mut v: Vec<Job> = jobs.into_values().collect();
    v.sort_by_key(|j| j.art.size_bytes);
    Ok(v)
}

fn read_bundle(storage: &dyn Storage, j: &Job, data_dir: &Path) -> Result<(u64, u64)> {
    let stream = storage.open(&j.key)?;
    let mut hashing = Hashing {
        inner: stream,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let what = format!("{} on `{}`", j.key, storage.name());
    let res = {
        let buffered = std::io::BufReader::with_capacity(1 << 20, &mut hashing);
        Compression::from_manifest(&j.art.compression)
            .decoder(buffered)
            .and_then(|mut dec| {
                let r = bundle::extract(&mut dec, data_dir, &j.wanted, &what)?;
                std::io::copy(&mut dec, &mut std::io::sink())?;
                Ok(r)
            })
    };
    if crate::engine::cleanup::terminating() {
        return res;
    }
    // On any error too, read the rest: a checksum mismatch says the bundle is
    // damaged (exit 3, named), which a decompression error alone does not.
    let rest = std::io::copy(&mut hashing, &mut std::io::sink());
    let got = hex::encode(hashing.hasher.clone().finalize());
    if got != j.art.sha256 || hashing.bytes != j.art.size_bytes {
        return Err(Fail::Verify(format!(
            "{what} is damaged: sha256 {got} ({} bytes), the manifest says {} ({} bytes)",
            hashing.bytes, j.art.sha256, j.art.size_bytes
        ))
        .into());
    }
    rest?;
    res
}

/// `--delta`: removes what the backup does not have and returns the files already
/// right (size and SHA-256 equal), which are not rewritten.
fn prepare_delta(
    data_dir: &Path,
    dirs: &[String],
    files: &[FileEntry],
    jobs: usize,
) -> Result<(BTreeSet<String>, u64)> {
    let want_dirs: BTreeSet<&str> = dirs.iter().map(String::as_str).collect();
    let want_files: BTreeMap<&str, &FileEntry> =
        files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut removed = 0u64;
    let mut present = Vec::new();
    let mut stack = vec![(data_dir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() && want_dirs.contains(path.as_str()) {
                stack.push((e.path(), path));
            } else if ft.is_file() && want_files.contains_key(path.as_str()) {
                present.push(path);
            } else {
                if ft.is_dir() {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                }
                .with_context(|| format!("removing {}", e.path().display()))?;
                removed += 1;
            }
        }
    }
    let same = super::plan::parallel(present, jobs, |p| {
        let f = want_files[p.as_str()];
        let on_disk = data_dir.join(&p);
        if std::fs::metadata(&on_disk)?.len() != f.size {
            return Ok(None);
        }
        let sha = super::plan::sha256_file(&on_disk)?;
        Ok(sha
            .filter(|(size, sha)| *size == f.size && *sha == f.sha256)
            .map(|_| p))
    })?;
    Ok((same.into_iter().flatten().collect(), removed))
}
