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
        let mut password = u.password().map(percent_decode);
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

/// One entry of `pg_restore --list --verbose`.
#[derive(Debug, Clone, PartialEq)]
struct TocEntry {
    id: u64,
    desc: String,
    namespace: String,
    tag: String,
    deps: Vec<u64>,
    line: String,
}

/// Descriptions of more than one word in a TOC listing (longest first).
const MULTI_WORD_DESCS: &[&str] = &[
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW DATA",
    "MATERIALIZED VIEW",
    "FK CONSTRAINT",
    "CHECK CONSTRAINT",
    "DEFAULT ACL",
    "FOREIGN TABLE",
    "LARGE OBJECT",
    "SEQUENCE SET",
    "TABLE DATA",
    "TABLE ATTACH",
    "INDEX ATTACH",
    "BLOB",
];

fn parse_toc(listing: &str) -> Vec<TocEntry> {
    let mut out: Vec<TocEntry> = Vec::new();
    for line in listing.lines() {
        if let Some(deps) = line.strip_prefix(";\tdepends on:") {
            if let Some(last) = out.last_mut() {
                last.deps.extend(
                    deps.split_whitespace()
                        .filter_map(|d| d.parse::<u64>().ok()),
                );
            }
            continue;
        }
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // `<id>; <tableoid> <oid> <DESC> <namespace> <tag> <owner>`
        let Some((id, rest)) = line.split_once("; ") else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            continue;
        };
        let rest = rest.splitn(3, ' ').nth(2).unwrap_or("");
        let desc = MULTI_WORD_DESCS
            .iter()
            .find(|d| rest.starts_with(&format!("{d} ")))
            .map(|d| d.to_string())
            .unwrap_or_else(|| rest.split(' ').next().unwrap_or("").to_string());
        let words: Vec<&str> = rest[desc.len()..].split_whitespace().collect();
        let namespace = words.first().copied().unwrap_or("").to_string();
        let tag = match words.len() {
            0 | 1 => String::new(),
            2 => words[1].to_string(),
            n => words[1..n - 1].join(" "),
        };
        out.push(TocEntry {
            id,
            desc,
            namespace,
            tag,
            deps: Vec::new(),
            line: line.to_string(),
        });
    }
    out
}

