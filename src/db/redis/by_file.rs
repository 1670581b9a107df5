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

use super::rdb::RdbReader;
use super::{info, keyspace, one_line, rdb_version_of, Redis};
use crate::db::RestoreOptions;
use crate::error::Fail;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
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

struct Layout {
    dir: PathBuf,
    dbfilename: String,
    aof: Option<Aof>,
    version: String,
}

enum Aof {
    /// Redis 7+: `appenddirname` holding a manifest and the files it names.
    Dir { dirname: String, filename: String },
    /// Before 7.0: one file.
    File { filename: String },
}

impl Layout {
    fn data(&self) -> PathBuf {
        self.dir.join(&self.dbfilename)
    }
    fn aside(&self, name: &str, id: &str) -> PathBuf {
        self.dir.join(format!("{name}.backup-{id}.old"))
    }
    fn tmp(&self, id: &str) -> PathBuf {
        self.dir
            .join(format!(".{}.backup-{id}.tmp", self.dbfilename))
    }
    /// (current name, kept-aside name) of every file or folder the restore replaces.
    fn replaced(&self, id: &str) -> Vec<(PathBuf, PathBuf)> {
        let mut v = vec![(self.data(), self.aside(&self.dbfilename, id))];
        match &self.aof {
            Some(Aof::Dir { dirname, .. }) => {
                v.push((self.dir.join(dirname), self.aside(dirname, id)))
            }
            Some(Aof::File { filename }) => {
                v.push((self.dir.join(filename), self.aside(filename, id)))
            }
            None => {}
        }
        v
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
        gzip: bool,
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
        let expected = match write_rdb(file, gzip, &tmp, &l.version, &who) {
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

/// Moves the old files aside and puts the new ones in place; `done` lists what moved.
fn swap(
    l: &Layout,
    tmp: &Path,
    replaced: &[(PathBuf, PathBuf)],
    done: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    for (cur, old) in replaced {
        if cur.exists() {
            std::fs::rename(cur, old)
                .with_context(|| format!("moving {} to {}", cur.display(), old.display()))?;
            done.push((cur.clone(), old.clone()));
        }
    }
    let data = l.data();
    let owner = replaced
        .first()
        .map(|(_, old)| old.clone())
        .filter(|o| o.exists())
        .unwrap_or_else(|| l.dir.clone());
    own_like(tmp, &owner);
    std::fs::rename(tmp, &data)
        .with_context(|| format!("renaming {} to {}", tmp.display(), data.display()))?;
    match &l.aof {
        None => {}
        Some(Aof::File { filename }) => link_or_copy(&data, &l.dir.join(filename))?,
        Some(Aof::Dir { dirname, filename }) => {
            let d = l.dir.join(dirname);
            std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            own_like(&d, &l.dir);
            let base = format!("{filename}.1.base.rdb");
            link_or_copy(&data, &d.join(&base))?;
            let manifest = d.join(format!("{filename}.manifest"));
            let mut f = std::fs::File::create(&manifest)
                .with_context(|| format!("creating {}", manifest.display()))?;
            writeln!(f, "file {base} seq 1 type b")?;
            f.sync_all()?;
            own_like(&manifest, &data);
            sync_dir(&d)?;
        }
    }
    sync_dir(&l.dir)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        std::fs::File::open(to)?.sync_all()?;
    }
    Ok(())
}

fn sync_dir(d: &Path) -> Result<()> {
    std::fs::File::open(d)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", d.display()))
}

/// The owner and mode of `reference` (a file) or its owner (a folder), as far as
/// this user may: Redis must be able to read what root wrote.
fn own_like(path: &Path, reference: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = std::fs::metadata(reference) else {
        return;
    };
    let _ = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()));
    let mode = if m.is_dir() {
        if path.is_dir() {
            0o755
        } else {
            0o644
        }
    } else {
        m.mode() & 0o777
    };
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// What the restored server should hold: keys per db, those already expired when the
/// file was written, and the expiries due within the hour (they may go while it loads).
#[derive(Default)]
struct Expected {
    keys: BTreeMap<u64, u64>,
    gone: BTreeMap<u64, u64>,
    soon: BTreeMap<u64, Vec<i64>>,
}

/// Decompresses the artifact to `tmp` while reading it with the RDB reader (its
/// version checked against the server's, its keys and expiries counted); fsynced.
fn write_rdb(file: &Path, gzip: bool, tmp: &Path, version: &str, who: &str) -> Result<Expected> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let input: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut tee = TeeFile {
        inner: input,
        out: BufWriter::with_capacity(1 << 20, out),
    };
    let mut r = RdbReader::new(&mut tee)?;
    let dest_rdb = rdb_version_of(version);
    if r.version > dest_rdb {
        return Err(usage(format!(
            "the backup is RDB version {} but {who} runs Redis {version}, which loads RDB {dest_rdb} at most; restore into Redis {} or newer",
            r.version,
            if r.version >= 11 { "7.2" } else { "7.0" }
        )));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut e = Expected::default();
    while let Some(k) = r.next_key()? {
        *e.keys.entry(k.db).or_default() += 1;
        match k.expire_ms {
            Some(t) if t <= now => *e.gone.entry(k.db).or_default() += 1,
            Some(t) if t <= now + 3_600_000 => e.soon.entry(k.db).or_default().push(t),
            _ => {}
        }
    }
    drop(r);
    std::io::copy(&mut tee, &mut std::io::sink())?;
    let out = tee
        .out
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {}", tmp.display(), e.error()))?;
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    Ok(e)
}

/// Reads through, writing every byte to the file.
struct TeeFile {
    inner: Box<dyn Read>,
    out: BufWriter<std::fs::File>,
}

impl Read for TeeFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}
