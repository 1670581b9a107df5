//! PostgreSQL through its own tools: pg_dump, pg_restore and psql.
//!
//! Every connection goes through libpq (via the tools), so PGHOST, PGPORT, PGUSER,
//! PGDATABASE, PGSERVICE, ~/.pgpass and sslmode behave exactly as operators expect.
//! A password is never put on a command line: it is stripped from the URL and passed
//! as PGPASSWORD in the child's environment.
//!
//! Row counts for the manifest are taken in the dump's own snapshot: a psql session
//! exports a REPEATABLE READ snapshot, pg_dump imports it with `--snapshot`, and the
//! counts run in that session while the dump streams.

use super::{ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions};
use crate::config::{DumpFormat, RowCounts, TargetConfig};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Connection settings: a URL without its password, plus the password apart.
#[derive(Clone, Default)]
pub struct ConnInfo {
    url: Option<url::Url>,
    password: Option<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnInfo({})", self.display())
    }
}

impl ConnInfo {
    pub fn parse_url(s: &str) -> Result<ConnInfo> {
        let mut u = url::Url::parse(s).map_err(|e| {
            anyhow!(
                "`{}` is not a URL ({e}); write postgresql://USER@HOST:PORT/DATABASE",
                crate::redact::url(s)
            )
        })?;
        if u.scheme() != "postgresql" && u.scheme() != "postgres" {
            bail!(
                "`{}` must start with postgresql:// (write postgresql://USER@HOST:PORT/DATABASE)",
                crate::redact::url(s)
            );
        }
        let mut password = u.password().map(|p| percent_decode(p));
        let _ = u.set_password(None);
        // A password given as a query parameter is moved out too.
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.iter().any(|(k, _)| k == "password") {
            let kept: Vec<_> = pairs
                .iter()
                .filter(|(k, v)| {
                    if k == "password" {
                        password = Some(v.clone());
                        false
                    } else {
                        true
                    }
                })
                .cloned()
                .collect();
            if kept.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        Ok(ConnInfo {
            url: Some(u),
            password,
        })
    }

    pub fn from_target(cfg: &TargetConfig) -> Result<ConnInfo> {
        let mut c = match &cfg.url {
            Some(u) => ConnInfo::parse_url(u)?,
            None => ConnInfo::default(),
        };
        if let Some(pf) = &cfg.password_file {
            let text = std::fs::read_to_string(pf)
                .with_context(|| format!("reading password_file {}", pf.display()))?;
            c.password = Some(text.lines().next().unwrap_or("").to_string());
        }
        Ok(c)
    }

    /// The conninfo for the tools' `--dbname`, optionally for another database.
    /// Empty means libpq defaults.
    pub fn conninfo(&self, dbname: Option<&str>) -> String {
        match (&self.url, dbname) {
            (Some(u), None) => u.to_string(),
            (Some(u), Some(db)) => {
                let mut u = u.clone();
                u.set_path(&format!("/{}", utf8_percent_encode(db)));
                u.to_string()
            }
            (None, None) => String::new(),
            (None, Some(db)) => {
                format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
    }

    pub fn display(&self) -> String {
        match &self.url {
            Some(u) => u.to_string(),
            None => "libpq defaults (PGHOST, PGPORT, PGUSER, PGDATABASE)".into(),
        }
    }

    pub(crate) fn apply(&self, cmd: &mut Command) {
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        // Never wait for a password prompt under cron.
        cmd.env(
            "PGCONNECT_TIMEOUT",
            std::env::var("PGCONNECT_TIMEOUT").unwrap_or_else(|_| "10".into()),
        );
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn utf8_percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
    pub major: u32,
}

/// Finds a PostgreSQL client tool: `bin_dir` first, else PATH.
pub fn find_tool(name: &str, bin_dir: Option<&Path>) -> Result<Tool> {
    let path = match bin_dir {
        Some(d) => {
            let p = d.join(name);
            if !p.exists() {
                return Err(Fail::Config(format!(
                    "{name} not found in bin_dir {}; install the PostgreSQL client tools or fix bin_dir",
                    d.display()
                ))
                .into());
            }
            p
        }
        None => which::which(name).map_err(|_| {
            Fail::Config(format!(
                "{name} not found on PATH; install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client) or set bin_dir in the target's config"
            ))
        })?,
    };
    tool_version(name, &path)
}

fn tool_version(name: &str, path: &Path) -> Result<Tool> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = parse_version(&text).ok_or_else(|| {
        anyhow!(
            "cannot read the version of {} (it printed {:?})",
            path.display(),
            text.trim()
        )
    })?;
    let major = major_of(&version);
    let _ = name;
    Ok(Tool {
        path: path.to_path_buf(),
        version,
        major,
    })
}

/// `pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)` -> `15.19`.
pub fn parse_version(text: &str) -> Option<String> {
    let after = text.split(')').nth(1).unwrap_or(text);
    after
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string()
        })
}

fn major_of(v: &str) -> u32 {
    let mut parts = v.split('.');
    let first: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if first < 10 {
        // 9.6 -> 9 (older numbering: the "major" is 9.6, still older than 10).
        return first;
    }
    first
}

/// Looks for a newer tool in Debian's versioned folders when the one on PATH is too old.
pub(crate) fn newer_tool(name: &str, min_major: u32) -> Option<Tool> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(v, p)| *v >= min_major && p.exists())
        .collect();
    dirs.sort();
    let (_, p) = dirs.into_iter().next_back()?;
    tool_version(name, &p).ok()
}

