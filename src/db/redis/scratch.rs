//! `backup test-restore` for Redis ([`ScratchEngine`]): a throwaway `redis-server`
//! (free port on 127.0.0.1, temp dir, no persistence), the ordinary restore path into
//! it (verify first, then `RESTORE` every key), key counts per database and keys with
//! an expiry compared with the manifest. The server and its folder are removed on
//! every path out, and on a signal ([`CleanupGuard`]).

use super::{info, keyspace, Conn, Redis};
use crate::db::{Check, RestoreOptions, ScratchEngine, ScratchOutcome, ScratchRequest, Target};
use crate::engine::cleanup::CleanupGuard;
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// A scratch server: stopped (by its pid) and its folder removed when dropped.
struct ScratchServer {
    conn: Conn,
    version: String,
    dir: std::path::PathBuf,
    _guard: CleanupGuard,
    _tmp: tempfile::TempDir,
}

impl ScratchServer {
    fn start(bin_dir: Option<&std::path::Path>, parent: Option<&std::path::Path>) -> Result<Self> {
        let bin = match bin_dir {
            Some(d) => d.join("redis-server"),
            None => which::which("redis-server").map_err(|_| {
                Fail::Config(
                    "test-restore needs redis-server on PATH (Debian: apt-get install redis-server), or test_restore.bin_dir".into(),
                )
            })?,
        };
        let mut b = tempfile::Builder::new();
        b.prefix("backup-test-restore-redis-");
        let tmp = match parent {
            Some(p) => b.tempdir_in(p),
            None => b.tempdir(),
        }
        .context("creating the scratch server's folder")?;
        let dir = tmp.path().to_path_buf();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pidfile = dir.join("redis.pid");
        let out = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .output()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (pf, d) = (pidfile.clone(), dir.clone());
        // Stop by the pid the server wrote (never by name), then remove its folder.
        let guard = CleanupGuard::new(move || {
            if let Some(pid) = std::fs::read_to_string(&pf)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill(2) on the scratch server's own pid.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = std::fs::remove_dir_all(&d);
        });
        if !out.status.success() {
            return Err(anyhow!(
                "redis-server did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let conn = Conn::parse_url(&format!("redis://127.0.0.1:{port}"))?;
        let started = Instant::now();
        let version = loop {
            match conn.connect().and_then(|mut c| info(&mut c)) {
                Ok(i) if i.get("loading").map(String::as_str) != Some("1") => {
                    break i.get("redis_version").cloned().unwrap_or_default()
                }
                _ if started.elapsed() > Duration::from_secs(20) => {
                    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                    return Err(anyhow!(
                        "the scratch redis-server on port {port} did not answer within 20 s: {}",
                        log.lines().last().unwrap_or("")
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Ok(ScratchServer {
            conn,
            version,
            dir,
            _guard: guard,
            _tmp: tmp,
        })
    }
}

impl ScratchEngine for Redis {
    fn test_restore(
        &mut self,
        t: &Target,
        storage: &dyn Storage,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome> {
        let trc = req.settings;
        let server = ScratchServer::start(trc.bin_dir.as_deref(), trc.temp_dir.as_deref())?;
        let place = format!(
            "temporary redis-server {} on {} in {}",
            server.version,
            server.conn.display(),
            server.dir.display()
        );
        let mut scratch = Redis::with_conn(server.conn.clone())?;
        let (restored, restore_seconds, check) = crate::engine::test_restore::timed_restore(
            t,
            &mut scratch,
            storage,
            m,
            RestoreOptions::default(),
            trc.temp_dir.clone(),
            ui,
        );
        let mut checks = vec![check];
        if restored {
            checks.extend(counts(&scratch, m));
            if let Some(keys) = trc.must_exist.as_deref() {
                checks.push(must_exist(&scratch, m, keys));
            }
        }
        drop(server);
        Ok(ScratchOutcome {
            place,
            restore_seconds,
            restored,
            checks,
        })
    }
}

/// Keys and keys with an expiry per db, against the manifest. Keys skipped because
/// they had expired by restore time count as present (they were in the backup).
fn counts(scratch: &Redis, m: &Manifest) -> Vec<Check> {
    let got = match scratch.conn.connect().and_then(|mut c| info(&mut c)) {
        Ok(i) => keyspace(&i),
        Err(e) => return vec![Check::new("key counts", false, format!("{e:#}"))],
    };
    let skipped = |db: u64| scratch.skipped_expired.get(&db).copied().unwrap_or(0);
    let mut keys_bad = Vec::new();
    let mut exp_bad = Vec::new();
    let wanted_exp: BTreeMap<String, u64> = m
        .database
        .extra
        .get("keys_with_expiry")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut total = 0;
    for t in &m.database.tables {
        let Some(db) = t
            .schema
            .strip_prefix("db")
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        let (k, e) = got.get(&db).copied().unwrap_or((0, 0));
        let want = t.rows.unwrap_or(0);
        total += want;
        if k + skipped(db) != want {
            keys_bad.push(format!(
                "db{db} has {} keys, the backup had {want}",
                k + skipped(db)
            ));
        }
        if let Some(we) = wanted_exp.get(&t.schema) {
            if e + skipped(db) != *we {
                exp_bad.push(format!(
                    "db{db} has {} keys with an expiry, the backup had {we}",
                    e + skipped(db)
                ));
            }
        }
    }
    let expired: u64 = scratch.skipped_expired.values().sum();
    vec![
        Check {
            figures: serde_json::json!({ "keys": total, "expired_skipped": expired }),
            ..Check::new(
                "key counts",
                keys_bad.is_empty(),
                if keys_bad.is_empty() {
                    format!(
                        "{total} key(s) in {} database(s) match the manifest ({expired} already expired, skipped)",
                        m.database.tables.len()
                    )
                } else {
                    keys_bad.join("; ")
                },
            )
        },
        Check::new(
            "keys with expiry",
            exp_bad.is_empty(),
            if exp_bad.is_empty() {
                format!(
                    "{} key(s) with an expiry match the manifest",
                    wanted_exp.values().sum::<u64>()
                )
            } else {
                exp_bad.join("; ")
            },
        ),
    ]
}

/// `must_exist`: each key is in some logical database of the restored data.
fn must_exist(scratch: &Redis, m: &Manifest, keys: &[String]) -> Check {
    let dbs: Vec<u64> = m
        .database
        .tables
        .iter()
        .filter_map(|t| super::counts::db_number(&t.schema))
        .collect();
    let found = |con: &mut redis::Connection, key: &str| -> Result<bool> {
        for db in &dbs {
            let n: u64 = redis::pipe()
                .cmd("SELECT")
                .arg(*db)
                .ignore()
                .cmd("EXISTS")
                .arg(key)
                .query::<(u64,)>(con)
                .map(|(n,)| n)
                .map_err(|e| anyhow!("EXISTS failed: {}", super::one_line(&e)))?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let missing: Result<Vec<&String>> = scratch.conn.connect().and_then(|mut con| {
        let mut out = Vec::new();
        for k in keys {
            if !found(&mut con, k)? {
                out.push(k);
            }
        }
        Ok(out)
    });
    match missing {
        Err(e) => Check::new("must_exist", false, format!("{e:#}")),
        Ok(m) if m.is_empty() => Check::new(
            "must_exist",
            true,
            format!("{} key(s) present: {}", keys.len(), keys.join(", ")),
        ),
        Ok(m) => Check::new(
            "must_exist",
            false,
            format!(
                "missing from the restored data: {} (keys listed in test_restore.must_exist)",
                m.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}
