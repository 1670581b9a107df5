//! `backup test-restore` for PostgreSQL ([`ScratchEngine`]): a logical backup goes
//! through the ordinary restore path into a scratch place (a temporary cluster made
//! with the local server binaries, or a scratch database on `test_restore.url`); a
//! physical one through PITR into a temporary data directory. Then `checks.rs`.
//!
//! Owner roles: plain dumps say `ALTER ... OWNER TO role` and `GRANT ... TO role`; a fresh
//! cluster has none of those roles, and replaying with ON_ERROR_STOP would fail. The
//! dump is scanned for the role names it needs (owners, grantees, schema authorizations)
//! and they are created NOLOGIN in the temporary cluster first, so the restore is the
//! same one an operator would run, owners and grants included. On a `test_restore.url`
//! server roles are shared by every database, so they are never created there: missing
//! roles are named in the error instead.

use super::checks::{benchmarks, foreign_keys, freshness, operator_checks, row_counts, split_sql};
use super::scratch::{self, roles_in_sql, ScratchCluster, ScratchDatabase};
use super::{find_tool, ConnInfo, Options, Postgres, Psql};
use crate::db::{
    Check, Goal, PitrRequest, RestoreOptions, ScratchEngine, ScratchOutcome, ScratchRequest, Target,
};
use crate::engine::cleanup::CleanupGuard;
use crate::engine::{catalog, restore};
use crate::error::Fail;
use crate::manifest::{Kind, Manifest};
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::time::{Duration, Instant};

impl ScratchEngine for Postgres {
    fn runs_benchmarks(&self) -> bool {
        true
    }

