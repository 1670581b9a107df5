//! Part-level backups (`kind = "physical"`), the way clickhouse-backup takes them,
//! on the ClickHouse host: each MergeTree table is frozen (`ALTER TABLE ... FREEZE`
//! hard-links its parts into `shadow/<N>/`), each frozen part is streamed to storage
//! as a tar through the same pipeline as every artifact (SHA-256, every storage),
//! and the shadow increments are removed on every way out (errors and signals too).
//! DDL, and the data of tables that are not MergeTree, are backed up as in a logical
//! backup (the manifest lists them as such). Parts are immutable: a part (same table,
//! name and `checksums.txt`) that an earlier backup on every storage already stores
//! is referenced, not uploaded again, and that backup goes into `depends_on` so
//! retention keeps it. Restore: the logical path creates databases and tables (and
//! loads the non-MergeTree ones), then each part is unpacked into the table's
//! `detached/` and attached with `ALTER TABLE ... ATTACH PART`.

use super::logical::{objects, select, Logical};
use super::parts::{self, Part, PartTar};
use super::schema::{safe, Object};
use crate::db::{
    ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions, StreamSetEngine, Target,
};
use crate::engine::cleanup::CleanupGuard;
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, Kind, Manifest, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Each `shadow/` folder with the increments it held before this run froze into it.
type Frozen = Vec<(PathBuf, Vec<PathBuf>)>;

pub struct Physical {
    logical: Logical,
    /// The operator's `data_path` (None: the server's own, from `system.tables`).
    root: Option<PathBuf>,
    config: crate::config::Config,
    target: String,
    storages: Vec<String>,
    /// This backup's parts (stored here or referenced), once `streams` froze them.
    parts: Vec<Part>,
    /// Artifact -> the frozen part's folder, for the parts this backup stores.
    dirs: BTreeMap<String, PathBuf>,
    /// Each `shadow/` folder this run freezes into, with the increments it held
    /// before: every other increment there is this run's, to remove.
    frozen: Arc<Mutex<Frozen>>,
    guard: Option<CleanupGuard>,
    /// Tables whose parts the last restore attached: (object, its database there).
    attached: Vec<(Object, String)>,
}

/// MergeTree tables (and MV inner tables) of a part-level backup: their data is parts.
fn is_part_table(o: &Object) -> bool {
    matches!(o.kind.as_str(), "table" | "inner") && o.engine.ends_with("MergeTree")
}

/// Tables whose data this backup holds as parts (a part-level manifest records
/// them without a Native data artifact).
fn has_parts(o: &Object) -> bool {
    is_part_table(o) && o.data.is_none()
}

