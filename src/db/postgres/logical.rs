//! Logical backups with pg_dump and their restore with psql or pg_restore.
//!
//! Row counts for the manifest are taken in the dump's own snapshot: a psql session
//! exports a REPEATABLE READ snapshot, pg_dump imports it with `--snapshot`, and the
//! counts run in that session while the dump streams.

use super::toc::split_table;
use super::tools::{newer_tool, one_paragraph, quote_literal, spawn_stderr_collector, Psql, Tool};
use super::{DumpFormat, Postgres, RowCounts};
use crate::db::{ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const FACTS_SQL: &str =
    "SELECT json_build_object('version_num', current_setting('server_version_num')::int, \
    'version', current_setting('server_version'), 'database', current_database(), \
    'size', pg_database_size(current_database()), 'in_recovery', pg_is_in_recovery())";

const TABLES_FILTER: &str =
    "c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
    AND d.objid = c.oid AND d.deptype = 'e')";

fn counts_sql(only: &[(Option<String>, String)]) -> String {
    let mut filter = TABLES_FILTER.to_string();
    if !only.is_empty() {
        let conds: Vec<String> = only
            .iter()
            .map(|(s, t)| match s {
                Some(s) => format!(
                    "(n.nspname = {} AND c.relname = {})",
                    quote_literal(s),
                    quote_literal(t)
                ),
                None => format!("c.relname = {}", quote_literal(t)),
            })
            .collect();
        filter.push_str(&format!(" AND ({})", conds.join(" OR ")));
    }
    format!(
        "SELECT coalesce(json_agg(json_build_object('schema', n.nspname, 'name', c.relname, 'rows', \
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname), \
         false, true, '')))[1]::text::bigint) ORDER BY n.nspname, c.relname), '[]'::json) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {filter}"
    )
}

fn parse_tables(json: &str) -> Result<Vec<TableFact>> {
    #[derive(serde::Deserialize)]
    struct Row {
        schema: String,
        name: String,
        rows: Option<u64>,
    }
    let rows: Vec<Row> = serde_json::from_str(json).context("reading row counts")?;
    Ok(rows
        .into_iter()
        .map(|r| TableFact {
            schema: r.schema,
            name: r.name,
            rows: r.rows,
        })
        .collect())
}

/// What the server says about itself (FACTS_SQL).
#[derive(serde::Deserialize)]
pub(super) struct ServerFacts {
    version_num: u32,
    version: String,
    pub(super) database: String,
    size: u64,
    in_recovery: bool,
}

/// Row counts taken in the dump's snapshot, and the session holding that snapshot.
type CountsThread = JoinHandle<Result<(Vec<TableFact>, Psql)>>;

impl Postgres {
    fn server_facts(&mut self, dbname: Option<&str>) -> Result<ServerFacts> {
        let psql = self.psql()?;
        let mut s = Psql::connect(&psql, &self.conn, dbname)?;
        let line = s.query_one(FACTS_SQL)?;
        s.close()?;
        serde_json::from_str(&line).context("reading server facts")
    }

    /// Picks a client tool whose major version is at least the server's.
    fn compatible_tool(&self, name: &str, server_major: u32, server_version: &str) -> Result<Tool> {
        let t = self.tool(name)?;
        if t.major >= server_major {
            return Ok(t);
        }
        if self.opts.bin_dir.is_none() {
            if let Some(newer) = newer_tool(name, server_major) {
                return Ok(newer);
            }
        }
        Err(Fail::Config(format!(
            "{} {} ({}) is older than the server ({}); a {} older than the server cannot dump it: \
             install postgresql-client-{} and put it on PATH or set bin_dir",
            name,
            t.version,
            t.path.display(),
            server_version,
            name,
            server_major
        ))
        .into())
    }
}

struct PgDump {
    child: Child,
    stdout: ChildStdout,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    counts: Option<CountsThread>,
    facts: DatabaseFacts,
    snapshot: Option<String>,
}