    fn test_restore(
        &mut self,
        t: &Target,
        storage: &dyn Storage,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome> {
        if m.kind == Kind::Physical {
            self.test_restore_physical(t, m, req, ui)
        } else {
            self.test_restore_logical(t, storage, m, req, ui)
        }
    }
}

impl Postgres {
    /// A logical backup: restored by the ordinary restore path (verify first, then
    /// replay) into a temporary cluster or a scratch database on `test_restore.url`.
    fn test_restore_logical(
        &mut self,
        t: &Target,
        storage: &dyn Storage,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome> {
        let trc = req.settings;
        let psql = self.tool("psql")?;
        // A damaged artifact is the verify step's finding, not this scan's: go on with what
        // was read, and let the restore check report it.
        let roles = needed_roles(storage, m, self.opts.bin_dir.as_deref()).unwrap_or_else(|e| {
            ui.warn(format!(
                "reading backup {} for the roles it needs: {e:#}",
                m.id
            ));
            BTreeSet::new()
        });

        // The scratch place; its guard removes it on every path out of this function.
        let (_cluster, _database, server_url, database, scratch_label);
        match &trc.url {
            Some(url) => {
                let db = ScratchDatabase::create(&psql, url, &m.id)?;
                let conn = ConnInfo::parse_url(url)?;
                scratch_label = format!("database {} on {}", db.name, conn.display());
                scratch::create_missing_roles(&psql, &conn, &roles, false)?;
                server_url = url.clone();
                database = db.name.clone();
                _database = Some(db);
                _cluster = None;
            }
            None => {
                let c = ScratchCluster::create(
                    trc.bin_dir.as_deref(),
                    trc.os_user.as_deref(),
                    trc.temp_dir.as_deref(),
                    ui,
                )?;
                let conn = ConnInfo::parse_url(&c.url)?;
                let created = scratch::create_missing_roles(&psql, &conn, &roles, true)?;
                if !created.is_empty() {
                    ui.info(format!(
                        "created role(s) the dump needs in the scratch cluster: {}",
                        created.join(", ")
                    ));
                }
                scratch_label = format!(
                    "temporary cluster (PostgreSQL {}) in {}",
                    c.version,
                    c.dir.display()
                );
                server_url = c.url.clone();
                database = m.database.name.clone().unwrap_or_else(|| "restored".into());
                _database = None;
                _cluster = Some(c);
            }
        }

        // The ordinary restore path, pointed at the scratch server. Its credentials are in
        // its own URL (or PGPASSWORD/.pgpass), not the target's password_file.
        let mut scratch = Postgres::with_options(
            t.name,
            "logical",
            Options {
                url: Some(server_url.clone()),
                password_file: None,
                ..self.opts.clone()
            },
        )?;
        let rreq = restore::RestoreRequest {
            which: m.id.clone(),
            storage: Some(storage.name().to_string()),
            opts: RestoreOptions {
                to_database: Some(database.clone()),
                ..Default::default()
            },
            yes: true,
            dry_run: false,
            check_counts: false,
            temp_dir: trc.temp_dir.clone(),
            deleted: false,
        };
        let rt = Instant::now();
        let restored = restore::restore(t, &mut scratch, rreq, ui);
        let restore_seconds = rt.elapsed().as_secs_f64();
        let mut checks = Vec::new();
        match &restored {
            Ok(_) => checks.push(Check {
                name: "restore".into(),
                passed: true,
                detail: format!(
                    "verified and restored in {}{}",
                    crate::duration::human(Duration::from_secs_f64(restore_seconds)),
                    if roles.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} owner/grantee role(s) needed)", roles.len())
                    }
                ),
                figures: serde_json::json!({
                    "seconds": restore_seconds,
                    "roles": roles.iter().collect::<Vec<_>>(),
                    "analyze": restored.as_ref().ok().and_then(|o| o.analyze.as_ref()),
                }),
            }),
            Err(e) => checks.push(Check::new("restore", false, format!("{e:#}"))),
        }
        if restored.is_ok() {
            let conn = ConnInfo::parse_url(&server_url)?;
            checks.push(row_counts(&mut scratch, &database, m));
            checks.push(foreign_keys(&psql, &conn, &database));
            for col in trc.freshness.iter().flatten() {
                checks.push(freshness(&psql, &conn, &database, col, m, req.max_lag));
            }
            if let Some(text) = req.checks_sql {
                ui.info(format!(
                    "running {} operator check(s) from {}",
                    split_sql(text).len(),
                    trc.checks_sql
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
                checks.extend(operator_checks(&psql, &conn, &database, text));
            }
            if let Some(q) = &trc.benchmark_sql {
                checks.extend(benchmarks(&psql, &conn, &database, q));
            }
        }
        drop(_cluster);
        drop(_database);
        Ok(ScratchOutcome {
            place: scratch_label,
            restore_seconds,
            restored: restored.is_ok(),
            checks,
        })
    }

    /// A physical base backup is tested through PITR: restored into a temporary data
    /// directory, recovered to its consistent end (`--target-immediate`), and left paused
    /// (read-only, still in recovery, so it archives nothing into the production WAL
    /// archive), on a private socket with its own pg_hba. Then the same checks as a
    /// logical restore, across every database of the cluster: foreign keys, freshness
    /// and operator SQL. (Physical manifests record no per-table row counts:
    /// PostgreSQL's own recovery to a consistent point stands in for that check.)
    fn test_restore_physical(
        &mut self,
        t: &Target,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome> {
        let trc = req.settings;
        let psql = self.tool("psql")?;
        // PITR's own timeout: generous, the RTO is judged on the time it took.
        let rto_hint = crate::duration::parse(trc.rto.as_deref().unwrap_or("2h"))
            .unwrap_or(Duration::from_secs(7200));
        use std::os::unix::fs::PermissionsExt;
        let parent = match &trc.temp_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir(),
        };
        let tmp = tempfile::Builder::new()
            .prefix("backup-test-restore-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a scratch folder in {}", parent.display()))?;
        let dir = tmp.path().to_path_buf();
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let owner = trc
            .os_user
            .clone()
            .unwrap_or_else(|| "postgres".to_string());
        let sock = dir.join("sock");
        std::fs::create_dir(&sock)?;
        let hba = dir.join("pg_hba.conf");
        std::fs::write(&hba, "local all all trust\n")?;
        if root {
            // The server runs as `owner`: it needs the folder, the socket dir and the hba file.
            let st = std::process::Command::new("chown")
                .arg("-R")
                .arg(&owner)
                .arg(&dir)
                .status()?;
            if !st.success() {
                return Err(Fail::Config(format!(
                    "cannot give the scratch folder to OS user `{owner}`; set test_restore.os_user"
                ))
                .into());
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = dir.join("data");

        // Stop the server and remove the folder on every path out, and on a signal.
        let cleanup_dir = dir.clone();
        let cleanup_owner = if root { Some(owner.clone()) } else { None };
        let _guard = CleanupGuard::new(move || {
            let data = cleanup_dir.join("data");
            if data.join("postmaster.pid").exists() {
                if let Ok(pg_ctl) = scratch::server_bin_dir(None).map(|d| d.join("pg_ctl")) {
                    let mut c = match &cleanup_owner {
                        Some(u) => {
                            let mut c = std::process::Command::new("runuser");
                            c.args(["-u", u, "--"]).arg(pg_ctl);
                            c
                        }
                        None => std::process::Command::new(pg_ctl),
                    };
                    let _ = c
                        .arg("-D")
                        .arg(&data)
                        .args(["-m", "immediate", "-w", "stop"])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
            let _ = std::fs::remove_dir_all(&cleanup_dir);
        });

        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c hba_file='{}' -c archive_mode=off",
            sock.display(),
            hba.display()
        );
        let rt = Instant::now();
        let res = super::pitr::pitr(
            t,
            &self.opts,
            PitrRequest {
                target: t.name.to_string(),
                goal: Goal::Immediate,
                data_dir: data.clone(),
                action: "pause".into(),
                timeline: None,
                backup: Some(m.id.clone()),
                start: true,
                port: Some(port),
                owner: if root { Some(owner.clone()) } else { None },
                timeout: rto_hint.max(Duration::from_secs(60)),
                server_opts: Some(opts),
                delta: false,
            },
            ui,
        );
        let restore_seconds = rt.elapsed().as_secs_f64();
        let mut checks = Vec::new();
        match &res {
            Ok(o) => checks.push(Check {
                name: "restore".into(),
                passed: true,
                detail: format!(
                    "base backup verified, recovered to a consistent point and opened read-only in {}",
                    crate::duration::human(Duration::from_secs_f64(restore_seconds))
                ),
                figures: serde_json::json!({
                    "seconds": restore_seconds,
                    "stopped_at": o.stopped_at,
                    "last_transaction": o.last_transaction,
                }),
            }),
            Err(e) => checks.push(Check::new("restore", false, format!("{e:#}"))),
        }
        if res.is_ok() {
            let user = self
                .opts
                .url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .map(|u| u.username().to_string())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "postgres".to_string());
            let main_db = self
                .opts
                .url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .map(|u| u.path().trim_start_matches('/').to_string())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "postgres".to_string());
            let conn = ConnInfo::parse_url(&format!(
                "postgresql://{user}@localhost:{port}/postgres?host={}",
                sock.display()
            ))?;
            let databases: Vec<String> = (|| -> Result<Vec<String>> {
                let mut s = Psql::connect(&psql, &conn, Some("postgres"))?;
                let v = s.query(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                )?;
                s.close()?;
                Ok(v)
            })()
            .unwrap_or_else(|_| vec![main_db.clone()]);
            for db in &databases {
                let mut c = foreign_keys(&psql, &conn, db);
                c.name = format!("foreign_keys {db}");
                checks.push(c);
            }
            for col in trc.freshness.iter().flatten() {
                checks.push(freshness(&psql, &conn, &main_db, col, m, req.max_lag));
            }
            if let Some(text) = req.checks_sql {
                checks.extend(operator_checks(&psql, &conn, &main_db, text));
            }
            if let Some(q) = &trc.benchmark_sql {
                checks.extend(benchmarks(&psql, &conn, &main_db, q));
            }
        }
        drop(_guard);
        Ok(ScratchOutcome {
            place: format!(
                "temporary data directory {} (PITR to the backup's end, paused)",
                data.display()
            ),
            restore_seconds,
            restored: res.is_ok(),
            checks,
        })
    }
}

/// Role names the dump needs, read from the artifact (SQL text; custom archives through
/// `pg_restore --schema-only -f -`).
fn needed_roles(
    storage: &dyn Storage,
    m: &Manifest,
    bin_dir: Option<&std::path::Path>,
) -> Result<BTreeSet<String>> {
    let art = m
        .artifacts
        .first()
        .ok_or_else(|| anyhow!("backup {} lists no artifact", m.id))?;
    let key = catalog::artifact_key(&m.target, &m.id, &art.name);
    let raw = storage.open(&key)?;
    let mut roles = BTreeSet::new();
    let scan = |r: &mut dyn BufRead, roles: &mut BTreeSet<String>| -> Result<()> {
        let mut in_copy = false;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            let line = String::from_utf8_lossy(&buf);
            let l = line.trim_end_matches(['\n', '\r']);
            if in_copy {
                in_copy = l != "\\.";
                continue;
            }
            if l.starts_with("COPY ") && l.ends_with("FROM stdin;") {
                in_copy = true;
                continue;
            }
            roles_in_sql(l, roles);
        }
    };
    if m.format == "custom" {
        let pg_restore = find_tool("pg_restore", bin_dir)?;
        let mut child = std::process::Command::new(&pg_restore.path)
            .args(["--schema-only", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting pg_restore to list the dump's roles")?;
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let mut raw = raw;
            let _ = std::io::copy(&mut raw, &mut stdin);
        });
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let r = scan(&mut out, &mut roles);
        let _ = feeder.join();
        let _ = child.wait();
        r?;
    } else {
        let mut src: Box<dyn Read> = crate::compress::Compression::from_manifest(&art.compression)
            .decoder(std::io::BufReader::with_capacity(1 << 20, raw))?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, &mut src);
        scan(&mut r, &mut roles)?;
    }
    roles.remove("postgres");
    Ok(roles)
}
