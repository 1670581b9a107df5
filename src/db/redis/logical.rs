//! [`LogicalEngine`] for Redis: the snapshot (see `sync.rs`), its check with the RDB
//! reader, and a network restore that replays every key with
//! `RESTORE key ttl payload REPLACE ABSTTL`, pipelined.

use super::rdb::{dump_payload, RdbReader, Summary};
use super::select::{self, Selection};
use super::{counts, info, keyspace, one_line, rdb_version_of, scan, sync, Mode, Redis};
use crate::db::{ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Keys per pipelined round trip, and payload bytes: whichever comes first.
const BATCH_KEYS: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

impl Redis {
    /// INFO of the target's server, refusing what this version cannot handle.
    fn server_info(&mut self) -> Result<(redis::Connection, BTreeMap<String, String>)> {
        let mut con = self.conn.connect()?;
        let i = info(&mut con)?;
        if i.get("cluster_enabled").map(String::as_str) == Some("1") {
            return Err(Fail::Usage(format!(
                "{} is a Redis Cluster node (cluster_enabled:1); clusters are not supported by this version yet",
                self.conn.display()
            ))
            .into());
        }
        if i.get("loading").map(String::as_str) == Some("1") {
            bail!(
                "{} is still loading its data; try again when it has finished",
                self.conn.display()
            );
        }
        Ok((con, i))
    }
}

impl LogicalEngine for Redis {
    fn artifact(&self) -> ArtifactSpec {
        ArtifactSpec {
            name: "dump.rdb.gz".into(),
            gzip: true,
            content: match self.mode {
                Mode::Rdb => "Redis RDB snapshot (replication)".into(),
                Mode::Scan => "Redis RDB written from SCAN + DUMP (not point-in-time)".into(),
            },
            // Both modes store an RDB file: one restore path reads either.
            format: "rdb".into(),
        }
    }

    fn precheck(&mut self) -> Result<EngineInfo> {
        let (mut con, i) = self.server_info()?;
        // SYNC/PSYNC renamed away (managed services): refuse before anything is stored.
        // Where COMMAND itself is forbidden, SYNC's own answer decides (start_dump).
        let cmds: Vec<redis::Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg("SYNC")
            .arg("PSYNC")
            .query(&mut con)
            .unwrap_or_default();
        let refused = !cmds.is_empty() && cmds.iter().all(|v| matches!(v, redis::Value::Nil));
        if refused && self.mode == Mode::Rdb {
            return Err(Fail::Usage(sync::refused_hint(
                &self.conn,
                "SYNC and PSYNC are not available",
            ))
            .into());
        }
        let version = i
            .get("redis_version")
            .cloned()
            .unwrap_or_else(|| "?".into());
        let mut info = EngineInfo {
            database: Some(self.conn.display()),
            size_bytes: i.get("used_memory").and_then(|v| v.parse().ok()),
            ..Default::default()
        };
        info.versions.insert("redis".into(), version);
        self.server = i;
        Ok(info)
    }

    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>> {
        if self.mode == Mode::Scan {
            let dbs: Vec<u64> = keyspace(&self.server).into_keys().collect();
            let version = self
                .server
                .get("redis_version")
                .cloned()
                .unwrap_or_default();
            let src = scan::ScanSource::open(&self.conn, dbs, version)?;
            let mut server = self.server.clone();
            server.insert("mode".into(), "scan".into());
            return Ok(Box::new(sync::tee(Box::new(src), None, server, &self.conn)));
        }
        let mut server = self.server.clone();
        server.insert("mode".into(), "rdb".into());
        let d = sync::start(&self.conn, server).map_err(|e| {
            // A refusal is the operator's to fix in the config: exit 2.
            let text = format!("{e:#}");
            if text.contains("mode = \"scan\"") {
                Fail::Usage(text).into()
            } else {
                e
            }
        })?;
        Ok(Box::new(d))
    }

    fn check_artifact(&self, artifact: &mut dyn Read, expected: &DatabaseFacts) -> Result<String> {
        let (summary, text) = second_opinion(artifact)?;
        let wrong = counts::differences(&summary, expected);
        if !wrong.is_empty() {
            bail!(
                "{}; key counts differ from the manifest: {}",
                summary.describe(),
                wrong.join("; ")
            );
        }
        Ok(if counts::recorded(expected) {
            format!("{text}; key counts match the manifest")
        } else {
            text
        })
    }

    fn restore_precheck(&mut self, opts: &RestoreOptions, _format: &str) -> Result<String> {
        if opts.by_file {
            return self.by_file_precheck(opts);
        }
        if !opts.tables.is_empty() || opts.to_database.is_some() || opts.jobs.is_some() {
            return Err(Fail::Usage(
                "--table, --to-database and --jobs are PostgreSQL's; for Redis use --db N, --match GLOB and --to-url".into(),
            )
            .into());
        }
        select::check_flags(opts)?;
        if let Some(u) = &opts.to_url {
            self.conn = self
                .conn
                .retarget(u)
                .map_err(|e| Fail::Usage(format!("--to-url: {e:#}")))?;
        }
        let (mut con, i) = self.server_info()?;
        if i.get("role").map(String::as_str) == Some("slave") {
            return Err(Fail::Usage(format!(
                "{} is a replica (read-only); restore into its primary",
                self.conn.display()
            ))
            .into());
        }
        let sel = Selection::of(opts);
        let busy = select::occupied(&mut con, &i, &sel)?;
        if !busy.is_empty() && sel.pattern.is_some() {
            return Err(Fail::Usage(format!(
                "{} already holds keys matching `{}` ({}); --match never flushes: delete them first (redis-cli --scan --pattern ... | xargs redis-cli UNLINK) or restore elsewhere with --to-url",
                self.conn.display(),
                opts.key_match.as_deref().unwrap_or(""),
                busy.join(", ")
            ))
            .into());
        }
        if !(busy.is_empty() || opts.flush || opts.clean) {
            return Err(Fail::Usage(format!(
                "{} is not empty where the restore writes ({}); restore into an empty server (--to-url), or pass --flush to empty {} first",
                self.conn.display(),
                busy.join(", "),
                if sel.dbs.is_empty() { "it".to_string() } else { sel.describe() }
            ))
            .into());
        }
        self.server = i;
        Ok(self.conn.display())
    }

    fn restore_plan(&self, opts: &RestoreOptions, _format: &str, database: &str) -> String {
        if opts.by_file {
            return self.by_file_plan(opts);
        }
        let version = self.server.get("redis_version").map(String::as_str);
        let sel = Selection::of(opts);
        format!(
            "{}replay {} with RESTORE ... REPLACE ABSTTL into {database} (Redis {}), {BATCH_KEYS} keys per round trip; keys already expired are skipped{}",
            match (opts.flush || opts.clean, sel.dbs.is_empty()) {
                (false, _) => String::new(),
                (true, true) => "FLUSHALL the destination (every key on it is deleted), then ".into(),
                (true, false) => format!("FLUSHDB {} on the destination (every key in them is deleted), then ", sel.describe()),
            },
            if sel.whole() { "every key".to_string() } else { sel.describe() },
            version.unwrap_or("?"),
            if sel.whole() { "" } else { "; functions are not restored by a partial restore" }
        )
    }

    fn restore(
        &mut self,
        file: &Path,
        compression: crate::compress::Compression,
        opts: &RestoreOptions,
    ) -> Result<()> {
        if opts.by_file {
            return self.by_file_restore(file, compression, opts);
        }
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let input: Box<dyn Read> = compression.decoder(f)?;
        let mut r = RdbReader::new(input)?;
        let dest = self
            .server
            .get("redis_version")
            .cloned()
            .unwrap_or_default();
        let dest_rdb = rdb_version_of(&dest);
        // Before touching the destination: can it load these payloads?
        if r.version > dest_rdb {
            return Err(Fail::Usage(format!(
                "the backup is RDB version {} but {} runs Redis {dest}, which loads RDB {dest_rdb} at most; restore into Redis {} or newer",
                r.version,
                self.conn.display(),
                if r.version >= 11 { "7.2" } else { "7.0" }
            ))
            .into());
        }
        r.capture_values(true);
        let sel = Selection::of(opts);
        let mut con = self.conn.connect()?;
        if (opts.flush || opts.clean) && sel.dbs.is_empty() {
            redis::cmd("FLUSHALL")
                .query::<()>(&mut con)
                .map_err(|e| anyhow!("FLUSHALL failed: {}", one_line(&e)))?;
        } else if opts.flush || opts.clean {
            for db in sel.dbs {
                redis::pipe()
                    .cmd("SELECT")
                    .arg(*db)
                    .ignore()
                    .cmd("FLUSHDB")
                    .ignore()
                    .query::<()>(&mut con)
                    .map_err(|e| anyhow!("FLUSHDB of db{db} failed: {}", one_line(&e)))?;
            }
        }
        self.skipped_expired.clear();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut batch = Batch::default();
        let mut restored = 0u64;
        while let Some(e) = r.next_key()? {
            // Functions come before the keys in an RDB; load them as they appear.
            load_functions(&mut con, r.take_functions(), sel.whole())?;
            if !sel.key(e.db, &e.key) {
                continue;
            }
            if e.expire_ms.is_some_and(|t| t <= now_ms) {
                *self.skipped_expired.entry(e.db).or_default() += 1;
                continue;
            }
            batch.add(
                e.db,
                e.key,
                e.expire_ms.unwrap_or(0),
                dump_payload(e.value, r.version),
            );
            restored += 1;
            if batch.keys >= BATCH_KEYS || batch.bytes >= BATCH_BYTES {
                batch.send(&mut con)?;
            }
        }
        load_functions(&mut con, r.take_functions(), sel.whole())?;
        batch.send(&mut con)?;
        let skipped: u64 = self.skipped_expired.values().sum();
        eprintln!(
            "restored {restored} key(s){} into {}{}",
            if sel.whole() {
                String::new()
            } else {
                format!(" ({})", sel.describe())
            },
            self.conn.display(),
            if skipped > 0 {
                format!("; {skipped} key(s) had already expired and were skipped")
            } else {
                String::new()
            }
        );
        Ok(())
    }

    /// A `--match` restore is judged by the count it reports (the manifest has no
    /// per-glob counts); a `--db` restore compares those databases only.
    fn compares(&self, opts: &RestoreOptions, t: &TableFact) -> bool {
        opts.key_match.is_none()
            && counts::db_number(&t.schema).is_some_and(|db| Selection::of(opts).db(db))
    }

    /// Keys per db now, plus those skipped as expired: what the backup held.
    fn count_rows(&mut self, _opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        let mut con = self.conn.connect()?;
        let mut counts: BTreeMap<u64, u64> = keyspace(&info(&mut con)?)
            .into_iter()
            .map(|(db, (k, _))| (db, k))
            .collect();
        for (db, n) in &self.skipped_expired {
            *counts.entry(*db).or_default() += n;
        }
        Ok(counts
            .into_iter()
            .map(|(db, n)| TableFact {
                schema: format!("db{db}"),
                name: "keys".into(),
                rows: Some(n),
            })
            .collect())
    }
}

/// Loads function libraries as they appear (a partial restore leaves them alone: they
/// are server-wide, not part of a db or a glob).
fn load_functions(con: &mut redis::Connection, codes: Vec<Vec<u8>>, load: bool) -> Result<()> {
    for code in codes.into_iter().filter(|_| load) {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(code)
            .query::<()>(con)
            .map_err(|e| anyhow!("FUNCTION LOAD failed: {}", one_line(&e)))?;
    }
    Ok(())
}

/// One pipelined round trip of `SELECT` + `RESTORE`s.
#[derive(Default)]
struct Batch {
    pipe: Option<redis::Pipeline>,
    db: Option<u64>,
    keys: usize,
    bytes: usize,
}

impl Batch {
    fn add(&mut self, db: u64, key: Vec<u8>, abs_ttl_ms: i64, payload: Vec<u8>) {
        let pipe = self.pipe.get_or_insert_with(redis::pipe);
        if self.db != Some(db) {
            pipe.cmd("SELECT").arg(db).ignore();
            self.db = Some(db);
        }
        self.bytes += payload.len() + key.len();
        self.keys += 1;
        pipe.cmd("RESTORE")
            .arg(key)
            .arg(abs_ttl_ms)
            .arg(payload)
            .arg("REPLACE")
            .arg("ABSTTL")
            .ignore();
    }

    fn send(&mut self, con: &mut redis::Connection) -> Result<()> {
        if let Some(p) = self.pipe.take() {
            p.query::<()>(con)
                .map_err(|e| anyhow!("RESTORE failed: {}", one_line(&e)))?;
        }
        // The next batch starts with its own SELECT (the connection keeps the db, but
        // saying it again costs nothing and keeps each batch self-contained).
        self.db = None;
        self.keys = 0;
        self.bytes = 0;
        Ok(())
    }
}

/// The tool's own reader, and `redis-check-rdb` (when installed) reading the same
/// bytes at the same time through its stdin: a second, independent parser.
fn second_opinion(artifact: &mut dyn Read) -> Result<(Summary, String)> {
    let Ok(bin) = which::which("redis-check-rdb") else {
        let s = RdbReader::new(artifact)?.summarise()?;
        let text = format!("{}; redis-check-rdb not installed", s.describe());
        return Ok((s, text));
    };
    let mut child = Command::new(&bin)
        .arg("/dev/stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let mut tee = Tee {
        inner: artifact,
        out: child.stdin.take(),
    };
    let ours = RdbReader::new(&mut tee).and_then(|r| r.summarise());
    drop(tee.out.take());
    if ours.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let text = reader.join().unwrap_or_default();
    let s = ours?;
    if text.contains("RDB looks OK") {
        let text = format!("{}; redis-check-rdb agrees", s.describe());
        return Ok((s, text));
    }
    let why = text
        .lines()
        .skip_while(|l| !l.contains("RDB ERROR DETECTED"))
        .nth(1)
        .unwrap_or("no verdict")
        .trim()
        .to_string();
    // An older checker, or module types it has not loaded, is no verdict on the file.
    if why.contains("Can't handle RDB format version") || s.module_values + s.module_aux > 0 {
        let text = format!("{}; redis-check-rdb cannot judge it ({why})", s.describe());
        return Ok((s, text));
    }
    bail!("redis-check-rdb rejects it: {why}")
}

/// Reads through, copying every byte to the checker (until it stops reading).
struct Tee<'a> {
    inner: &'a mut dyn Read,
    out: Option<std::process::ChildStdin>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(o) = &mut self.out {
            if o.write_all(&buf[..n]).is_err() {
                // The checker exited early; its output says why.
                self.out = None;
            }
        }
        Ok(n)
    }
}