impl Read for PgDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl DumpStream for PgDump {
    fn finish(mut self: Box<Self>) -> Result<DatabaseFacts> {
        let st = self.child.wait().context("waiting for pg_dump")?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let err = self.stderr.lock().unwrap().trim().to_string();
        if !st.success() {
            let how = match st.code() {
                Some(c) => format!("exit code {c}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("killed by signal {}", st.signal().unwrap_or(0))
                }
            };
            if let Some(h) = self.counts.take() {
                let _ = h.join();
            }
            if err.is_empty() {
                bail!("pg_dump failed ({how})");
            }
            bail!("pg_dump failed ({how}): {}", one_paragraph(&err));
        }
        let mut facts = std::mem::take(&mut self.facts);
        if let Some(h) = self.counts.take() {
            match h.join() {
                Ok(Ok((tables, session))) => {
                    facts.tables = tables;
                    let _ = session.close();
                }
                Ok(Err(e)) => bail!("counting rows in the dump's snapshot: {e:#}"),
                Err(_) => bail!("the row-count thread panicked"),
            }
        }
        if let Some(s) = &self.snapshot {
            facts
                .extra
                .insert("snapshot".into(), serde_json::Value::String(s.clone()));
        }
        if !err.is_empty() {
            facts.extra.insert(
                "pg_dump_warnings".into(),
                serde_json::Value::String(one_paragraph(&err)),
            );
        }
        Ok(facts)
    }

    fn kill(mut self: Box<Self>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.counts.take() {
            let _ = h.join();
        }
    }
}

impl LogicalEngine for Postgres {
    fn artifact(&self) -> ArtifactSpec {
        match self.opts.format {
            DumpFormat::Plain => ArtifactSpec {
                name: "dump.sql.gz".into(),
                gzip: true,
                content: "pg_dump plain SQL".into(),
                format: "plain".into(),
            },
            DumpFormat::Custom => ArtifactSpec {
                name: "dump.pgdump".into(),
                gzip: false,
                content: "pg_dump custom archive".into(),
                format: "custom".into(),
            },
        }
    }

    fn precheck(&mut self) -> Result<EngineInfo> {
        // Tools first: no point connecting when pg_dump is missing.
        let psql = self.psql()?;
        self.tool("pg_dump")?;
        let facts = self
            .server_facts(None)
            .with_context(|| format!("target `{}`: server not reachable", self.target))?;
        let major = facts.version_num / 10000;
        let pg_dump = self.compatible_tool("pg_dump", major, &facts.version)?;
        let mut versions = BTreeMap::new();
        versions.insert("pg_dump".into(), pg_dump.version.clone());
        versions.insert("psql".into(), psql.version.clone());
        versions.insert("server".into(), facts.version.clone());
        let info = EngineInfo {
            versions,
            database: Some(facts.database.clone()),
            size_bytes: Some(facts.size),
        };
        self.pg_dump = Some(pg_dump);
        self.server = Some(facts);
        Ok(info)
    }

    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>> {
        let pg_dump = self
            .pg_dump
            .clone()
            .ok_or_else(|| anyhow!("precheck not run"))?;
        let psql = self.psql()?;
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| anyhow!("precheck not run"))?;
        let mut facts = DatabaseFacts {
            name: Some(server.database.clone()),
            size_bytes: Some(server.size),
            ..Default::default()
        };
        facts.extra.insert(
            "in_recovery".into(),
            serde_json::Value::Bool(server.in_recovery),
        );

        // Export a snapshot so counts and dump see the same data.
        let mut snapshot = None;
        let mut session = None;
        if self.opts.row_counts == RowCounts::Exact {
            let mut s = Psql::connect(&psql, &self.conn, None)?;
            s.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
            match s.query_one("SELECT pg_export_snapshot()") {
                Ok(id) => {
                    snapshot = Some(id);
                    session = Some(s);
                }
                Err(e) => {
                    facts.extra.insert(
                        "row_counts_note".into(),
                        serde_json::Value::String(format!(
                            "counts taken outside the dump's snapshot: {e:#}"
                        )),
                    );
                    session = Some(Psql::connect(&psql, &self.conn, None)?);
                }
            }
        }

