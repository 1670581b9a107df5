//! `backup run` of a `method = "files"` target: `pg_backup_start` and `pg_backup_stop`
//! on one session, PGDATA read by `jobs` workers in between, each bundle streamed
//! through compression to every storage; the manifest last.
//!
//! Change detection (diff/incr): a file is taken from the earlier backup only when its
//! size and mtime equal what that backup recorded AND that mtime was a whole second
//! before that backup began listing, so a write in the same clock tick as the earlier
//! copy can never hide. Whenever timestamps cannot be trusted (an mtime in the future,
//! one that went backwards, a size change under the same mtime, the clock behind the
//! earlier backup) every candidate is compared by checksum instead ("delta"), and a
//! change of timeline or system identifier makes the backup a full one.

use super::bundle::Source;
use super::plan::plan;
use super::store::{pack, store_all, store_bundle};
use super::{is_files, listing, walk, BackupType, FileEntry, Listing, FORMAT};
use crate::compress::Compression;
use crate::db::postgres::physical::{check_settings, connect, label_field, server_wal, wal_range};
use crate::db::postgres::{quote_literal, Options};
use crate::db::Target;
use crate::engine::backup::{self, Failures};
use crate::engine::catalog;
use crate::engine::lock::hostname;
use crate::manifest::{self, DatabaseFacts, Kind, Manifest, RunOutcome};
use crate::storage::{PutMeta, Storage};
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// The earlier backup a diff or incr is compared with.
struct Prior {
    m: Manifest,
    listing: Listing,
    /// path -> its entry, with `backup` set to the backup holding the bytes.
    files: BTreeMap<String, FileEntry>,
}