/// A long-lived psql session for queries (and for holding an exported snapshot).
pub struct Psql {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    seq: u64,
}

impl Psql {
    pub fn connect(psql: &Tool, conn: &ConnInfo, dbname: Option<&str>) -> Result<Psql> {
        let mut cmd = Command::new(&psql.path);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-P",
            "pager=off",
        ]);
        let ci = conn.conninfo(dbname);
        if !ci.is_empty() {
            cmd.arg(format!("--dbname={ci}"));
        }
        conn.apply(&mut cmd);
        cmd.env("PGAPPNAME", "backup");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", psql.path.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = spawn_stderr_collector(child.stderr.take().unwrap(), stderr.clone());
        let mut s = Psql {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr,
            stderr_thread: Some(stderr_thread),
            seq: 0,
        };
        s.query("SELECT 1")
            .with_context(|| format!("connecting to PostgreSQL at {}", conn.display()))?;
        Ok(s)
    }

    /// Runs one statement; returns its output lines (unaligned, tuples only).
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.seq += 1;
        let marker = format!("__backup_end_{}__", self.seq);
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("psql session closed"))?;
        let script = format!("{};\n\\echo {marker}\n", sql.trim().trim_end_matches(';'));
        if stdin
            .write_all(script.as_bytes())
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return Err(self.died());
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line)?;
            if n == 0 {
                return Err(self.died());
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l == marker {
                return Ok(lines);
            }
            lines.push(l.to_string());
        }
    }

    pub fn query_one(&mut self, sql: &str) -> Result<String> {
        let lines = self.query(sql)?;
        lines
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("query returned no row: {sql}"))
    }

    fn died(&mut self) -> anyhow::Error {
        self.stdin.take();
        let _ = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let msg = self.stderr.lock().unwrap().trim().to_string();
        if msg.is_empty() {
            anyhow!("psql exited unexpectedly")
        } else {
            anyhow!("{}", one_paragraph(&msg))
        }
    }

    pub fn close(mut self) -> Result<()> {
        self.stdin.take();
        let st = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if !st.success() {
            let msg = self.stderr.lock().unwrap().trim().to_string();
            bail!("psql failed: {}", one_paragraph(&msg));
        }
        Ok(())
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Keeps the last 64 KiB of a child's stderr.
pub(crate) fn spawn_stderr_collector(
    mut stderr: impl Read + Send + 'static,
    buf: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = buf.lock().unwrap();
                    b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    if b.len() > 65536 {
                        let cut = b.len() - 65536;
                        let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(0);
                        b.drain(..cut);
                    }
                }
            }
        }
    })
}

/// A tool's stderr as one readable line: error lines first, newlines folded.
pub fn one_paragraph(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            l.contains("error") || l.contains("ERROR") || l.contains("FATAL") || l.contains("fatal")
        })
        .collect();
    let pick = if errors.is_empty() { lines } else { errors };
    let mut out = pick.join("; ");
    if out.len() > 2000 {
        out.truncate(
            out.char_indices()
                .take_while(|(i, _)| *i < 2000)
                .last()
                .map(|(i, _)| i)
                .unwrap_or(0),
        );
        out.push('…');
    }
    out
}

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

