//! Helpers for tests of physical backups: clusters run by the `postgres` OS user when
//! the tests run as root, archiving, and restored clusters started by `pitr --start`.

use super::{free_port, pg_bin, Env, Pg};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The built binary.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("backup")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn open_up(p: &Path) {
    if is_root() {
        Command::new("chmod")
            .arg("-R")
            .arg("0777")
            .arg(p)
            .status()
            .unwrap();
    }
}

/// Switches WAL and waits until the server has archived that segment.
pub fn archive_now(pg: &Pg) {
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let t = Instant::now();
    loop {
        let last = pg.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last.as_str() >= seg.as_str() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "segment {seg} not archived (last {last}); server log: {}",
            std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A restored cluster started by `pitr --start`; stopped on drop.
pub struct Restored {
    pub data: PathBuf,
    pub port: u16,
}

impl Restored {
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "postgresql://postgres@127.0.0.1:{}/postgres",
                self.port
            ))
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(pg_bin().join("pg_ctl"));
            c
        } else {
            Command::new(pg_bin().join("pg_ctl"))
        };
        let _ = c
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

pub fn pitr(env: &Env, name: &str, goal: &[&str]) -> (Restored, String) {
    let data = env.path().join(name);
    let port = free_port();
    let mut args = vec!["pitr", "pg"];
    args.extend_from_slice(goal);
    let d = data.display().to_string();
    let p = port.to_string();
    args.extend_from_slice(&[
        "--data-dir",
        &d,
        "--start",
        "--port",
        &p,
        "--timeout",
        "120s",
    ]);
    let restored = Restored { data, port };
    let out = env.ok(&args);
    (restored, out)
}

/// A cluster archiving through `wal-push pg` with the config `config(url)`.
pub fn archiving_cluster_with(env: &Env, config: impl Fn(&str) -> String) -> Pg {
    archiving_cluster_initdb(env, &[], config)
}

/// The same, with extra initdb arguments (e.g. `-k`: data checksums).
pub fn archiving_cluster_initdb(env: &Env, initdb: &[&str], config: impl Fn(&str) -> String) -> Pg {
    let cfg = env.write_config(&config("postgresql://postgres@127.0.0.1:1/postgres"));
    open_up(env.path());
    let archive = format!(
        "archive_command='{} --config {} wal-push pg %p'",
        bin().display(),
        cfg.display()
    );
    let pg = Pg::start_initdb(
        initdb,
        &[
            "wal_level=replica",
            "archive_mode=on",
            &archive,
            "max_wal_senders=5",
        ],
    );
    env.write_config(&config(&pg.url("postgres")));
    open_up(env.path());
    pg
}
