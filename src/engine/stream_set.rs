//! Backups that are a set of named streams (one per table): `backup run` stores each
//! stream through the same pipeline as a single dump (compression, SHA-256, every
//! storage at once, bounded memory) and writes the manifest only after the last one;
//! `backup restore` verifies every artifact the selection needs, and only those,
//! before the engine touches the database.

use crate::db::{StreamSetEngine, Target};
use crate::engine::backup::{
    allocate_id, describe_failures, describe_storages, lock_target, object_meta, open_and_check,
    validate_tag, Failures, InterruptCleanup, Upload,
};
use crate::engine::catalog;
use crate::engine::lock::hostname;
use crate::engine::restore::{
    compare_counts, fetch_verified, locate, locate_in, plan_head, present_plan, temp_dir,
    RestoreOutcome, RestoreRequest,
};
use crate::manifest::{self, Artifact, Manifest, RunOutcome, MANIFEST_FILE};
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{bail, Context, Result};

/// `backup run` of a target whose engine backs up a set of streams.
pub fn run(
    t: &Target,
    engine: &mut dyn StreamSetEngine,
    tag: Option<&str>,
    ui: &Ui,
) -> Result<RunOutcome> {
    let (tcfg, target) = (t.cfg, t.name);
    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    let _lock = lock_target(t)?;
    let info = engine.precheck()?;
    let format = engine.artifact().format;
    let streams = engine.streams()?;
    let (storages, last_id, left_out) = open_and_check(t, info.size_bytes, ui)?;
    let (started, id) = allocate_id(last_id.as_deref());
    engine.begin(&id);
    let meta = object_meta(target, &tcfg.engine, &id, tag);
    ui.info(format!(
        "backup {target} {id}: {} stream(s) of {} ({}) to {}",
        streams.len(),
        info.database.as_deref().unwrap_or("?"),
        crate::duration::bytes(info.size_bytes.unwrap_or(0)),
        describe_storages(&storages)
    ));
    let interrupted = InterruptCleanup::new(t, &storages, &id);
    let mut live = storages;
    let mut failed: Failures = left_out;
    let mut artifacts = Vec::new();
    let mut facts = Vec::new();
    let level = tcfg.compression_level.unwrap_or(6);
    for spec in &streams {
        let res = store_one(engine, &live, &id, t, spec, level, &meta, ui);
        match res {
            Ok((art, f, stored_on, lost)) => {
                failed.extend(lost);
                live.retain(|s| stored_on.iter().any(|n| n == s.name()));
                artifacts.push(art);
                facts.push(f);
            }
            Err(e) => {
                remove_partial(&live, target, &id);
                return Err(e.context(format!("backup {target} {id} failed; nothing was kept")));
            }
        }
        if live.is_empty() {
            bail!(
                "backup {target} {id} failed on every storage: {}",
                describe_failures(&failed)
            );
        }
    }
    let database = match engine.facts(facts) {
        Ok(d) => d,
        Err(e) => {
            remove_partial(&live, target, &id);
            return Err(e.context(format!("backup {target} {id} failed; nothing was kept")));
        }
    };
    let finished = chrono::Utc::now();
    let mut versions = info.versions.clone();
    versions.insert("backup".into(), env!("CARGO_PKG_VERSION").into());
    let m = Manifest {
        manifest_version: manifest::MANIFEST_VERSION,
        id: id.clone(),
        target: target.to_string(),
        engine: tcfg.engine.clone(),
        kind: engine.kind(),
        format,
        tag: tag.map(str::to_string),
        started_at: started,
        finished_at: finished,
        duration_seconds: (finished - started).num_milliseconds() as f64 / 1000.0,
        versions,
        artifacts,
        database,
        wal: None,
        depends_on: engine.depends_on(),
        host: hostname(),
        encryption: None,
    };
    let key = catalog::artifact_key(target, &id, MANIFEST_FILE);
    let stored_on = interrupted.committing(|| {
        let mut ok = Vec::new();
        for s in &live {
            // Each storage's own manifest: an encrypted one records its recipients.
            match m
                .for_storage(s.as_ref())
                .to_json()
                .and_then(|b| s.put(&key, &b, &manifest::manifest_meta(&meta, &b)))
            {
                Ok(_) => {
                    ui.info(format!(
                        "stored {} on `{}` ({})",
                        crate::duration::bytes(m.size_bytes()),
                        s.name(),
                        s.location()
                    ));
                    ok.push(s.name().to_string());
                }
                Err(e) => {
                    remove_partial(std::slice::from_ref(s), target, &id);
                    failed.push((s.name().to_string(), format!("{e:#}")));
                }
            }
        }
        ok
    });
    if stored_on.is_empty() {
        bail!(
            "backup {target} {id} failed on every storage: {}",
            describe_failures(&failed)
        );
    }
    Ok(RunOutcome {
        manifest: m,
        stored_on,
        failed,
    })
}

type Stored = (
    Artifact,
    crate::manifest::DatabaseFacts,
    Vec<String>,
    Failures,
);

