//! The logical backup: per database its DDL, per object its DDL (`SHOW CREATE`) and,
//! for tables that keep data, `SELECT * FORMAT Native` streamed to storage and parsed
//! on the way by a thread (rows for the manifest; an error the server appends after
//! status 200, or a cut connection, fails the backup). Restore in dependency order:
//! tables created and loaded, then materialized views (so loading their sources
//! triggers nothing), then the MVs' inner tables loaded directly, then views.

use super::http::{ident, literal, Client};
use super::native;
use super::schema::{self, Object};
use super::stream::{NativeDump, Text};
use super::Options;
use crate::db::{
    ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions, StreamSetEngine,
};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, Manifest, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct Logical {
    o: Options,
    c: Client,
    /// Databases and objects found by `precheck`.
    plan: Option<(Vec<String>, Vec<Object>)>,
    /// What the last restore restored, with the database it went into.
    restored: Vec<(Object, String)>,
    /// test-restore: each database goes into `<prefix><database>` instead.
    scratch_prefix: Option<String>,
}

impl Logical {
    pub fn new(o: Options, c: Client) -> Logical {
        Logical {
            o,
            c,
            plan: None,
            restored: vec![],
            scratch_prefix: None,
        }
    }

    /// An engine that restores database `d` into `<prefix>d` (test-restore).
    pub fn scratch(o: Options, c: Client, prefix: String) -> Logical {
        Logical {
            scratch_prefix: Some(prefix),
            ..Logical::new(o, c)
        }
    }

    pub fn client(&self) -> &Client {
        &self.c
    }

    /// The database that backed-up database `db` is restored into.
    pub fn dest(&self, opts: &RestoreOptions, db: &str) -> String {
        match (&self.scratch_prefix, &opts.to_database) {
            (Some(p), _) => format!("{p}{db}"),
            (None, Some(to)) => to.clone(),
            (None, None) => db.to_string(),
        }
    }

    /// The objects `precheck` found (a part-level backup takes MergeTree data apart).
    pub fn objects_mut(&mut self) -> Option<&mut Vec<Object>> {
        self.plan.as_mut().map(|(_, o)| o)
    }

    /// What the last restore restored: (object, the database it went into).
    pub fn restored(&self) -> &[(Object, String)] {
        &self.restored
    }

    fn version(&self) -> Result<String> {
        Ok(self.c.text("SELECT version()")?.trim().to_string())
    }

    /// The first value of the answer to `SHOW CREATE ...`.
    fn show_create(&self, what: &str) -> Result<String> {
        let rows = self.c.rows(&format!("SHOW CREATE {what}"))?;
        rows.first()
            .and_then(|r| r.as_object())
            .and_then(|r| r.values().next())
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("SHOW CREATE {what} returned nothing"))
    }

    pub fn count(&self, db: &str, name: &str) -> Result<u64> {
        let q = format!("SELECT count() FROM {}.{}", ident(db), ident(name));
        self.c
            .text(&q)?
            .trim()
            .parse()
            .map_err(|_| anyhow!("{q}: not a number"))
    }

    /// Objects of `dest` that exist: name -> engine.
    pub fn existing(&self, dest: &str) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(self
            .c
            .rows(&format!(
                "SELECT name, engine FROM system.tables WHERE database = {}",
                literal(dest)
            ))?
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                (s("name"), s("engine"))
            })
            .collect())
    }
}

/// The objects a manifest records.
pub fn objects(m: &Manifest) -> Result<Vec<Object>> {
    let v =
        m.database.extra.get("clickhouse").ok_or_else(|| {
            Fail::Verify(format!("backup {} records no ClickHouse objects", m.id))
        })?;
    serde_json::from_value(v.clone()).map_err(|e| {
        Fail::Verify(format!(
            "backup {}: its object list is malformed ({e})",
            m.id
        ))
        .into()
    })
}