/// Picks the named tables out of an archive's table of contents: each table, its data,
/// and every object that depends on nothing but them (primary key and unique
/// constraints, indexes, triggers, owned sequences, column defaults, comments, grants).
/// `pg_restore --table` alone restores neither those nor tables of several schemas at
/// once. A foreign key of a chosen table is restored when the table it references is
/// chosen too or exists in the database (`exists(schema, table)`). Returns the list for
/// `--use-list` and the tables' schemas.
fn select_tables(
    toc: &[TocEntry],
    tables: &[String],
    mut exists: impl FnMut(&str, &str) -> bool,
) -> std::result::Result<(String, Vec<String>), String> {
    use std::collections::BTreeSet;
    let mut chosen: BTreeSet<u64> = BTreeSet::new();
    let mut schemas = BTreeSet::new();
    let mut missing = Vec::new();
    for t in tables {
        let (schema, name) = split_table(t);
        let hits: Vec<&TocEntry> = toc
            .iter()
            .filter(|e| {
                e.desc == "TABLE"
                    && e.tag == name
                    && schema.as_ref().map_or(true, |s| *s == e.namespace)
            })
            .collect();
        if hits.is_empty() {
            missing.push(t.clone());
        }
        for h in hits {
            chosen.insert(h.id);
            schemas.insert(h.namespace.clone());
            for d in toc
                .iter()
                .filter(|e| e.desc == "TABLE DATA" && e.namespace == h.namespace && e.tag == h.tag)
            {
                chosen.insert(d.id);
            }
        }
    }
    if !missing.is_empty() {
        let known: Vec<String> = toc
            .iter()
            .filter(|e| e.desc == "TABLE")
            .map(|e| format!("{}.{}", e.namespace, e.tag))
            .collect();
        return Err(format!(
            "table(s) {} not in the backup; it holds: {}",
            missing.join(", "),
            known.join(", ")
        ));
    }
    loop {
        let before = chosen.len();
        for e in toc {
            if !chosen.contains(&e.id)
                && !matches!(e.desc.as_str(), "DATABASE" | "SCHEMA" | "EXTENSION")
                && !e.deps.is_empty()
                && e.deps.iter().all(|d| chosen.contains(d))
            {
                chosen.insert(e.id);
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    // The table an entry belongs to: itself, or the table it depends on (constraints).
    let table_of = |id: u64| -> Option<&TocEntry> {
        let e = toc.iter().find(|e| e.id == id)?;
        if e.desc == "TABLE" {
            return Some(e);
        }
        e.deps
            .iter()
            .filter_map(|d| toc.iter().find(|t| t.id == *d && t.desc == "TABLE"))
            .next()
    };
    let mut fks = Vec::new();
    for e in toc.iter().filter(|e| e.desc == "FK CONSTRAINT") {
        if chosen.contains(&e.id) || !e.deps.iter().any(|d| chosen.contains(d)) {
            continue;
        }
        let ok = e.deps.iter().filter(|d| !chosen.contains(d)).all(|d| {
            table_of(*d).is_some_and(|t| chosen.contains(&t.id) || exists(&t.namespace, &t.tag))
        });
        if ok {
            fks.push(e.id);
        }
    }
    chosen.extend(fks);
    let mut list = String::new();
    for e in toc.iter().filter(|e| chosen.contains(&e.id)) {
        list.push_str(&e.line);
        list.push('\n');
    }
    Ok((list, schemas.into_iter().collect()))
}

fn table_selection(
    pg_restore: &Tool,
    file: &Path,
    tables: &[String],
    exists: impl FnMut(&str, &str) -> bool,
) -> Result<(String, Vec<String>)> {
    let out = Command::new(&pg_restore.path)
        .args(["--list", "--verbose"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("running pg_restore --list")?;
    if !out.status.success() {
        bail!(
            "pg_restore --list failed: {}",
            one_paragraph(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let toc = parse_toc(&String::from_utf8_lossy(&out.stdout));
    select_tables(&toc, tables, exists).map_err(|e| Fail::Usage(e).into())
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

/// Row counts taken in the dump's snapshot, and the session holding that snapshot.
type CountsThread = JoinHandle<Result<(Vec<TableFact>, Psql)>>;

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
                // Keep the list file alive until pg_restore is done with it.
                let mut _list_file = None;
                if !opts.tables.is_empty() {
                    let mut s = Psql::connect(&psql, &self.conn, db.as_deref())?;
                    let (list, schemas) =
                        table_selection(pg_restore, file, &opts.tables, |schema, table| {
                            s.query_one(&format!(
                                "SELECT to_regclass({}) IS NOT NULL",
                                quote_literal(&format!(
                                    "{}.{}",
                                    quote_ident(schema),
                                    quote_ident(table)
                                ))
                            ))
                            .is_ok_and(|v| v == "t")
                        })?;
                    // The tables' schemas must exist (a scratch database has none of them).
                    for schema in schemas.iter().filter(|s| s.as_str() != "public") {
                        s.query(&format!(
                            "CREATE SCHEMA IF NOT EXISTS {}",
                            quote_ident(schema)
                        ))
                        .with_context(|| format!("creating schema {schema}"))?;
                    }
                    s.close()?;
                    let mut f = tempfile::Builder::new()
                        .prefix("backup-restore-list-")
                        .tempfile()
                        .context("writing the pg_restore list file")?;
                    f.write_all(list.as_bytes())?;
                    f.flush()?;
                    cmd.arg(format!("--use-list={}", f.path().display()));
                    _list_file = Some(f);
                }
                // Parallel jobs only into a fresh database; otherwise one transaction, so a
                // failure leaves the database as it was.
                let parallel = created && opts.tables.is_empty() && opts.jobs > 1;
                if parallel {
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
                    let msg = one_paragraph(&String::from_utf8_lossy(&out.stderr));
                    let outcome = if parallel {
                        format!(
                            "the new database `{}` is incomplete",
                            db.as_deref().unwrap_or("?")
                        )
                    } else {
                        "rolled back, the database is as it was".to_string()
                    };
                    let fix = if !opts.clean && msg.contains("already exists") {
                        "; the database already has these objects: add --clean to replace them, or restore with --to-database NEW_DB"
                    } else {
                        ""
                    };
                    bail!("pg_restore failed ({outcome}): {msg}{fix}");
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
    fn table_selection_takes_subsidiary_objects_and_several_schemas() {
        let listing = "3371; 1262 16407 DATABASE - tst postgres
6; 2615 16434 SCHEMA - bil postgres
219; 1259 16435 TABLE bil m postgres
;\tdepends on: 6
218; 1259 16420 TABLE public m postgres
217; 1259 16419 SEQUENCE public m_id_seq postgres
;\tdepends on: 218
3372; 0 0 SEQUENCE OWNED BY public m_id_seq postgres
;\tdepends on: 217
216; 1259 16409 TABLE public u postgres
3208; 2604 16423 DEFAULT public m id postgres
;\tdepends on: 217 218 218
3365; 0 16435 TABLE DATA bil m postgres
;\tdepends on: 219
3364; 0 16420 TABLE DATA public m postgres
;\tdepends on: 218
3362; 0 16409 TABLE DATA public u postgres
;\tdepends on: 216
3374; 0 0 SEQUENCE SET public m_id_seq postgres
;\tdepends on: 217
3217; 2606 16439 CONSTRAINT bil m m_pkey postgres
;\tdepends on: 219
3215; 2606 16427 CONSTRAINT public m m_pkey postgres
;\tdepends on: 218
3212; 2606 16416 CONSTRAINT public u u_pkey postgres
;\tdepends on: 216
3213; 1259 16433 INDEX public m_b postgres
;\tdepends on: 218
3218; 2606 16428 FK CONSTRAINT public m m_u_fkey postgres
;\tdepends on: 218 216 3212
";
        let toc = parse_toc(listing);
        assert_eq!(toc[2].desc, "TABLE");
        assert_eq!(
            (toc[2].namespace.as_str(), toc[2].tag.as_str()),
            ("bil", "m")
        );
        assert_eq!(toc.last().unwrap().desc, "FK CONSTRAINT");
        let ids = |list: &str| -> Vec<u64> {
            list.lines()
                .map(|l| l.split(';').next().unwrap().parse().unwrap())
                .collect()
        };
        let (list, schemas) = select_tables(&toc, &["public.m".into()], |_, _| false).unwrap();
        assert_eq!(
            ids(&list),
            vec![218, 217, 3372, 3208, 3364, 3374, 3215, 3213]
        );
        // The foreign key to `u` comes along when `u` is in the database.
        let (list, _) =
            select_tables(&toc, &["public.m".into()], |s, t| (s, t) == ("public", "u")).unwrap();
        assert_eq!(ids(&list).last(), Some(&3218));
        let (list, _) = select_tables(&toc, &["m".into(), "u".into()], |_, _| false).unwrap();
        assert!(ids(&list).contains(&3218));
        assert_eq!(schemas, vec!["public"]);
        // An unqualified name matches every schema; two schemas in one selection.
        let (list, schemas) = select_tables(&toc, &["m".into()], |_, _| false).unwrap();
        assert!(ids(&list).contains(&219) && ids(&list).contains(&3217));
        assert_eq!(schemas, vec!["bil", "public"]);
        let e = select_tables(&toc, &["nope".into(), "bil.u".into()], |_, _| true).unwrap_err();
        assert!(e.contains("nope, bil.u") && e.contains("public.u"), "{e}");
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