/// One stream through the pipeline to every live storage.
#[allow(clippy::too_many_arguments)]
fn store_one(
    engine: &mut dyn StreamSetEngine,
    live: &[Box<dyn Storage>],
    id: &str,
    t: &Target,
    spec: &crate::db::ArtifactSpec,
    level: u32,
    meta: &crate::storage::PutMeta,
    ui: &Ui,
) -> Result<Stored> {
    let key = catalog::artifact_key(t.name, id, &spec.name);
    let mut upload = Upload::start(live, &key, meta, vec![])?;
    let mut dump = match engine.open_stream(&spec.name) {
        Ok(d) => d,
        Err(e) => {
            upload.abort();
            return Err(e);
        }
    };
    let mut progress = ui.progress(&format!("{} {}", t.name, spec.name), None);
    let copied = upload.copy(&mut dump, spec.gzip.then_some(level), &mut progress);
    progress.finish();
    if let Err(e) = copied {
        dump.kill();
        let storage_errors = upload.failures();
        upload.abort();
        return Err(if storage_errors.is_empty() {
            e.context(spec.name.clone())
        } else {
            e.context(format!("{} ({storage_errors})", spec.name))
        });
    }
    let facts = match dump.finish() {
        Ok(f) => f,
        Err(e) => {
            upload.abort();
            return Err(e.context(spec.name.clone()));
        }
    };
    let (size_bytes, sha256) = upload.stored();
    let raw_size_bytes = upload.raw_bytes;
    let (stored_on, lost) = upload.finish_artifact(ui);
    let art = Artifact {
        name: spec.name.clone(),
        size_bytes,
        sha256,
        compression: if spec.gzip { "gzip" } else { "none" }.into(),
        raw_size_bytes,
        content: spec.content.clone(),
    };
    Ok((art, facts, stored_on, lost))
}

/// Removes every object of backup `id` (no manifest was written there).
/// Removes every object of backup `id` (an incomplete backup) from `storages`.
pub fn remove_partial(storages: &[Box<dyn Storage>], target: &str, id: &str) {
    let prefix = format!("{target}/{id}/");
    for s in storages {
        if let Ok(objs) = s.list(&prefix) {
            let keys: Vec<String> = objs.into_iter().map(|o| o.key).collect();
            if !keys.is_empty() {
                let _ = s.delete(&keys);
            }
        }
    }
}

/// `backup restore` of a stream-set backup: only the artifacts the selection needs
/// are read, and every one is verified before the engine touches the database.
pub fn restore(
    t: &Target,
    engine: &mut dyn StreamSetEngine,
    mut req: RestoreRequest,
    ui: &Ui,
) -> Result<RestoreOutcome> {
    let started = std::time::Instant::now();
    let (storage, m) = locate_in(t, &req.which, req.storage.as_deref(), req.deleted)?;
    // Held until the restore is done: a prune keeps this backup meanwhile.
    let _reading =
        crate::engine::readers::read(&t.config.state_dir(), t.name, &m.id, "backup restore")?;
    req.opts.backup_id = Some(m.id.clone());
    let database = engine
        .restore_precheck(&req.opts, &m.format)
        .context("checking the restore target before touching anything")?;
    let names = engine.needed(&m, &req.opts)?;
    // An artifact the backup referenced instead of storing again is read (and
    // verified) from the earlier backup that stores it, on the same storage.
    let mut homes: Vec<Manifest> = Vec::new();
    let mut _reading_homes = Vec::new();
    let mut arts: Vec<(usize, Artifact)> = Vec::new();
    for n in &names {
        let home = engine.home(&m, n);
        let idx = match home {
            None => 0,
            Some(h) => match homes.iter().position(|x| x.id == h) {
                Some(i) => i + 1,
                None => {
                    let (_, hm) = locate(t, &h, Some(storage.name()))
                        .with_context(|| format!("backup {} needs {n} from backup {h}", m.id))?;
                    _reading_homes.push(crate::engine::readers::read(
                        &t.config.state_dir(),
                        t.name,
                        &hm.id,
                        "backup restore",
                    )?);
                    homes.push(hm);
                    homes.len()
                }
            },
        };
        let holder = if idx == 0 { &m } else { &homes[idx - 1] };
        let art = holder
            .artifacts
            .iter()
            .find(|a| &a.name == n)
            .ok_or_else(|| {
                crate::error::Fail::Verify(format!("backup {} lists no artifact {n}", holder.id))
            })?;
        arts.push((idx, art.clone()));
    }
    let mut plan = plan_head(&m, storage.as_ref());
    plan.push(format!(
        "verify {} of {} artifact(s) ({}) before touching the database",
        arts.len(),
        m.artifacts.len(),
        crate::duration::bytes(
            arts.iter()
                .fold(0u64, |n, (_, a)| n.saturating_add(a.size_bytes))
        )
    ));
    plan.push(engine.restore_plan(&req.opts, &m.format, &database));
    if req.check_counts {
        plan.push("then compare restored row counts with the manifest".into());
    }
    let (mut out, go) = present_plan(&m, storage.as_ref(), &database, plan, &req, ui)?;
    if !go {
        return Ok(out);
    }
    let tmp = temp_dir(req.temp_dir.as_deref())?;
    let mut files = Vec::new();
    for (idx, art) in &arts {
        let holder = if *idx == 0 { &m } else { &homes[idx - 1] };
        let path = fetch_verified(
            t,
            storage.as_ref(),
            holder,
            art,
            tmp.path(),
            engine.as_logical(),
            ui,
        )?;
        files.push((art.name.clone(), path));
    }
    ui.info(format!("restoring {} into `{database}`", m.id));
    engine.restore_set(&m, &files, &req.opts)?;
    if req.check_counts {
        out.tables_checked = compare_counts(engine.as_logical(), &req.opts, &m, &database, ui)?;
    }
    out.duration_seconds = started.elapsed().as_secs_f64();
    ui.info(format!(
        "restored {} into `{database}` in {}",
        m.id,
        crate::duration::human(started.elapsed())
    ));
    Ok(out)
}
