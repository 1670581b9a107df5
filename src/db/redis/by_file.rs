//! `restore --by-file`: the backup becomes the data file of the target's own server,
//! on this host.
//!
//! Asked before anything stops: `dir`, `dbfilename`, `appendonly` (and the AOF's
//! names). Then: the RDB written next to the data file (same filesystem) and fsynced;
//! the server stopped with `stop_command`, then `SHUTDOWN NOSAVE` if it still answers
//! (a plain SHUTDOWN could save over the file being restored), until its port closes;
//! the old file moved aside as `<dbfilename>.backup-<id>.old` and the new one renamed
//! into place; the server started with `start_command`; `loading:0` waited for; key
//! counts per database compared with the backup's. Only then are the kept-aside files
//! removed: on any failure they stay, and the error says where.
//!
//! AOF: with `appendonly yes` Redis loads the AOF, not the RDB, and with the AOF
//! directory missing Redis 7.0 creates an empty AOF and loads nothing (tried). The tool
//! cannot start the operator's server with appendonly off, so the old AOF directory is
//! kept aside too and a new one written whose manifest names one base file: the
//! restored RDB (Redis 7's multi-part AOF; a base may be an RDB). Redis loads it with
//! appendonly on; a `BGREWRITEAOF` then rewrites the AOF from the restored data.
//! Before 7.0 (no `appenddirname`), the RDB becomes the one `appendfilename` (an AOF
//! with an RDB preamble).

use super::files::{swap, write_rdb, Aof, Expected, Layout};
use super::{info, keyspace, one_line, Redis};
use crate::db::RestoreOptions;
use crate::error::Fail;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to stop, and to load its data.
const STOP_WAIT: Duration = Duration::from_secs(120);
const LOAD_WAIT: Duration = Duration::from_secs(3600);

/// The target's commands and, once asked, where its server keeps its data.
#[derive(Default)]
pub struct ByFile {
    target: String,
    stop: Option<Vec<String>>,
    start: Option<Vec<String>>,
    layout: Option<Layout>,
}

impl ByFile {
    pub fn new(target: &str, stop: Option<Vec<String>>, start: Option<Vec<String>>) -> ByFile {
        ByFile {
            target: target.to_string(),
            stop,
            start,
            layout: None,
        }
    }
}

fn usage(msg: String) -> anyhow::Error {
    Fail::Usage(msg).into()
}

fn argv(cmd: &[String]) -> String {
    cmd.join(" ")
}

fn config_get(con: &mut redis::Connection, name: &str, who: &str) -> Result<Option<String>> {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(con)
        .map_err(|e| {
            anyhow!(
                "CONFIG GET {name} failed on {who}: {}; --by-file needs CONFIG (restore over the network instead, without --by-file)",
                one_line(&e)
            )
        })?;
    Ok(v.get(1).cloned())
}