pub fn run(
    opts: &Options,
    t: &Target,
    tag: Option<&str>,
    asked: BackupType,
    ui: &Ui,
) -> Result<RunOutcome> {
    let (tcfg, target) = (t.cfg, t.name);
    if let Some(tag) = tag {
        backup::validate_tag(tag)?;
    }
    let _lock = backup::lock_target(t)?;
    let (_psql, conn, mut session) = connect(opts)?;
    let server = server_wal(&mut session)?;
    for w in check_settings(target, &server)? {
        ui.warn(w);
    }
    if server.in_recovery {
        bail!("the server is a standby: file-level backups (method = \"files\") are taken on the primary; point `url` at it");
    }
    let pgdata = match &opts.data_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(session.query_one("SHOW data_directory")?),
    };
    std::fs::read(pgdata.join("PG_VERSION")).with_context(|| {
        format!(
            "method = \"files\" reads the data directory {} itself and cannot: run backup on the database host \
             as the cluster's OS user (or initdb --allow-group-access and add this user to its group), or set data_dir",
            pgdata.display()
        )
    })?;
    let (storages, last_id, left_out) = backup::open_and_check(t, server.size, ui)?;
    let (started, id) = backup::allocate_id(last_id.as_deref());
    let meta = backup::object_meta(target, &tcfg.engine, &id, tag);
    let (mut prior, mut kind, mut notes) =
        find_prior(&storages, target, asked, &server.system_identifier)?;
    let comp = tcfg.compression_or(Compression::Zstd);
    let level = tcfg.compression_level.map(|l| l as i32);
    let jobs = opts.jobs.unwrap_or(2).max(1) as usize;

    let interrupted = backup::InterruptCleanup::new(t, &storages, &id);
    let res = (|| -> Result<(Manifest, Failures)> {
        let label = format!("backup {target} {id}");
        let start_lsn = session.query_one(&format!(
            "SELECT pg_backup_start({}, true)",
            quote_literal(&label)
        ))?;
        let timeline: u32 = session
            .query_one("SELECT timeline_id FROM pg_control_checkpoint()")?
            .trim()
            .parse()
            .context("reading the timeline")?;
        if let Some(p) = &prior {
            let was = p.m.wal.as_ref().map(|w| w.timeline).unwrap_or(timeline);
            if was != timeline {
                notes.push(format!(
                    "the timeline changed ({was} -> {timeline}) since backup {}: taking a full backup instead of {}",
                    p.m.id,
                    kind.as_str()
                ));
                prior = None;
                kind = BackupType::Full;
            }
        }
        let listed_at = db_clock(&mut session)?;
        let walked = walk::walk(&pgdata)?;
        // Begin copying in the next whole second of the database's clock: a file
        // written from here on can never carry an mtime of the listing's second.
        let now = db_clock(&mut session)?;
        std::thread::sleep(std::time::Duration::from_secs_f64(
            (now.floor() + 1.0 - now).clamp(0.0, 1.0),
        ));
        let now_ns = (db_clock(&mut session)? * 1e9) as i64;
        if let Some(p) = &prior {
            if listed_at.floor() < p.listing.listed_at as f64 {
                notes.push(format!(
                    "the clock is behind backup {} (listed at {}): comparing files by checksum",
                    p.m.id, p.listing.listed_at
                ));
            }
        }
        for n in &notes {
            ui.warn(n);
        }
        let before = prior.as_ref().map(|p| (&p.files, p.listing.listed_at));
        let plan = plan(
            &walked, before, now_ns, listed_at, jobs, &pgdata, &mut notes,
        )?;
        ui.info(format!(
            "backup {target} {id}: {} of {} ({} files, {}; {} unchanged file(s) from earlier backups) with {jobs} worker(s), {comp} to {}",
            kind.as_str(),
            conn.display(),
            plan.copy.len(),
            crate::duration::bytes(plan.copy.iter().map(|f| f.size).sum()),
            plan.kept.len(),
            backup::describe_storages(&storages)
        ));
        let progress = Mutex::new(ui.progress(
            &format!("{target} {id}"),
            Some(plan.copy.iter().map(|f| f.size).sum()),
        ));
        let bundles = pack(&plan.copy, &pgdata, comp);
        let (mut stored, mut artifacts, mut failed) = store_all(
            &storages, target, &id, &meta, bundles, comp, level, jobs, &progress, ui,
        )?;
        progress.into_inner().unwrap().finish();

        // pg_control last (as pg_basebackup sends it), then the stop call's files.
        let control =
            std::fs::read(pgdata.join("global/pg_control")).context("reading global/pg_control")?;
        let stop = session.query_one(
            "SELECT json_build_object('lsn', lsn, 'labelfile', labelfile, 'spcmapfile', spcmapfile) FROM pg_backup_stop(true)",
        )?;
        let stop: Value = serde_json::from_str(&stop).context("reading pg_backup_stop()")?;
        let label_text = stop["labelfile"].as_str().unwrap_or_default().to_string();
        let spcmap = stop["spcmapfile"].as_str().unwrap_or_default().to_string();
        let stop_lsn = stop["lsn"].as_str().unwrap_or_default().to_string();
        let scratch = tempfile::tempdir()?;
        let mut last = vec![("global/pg_control", control.as_slice())];
        last.push(("backup_label", label_text.as_bytes()));
        if !spcmap.is_empty() {
            last.push(("tablespace_map", spcmap.as_bytes()));
        }
        let mut sources = Vec::new();
        for (path, bytes) in last {
            let abs = scratch.path().join(path.replace('/', "_"));
            std::fs::write(&abs, bytes)?;
            sources.push(Source {
                path: path.into(),
                abs,
                mtime_ns: now_ns,
            });
        }
        let name = super::control_bundle(comp);
        let (art, st, _, lost) = store_bundle(
            &storages, target, &id, &name, &meta, sources, comp, level, None, ui,
        )?;
        failed.extend(lost);
        artifacts.push(art);
        stored.extend(st.into_iter().map(|s| (name.clone(), s)));

        let mut files: Vec<FileEntry> = plan.kept;
        files.extend(stored.into_iter().map(|(bundle, s)| FileEntry {
            path: s.path,
            size: s.size,
            mtime_ns: s.mtime_ns,
            sha256: s.sha256,
            bundle,
            backup: None,
        }));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        let depends_on: Vec<String> = files
            .iter()
            .filter_map(|f| f.backup.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let list = Listing {
            directories: walked.directories.clone(),
            files,
            listed_at: listed_at.floor() as i64,
            backup_type: kind,
            prior: prior.as_ref().map(|p| p.m.id.clone()),
            notes: notes.clone(),
        };
        let seg = server.wal_segment_size.max(1);
        let tli: u32 = label_field(&label_text, "START TIMELINE")
            .and_then(|v| v.parse().ok())
            .unwrap_or(timeline);
        let range = wal_range(tli, start_lsn, tli, stop_lsn, seg)?;
        let finished = chrono::Utc::now();
        let mut extra: BTreeMap<String, Value> = BTreeMap::new();
        extra.insert("backup_label".into(), Value::String(label_text));
        extra.insert(
            "system_identifier".into(),
            Value::String(server.system_identifier.clone()),
        );
        extra.insert(
            "server_version".into(),
            Value::String(server.version.clone()),
        );
        extra.insert("wal_segment_size".into(), Value::from(seg));
        extra.insert(
            "data_directory".into(),
            Value::String(pgdata.display().to_string()),
        );
        extra.insert(
            "unlogged_forks_skipped".into(),
            Value::from(walked.unlogged_skipped),
        );
        extra.insert("backup_type".into(), Value::String(kind.as_str().into()));
        extra.insert("pgdata".into(), serde_json::to_value(&list)?);
        let mut versions = BTreeMap::new();
        versions.insert("server".into(), server.version.clone());
        versions.insert("backup".into(), env!("CARGO_PKG_VERSION").into());
        let m = Manifest {
            manifest_version: manifest::MANIFEST_VERSION,
            id: id.clone(),
            target: target.to_string(),
            engine: tcfg.engine.clone(),
            kind: Kind::Physical,
            format: FORMAT.into(),
            tag: tag.map(str::to_string),
            started_at: started,
            finished_at: finished,
            duration_seconds: (finished - started).num_milliseconds() as f64 / 1000.0,
            versions,
            artifacts,
            database: DatabaseFacts {
                name: None,
                size_bytes: server.size,
                tables: vec![],
                extra,
            },
            wal: Some(range),
            depends_on,
            host: hostname(),
            encryption: None,
        };
        Ok((m, failed))
    })();
    let (m, mut failed) = match res {
        Ok(r) => r,
        Err(e) => {
            crate::engine::stream_set::remove_partial(&storages, target, &id);
            return Err(e.context(format!("backup {target} {id} failed; nothing was kept")));
        }
    };
    let _ = session.close();
    failed.extend(left_out);
    let (stored_on, failed) =
        interrupted.committing(|| commit(&storages, &m, &meta, failed, ui))?;
    if let Some(w) = &m.wal {
        ui.info(format!(
            "WAL range: timeline {} {} ({}) .. {} ({})",
            w.timeline, w.start_lsn, w.start_segment, w.stop_lsn, w.stop_segment
        ));
    }
    Ok(RunOutcome {
        manifest: m,
        stored_on,
        failed,
    })
}

