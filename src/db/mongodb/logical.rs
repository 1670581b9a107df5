//! [`LogicalEngine`] for MongoDB: the precheck (tools, server, role, the oplog
//! decision), `mongodump --archive` (see `dump.rs`), the archive check for `verify`,
//! and restores with `mongorestore --archive` fed from the verified artifact, read by
//! the archive reader on the way (which namespaces the oplog touched).

use super::dump::{log_collector, reader_thread, tool_failure, MongoDump};
use super::names::{self, included, renamed};
use super::tools::{config_file, connection_args, count_documents, hello};
use super::{archive, Conn, Mongo, OplogSetting, Role};
use crate::db::{ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

pub const FORMAT: &str = "archive";
/// A dump taken with `--oplog`: restored with `--oplogReplay`.
pub const FORMAT_OPLOG: &str = "archive-oplog";
/// Databases a scratch restore leaves out: users, roles and server state.
const SYSTEM_DBS: &[&str] = &["admin", "config", "local"];

impl Mongo {
    fn oplog_refusal(&self, role: Role) -> Option<String> {
        let why = match role {
            Role::Mongos => "is a mongos, and mongodump refuses --oplog through a mongos (\"can't use --oplog option when dumping from a mongos\"); back up each shard's replica set as its own target",
            Role::Standalone => "is a standalone server, which has no oplog (mongodump --oplog fails there); make it a one-member replica set",
            _ => return None,
        };
        Some(format!(
            "target `{}`: oplog = true, but {} {why}, or set oplog = \"auto\" or false",
            self.target,
            self.conn.display()
        ))
    }

    /// The mongorestore arguments for `opts` (the connection apart).
    pub(crate) fn restore_args(&self, opts: &RestoreOptions, oplog_dump: bool) -> Vec<String> {
        let mut a = vec!["--archive".to_string()];
        if opts.clean {
            a.push("--drop".into());
        }
        if let Some(scratch) = &self.scratch_db {
            for db in SYSTEM_DBS {
                a.push(format!("--nsExclude={db}.*"));
            }
            a.push("--nsFrom=$db$.$coll$".into());
            a.push(format!("--nsTo={scratch}.$db$.$coll$"));
            return a;
        }
        if oplog_dump {
            a.push("--oplogReplay".into());
        }
        a.extend(opts.ns_include.iter().map(|p| format!("--nsInclude={p}")));
        if let (Some(f), Some(t)) = (&opts.ns_from, &opts.ns_to) {
            a.push(format!("--nsFrom={f}"));
            a.push(format!("--nsTo={t}"));
        }
        a
    }

    /// Where namespace `ns` of the backup lands.
    pub(crate) fn destination(&self, opts: &RestoreOptions, ns: &str) -> String {
        if let Some(scratch) = &self.scratch_db {
            return format!("{scratch}.{ns}");
        }
        match (&opts.ns_from, &opts.ns_to) {
            (Some(f), Some(t)) => renamed(f, t, ns).unwrap_or_else(|| ns.to_string()),
            _ => ns.to_string(),
        }
    }
}

impl LogicalEngine for Mongo {
    fn artifact(&self) -> ArtifactSpec {
        ArtifactSpec {
            name: "dump.archive.gz".into(),
            gzip: true,
            content: if self.use_oplog {
                "mongodump archive with oplog (--oplog)".into()
            } else {
                "mongodump archive".into()
            },
            format: if self.use_oplog { FORMAT_OPLOG } else { FORMAT }.into(),
        }
    }

    fn precheck(&mut self) -> Result<EngineInfo> {
        let dump = self.tools.get("mongodump")?;
        let sh = self.tools.get("mongosh")?;
        let server = hello(&sh, &self.conn)
            .with_context(|| format!("target `{}`: server not reachable", self.target))?;
        self.use_oplog = match self.opts.oplog {
            OplogSetting::Off => false,
            OplogSetting::Auto => server.role.replica_member() && self.opts.whole(),
            OplogSetting::On => {
                if let Some(msg) = self.oplog_refusal(server.role) {
                    return Err(Fail::Usage(msg).into());
                }
                true
            }
        };
        let mut info = EngineInfo {
            database: Some(self.conn.display()),
            ..Default::default()
        };
        info.versions.insert("mongodump".into(), dump.version);
        info.versions.insert("mongosh".into(), sh.version);
        info.versions
            .insert("server".into(), server.version.clone());
        self.server = Some(server);
        Ok(info)
    }

    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>> {
        let tool = self.tools.get("mongodump")?;
        let server = self
            .server
            .clone()
            .ok_or_else(|| anyhow!("precheck not run"))?;
        let config = self.conn.password().map(config_file).transpose()?;
        let mut cmd = Command::new(&tool.path);
        cmd.args(connection_args(&self.conn, config.as_deref()));
        cmd.arg("--archive");
        if self.use_oplog {
            cmd.arg("--oplog");
        }
        for db in &self.opts.databases {
            cmd.arg(format!("--db={db}"));
        }
        for c in &self.opts.collections {
            cmd.arg(format!("--collection={c}"));
        }
        for c in &self.opts.exclude_collections {
            cmd.arg(format!("--excludeCollection={c}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", tool.path.display()))?;
        let (log, log_thread) = log_collector(child.stderr.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, reader) = reader_thread();
        let mut facts = DatabaseFacts {
            name: Some(self.conn.display()),
            ..Default::default()
        };
        facts.extra.insert("role".into(), server.role.name().into());
        facts
            .extra
            .insert("server_version".into(), server.version.clone().into());
        if let Some(s) = &server.set_name {
            facts.extra.insert("replica_set".into(), s.clone().into());
        }
        facts
            .extra
            .insert("oplog_used".into(), self.use_oplog.into());
        Ok(Box::new(MongoDump {
            child,
            stdout,
            log,
            log_thread: Some(log_thread),
            tx: Some(tx),
            reader: Some(reader),
            conn: self.conn.clone(),
            facts,
            _config: config,
        }))
    }

    fn check_artifact(&self, artifact: &mut dyn Read, expected: &DatabaseFacts) -> Result<String> {
        let s = archive::read(artifact)?;
        let mut wrong = Vec::new();
        for t in &expected.tables {
            let Some(rows) = t.rows else { continue };
            match s
                .collections
                .iter()
                .find(|c| c.db == t.schema && c.name == t.name)
            {
                Some(c) if c.documents == rows => {}
                Some(c) => wrong.push(format!(
                    "{}.{} has {} document(s), the manifest says {rows}",
                    t.schema, t.name, c.documents
                )),
                None => wrong.push(format!("{}.{} is missing", t.schema, t.name)),
            }
        }
        if !expected.tables.is_empty() {
            for c in &s.collections {
                if !expected
                    .tables
                    .iter()
                    .any(|t| t.schema == c.db && t.name == c.name)
                {
                    wrong.push(format!("{} is not in the manifest", c.ns()));
                }
            }
        }
        let oplog = expected
            .extra
            .get("oplog")
            .and_then(|o| o["entries"].as_u64());
        if let Some(n) = oplog.filter(|n| *n != s.oplog_entries) {
            wrong.push(format!(
                "the oplog has {} entries, the manifest says {n}",
                s.oplog_entries
            ));
        }
        if !wrong.is_empty() {
            bail!(
                "{}; differs from the manifest: {}",
                s.describe(),
                wrong.join("; ")
            );
        }
        Ok(format!(
            "{}; document counts match the manifest",
            s.describe()
        ))
    }

    fn restore_precheck(&mut self, opts: &RestoreOptions, format: &str) -> Result<String> {
        if !opts.tables.is_empty()
            || opts.to_database.is_some()
            || opts.jobs.is_some()
            || !opts.dbs.is_empty()
            || opts.key_match.is_some()
            || opts.flush
            || opts.by_file
        {
            return Err(Fail::Usage(
                "--table, --to-database, --jobs, --db, --match, --flush and --by-file belong to other engines; for MongoDB use --ns-include, --ns-from/--ns-to, --drop and --to-uri".into(),
            )
            .into());
        }
        if opts.ns_from.is_some() != opts.ns_to.is_some() {
            return Err(Fail::Usage(
                "--ns-from and --ns-to go together (mongorestore --nsFrom/--nsTo); give both"
                    .into(),
            )
            .into());
        }
        if let (Some(f), Some(t)) = (&opts.ns_from, &opts.ns_to) {
            let known = names::variables(f);
            if let Some(v) = names::variables(t).into_iter().find(|v| !known.contains(v)) {
                return Err(Fail::Usage(format!(
                    "--ns-to uses ${v}$, which --ns-from `{f}` does not set"
                ))
                .into());
            }
        }
        let filtered = !opts.ns_include.is_empty() || opts.ns_from.is_some();
        if format == FORMAT_OPLOG && filtered && self.scratch_db.is_none() {
            return Err(Fail::Usage(format!(
                "backup {} was taken with --oplog, and mongorestore cannot replay an oplog (--oplogReplay) together with --ns-include/--ns-from (\"cannot use --oplogReplay with includes specified\"); restore the whole backup into a spare server with `backup restore {} {} --to-uri mongodb://SPARE`, then copy the collections you need from there (mongodump --db DB --collection C --archive | mongorestore --archive --uri ...)",
                opts.backup_id.as_deref().unwrap_or("?"),
                self.target,
                opts.backup_id.as_deref().unwrap_or("latest"),
            ))
            .into());
        }
        if let Some(u) = &opts.to_url {
            self.conn = Conn::other(u).map_err(|e| Fail::Usage(format!("--to-uri: {e:#}")))?;
        }
        self.tools.get("mongorestore")?;
        let sh = self.tools.get("mongosh")?;
        let server = hello(&sh, &self.conn)
            .with_context(|| format!("{} is not reachable", self.conn.display()))?;
        if matches!(server.role, Role::Secondary | Role::OtherMember) {
            return Err(Fail::Usage(format!(
                "{} is a {} (read-only); restore into the primary of replica set {}",
                self.conn.display(),
                server.role.name(),
                server.set_name.as_deref().unwrap_or("?")
            ))
            .into());
        }
        self.server = Some(server);
        self.restore_format = format.to_string();
        Ok(self.conn.display())
    }

    fn restore_plan(&self, opts: &RestoreOptions, format: &str, database: &str) -> String {
        let (version, role) = self
            .server
            .as_ref()
            .map(|s| (s.version.as_str(), s.role.name()))
            .unwrap_or(("?", "?"));
        let mut parts = vec![format!(
            "mongorestore --archive (the verified artifact, decompressed on the way) into {database} (MongoDB {version}, {role})"
        )];
        if let Some(s) = &self.scratch_db {
            parts.push(format!("every namespace renamed into scratch database {s} (--nsFrom $db$.$coll$ --nsTo {s}.$db$.$coll$), admin/config/local left out, no oplog replay"));
        } else if format == FORMAT_OPLOG {
            parts.push("--oplogReplay: the dump's oplog is replayed, so the data is consistent at the dump's end".into());
        }
        if !opts.ns_include.is_empty() {
            parts.push(format!("only {}", opts.ns_include.join(", ")));
        }
        if let (Some(f), Some(t)) = (&opts.ns_from, &opts.ns_to) {
            parts.push(format!("renamed {f} -> {t}"));
        }
        parts.push(if opts.clean {
            "--drop: each restored collection is dropped first (its current documents are deleted)".into()
        } else {
            "without --drop: existing collections are kept, and documents whose _id already exists fail the restore".into()
        });
        parts.join("; ")
    }

    fn restore(
        &mut self,
        file: &Path,
        compression: crate::compress::Compression,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let tool = self.tools.get("mongorestore")?;
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let input: Box<dyn Read> = compression.decoder(f)?;
        let oplog_dump = self.restore_format == FORMAT_OPLOG;
        let config = self.conn.password().map(config_file).transpose()?;
        let mut cmd = Command::new(&tool.path);
        cmd.args(connection_args(&self.conn, config.as_deref()))
            .args(self.restore_args(opts, oplog_dump))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", tool.path.display()))?;
        let (log, log_thread) = log_collector(child.stderr.take().expect("piped"));
        let mut feed = Feed {
            inner: input,
            out: child.stdin.take(),
        };
        let read = archive::read(&mut feed);
        drop(feed.out.take());
        let st = child.wait()?;
        let _ = log_thread.join();
        drop(config);
        let log = log.lock().unwrap().clone();
        if !st.success() {
            bail!(
                "mongorestore failed (exit code {}): {}",
                st.code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
                tool_failure(&log, &self.conn)
            );
        }
        let summary = read.context("reading the archive while mongorestore restored it")?;
        if let Some(line) = log.iter().find(|l| l.contains("failed to restore")) {
            let failed = line
                .split("successfully. ")
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if failed > 0 {
                bail!(
                    "mongorestore: {}{}",
                    line.split_once('\t').map_or(line.as_str(), |x| x.1).trim(),
                    if opts.clean {
                        ""
                    } else {
                        " (documents whose _id already exists fail without --drop; pass --drop to replace the collections)"
                    }
                );
            }
        }
        self.oplog_touched = if oplog_dump && self.scratch_db.is_none() {
            summary.oplog_namespaces.keys().cloned().collect()
        } else {
            Default::default()
        };
        self.restored = summary.collections.iter().map(|c| c.ns()).collect();
        Ok(())
    }

    /// A partial restore compares what it restored; namespaces the replayed oplog
    /// changed may rightly differ from the dump's counts, so they are left out.
    fn compares(&self, opts: &RestoreOptions, t: &TableFact) -> bool {
        let ns = format!("{}.{}", t.schema, t.name);
        let system = self.scratch_db.is_some() && SYSTEM_DBS.contains(&t.schema.as_str());
        !system
            && !self.oplog_touched.contains(&ns)
            && (opts.ns_include.is_empty() || opts.ns_include.iter().any(|p| included(p, &ns)))
    }

    /// Documents per restored collection, reported under the backup's names.
    fn count_rows(&mut self, opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        let sh = self.tools.get("mongosh")?;
        let picked: Vec<(String, String)> = self
            .restored
            .iter()
            .map(|ns| names::split(ns))
            .filter(|(d, c)| {
                self.compares(
                    opts,
                    &TableFact {
                        schema: d.clone(),
                        name: c.clone(),
                        rows: None,
                    },
                )
            })
            .collect();
        let dest: Vec<(String, String)> = picked
            .iter()
            .map(|(d, c)| names::split(&self.destination(opts, &format!("{d}.{c}"))))
            .collect();
        let counts = count_documents(&sh, &self.conn, &dest)?;
        Ok(picked
            .into_iter()
            .zip(counts)
            .map(|((schema, name), n)| TableFact {
                schema,
                name,
                rows: Some(n),
            })
            .collect())
    }
}

/// Reads the artifact and hands every byte to mongorestore's stdin on the way.
struct Feed {
    inner: Box<dyn Read>,
    out: Option<std::process::ChildStdin>,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(o) = &mut self.out {
            if o.write_all(&buf[..n]).is_err() {
                // mongorestore stopped reading: its exit status and log say why.
                self.out = None;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "mongorestore stopped reading the archive",
                ));
            }
        }
        Ok(n)
    }
}