/// Can this process read (and, when `write`, write) `p`?
fn access(p: &Path, write: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    let mode = libc::R_OK | libc::X_OK | if write { libc::W_OK } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

fn no_access(root: &Path, what: &str) -> anyhow::Error {
    Fail::Usage(format!(
        "ClickHouse's data path {} is not {what} by this process: part-level backups (kind = \"physical\") run on the ClickHouse host with access to its data folder (run as the clickhouse user or root, or set data_path to where it is mounted here); kind = \"logical\" works from any host",
        root.display()
    ))
    .into()
}

impl Physical {
    pub fn new(logical: Logical, root: Option<PathBuf>, t: &Target) -> Physical {
        Physical {
            logical,
            root,
            config: t.config.clone(),
            target: t.name.to_string(),
            storages: t.cfg.storages.clone(),
            parts: vec![],
            dirs: BTreeMap::new(),
            frozen: Arc::new(Mutex::new(vec![])),
            guard: None,
            attached: vec![],
        }
    }

    fn table_dir(&self, db: &str, table: &str) -> Result<PathBuf> {
        parts::table_dir(self.logical.client(), self.root.as_deref(), db, table)
    }

    /// Removes the shadow increments this backup made.
    fn release(&mut self) {
        drop(self.guard.take());
    }

    fn freeze_all(&mut self) -> Result<Vec<ArtifactSpec>> {
        let tables: Vec<Object> = self
            .logical
            .objects_mut()
            .map(|o| o.iter().filter(|o| has_parts(o)).cloned().collect())
            .unwrap_or_default();
        let stored = parts::stored(&self.config, &self.target, &self.storages);
        let c = self.logical.client().clone();
        let mut specs = Vec::new();
        for o in &tables {
            let dir = self.table_dir(&o.database, &o.name)?;
            let root = self.root.clone().unwrap_or_else(|| parts::root_of(&dir));
            if self.guard.is_none() {
                let frozen = self.frozen.clone();
                self.guard = Some(CleanupGuard::new(move || {
                    let frozen = frozen.lock().unwrap();
                    let again = crate::engine::cleanup::terminating();
                    unfreeze(&frozen, !again);
                    if again {
                        // A FREEZE under way when the signal came may still add an
                        // increment (or links into one): once more after it finished.
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        unfreeze(&frozen, true);
                    }
                }));
            }
            let shadow = root.join("shadow");
            {
                // Recorded before the FREEZE, so a signal during it still finds the
                // increment it creates.
                let mut f = self.frozen.lock().unwrap();
                if !f.iter().any(|(s, _)| *s == shadow) {
                    let before = parts::increments(&shadow);
                    f.push((shadow, before));
                }
            }
            let (_incs, part_dirs) = parts::freeze(&c, &root, &dir, &o.database, &o.name)?;
            let facts: BTreeMap<String, (u64, u64)> = c
                .rows(&format!(
                    "SELECT name, rows, bytes_on_disk FROM system.parts WHERE database = {} AND table = {}",
                    super::http::literal(&o.database),
                    super::http::literal(&o.name)
                ))?
                .iter()
                .map(|r| {
                    let n = |k: &str| {
                        r[k].as_u64()
                            .or_else(|| r[k].as_str().and_then(|s| s.parse().ok()))
                            .unwrap_or(0)
                    };
                    (r["name"].as_str().unwrap_or("").to_string(), (n("rows"), n("bytes_on_disk")))
                })
                .collect();
            for pd in part_dirs {
                let name = pd
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (rows, bytes) = *facts.get(&name).ok_or_else(|| {
                    anyhow!("part {name} of {} left system.parts before its row count was read; run the backup again", o.full())
                })?;
                let checksums = parts::checksums_digest(&pd)?;
                let key = (
                    o.database.clone(),
                    o.name.clone(),
                    name.clone(),
                    checksums.clone(),
                );
                let (artifact, home) = match stored.get(&key) {
                    Some((home, art)) => (art.clone(), Some(home.clone())),
                    None => {
                        let art = format!(
                            "{}.{}.{}.tar",
                            safe(&o.database),
                            safe(&o.name),
                            safe(&name)
                        );
                        specs.push(ArtifactSpec {
                            name: art.clone(),
                            gzip: false,
                            content: format!("part {name} of {} (tar of its files)", o.full()),
                            format: "parts".into(),
                        });
                        self.dirs.insert(art.clone(), pd.clone());
                        (art, None)
                    }
                };
                self.parts.push(Part {
                    database: o.database.clone(),
                    table: o.name.clone(),
                    name,
                    checksums,
                    rows,
                    bytes,
                    artifact,
                    home,
                });
            }
        }
        Ok(specs)
    }
}

/// Removes the increments that appeared in each `shadow/` since this run first froze
/// into it (another tool freezing at the very same time would lose its increment too).
fn unfreeze(frozen: &[(PathBuf, Vec<PathBuf>)], report: bool) {
    for (shadow, before) in frozen {
        for inc in parts::increments(shadow) {
            if before.contains(&inc) {
                continue;
            }
            match std::fs::remove_dir_all(&inc) {
                Err(e) if report => eprintln!(
                    "could not remove {}: {e}; remove it by hand (it holds hard links to parts)",
                    inc.display()
                ),
                _ => {}
            }
        }
    }
}

/// A frozen part as a stream.
struct PartDump(PartTar);

impl Read for PartDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl DumpStream for PartDump {
    fn finish(self: Box<Self>) -> Result<DatabaseFacts> {
        Ok(DatabaseFacts::default())
    }
    fn kill(self: Box<Self>) {}
}

impl LogicalEngine for Physical {
    fn artifact(&self) -> ArtifactSpec {
        ArtifactSpec {
            name: "parts".into(),
            gzip: false,
            content: "DDL per table, MergeTree parts as tars, other tables as Native".into(),
            format: "parts".into(),
        }
    }

    fn precheck(&mut self) -> Result<EngineInfo> {
        let info = self.logical.precheck()?;
        let Some(objs) = self.logical.objects_mut() else {
            return Ok(info);
        };
        // MergeTree data is taken as parts, not as a Native stream.
        for o in objs.iter_mut().filter(|o| is_part_table(o)) {
            o.data = None;
        }
        let first = objs.iter().find(|o| has_parts(o)).cloned();
        if let Some(o) = first {
            let root = match &self.root {
                Some(r) => r.clone(),
                None => parts::root_of(&self.table_dir(&o.database, &o.name)?),
            };
            if !access(&root.join("data"), false) {
                return Err(no_access(&root, "readable"));
            }
            let shadow = root.join("shadow");
            if shadow.exists() && !access(&shadow, true) {
                return Err(no_access(
                    &shadow,
                    "writable (frozen parts are removed from it)",
                ));
            }
        }
        Ok(info)
    }

    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>> {
        bail!("a ClickHouse part-level backup is a set of streams, not one dump")
    }

    fn check_artifact(&self, artifact: &mut dyn Read, expected: &DatabaseFacts) -> Result<String> {
        self.check_named("", artifact, expected)
    }

    fn check_named(
        &self,
        name: &str,
        artifact: &mut dyn Read,
        expected: &DatabaseFacts,
    ) -> Result<String> {
        if name.ends_with(".tar") {
            let (files, bytes) = parts::check_tar(artifact)?;
            return Ok(format!("part tar whole: {files} file(s), {bytes} bytes"));
        }
        self.logical.check_named(name, artifact, expected)
    }

    fn restore_precheck(&mut self, opts: &RestoreOptions, format: &str) -> Result<String> {
        let db = self.logical.restore_precheck(opts, format)?;
        // The server's own data path, from any MergeTree table it has (none: the
        // first table this restore creates tells, and a failure comes then).
        let root = match &self.root {
            Some(r) => Some(r.clone()),
            None => self
                .logical
                .client()
                .text("SELECT data_path FROM system.tables WHERE engine LIKE '%MergeTree' AND data_path != '' LIMIT 1 FORMAT TSVRaw")?
                .lines()
                .next()
                .map(|p| parts::root_of(Path::new(p))),
        };
        if let Some(r) = root {
            if !access(&r.join("data"), true) {
                return Err(no_access(&r, "writable"));
            }
        }
        Ok(db)
    }

    fn restore_plan(&self, opts: &RestoreOptions, format: &str, database: &str) -> String {
        format!(
            "{}; then unpack each MergeTree table's parts into its detached/ folder and ATTACH PART them",
            self.logical.restore_plan(opts, format, database)
        )
    }

    fn restore(
        &mut self,
        _file: &Path,
        _compression: crate::compress::Compression,
        _opts: &RestoreOptions,
    ) -> Result<()> {
        bail!("a ClickHouse part-level backup is restored table by table from its set of streams")
    }

    fn count_rows(&mut self, opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        let mut v = self.logical.count_rows(opts)?;
        for (o, d) in &self.attached {
            v.push(TableFact {
                schema: o.database.clone(),
                name: o.name.clone(),
                rows: Some(self.logical.count(d, &o.name)?),
            });
        }
        Ok(v)
    }

    fn compares(&self, opts: &RestoreOptions, t: &TableFact) -> bool {
        self.logical.compares(opts, t)
            || self
                .attached
                .iter()
                .any(|(o, _)| o.database == t.schema && o.name == t.name)
    }
}

impl StreamSetEngine for Physical {
    fn as_logical(&mut self) -> &mut dyn LogicalEngine {
        self
    }

    fn streams(&mut self) -> Result<Vec<ArtifactSpec>> {
        let mut out = self.logical.streams()?;
        let frozen = self.freeze_all();
        match frozen {
            Ok(parts) => out.extend(parts),
            Err(e) => {
                self.release();
                return Err(e);
            }
        }
        Ok(out)
    }

    fn open_stream(&mut self, name: &str) -> Result<Box<dyn DumpStream>> {
        match self.dirs.get(name) {
            Some(dir) => Ok(Box::new(PartDump(PartTar::open(dir)?))),
            None => self.logical.open_stream(name),
        }
    }

    fn facts(&mut self, per_stream: Vec<DatabaseFacts>) -> Result<DatabaseFacts> {
        self.release();
        let mut f = self.logical.facts(per_stream)?;
        let mut rows: BTreeMap<(String, String), u64> = BTreeMap::new();
        if let Some(objs) = self.logical.objects_mut() {
            for o in objs.iter().filter(|o| has_parts(o)) {
                rows.insert((o.database.clone(), o.name.clone()), 0);
            }
        }
        for p in &self.parts {
            *rows
                .entry((p.database.clone(), p.table.clone()))
                .or_default() += p.rows;
        }
        for ((schema, name), n) in rows {
            f.tables.push(TableFact {
                schema,
                name,
                rows: Some(n),
            });
        }
        f.extra.insert(
            "clickhouse_parts".into(),
            serde_json::to_value(&self.parts)?,
        );
        Ok(f)
    }

    fn kind(&self) -> Kind {
        Kind::Physical
    }

    fn depends_on(&self) -> Vec<String> {
        let mut d: Vec<String> = self.parts.iter().filter_map(|p| p.home.clone()).collect();
        d.sort();
        d.dedup();
        d
    }

    fn home(&self, m: &Manifest, name: &str) -> Option<String> {
        parts::of_manifest(m)
            .into_iter()
            .find(|p| p.artifact == name)
            .and_then(|p| p.home)
    }

    fn needed(&self, m: &Manifest, opts: &RestoreOptions) -> Result<Vec<String>> {
        let mut names = self.logical.needed(m, opts)?;
        let objs = objects(m)?;
        let all = parts::of_manifest(m);
        for o in select(m, &objs, opts)?.iter().filter(|o| has_parts(o)) {
            let d = self.logical.dest(opts, &o.database);
            if !opts.clean
                && self.logical.existing(&d)?.contains_key(&o.name)
                && self.logical.count(&d, &o.name)? > 0
            {
                return Err(Fail::Usage(format!(
                    "{d}.{} already exists and holds rows; restore with --clean to replace it, or --to-database another database",
                    o.name
                ))
                .into());
            }
            names.extend(
                all.iter()
                    .filter(|p| p.database == o.database && p.table == o.name)
                    .map(|p| p.artifact.clone()),
            );
        }
        Ok(names)
    }

    fn restore_set(
        &mut self,
        m: &Manifest,
        files: &[(String, PathBuf)],
        opts: &RestoreOptions,
    ) -> Result<()> {
        self.logical.restore_set(m, files, opts)?;
        let all = parts::of_manifest(m);
        self.attached.clear();
        let restored: Vec<(Object, String)> = self.logical.restored().to_vec();
        for (o, d) in restored.into_iter().filter(|(o, _)| has_parts(o)) {
            let dir = self.table_dir(&d, &o.name)?;
            let detached = dir.join("detached");
            std::fs::create_dir_all(&detached)
                .map_err(|e| no_access(&detached, &format!("writable ({e})")))?;
            let owner = {
                use std::os::unix::fs::MetadataExt;
                let md = std::fs::metadata(&dir)?;
                (md.uid(), md.gid())
            };
            for p in all
                .iter()
                .filter(|p| p.database == o.database && p.table == o.name)
            {
                let file = files
                    .iter()
                    .find(|(n, _)| *n == p.artifact)
                    .map(|(_, f)| f)
                    .ok_or_else(|| anyhow!("{} was not fetched", p.artifact))?;
                parts::unpack(file, &detached, &p.name, owner)?;
                self.logical
                    .client()
                    .exec(&format!(
                        "ALTER TABLE {} ATTACH PART {}",
                        o.quoted(&d),
                        super::http::literal(&p.name)
                    ))
                    .with_context(|| format!("attaching part {} to {d}.{}", p.name, o.name))?;
            }
            self.attached.push((o, d));
        }
        Ok(())
    }
}