/// The database's clock, seconds since the epoch.
fn db_clock(session: &mut crate::db::postgres::Psql) -> Result<f64> {
    session
        .query_one("SELECT extract(epoch FROM clock_timestamp())")?
        .trim()
        .parse()
        .context("reading the database's clock")
}

/// Writes the manifest on every storage that holds every bundle; the others lose
/// what they got (no half backup stays behind).
fn commit(
    storages: &[Box<dyn Storage>],
    m: &Manifest,
    meta: &PutMeta,
    mut failed: Failures,
    ui: &Ui,
) -> Result<(Vec<String>, Failures)> {
    let key = catalog::artifact_key(&m.target, &m.id, manifest::MANIFEST_FILE);
    let mut stored_on = Vec::new();
    for s in storages {
        if failed.iter().any(|(n, _)| n == s.name()) {
            crate::engine::stream_set::remove_partial(std::slice::from_ref(s), &m.target, &m.id);
            continue;
        }
        let res = m
            .for_storage(s.as_ref())
            .to_json()
            .and_then(|b| s.put(&key, &b, &manifest::manifest_meta(meta, &b)));
        match res {
            Ok(_) => {
                ui.info(format!(
                    "stored {} on `{}` ({})",
                    crate::duration::bytes(m.size_bytes()),
                    s.name(),
                    s.location()
                ));
                stored_on.push(s.name().to_string());
            }
            Err(e) => {
                crate::engine::stream_set::remove_partial(
                    std::slice::from_ref(s),
                    &m.target,
                    &m.id,
                );
                failed.push((s.name().to_string(), format!("{e:#}")));
            }
        }
    }
    if stored_on.is_empty() {
        bail!(
            "backup {} {} failed on every storage: {}",
            m.target,
            m.id,
            backup::describe_failures(&failed)
        );
    }
    Ok((stored_on, failed))
}

/// The backup a diff (the newest full) or incr (the newest of any type) is compared
/// with, when one is usable on every storage; otherwise a full, with the reason.
fn find_prior(
    storages: &[Box<dyn Storage>],
    target: &str,
    asked: BackupType,
    system_id: &str,
) -> Result<(Option<Prior>, BackupType, Vec<String>)> {
    if asked == BackupType::Full {
        return Ok((None, BackupType::Full, vec![]));
    }
    let full = |why: String| Ok((None, BackupType::Full, vec![why]));
    let cat = catalog::scan(storages[0].as_ref(), target)?;
    let mut candidates = cat.backups.iter().filter(|m| is_files(m));
    let found = match asked {
        BackupType::Diff => candidates.rfind(|m| super::backup_type(m) == Some("full")),
        _ => candidates.next_back(),
    };
    let Some(m) = found else {
        return full(format!(
            "no earlier file-level backup of `{target}` to compare with: taking a full backup instead of {}",
            asked.as_str()
        ));
    };
    let sid = m
        .database
        .extra
        .get("system_identifier")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if sid != system_id {
        return full(format!(
            "backup {} is of another cluster (system identifier {sid}, now {system_id}): taking a full backup",
            m.id
        ));
    }
    for s in &storages[1..] {
        let key = catalog::artifact_key(target, &m.id, manifest::MANIFEST_FILE);
        if s.head(&key)?.is_none() {
            return full(format!(
                "backup {} is not on storage `{}`: taking a full backup so every storage holds a whole chain",
                m.id,
                s.name()
            ));
        }
    }
    let listing = listing(m)?;
    let files = listing
        .files
        .iter()
        .map(|f| {
            let mut e = f.clone();
            e.backup = Some(f.home(m).to_string());
            (f.path.clone(), e)
        })
        .collect();
    Ok((
        Some(Prior {
            m: m.clone(),
            listing,
            files,
        }),
        asked,
        vec![],
    ))
}