impl Redis {
    /// Before anything is touched: the flags, the commands, and the server's files.
    pub(super) fn by_file_precheck(&mut self, opts: &RestoreOptions) -> Result<String> {
        if opts.to_url.is_some()
            || !opts.dbs.is_empty()
            || opts.key_match.is_some()
            || !opts.tables.is_empty()
            || opts.to_database.is_some()
            || opts.jobs.is_some()
        {
            return Err(usage(
                "--by-file replaces the whole data file of the target's own server; drop --to-url, --db and --match, or drop --by-file to restore over the network".into(),
            ));
        }
        let bf = &self.by_file;
        if bf.stop.is_none() || bf.start.is_none() {
            return Err(usage(format!(
                "--by-file needs stop_command and start_command in [targets.{}] (e.g. stop_command = [\"systemctl\", \"stop\", \"redis-server\"], start_command = [\"systemctl\", \"start\", \"redis-server\"])",
                bf.target
            )));
        }
        let who = self.conn.display();
        let mut con = self.conn.connect()?;
        let i = info(&mut con)?;
        if i.get("cluster_enabled").map(String::as_str) == Some("1") {
            return Err(usage(format!(
                "{who} is a Redis Cluster node (cluster_enabled:1); clusters are not supported by this version yet"
            )));
        }
        if i.get("role").map(String::as_str) == Some("slave") {
            return Err(usage(format!(
                "{who} is a replica; restore its primary by file and let the replica resync"
            )));
        }
        let dir = config_get(&mut con, "dir", &who)?.unwrap_or_default();
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(usage(format!(
                "{who} keeps its data in `{}`, which is not a folder on this host; run the restore on the server's host, or drop --by-file",
                dir.display()
            )));
        }
        let dbfilename =
            config_get(&mut con, "dbfilename", &who)?.unwrap_or_else(|| "dump.rdb".into());
        let aof = if config_get(&mut con, "appendonly", &who)?.as_deref() == Some("yes") {
            let filename = config_get(&mut con, "appendfilename", &who)?
                .unwrap_or_else(|| "appendonly.aof".into());
            Some(
                match config_get(&mut con, "appenddirname", &who).ok().flatten() {
                    Some(dirname) => Aof::Dir { dirname, filename },
                    None => Aof::File { filename },
                },
            )
        } else {
            None
        };
        tempfile::Builder::new()
            .prefix(".backup-probe-")
            .tempfile_in(&dir)
            .map_err(|e| {
                usage(format!(
                    "cannot write in {} ({e}); run the restore as the user owning it (e.g. sudo -u redis)",
                    dir.display()
                ))
            })?;
        let layout = Layout {
            dir,
            dbfilename,
            aof,
            version: i.get("redis_version").cloned().unwrap_or_default(),
        };
        let id = opts.backup_id.as_deref().unwrap_or("latest");
        for (_, old) in layout.replaced(id) {
            if old.exists() {
                return Err(usage(format!(
                    "{} is left from an earlier --by-file restore of this backup; put it back or remove it first",
                    old.display()
                )));
            }
        }
        let shown = format!("{who} (data file {})", layout.data().display());
        self.server = i;
        self.by_file.layout = Some(layout);
        Ok(shown)
    }

    pub(super) fn by_file_plan(&self, opts: &RestoreOptions) -> String {
        let (Some(l), Some(stop), Some(start)) = (
            &self.by_file.layout,
            &self.by_file.stop,
            &self.by_file.start,
        ) else {
            return "replace the server's data file".into();
        };
        let id = opts.backup_id.as_deref().unwrap_or("ID");
        let kept: Vec<String> = l
            .replaced(id)
            .iter()
            .map(|(_, o)| o.display().to_string())
            .collect();
        let aof = match &l.aof {
            None => String::new(),
            Some(Aof::Dir { dirname, .. }) => format!(
                ", and write a new AOF folder {}/{dirname} whose base is the backup (appendonly is on: Redis loads the AOF, not the RDB)",
                l.dir.display()
            ),
            Some(Aof::File { filename }) => format!(
                ", and the backup as the AOF {}/{filename} (appendonly is on)",
                l.dir.display()
            ),
        };
        format!(
            "by file: write the RDB to {} and fsync; stop the server with `{}` (then SHUTDOWN NOSAVE if it still answers) and wait until port {} closes; keep {} aside as {}{aof}; start it with `{}`; wait until it answers with loading:0{}; compare key counts per db; only then remove {}",
            l.tmp(id).display(),
            argv(stop),
            self.conn.port,
            l.data().display(),
            kept[0],
            argv(start),
            if l.aof.is_some() { " and BGREWRITEAOF" } else { "" },
            kept.join(" and ")
        )
    }

    pub(super) fn by_file_restore(
        &mut self,
        file: &Path,
        compression: crate::compress::Compression,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let l = self
            .by_file
            .layout
            .take()
            .ok_or_else(|| anyhow!("--by-file: the server's files were not asked first"))?;
        let (stop, start) = (
            self.by_file.stop.clone().unwrap_or_default(),
            self.by_file.start.clone().unwrap_or_default(),
        );
        let id = opts.backup_id.clone().unwrap_or_else(|| "latest".into());
        let who = self.conn.display();
        let tmp = l.tmp(&id);
        let expected = match write_rdb(file, compression, &tmp, &l.version, &who) {
            Ok(e) => e,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("writing {}; nothing was changed", tmp.display())));
            }
        };
        eprintln!("stopping {who} with `{}`", argv(&stop));
        if let Err(e) = self.stop_server(&stop) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!(
                "nothing was replaced; if the server is stopped, start it with `{}`",
                argv(&start)
            )));
        }
        let replaced = l.replaced(&id);
        let kept = |done: &[(PathBuf, PathBuf)]| -> String {
            if done.is_empty() {
                return "nothing was replaced".into();
            }
            let moves: Vec<String> = done
                .iter()
                .map(|(cur, old)| format!("mv {} {}", old.display(), cur.display()))
                .collect();
            format!(
                "the previous files are kept: to put them back, stop the server and {}",
                moves.join(" && ")
            )
        };
        let mut done = vec![];
        if let Err(e) = swap(&l, &tmp, &replaced, &mut done) {
            return Err(e.context(format!(
                "the server is stopped; {}; then start it with `{}`",
                kept(&done),
                argv(&start)
            )));
        }
        eprintln!(
            "{} replaced by backup {id}; starting the server with `{}`",
            l.data().display(),
            argv(&start)
        );
        let after = run(&start, "start_command")
            .and_then(|_| self.wait_loaded())
            .and_then(|_| self.rewrite_aof(&l))
            .and_then(|_| self.compare(&expected));
        if let Err(e) = after {
            return Err(e.context(kept(&done)));
        }
        for (_, old) in &done {
            let r = if old.is_dir() {
                std::fs::remove_dir_all(old)
            } else {
                std::fs::remove_file(old)
            };
            if let Err(e) = r {
                eprintln!("warning: could not remove {} ({e})", old.display());
            }
        }
        eprintln!("restored backup {id} by file into {who}; the previous data file was removed");
        Ok(())
    }

    /// `stop_command`, then `SHUTDOWN NOSAVE` if the port is still open after a few
    /// seconds; returns once the port is closed.
    fn stop_server(&self, stop: &[String]) -> Result<()> {
        run(stop, "stop_command")?;
        if self.wait_closed(Duration::from_secs(5)) {
            return Ok(());
        }
        if let Ok(mut con) = self.conn.connect() {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
        }
        if self.wait_closed(STOP_WAIT) {
            return Ok(());
        }
        bail!(
            "{} still answers after stop_command and SHUTDOWN NOSAVE",
            self.conn.display()
        )
    }

    fn answers(&self) -> bool {
        let Ok(addrs) = (self.conn.host.as_str(), self.conn.port).to_socket_addrs() else {
            return false;
        };
        addrs
            .into_iter()
            .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
    }

    fn wait_closed(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if !self.answers() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Until the server answers INFO with `loading:0`.
    fn wait_loaded(&self) -> Result<()> {
        let t = Instant::now();
        let mut last = String::from("no answer");
        while t.elapsed() < LOAD_WAIT {
            match self.conn.connect().and_then(|mut c| info(&mut c)) {
                Ok(i) if i.get("loading").map(String::as_str) == Some("0") => return Ok(()),
                Ok(_) => last = "still loading".into(),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} was not up with its data loaded {} s after start_command ({last})",
            self.conn.display(),
            LOAD_WAIT.as_secs()
        )
    }

    /// With appendonly on: the server must have it on, and rewrites it from the data.
    fn rewrite_aof(&self, l: &Layout) -> Result<()> {
        if l.aof.is_none() {
            return Ok(());
        }
        let who = self.conn.display();
        let mut con = self.conn.connect()?;
        if info(&mut con)?.get("aof_enabled").map(String::as_str) != Some("1") {
            bail!("appendonly was on before the restore but {who} started with it off; does start_command use the server's usual config file?");
        }
        redis::cmd("BGREWRITEAOF")
            .query::<()>(&mut con)
            .map_err(|e| anyhow!("BGREWRITEAOF failed on {who}: {}", one_line(&e)))?;
        let t = Instant::now();
        loop {
            let i = info(&mut con)?;
            let field = |k: &str| i.get(k).map(String::as_str).unwrap_or("");
            if field("aof_rewrite_in_progress") == "0" && field("aof_rewrite_scheduled") == "0" {
                if field("aof_last_bgrewrite_status") != "ok" {
                    bail!("the AOF rewrite failed on {who} (see its log)");
                }
                return Ok(());
            }
            if t.elapsed() > LOAD_WAIT {
                bail!(
                    "the AOF rewrite on {who} had not finished after {} s",
                    LOAD_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keys per db now against the backup's, less the keys that have expired since
    /// (an AOF base loads expired keys too: they go within moments, so wait for that).
    fn compare(&mut self, expected: &Expected) -> Result<()> {
        let mut con = self.conn.connect()?;
        let t = Instant::now();
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let got = keyspace(&info(&mut con)?);
            let (mut wrong, mut early) = (vec![], false);
            let mut skipped = BTreeMap::new();
            let dbs: std::collections::BTreeSet<u64> =
                expected.keys.keys().chain(got.keys()).copied().collect();
            for db in dbs {
                let keys = expected.keys.get(&db).copied().unwrap_or(0);
                let gone = expected.gone.get(&db).copied().unwrap_or(0);
                let soon = expected
                    .soon
                    .get(&db)
                    .map_or(0, |v| v.iter().filter(|t| **t <= now).count() as u64);
                let n = got.get(&db).map_or(0, |g| g.0);
                if n < keys - gone - soon || n > keys {
                    wrong.push(format!(
                        "db{db}: {n} key(s), the backup has {}",
                        keys - gone
                    ));
                } else {
                    early |= n > keys - gone;
                    skipped.insert(db, keys - n);
                }
            }
            if !wrong.is_empty() {
                bail!(
                    "key counts after loading differ from the backup: {}",
                    wrong.join("; ")
                );
            }
            if !early || t.elapsed() > Duration::from_secs(3) {
                self.skipped_expired = skipped;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs a configured command without a shell; its output goes to stderr.
fn run(cmd: &[String], key: &str) -> Result<()> {
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| usage(format!("{key} is empty")))?;
    let status = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("{key} `{}` could not be run", argv(cmd)))?;
    if !status.success() {
        bail!("{key} `{}` failed ({status})", argv(cmd));
    }
    Ok(())
}
