//! Bundles stored: files packed into bundles, each streamed (tar -> compression ->
//! every storage) by one of `jobs` workers.

use super::bundle::{Source, Stored, TarFiles};
use super::plan::parallel;
use super::walk;
use crate::compress::Compression;
use crate::engine::backup::{self, Failures, Upload};
use crate::engine::catalog;
use crate::manifest::Artifact;
use crate::storage::{PutMeta, Storage};
use crate::ui::{Progress, Ui};
use anyhow::{anyhow, bail, Result};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

/// Files are packed into bundles of about this many bytes; a bigger file is a bundle
/// of its own. Big enough to keep object counts low, small enough for the workers to
/// share the work.
const BUNDLE_BYTES: u64 = 32 << 20;
/// Files into bundles: largest first, a big file alone, small ones together.
pub(super) fn pack(
    files: &[walk::Found],
    pgdata: &Path,
    comp: Compression,
) -> Vec<(String, Vec<Source>)> {
    let mut sorted: Vec<&walk::Found> = files.iter().collect();
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
    let mut out: Vec<(String, Vec<Source>)> = Vec::new();
    let mut cur: Vec<Source> = Vec::new();
    let mut cur_bytes = 0u64;
    let name = |n: usize| format!("pgdata-{n:04}.tar{}", comp.ext());
    for f in sorted {
        if !cur.is_empty() && cur_bytes + f.size > BUNDLE_BYTES {
            out.push((name(out.len() + 1), std::mem::take(&mut cur)));
            cur_bytes = 0;
        }
        cur_bytes += f.size;
        cur.push(Source {
            path: f.path.clone(),
            abs: pgdata.join(&f.path),
            mtime_ns: f.mtime_ns,
        });
    }
    if !cur.is_empty() {
        out.push((name(out.len() + 1), cur));
    }
    out
}

/// Counts bytes read into the shared progress.
struct Counted<'a, R> {
    inner: R,
    progress: Option<&'a Mutex<Progress>>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.lock().unwrap().inc(n as u64);
        }
        Ok(n)
    }
}

type Bundled = (Artifact, Vec<Stored>, Vec<String>, Failures);

/// Stores one bundle on every storage (bounded memory: the tar is produced as it is
/// compressed and uploaded).
#[allow(clippy::too_many_arguments)]
pub(super) fn store_bundle(
    storages: &[Box<dyn Storage>],
    target: &str,
    id: &str,
    name: &str,
    meta: &PutMeta,
    sources: Vec<Source>,
    comp: Compression,
    level: Option<i32>,
    progress: Option<&Mutex<Progress>>,
    ui: &Ui,
) -> Result<Bundled> {
    let key = catalog::artifact_key(target, id, name);
    let mut up = Upload::start(storages, &key, meta, vec![])?;
    let mut tar = Counted {
        inner: TarFiles::new(sources),
        progress,
    };
    if let Err(e) = up.copy_with(&mut tar, comp, level, &mut ui.silent()) {
        let why = up.failures();
        up.abort();
        return Err(
            if why.is_empty() { e } else { e.context(why) }.context(format!("storing {name}"))
        );
    }
    let (size, sha) = up.stored();
    let raw = up.raw_bytes;
    let (stored_on, failed) = up.finish_artifact(ui);
    if stored_on.is_empty() {
        bail!("storing {name}: {}", backup::describe_failures(&failed));
    }
    let TarFiles {
        stored, vanished, ..
    } = tar.inner;
    Ok((
        Artifact {
            name: name.to_string(),
            size_bytes: size,
            sha256: sha,
            compression: comp.name().into(),
            raw_size_bytes: raw,
            content: "PGDATA files (tar)".into(),
        },
        stored,
        vanished,
        failed,
    ))
}

/// Stores every bundle with `jobs` workers. Returns (file -> its bundle, artifacts,
/// storages that failed some bundle).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(super) fn store_all(
    storages: &[Box<dyn Storage>],
    target: &str,
    id: &str,
    meta: &PutMeta,
    bundles: Vec<(String, Vec<Source>)>,
    comp: Compression,
    level: Option<i32>,
    jobs: usize,
    progress: &Mutex<Progress>,
    ui: &Ui,
) -> Result<(Vec<(String, Stored)>, Vec<Artifact>, Failures)> {
    let mut queue = bundles;
    queue.reverse(); // the largest first
    let done = parallel(queue, jobs, |(name, sources)| {
        let r = store_bundle(
            storages,
            target,
            id,
            &name,
            meta,
            sources,
            comp,
            level,
            Some(progress),
            ui,
        )?;
        Ok((name, r))
    })?;
    let mut stored = Vec::new();
    let mut artifacts = Vec::new();
    let mut failed: Failures = Vec::new();
    for (name, (art, st, _vanished, lost)) in done {
        artifacts.push(art);
        stored.extend(st.into_iter().map(|s| (name.clone(), s)));
        for l in lost {
            if !failed.iter().any(|(n, _)| *n == l.0) {
                failed.push(l);
            }
        }
    }
    if failed.len() >= storages.len() {
        return Err(anyhow!(
            "every storage failed: {}",
            backup::describe_failures(&failed)
        ));
    }
    Ok((stored, artifacts, failed))
}