/// `schema.table` or `table`.
pub fn split_table(t: &str) -> (Option<String>, String) {
    match t.split_once('.') {
        Some((s, n)) => (Some(s.to_string()), n.to_string()),
        None => (None, t.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct ServerFacts {
    version_num: u32,
    version: String,
    database: String,
    size: u64,
    in_recovery: bool,
}

pub struct Postgres {
    target: String,
    cfg: TargetConfig,
    conn: ConnInfo,
    psql: Option<Tool>,
    pg_dump: Option<Tool>,
    pg_restore: Option<Tool>,
    server: Option<ServerFacts>,
}

impl Postgres {
    pub fn new(target: &str, cfg: &TargetConfig) -> Result<Postgres> {
        Ok(Postgres {
            target: target.to_string(),
            cfg: cfg.clone(),
            conn: ConnInfo::from_target(cfg)?,
            psql: None,
            pg_dump: None,
            pg_restore: None,
            server: None,
        })
    }

    fn tool(&self, name: &str) -> Result<Tool> {
        find_tool(name, self.cfg.bin_dir.as_deref())
    }

    fn psql(&mut self) -> Result<Tool> {
        if self.psql.is_none() {
            self.psql = Some(self.tool("psql")?);
        }
        Ok(self.psql.clone().unwrap())
    }

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
        if self.cfg.bin_dir.is_none() {
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

    fn dbname_of(&self, opts: &RestoreOptions) -> Option<String> {
        opts.to_database.clone()
    }

    fn restore_db_label(&self, opts: &RestoreOptions) -> String {
        match &opts.to_database {
            Some(d) => d.clone(),
            None => self
                .server
                .as_ref()
                .map(|s| s.database.clone())
                .unwrap_or_else(|| "(the target's database)".into()),
        }
    }
}

struct PgDump {
    child: Child,
    stdout: ChildStdout,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    counts: Option<JoinHandle<Result<(Vec<TableFact>, Psql)>>>,
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
    fn engine_name(&self) -> &'static str {
        "postgres"
    }

    fn artifact(&self) -> ArtifactSpec {
        match self.cfg.format {
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
        if self.cfg.row_counts == RowCounts::Exact {
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
        match self.cfg.format {
            // --clean --if-exists as the strategy document's dump: `gunzip | psql`
            // into the existing database replaces what is there.
            DumpFormat::Plain => cmd.args(["--format=plain", "--clean", "--if-exists"]),
            DumpFormat::Custom => cmd.args(["--format=custom"]),
        };
        if let Some(s) = &snapshot {
            cmd.arg(format!("--snapshot={s}"));
        }
        cmd.args(&self.cfg.dump_args);
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

    fn check_artifact(&self, artifact: &mut dyn Read) -> Result<String> {
        if self.cfg.kind == "physical" {
            return crate::engine::tar::check_base_backup(artifact);
        }
        match self.cfg.format {
            DumpFormat::Plain => {
                // The stream is SQL text; check it looks like a pg_dump and ended cleanly.
                let mut head = vec![0u8; 4096];
                let mut n = 0;
                while n < head.len() {
                    let r = artifact.read(&mut head[n..])?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                }
                let head = String::from_utf8_lossy(&head[..n]).to_string();
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

    fn restore_precheck(&mut self, opts: &RestoreOptions, manifest_format: &str) -> Result<String> {
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

    fn restore(&mut self, file: &Path, gzip: bool, opts: &RestoreOptions) -> Result<()> {
        let psql = self.psql()?;
        let db = self.dbname_of(opts);
        let mut created = false;
        if let Some(d) = &db {
            let mut s = Psql::connect(&psql, &self.conn, Some("postgres"))
                .or_else(|_| Psql::connect(&psql, &self.conn, None))?;
            let exists = s.query_one(&format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(d)
            ))? != "0";
            if !exists {
                s.query(&format!("CREATE DATABASE {}", quote_ident(d)))
                    .with_context(|| format!("creating database {d}"))?;
                created = true;
            }
            s.close()?;
        }
        let ci = self.conn.conninfo(db.as_deref());
        if self.pg_restore.is_none() && !gzip && file.extension().is_some_and(|e| e == "pgdump") {
            self.pg_restore = Some(self.tool("pg_restore")?);
        }
        match (&self.pg_restore, gzip) {
            (Some(pg_restore), false) => {
                let mut cmd = Command::new(&pg_restore.path);
                cmd.args(["--no-password", "--exit-on-error"]);
                if opts.clean {
                    cmd.args(["--clean", "--if-exists"]);
                }
                for t in &opts.tables {
                    let (schema, name) = split_table(t);
                    if let Some(s) = schema {
                        cmd.arg(format!("--schema={s}"));
                    }
                    cmd.arg(format!("--table={name}"));
                }
                // Parallel jobs only into a fresh database; otherwise one transaction, so a
                // failure leaves the database as it was.
                if created && opts.tables.is_empty() && opts.jobs > 1 {
                    cmd.arg(format!("--jobs={}", opts.jobs));
                } else {
                    cmd.arg("--single-transaction");
                }
                if !ci.is_empty() {
                    cmd.arg(format!("--dbname={ci}"));
                } else {
                    // pg_restore needs -d to restore rather than print SQL.
                    let d = self
                        .server
                        .as_ref()
                        .map(|s| s.database.clone())
                        .unwrap_or_default();
                    cmd.arg(format!("--dbname={}", self.conn.conninfo(Some(&d))));
                }
                cmd.arg(file);
                self.conn.apply(&mut cmd);
                let out = cmd
                    .stdin(Stdio::null())
                    .output()
                    .context("running pg_restore")?;
                if !out.status.success() {
                    bail!(
                        "pg_restore failed: {}",
                        one_paragraph(&String::from_utf8_lossy(&out.stderr))
                    );
                }
            }
            _ => {
                let mut cmd = Command::new(&psql.path);
                cmd.args([
                    "-X",
                    "-q",
                    "-w",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    "-o",
                    "/dev/null",
                ]);
                if !ci.is_empty() {
                    cmd.arg(format!("--dbname={ci}"));
                }
                self.conn.apply(&mut cmd);
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn().context("starting psql")?;
                let stderr = Arc::new(Mutex::new(String::new()));
                let t = spawn_stderr_collector(child.stderr.take().unwrap(), stderr.clone());
                let mut stdin = child.stdin.take().unwrap();
                let f = std::fs::File::open(file)?;
                let mut src: Box<dyn Read> = if gzip {
                    Box::new(flate2::read::MultiGzDecoder::new(
                        std::io::BufReader::with_capacity(1 << 20, f),
                    ))
                } else {
                    Box::new(f)
                };
                let copy = std::io::copy(&mut src, &mut stdin);
                drop(stdin);
                let st = child.wait()?;
                let _ = t.join();
                let err = stderr.lock().unwrap().clone();
                if !st.success() {
                    bail!(
                        "psql failed, the restore was rolled back: {}",
                        one_paragraph(&err)
                    );
                }
                copy.context("feeding the dump to psql")?;
            }
        }
        Ok(())
    }

    fn count_rows(&mut self, opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        let psql = self.psql()?;
        let db = self.dbname_of(opts);
        let mut s = Psql::connect(&psql, &self.conn, db.as_deref())?;
        let only: Vec<_> = opts.tables.iter().map(|t| split_table(t)).collect();
        let json = s.query_one(&counts_sql(&only))?;
        s.close()?;
        let _ = self.restore_db_label(opts);
        parse_tables(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)").as_deref(),
            Some("15.19")
        );
        assert_eq!(
            parse_version("psql (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6.24")
        );
        assert_eq!(major_of("9.6.24"), 9);
        assert_eq!(major_of("16.1"), 16);
    }

    #[test]
    fn password_is_moved_out_of_the_url() {
        let c = ConnInfo::parse_url(
            "postgresql://app:s%40cret@db:5432/saas?sslmode=require&password=x",
        )
        .unwrap();
        let ci = c.conninfo(None);
        assert!(!ci.contains("cret") && !ci.contains("password"), "{ci}");
        assert!(ci.contains("sslmode=require"));
        assert_eq!(c.password.as_deref(), Some("x"));
        let c = ConnInfo::parse_url("postgresql://app:s%40cret@db/saas").unwrap();
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert!(c.conninfo(Some("other db")).ends_with("/other%20db"));
        assert!(ConnInfo::parse_url("mysql://x").is_err());
    }
}