        let mut cmd = Command::new(&pg_dump.path);
        cmd.arg("--no-password");
        match self.opts.format {
            // --clean --if-exists as the strategy document's dump: `gunzip | psql`
            // into the existing database replaces what is there.
            DumpFormat::Plain => cmd.args(["--format=plain", "--clean", "--if-exists"]),
            DumpFormat::Custom => cmd.args(["--format=custom"]),
        };
        if let Some(s) = &snapshot {
            cmd.arg(format!("--snapshot={s}"));
        }
        cmd.args(&self.opts.dump_args);
        let ci = self.conn.conninfo(None);
        if !ci.is_empty() {
            cmd.arg(format!("--dbname={ci}"));
        }
        self.conn.apply(&mut cmd);
        cmd.env("PGAPPNAME", "backup");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", pg_dump.path.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = spawn_stderr_collector(child.stderr.take().unwrap(), stderr.clone());
        let stdout = child.stdout.take().unwrap();

        let counts = session.map(|mut s| {
            std::thread::spawn(move || -> Result<(Vec<TableFact>, Psql)> {
                let json = s.query_one(&counts_sql(&[]))?;
                let tables = parse_tables(&json)?;
                // Keep the snapshot open until pg_dump is done with it: the session is
                // returned and closed after pg_dump exits.
                Ok((tables, s))
            })
        });
        Ok(Box::new(PgDump {
            child,
            stdout,
            stderr,
            stderr_thread: Some(stderr_thread),
            counts,
            facts,
            snapshot,
        }))
    }

    /// A file-level backup's bundles are checked file by file against the manifest's
    /// list; anything else as a whole artifact.
    fn check_named(
        &self,
        name: &str,
        artifact: &mut dyn Read,
        expected: &DatabaseFacts,
    ) -> Result<String> {
        if name.starts_with("pgdata-") && expected.extra.contains_key("pgdata") {
            return super::files::check_bundle(name, artifact, expected);
        }
        self.check_artifact(artifact, expected)
    }

    /// A dump holds no row counts to compare while reading: `_expected` is not used
    /// (restore compares row counts in the restored database instead).
    fn check_artifact(&self, artifact: &mut dyn Read, _expected: &DatabaseFacts) -> Result<String> {
        if self.kind == "physical" {
            return super::tar::check_base_backup(artifact);
        }
        // The artifact says what it is (custom archives start with `PGDMP`), not the
        // target's current `format`: that may have changed since the backup was taken.
        let mut head = vec![0u8; 4096];
        let mut n = 0;
        while n < head.len() {
            let r = artifact.read(&mut head[n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        head.truncate(n);
        let format = if head.starts_with(b"PGDMP") {
            DumpFormat::Custom
        } else {
            DumpFormat::Plain
        };
        let mut artifact = std::io::Read::chain(&head[..], artifact);
        match format {
            DumpFormat::Plain => {
                // The stream is SQL text; check it looks like a pg_dump and ended cleanly.
                let head = String::from_utf8_lossy(&head).to_string();
                if !head.contains("PostgreSQL database dump") {
                    bail!("the dump does not start like a pg_dump SQL script");
                }
                let mut tail = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let r = artifact.read(&mut buf)?;
                    if r == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..r]);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 8192);
                    }
                }
                let tail = String::from_utf8_lossy(&tail).to_string();
                let full = format!("{head}{tail}");
                if !full.contains("PostgreSQL database dump complete") {
                    bail!("the dump does not end with pg_dump's completion line (truncated?)");
                }
                Ok("SQL script complete".into())
            }
            DumpFormat::Custom => {
                let pg_restore = self.tool("pg_restore")?;
                let mut child = Command::new(&pg_restore.path)
                    .arg("--list")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting pg_restore --list")?;
                let mut stdin = child.stdin.take().unwrap();
                let mut out = child.stdout.take().unwrap();
                let lister = std::thread::spawn(move || {
                    let mut s = String::new();
                    let _ = out.read_to_string(&mut s);
                    s
                });
                let mut buf = vec![0u8; 1 << 16];
                let mut pipe_open = true;
                loop {
                    let r = artifact.read(&mut buf)?;
                    if r == 0 {
                        break;
                    }
                    if pipe_open && stdin.write_all(&buf[..r]).is_err() {
                        // pg_restore --list stops reading after the table of contents.
                        pipe_open = false;
                    }
                }
                drop(stdin);
                let listing = lister.join().unwrap_or_default();
                let o = child.wait_with_output()?;
                if !o.status.success() {
                    bail!(
                        "pg_restore --list cannot read the archive: {}",
                        one_paragraph(&String::from_utf8_lossy(&o.stderr))
                    );
                }
                let entries = listing
                    .lines()
                    .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                    .count();
                Ok(format!("pg_restore --list read {entries} entries"))
            }
        }
    }

    fn restore_plan(&self, opts: &RestoreOptions, manifest_format: &str, database: &str) -> String {
        let into = if opts.to_database.is_some() {
            format!("into database `{database}` (created if missing)")
        } else {
            format!("into database `{database}` (the target's own database)")
        };
        let how = if manifest_format == "plain" {
            format!(
                "{into}: psql --single-transaction -v ON_ERROR_STOP=1; objects in the dump are dropped and recreated, all or nothing"
            )
        } else if opts.tables.is_empty() {
            format!(
                "{into}: pg_restore{}",
                if opts.clean {
                    " --clean --if-exists --single-transaction"
                } else {
                    " (parallel jobs into a fresh database, else one transaction)"
                }
            )
        } else {
            format!(
                "{into}: pg_restore of table(s) {}{} in one transaction",
                opts.tables.join(", "),
                if opts.clean { " (dropped first)" } else { "" }
            )
        };
        format!("{how}{}", super::analyze::plan_note(&self.opts, opts))
    }

    fn restore_precheck(&mut self, opts: &RestoreOptions, manifest_format: &str) -> Result<String> {
        if opts.to_url.is_some()
            || !opts.dbs.is_empty()
            || opts.key_match.is_some()
            || opts.flush
            || opts.by_file
        {
            return Err(Fail::Usage(
                "--to-url, --db, --match, --flush and --by-file are for Redis targets; for PostgreSQL use --to-database, --table and --clean".into(),
            )
            .into());
        }
        let psql = self.psql()?;
        if manifest_format == "custom" {
            self.pg_restore = Some(self.tool("pg_restore")?);
        } else if !opts.tables.is_empty() {
            return Err(Fail::Usage(
                "--table needs a backup in custom format (format = \"custom\"); a plain SQL dump can only be restored whole \
                 (or extract the table by hand from `gunzip -c dump.sql.gz`)"
                    .into(),
            )
            .into());
        }
        // The server must be reachable; when restoring into another database, through
        // the maintenance database (it may not exist yet).
        let facts = match &opts.to_database {
            None => self.server_facts(None)?,
            Some(_) => self
                .server_facts(Some("postgres"))
                .or_else(|_| self.server_facts(None))?,
        };
        let label = match &opts.to_database {
            Some(d) => d.clone(),
            None => facts.database.clone(),
        };
        if facts.in_recovery {
            bail!(
                "the server at {} is in recovery (a standby); restore into the primary",
                self.conn.display()
            );
        }
        self.server = Some(facts);
        let _ = psql;
        Ok(label)
    }

    fn restore(
        &mut self,
        file: &Path,
        compression: crate::compress::Compression,
        opts: &RestoreOptions,
    ) -> Result<()> {
        self.restore_file(file, compression, opts)
    }

    fn rebuild_statistics(
        &mut self,
        opts: &RestoreOptions,
        tables: &[TableFact],
        ui: &crate::ui::Ui,
    ) -> Result<Option<crate::db::Analyze>> {
        self.analyze_restored(opts, tables, ui).map(Some)
    }

    fn count_rows(&mut self, opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        let psql = self.psql()?;
        let db = opts.to_database.clone();
        let mut s = Psql::connect(&psql, &self.conn, db.as_deref())?;
        let only: Vec<_> = opts.tables.iter().map(|t| split_table(t)).collect();
        let json = s.query_one(&counts_sql(&only))?;
        s.close()?;
        parse_tables(&json)
    }
}