/// The objects a restore with `opts` covers, in restore order; selecting a
/// materialized view brings its inner table.
pub fn select(m: &Manifest, objs: &[Object], opts: &RestoreOptions) -> Result<Vec<Object>> {
    if opts.tables.is_empty() {
        return Ok(objs.to_vec());
    }
    let mut keep = vec![false; objs.len()];
    for sel in &opts.tables {
        let hit = |o: &Object| match sel.split_once('.') {
            Some((d, n)) if !sel.starts_with(".inner.") => o.database == d && o.name == n,
            _ => o.name == *sel,
        };
        let mut any = false;
        for (i, o) in objs.iter().enumerate() {
            if hit(o) {
                keep[i] = true;
                any = true;
                if o.kind == "mv" {
                    let inner = format!(".inner.{}", o.name);
                    for (j, p) in objs.iter().enumerate() {
                        keep[j] |= p.database == o.database && p.name == inner;
                    }
                }
            }
        }
        if !any {
            return Err(Fail::Usage(format!(
                "--table {sel}: backup {} holds no such table; it holds {}",
                m.id,
                objs.iter()
                    .filter(|o| o.kind != "inner")
                    .map(|o| o.full())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
    }
    Ok(objs
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(o, _)| o.clone())
        .collect())
}

fn databases_of(sel: &[Object]) -> Vec<String> {
    let mut d: Vec<String> = sel.iter().map(|o| o.database.clone()).collect();
    d.dedup();
    d.sort();
    d.dedup();
    d
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

impl LogicalEngine for Logical {
    fn artifact(&self) -> ArtifactSpec {
        ArtifactSpec {
            name: "tables".into(),
            gzip: true,
            content: "DDL and SELECT * FORMAT Native per table".into(),
            format: "native".into(),
        }
    }

    fn precheck(&mut self) -> Result<EngineInfo> {
        let version = self.version()?;
        let (dbs, objs) = schema::discover(&self.c, &self.o)?;
        if dbs.is_empty() {
            return Err(Fail::Usage(format!(
                "{} has no database to back up (system databases are left out); check `databases`",
                self.c.display()
            ))
            .into());
        }
        let list = dbs
            .iter()
            .map(|d| literal(d))
            .collect::<Vec<_>>()
            .join(", ");
        let size = self
            .c
            .text(&format!(
                "SELECT sum(bytes) FROM system.parts WHERE active AND database IN ({list})"
            ))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let mut info = EngineInfo {
            database: Some(dbs.join(", ")),
            size_bytes: size,
            ..Default::default()
        };
        info.versions.insert("server".into(), version);
        self.plan = Some((dbs, objs));
        Ok(info)
    }

    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>> {
        bail!("a ClickHouse backup is a set of streams (one per table), not one dump")
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
        if name.ends_with(".sql") {
            let mut s = String::new();
            Read::take(artifact, 16 << 20)
                .read_to_string(&mut s)
                .context("the DDL is not text")?;
            if !s.starts_with("CREATE ") {
                bail!("the DDL does not start with CREATE");
            }
            return Ok("DDL readable".into());
        }
        let sum = native::read_stream(artifact)?;
        let objs: Vec<Object> = expected
            .extra
            .get("clickhouse")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let want = objs
            .iter()
            .find(|o| o.data.as_deref() == Some(name))
            .and_then(|o| {
                expected
                    .tables
                    .iter()
                    .find(|t| t.schema == o.database && t.name == o.name)
            })
            .and_then(|t| t.rows);
        match want {
            Some(w) if w != sum.rows => bail!(
                "the Native stream holds {} rows, the manifest says {w}",
                sum.rows
            ),
            _ => Ok(format!(
                "Native stream whole: {} block(s), {} rows",
                sum.blocks, sum.rows
            )),
        }
    }

    fn restore_precheck(&mut self, opts: &RestoreOptions, _format: &str) -> Result<String> {
        let redis_only = opts.to_url.is_some()
            || !opts.dbs.is_empty()
            || opts.key_match.is_some()
            || opts.flush
            || opts.by_file;
        if redis_only {
            return Err(Fail::Usage(
                "--to-url, --db, --match, --flush and --by-file are for Redis targets; a ClickHouse restore takes --to-database, --table and --clean".into(),
            )
            .into());
        }
        if opts
            .to_database
            .as_deref()
            .is_some_and(|d| schema::SYSTEM_DATABASES.contains(&d) || d.is_empty())
        {
            return Err(Fail::Usage("--to-database: name a user database".into()).into());
        }
        self.version()
            .context("the restore's server must answer before anything is touched")?;
        Ok(opts
            .to_database
            .clone()
            .unwrap_or_else(|| "the backup's databases".into()))
    }

    fn restore_plan(&self, opts: &RestoreOptions, _format: &str, database: &str) -> String {
        format!(
            "on {}: {}create databases and tables in {database}, load each table with INSERT ... FORMAT Native, then create materialized views, load their inner tables directly, then views",
            self.c.display(),
            if opts.clean { "drop the restored objects, " } else { "" }
        )
    }

    fn restore(
        &mut self,
        _file: &Path,
        _compression: crate::compress::Compression,
        _opts: &RestoreOptions,
    ) -> Result<()> {
        bail!("a ClickHouse backup is restored table by table from its set of streams")
    }

    fn count_rows(&mut self, _opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        self.restored
            .iter()
            .filter(|(o, _)| o.data.is_some())
            .map(|(o, d)| {
                Ok(TableFact {
                    schema: o.database.clone(),
                    name: o.name.clone(),
                    rows: Some(self.count(d, &o.name)?),
                })
            })
            .collect()
    }

    fn compares(&self, _opts: &RestoreOptions, t: &TableFact) -> bool {
        self.restored
            .iter()
            .any(|(o, _)| o.data.is_some() && o.database == t.schema && o.name == t.name)
    }
}

impl StreamSetEngine for Logical {
    fn as_logical(&mut self) -> &mut dyn LogicalEngine {
        self
    }

    fn streams(&mut self) -> Result<Vec<ArtifactSpec>> {
        let (dbs, objs) = self
            .plan
            .as_ref()
            .ok_or_else(|| anyhow!("precheck first"))?;
        let spec = |name: &str, gzip: bool, content: &str| ArtifactSpec {
            name: name.into(),
            gzip,
            content: content.into(),
            format: "native".into(),
        };
        let mut out: Vec<ArtifactSpec> = dbs
            .iter()
            .map(|d| spec(&schema::database_ddl(d), false, "SHOW CREATE DATABASE"))
            .collect();
        for o in objs {
            if let Some(d) = &o.ddl {
                out.push(spec(d, false, &format!("SHOW CREATE TABLE ({})", o.kind)));
            }
            if let Some(d) = &o.data {
                out.push(spec(d, true, "SELECT * FORMAT Native"));
            }
        }
        Ok(out)
    }

    fn open_stream(&mut self, name: &str) -> Result<Box<dyn DumpStream>> {
        let (dbs, objs) = self
            .plan
            .as_ref()
            .ok_or_else(|| anyhow!("precheck first"))?;
        if let Some(d) = dbs.iter().find(|d| schema::database_ddl(d) == name) {
            let ddl = self.show_create(&format!("DATABASE {}", ident(d)))?;
            return Ok(Box::new(Text(std::io::Cursor::new(ddl.into_bytes()))));
        }
        let o = objs
            .iter()
            .find(|o| o.ddl.as_deref() == Some(name) || o.data.as_deref() == Some(name))
            .ok_or_else(|| anyhow!("no stream {name}"))?
            .clone();
        if o.ddl.as_deref() == Some(name) {
            let ddl = self.show_create(&format!("TABLE {}", o.quoted(&o.database)))?;
            return Ok(Box::new(Text(std::io::Cursor::new(ddl.into_bytes()))));
        }
        let body = self
            .c
            .stream(&format!(
                "SELECT * FROM {} FORMAT Native",
                o.quoted(&o.database)
            ))
            .with_context(|| format!("reading {}", o.full()))?;
        Ok(Box::new(NativeDump::start(body, o)))
    }

    fn facts(&mut self, per_stream: Vec<DatabaseFacts>) -> Result<DatabaseFacts> {
        let (dbs, objs) = self
            .plan
            .as_ref()
            .ok_or_else(|| anyhow!("precheck first"))?;
        let mut f = DatabaseFacts {
            name: Some(dbs.join(", ")),
            ..Default::default()
        };
        f.tables = per_stream.into_iter().flat_map(|s| s.tables).collect();
        f.extra
            .insert("clickhouse".into(), serde_json::to_value(objs)?);
        f.extra
            .insert("databases".into(), serde_json::to_value(dbs)?);
        Ok(f)
    }

    fn needed(&self, m: &Manifest, opts: &RestoreOptions) -> Result<Vec<String>> {
        let objs = objects(m)?;
        let sel = select(m, &objs, opts)?;
        let dbs = databases_of(&sel);
        if opts.to_database.is_some() && dbs.len() > 1 {
            return Err(Fail::Usage(format!(
                "--to-database takes one database, but the restore covers {}; add --table DB.T for tables of one database",
                dbs.join(", ")
            ))
            .into());
        }
        // Existing data is never mixed with the backup's unless --clean.
        if !opts.clean {
            for db in &dbs {
                let there = self.existing(&self.dest(opts, db))?;
                for o in sel.iter().filter(|o| &o.database == db) {
                    let Some(engine) = there.get(&o.name) else {
                        continue;
                    };
                    let d = self.dest(opts, db);
                    let busy = match o.kind.as_str() {
                        "mv" | "view" => true,
                        _ if engine == "View" || engine == "MaterializedView" => true,
                        _ => o.data.is_some() && self.count(&d, &o.name)? > 0,
                    };
                    if busy {
                        return Err(Fail::Usage(format!(
                            "{d}.{} already exists{}; restore with --clean to replace it, or --to-database another database",
                            o.name,
                            if o.data.is_some() { " and holds rows" } else { "" }
                        ))
                        .into());
                    }
                }
            }
        }
        let mut names: Vec<String> = dbs.iter().map(|d| schema::database_ddl(d)).collect();
        for o in &sel {
            names.extend(o.ddl.clone());
            names.extend(o.data.clone());
        }
        Ok(names)
    }

    fn restore_set(
        &mut self,
        m: &Manifest,
        files: &[(String, PathBuf)],
        opts: &RestoreOptions,
    ) -> Result<()> {
        let objs = objects(m)?;
        let sel = select(m, &objs, opts)?;
        let path = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| anyhow!("{name} was not fetched"))
        };
        for db in databases_of(&sel) {
            let ddl = read_text(&path(&schema::database_ddl(&db))?)?;
            self.c
                .exec(&schema::database_create(&ddl, &db, &self.dest(opts, &db)))
                .with_context(|| format!("creating database {}", self.dest(opts, &db)))?;
        }
        if opts.clean {
            for o in sel.iter().rev().filter(|o| o.kind != "inner") {
                self.c
                    .exec(&format!(
                        "DROP TABLE IF EXISTS {}",
                        o.quoted(&self.dest(opts, &o.database))
                    ))
                    .with_context(|| format!("dropping {}", o.full()))?;
            }
        }
        self.restored.clear();
        for o in &sel {
            let d = self.dest(opts, &o.database);
            if let Some(ddl) = &o.ddl {
                let mut sql = schema::rewrite(&read_text(&path(ddl)?)?, &o.database, &d, true);
                if self.scratch_prefix.is_some() {
                    // A scratch copy must not reach into the real databases (an MV
                    // reading another database would see production inserts).
                    for other in databases_of(&objs).iter().filter(|x| **x != o.database) {
                        sql = schema::rewrite(&sql, other, &self.dest(opts, other), false);
                    }
                }
                self.c
                    .exec(&sql)
                    .with_context(|| format!("creating {d}.{}", o.name))?;
            }
            if let Some(data) = &o.data {
                let art = m.artifacts.iter().find(|a| &a.name == data);
                if art.is_some_and(|a| a.raw_size_bytes > 0) {
                    let f = std::fs::File::open(path(data)?)?;
                    let body = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
                    self.c
                        .insert(&format!("INSERT INTO {} FORMAT Native", o.quoted(&d)), body)
                        .with_context(|| format!("loading {d}.{}", o.name))?;
                }
            }
            self.restored.push((o.clone(), d));
        }
        Ok(())
    }
}
