//! `backup test-restore`: prove that a backup restores and that what comes back is right.
//!
//! The chosen backup is restored through the ordinary restore path (verify first, then
//! replay) into a scratch place that is always removed: a temporary cluster made with the
//! local server binaries, or a scratch database on `test_restore.url`. Then checks:
//! row counts against the manifest, foreign keys without orphans (queries generated from
//! pg_constraint), freshness columns, the operator's SQL checks, and the restore time
//! against the RTO. Each check reports pass/fail with figures.
//!
//! Owner roles: plain dumps say `ALTER ... OWNER TO role` and `GRANT ... TO role`; a fresh
//! cluster has none of those roles, and replaying with ON_ERROR_STOP would fail. The
//! dump is scanned for the role names it needs (owners, grantees, schema authorizations)
//! and they are created NOLOGIN in the temporary cluster first, so the restore is the
//! same one an operator would run, owners and grants included. On a `test_restore.url`
//! server roles are shared by every database, so they are never created there: missing
//! roles are named in the error instead.

use crate::config::{Config, TestRestoreConfig};
use crate::db::postgres::{find_tool, quote_ident, ConnInfo, Psql};
use crate::db::RestoreOptions;
use crate::engine::scratch::{self, ScratchCluster, ScratchDatabase};
use crate::engine::{catalog, restore};
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::{self, Storage};
use crate::ui::Ui;
use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::time::{Duration, Instant};

pub const DEFAULT_RTO: &str = "2h";
pub const DEFAULT_FRESHNESS_MAX_LAG: &str = "26h";

pub struct TestRestoreRequest {
    pub target: String,
    /// An id (or prefix), `latest` or `random`.
    pub which: String,
    /// Only backups that finished within this long before now.
    pub within: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    #[serde(default)]
    pub figures: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRestoreReport {
    pub target: String,
    pub id: String,
    pub storage: String,
    pub kind: String,
    pub backup_finished_at: DateTime<Utc>,
    pub size_bytes: u64,
    /// Where it was restored: `temporary cluster (PostgreSQL 15)` or `database X on URL`.
    pub scratch: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub restore_seconds: f64,
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl TestRestoreReport {
    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

impl TestRestoreReport {
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: &Manifest,
        storage: &str,
        scratch: String,
        started_at: chrono::DateTime<Utc>,
        t0: Instant,
        restore_seconds: f64,
        checks: Vec<Check>,
    ) -> TestRestoreReport {
        TestRestoreReport {
            target: m.target.clone(),
            id: m.id.clone(),
            storage: storage.to_string(),
            kind: m.kind.to_string(),
            backup_finished_at: m.finished_at,
            size_bytes: m.size_bytes(),
            scratch,
            started_at,
            finished_at: Utc::now(),
            duration_seconds: t0.elapsed().as_secs_f64(),
            restore_seconds,
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed,
        detail: detail.into(),
        figures: serde_json::Value::Null,
    }
}

/// Chooses the backup: `latest`, an id, or a uniformly random good one in the window.
pub fn choose(
    cfg: &Config,
    target: &str,
    which: &str,
    within: Option<Duration>,
) -> Result<(Box<dyn Storage>, Manifest)> {
    let tcfg = cfg.target(target)?;
    let cutoff = within
        .and_then(|w| chrono::Duration::from_std(w).ok())
        .map(|w| Utc::now() - w);
    let in_window = |m: &Manifest| !matches!(cutoff, Some(c) if m.finished_at < c);
    let window_text = || {
        within
            .map(|w| format!(" within the last {}", crate::duration::human(w)))
            .unwrap_or_default()
    };
    if which != "random" {
        let (s, m) = restore::locate(cfg, target, which, None)?;
        if !in_window(&m) {
            return Err(Fail::CheckFailed(format!(
                "backup `{which}` of target `{target}` is {} ({}), not{}: the newest backups are not being taken or kept",
                m.id,
                m.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                window_text()
            ))
            .into());
        }
        return Ok((s, m));
    }
    let mut ids = BTreeSet::new();
    let mut errors = Vec::new();
    for n in &tcfg.storages {
        match storage::open(cfg, n).and_then(|s| catalog::scan(s.as_ref(), target)) {
            Ok(cat) => ids.extend(
                cat.backups
                    .iter()
                    .filter(|m| in_window(m))
                    .map(|m| m.id.clone()),
            ),
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    use rand::seq::SliceRandom;
    let Some(id) = ids.choose(&mut rand::thread_rng()) else {
        let mut msg = format!(
            "no complete backup of target `{target}`{} on [{}]",
            window_text(),
            tcfg.storages.join(", ")
        );
        if !errors.is_empty() {
            msg.push_str(&format!(" (could not read: {})", errors.join("; ")));
        }
        return Err(Fail::CheckFailed(msg).into());
    };
    restore::locate(cfg, target, id, None)
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
            scratch::roles_in_sql(l, roles);
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
        let mut src: Box<dyn Read> = if art.compression == "gzip" {
            Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(1 << 20, raw),
            ))
        } else {
            raw
        };
        let mut r = std::io::BufReader::with_capacity(1 << 20, &mut src);
        scan(&mut r, &mut roles)?;
    }
    roles.remove("postgres");
    Ok(roles)
}

/// Runs the test restore. Errors before the restore (no backup, no server binaries)
/// are returned as errors; everything from the restore on is a check in the report.
pub fn run(cfg: &Config, req: &TestRestoreRequest, ui: &Ui) -> Result<TestRestoreReport> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let tcfg = cfg.target(&req.target)?;
    let trc: TestRestoreConfig = cfg.test_restore_for(&req.target);
    let rto = crate::duration::parse(trc.rto.as_deref().unwrap_or(DEFAULT_RTO))
        .map_err(|e| Fail::Config(format!("test_restore.rto: {e}")))?;
    let max_lag = crate::duration::parse(
        trc.freshness_max_lag
            .as_deref()
            .unwrap_or(DEFAULT_FRESHNESS_MAX_LAG),
    )
    .map_err(|e| Fail::Config(format!("test_restore.freshness_max_lag: {e}")))?;
    let checks_sql = match &trc.checks_sql {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            Fail::Config(format!(
                "cannot read test_restore.checks_sql {}: {e}",
                p.display()
            ))
        })?),
        None => None,
    };

    let (storage, m) = choose(cfg, &req.target, &req.which, req.within)?;
    ui.info(format!(
        "test-restore of {} {} ({}, taken {}) from `{}`",
        m.target,
        m.id,
        crate::duration::bytes(m.size_bytes()),
        m.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
        storage.name()
    ));
    let psql = find_tool("psql", tcfg.bin_dir.as_deref())?;
    if m.kind == crate::manifest::Kind::Physical {
        let ctx = PhysicalCtx {
            trc: &trc,
            rto,
            max_lag,
            checks_sql: checks_sql.as_deref(),
            psql: &psql,
        };
        return run_physical(cfg, req, ui, storage.as_ref(), &m, &ctx, started_at, t0);
    }
    // A damaged artifact is the verify step's finding, not this scan's: go on with what
    // was read, and let the restore check report it.
    let roles = needed_roles(storage.as_ref(), &m, tcfg.bin_dir.as_deref()).unwrap_or_else(|e| {
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

    // The ordinary restore path, pointed at the scratch server.
    let mut scfg = cfg.clone();
    let starget = scfg.targets.get_mut(&req.target).expect("target checked");
    starget.url = Some(server_url.clone());
    // The scratch server's credentials are in its own URL (or PGPASSWORD/.pgpass).
    starget.password_file = None;
    let rreq = restore::RestoreRequest {
        target: req.target.clone(),
        which: m.id.clone(),
        storage: Some(storage.name().to_string()),
        opts: RestoreOptions {
            to_database: Some(database.clone()),
            tables: vec![],
            clean: false,
            jobs: tcfg.restore_jobs.unwrap_or(2),
        },
        yes: true,
        dry_run: false,
        check_counts: false,
        temp_dir: trc.temp_dir.clone(),
    };
    let rt = Instant::now();
    let restored = restore::restore(&scfg, rreq, ui);
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
            figures: serde_json::json!({ "seconds": restore_seconds, "roles": roles.iter().collect::<Vec<_>>() }),
        }),
        Err(e) => checks.push(check("restore", false, format!("{e:#}"))),
    }
    if restored.is_ok() {
        let conn = ConnInfo::parse_url(&server_url)?;
        checks.push(row_counts(&scfg, &req.target, &database, &m));
        checks.push(foreign_keys(&psql, &conn, &database));
        for col in trc.freshness.iter().flatten() {
            checks.push(freshness(&psql, &conn, &database, col, &m, max_lag));
        }
        if let Some(text) = &checks_sql {
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
    }
    checks.push(rto_check(restored.is_ok(), restore_seconds, rto));
    drop(_cluster);
    drop(_database);
    Ok(TestRestoreReport::new(
        &m,
        storage.name(),
        scratch_label,
        started_at,
        t0,
        restore_seconds,
        checks,
    ))
}

/// The restore must fit the RTO (and must have worked at all).
fn rto_check(restored: bool, restore_seconds: f64, rto: Duration) -> Check {
    Check {
        name: "rto".into(),
        passed: restored && restore_seconds < rto.as_secs_f64(),
        detail: format!(
            "restore took {} (RTO {})",
            crate::duration::human(Duration::from_secs_f64(restore_seconds)),
            crate::duration::human(rto)
        ),
        figures: serde_json::json!({ "seconds": restore_seconds, "rto_seconds": rto.as_secs() }),
    }
}

struct PhysicalCtx<'a> {
    trc: &'a TestRestoreConfig,
    rto: Duration,
    max_lag: Duration,
    checks_sql: Option<&'a str>,
    psql: &'a crate::db::postgres::Tool,
}

/// A physical base backup is tested through PITR: restored into a temporary data
/// directory, recovered to its consistent end (`--target-immediate`), and left paused
/// (read-only, still in recovery, so it archives nothing into the production WAL
/// archive), on a private socket with its own pg_hba. Then the same checks as a logical
/// restore, across every database of the cluster: foreign keys, freshness, operator SQL
/// and RTO. (Physical manifests record no per-table row counts: PostgreSQL's own
/// recovery to a consistent point stands in for that check.)
#[allow(clippy::too_many_arguments)]
fn run_physical(
    cfg: &Config,
    req: &TestRestoreRequest,
    ui: &Ui,
    storage: &dyn crate::storage::Storage,
    m: &Manifest,
    ctx: &PhysicalCtx,
    started_at: chrono::DateTime<Utc>,
    t0: Instant,
) -> Result<TestRestoreReport> {
    use std::os::unix::fs::PermissionsExt;
    let tcfg = cfg.target(&req.target)?;
    let parent = match &ctx.trc.temp_dir {
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
    let owner = ctx
        .trc
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
    let _guard = scratch::CleanupGuard::new(move || {
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
    let res = crate::engine::pitr::pitr(
        cfg,
        crate::engine::pitr::PitrRequest {
            target: req.target.clone(),
            goal: crate::engine::pitr::Goal::Immediate,
            data_dir: data.clone(),
            action: "pause".into(),
            timeline: None,
            backup: Some(m.id.clone()),
            start: true,
            port: Some(port),
            owner: if root { Some(owner.clone()) } else { None },
            timeout: ctx.rto.max(Duration::from_secs(60)),
            server_opts: Some(opts),
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
        Err(e) => checks.push(check("restore", false, format!("{e:#}"))),
    }
    if res.is_ok() {
        let user = tcfg
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.username().to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres".to_string());
        let main_db = tcfg
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
            let mut s = Psql::connect(ctx.psql, &conn, Some("postgres"))?;
            let v = s.query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            )?;
            s.close()?;
            Ok(v)
        })()
        .unwrap_or_else(|_| vec![main_db.clone()]);
        for db in &databases {
            let mut c = foreign_keys(ctx.psql, &conn, db);
            c.name = format!("foreign_keys {db}");
            checks.push(c);
        }
        for col in ctx.trc.freshness.iter().flatten() {
            checks.push(freshness(ctx.psql, &conn, &main_db, col, m, ctx.max_lag));
        }
        if let Some(text) = ctx.checks_sql {
            checks.extend(operator_checks(ctx.psql, &conn, &main_db, text));
        }
    }
    checks.push(rto_check(res.is_ok(), restore_seconds, ctx.rto));
    drop(_guard);
    Ok(TestRestoreReport::new(
        m,
        storage.name(),
        format!(
            "temporary data directory {} (PITR to the backup's end, paused)",
            data.display()
        ),
        started_at,
        t0,
        restore_seconds,
        checks,
    ))
}

fn row_counts(scfg: &Config, target: &str, database: &str, m: &Manifest) -> Check {
    let wanted: Vec<_> = m
        .database
        .tables
        .iter()
        .filter(|t| t.rows.is_some())
        .collect();
    if wanted.is_empty() {
        // Nothing recorded to compare with (an empty database, or row_counts = "off").
        return check(
            "row_counts",
            true,
            if m.database.tables.is_empty() {
                "skipped: the manifest lists no tables".to_string()
            } else {
                "skipped: the manifest has no row counts (row_counts = \"off\")".to_string()
            },
        );
    }
    let got = scfg.target(target).and_then(|t| {
        let mut e = crate::db::logical_engine(target, t)?;
        e.count_rows(&RestoreOptions {
            to_database: Some(database.to_string()),
            ..Default::default()
        })
    });
    let got = match got {
        Ok(g) => g,
        Err(e) => return check("row_counts", false, format!("counting rows: {e:#}")),
    };
    let mut tables = Vec::new();
    let mut bad = Vec::new();
    let mut total = 0u64;
    for w in &wanted {
        let expected = w.rows.unwrap_or(0);
        total += expected;
        let restored = got
            .iter()
            .find(|g| g.schema == w.schema && g.name == w.name)
            .and_then(|g| g.rows);
        let name = format!("{}.{}", w.schema, w.name);
        if restored != Some(expected) {
            bad.push(match restored {
                Some(r) => format!("{name}: {r} restored, manifest {expected}"),
                None => format!("{name}: missing after restore, manifest {expected}"),
            });
        }
        tables.push(serde_json::json!({"table": name, "expected": expected, "restored": restored}));
    }
    Check {
        name: "row_counts".into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "{} table(s), {total} row(s) match the manifest",
                wanted.len()
            )
        } else {
            format!(
                "{} of {} table(s) differ: {}",
                bad.len(),
                wanted.len(),
                bad.join("; ")
            )
        },
        figures: serde_json::json!({ "tables": tables }),
    }
}

const FK_SQL: &str = "SELECT coalesce(json_agg(json_build_object(\
 'name', c.conname, 'child', c.conrelid::regclass::text, 'parent', c.confrelid::regclass::text, \
 'cols', (SELECT array_agg(quote_ident(a.attname) ORDER BY k.o) FROM unnest(c.conkey) WITH ORDINALITY k(n, o) \
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n), \
 'pcols', (SELECT array_agg(quote_ident(a.attname) ORDER BY k.o) FROM unnest(c.confkey) WITH ORDINALITY k(n, o) \
          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n), \
 'validated', c.convalidated) ORDER BY c.conrelid::regclass::text, c.conname), '[]'::json) \
 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
 WHERE c.contype = 'f' AND c.conparentid = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

#[derive(Deserialize)]
struct Fk {
    name: String,
    child: String,
    parent: String,
    cols: Vec<String>,
    pcols: Vec<String>,
    validated: bool,
}

/// The orphan count query of one foreign key (MATCH SIMPLE: rows with a NULL in the
/// key reference nothing and are not orphans).
fn orphan_sql(fk: &Fk) -> String {
    let not_null: Vec<String> = fk
        .cols
        .iter()
        .map(|c| format!("c.{c} IS NOT NULL"))
        .collect();
    let join: Vec<String> = fk
        .cols
        .iter()
        .zip(&fk.pcols)
        .map(|(c, p)| format!("p.{p} = c.{c}"))
        .collect();
    format!(
        "SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})",
        fk.child,
        not_null.join(" AND "),
        fk.parent,
        join.join(" AND ")
    )
}

fn foreign_keys(psql: &crate::db::postgres::Tool, conn: &ConnInfo, db: &str) -> Check {
    let run = || -> Result<Check> {
        let mut s = Psql::connect(psql, conn, Some(db))?;
        let fks: Vec<Fk> = serde_json::from_str(&s.query_one(FK_SQL)?)?;
        let mut bad = Vec::new();
        let mut list = Vec::new();
        for fk in &fks {
            let n: u64 = s
                .query_one(&orphan_sql(fk))
                .with_context(|| format!("checking foreign key {} on {}", fk.name, fk.child))?
                .trim()
                .parse()
                .unwrap_or(0);
            if n > 0 {
                bad.push(format!(
                    "{} on {} ({}) -> {}: {n} orphan row(s){}",
                    fk.name,
                    fk.child,
                    fk.cols.join(", "),
                    fk.parent,
                    if fk.validated {
                        ""
                    } else {
                        " (constraint NOT VALID)"
                    }
                ));
            }
            list.push(serde_json::json!({"constraint": fk.name, "table": fk.child, "references": fk.parent,
                "columns": fk.cols, "orphans": n, "validated": fk.validated}));
        }
        s.close()?;
        Ok(Check {
            name: "foreign_keys".into(),
            passed: bad.is_empty(),
            detail: if bad.is_empty() {
                format!("{} foreign key(s), no orphan rows", fks.len())
            } else {
                bad.join("; ")
            },
            figures: serde_json::json!({ "constraints": list }),
        })
    };
    run().unwrap_or_else(|e| check("foreign_keys", false, format!("{e:#}")))
}

fn freshness(
    psql: &crate::db::postgres::Tool,
    conn: &ConnInfo,
    db: &str,
    col: &str,
    m: &Manifest,
    max_lag: Duration,
) -> Check {
    let name = format!("freshness {col}");
    let parts: Vec<&str> = col.split('.').collect();
    let (table, column) = match parts.as_slice() {
        [t, c] => (quote_ident(t), quote_ident(c)),
        [s, t, c] => (
            format!("{}.{}", quote_ident(s), quote_ident(t)),
            quote_ident(c),
        ),
        _ => return check(name, false, "write table.column or schema.table.column"),
    };
    let run = || -> Result<Check> {
        let mut s = Psql::connect(psql, conn, Some(db))?;
        let v = s.query_one(&format!(
            "SELECT extract(epoch FROM max({column}))::float8 FROM {table}"
        ))?;
        s.close()?;
        let reference = m.started_at;
        if v.trim().is_empty() {
            return Ok(check(
                &name,
                false,
                format!("{col} has no value (empty table?)"),
            ));
        }
        let secs: f64 = v.trim().parse().context("reading the newest value")?;
        let newest = DateTime::<Utc>::from_timestamp(secs as i64, 0).unwrap_or_default();
        let lag = (reference - newest).num_seconds();
        let ok = lag <= max_lag.as_secs() as i64;
        Ok(Check {
            name: name.clone(),
            passed: ok,
            detail: format!(
                "newest {} is {} before the backup (max {})",
                newest.format("%Y-%m-%d %H:%M:%SZ"),
                crate::duration::human(Duration::from_secs(lag.max(0) as u64)),
                crate::duration::human(max_lag)
            ),
            figures: serde_json::json!({ "newest": newest, "lag_seconds": lag, "max_lag_seconds": max_lag.as_secs() }),
        })
    };
    run().unwrap_or_else(|e| check(&name, false, format!("{e:#}")))
}

fn operator_checks(
    psql: &crate::db::postgres::Tool,
    conn: &ConnInfo,
    db: &str,
    text: &str,
) -> Vec<Check> {
    let mut out = Vec::new();
    let mut session: Option<Psql> = None;
    for (i, stmt) in split_sql(text).iter().enumerate() {
        let short: String = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        let short = if short.chars().count() > 60 {
            format!("{}…", short.chars().take(60).collect::<String>())
        } else {
            short
        };
        let name = format!("sql #{}: {short}", i + 1);
        if session.is_none() {
            match Psql::connect(psql, conn, Some(db)) {
                Ok(s) => session = Some(s),
                Err(e) => {
                    out.push(check(name, false, format!("{e:#}")));
                    continue;
                }
            }
        }
        let s = session.as_mut().unwrap();
        match s.query(stmt) {
            Ok(rows) => {
                let rows: Vec<&String> = rows.iter().filter(|r| !r.is_empty()).collect();
                let ok = rows.iter().all(|r| r.split('|').all(|v| v == "t"));
                out.push(Check {
                    name,
                    passed: ok,
                    detail: if rows.is_empty() {
                        "no rows".into()
                    } else if ok {
                        format!("{} row(s), all true", rows.len())
                    } else {
                        format!(
                            "returned {}",
                            rows.iter()
                                .take(5)
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    figures: serde_json::json!({ "rows": rows.len() }),
                });
            }
            Err(e) => {
                // psql stops on an error; the next statement gets a new session.
                session = None;
                out.push(check(name, false, format!("error: {e:#}")));
            }
        }
    }
    if let Some(s) = session {
        let _ = s.close();
    }
    out
}

/// Splits a SQL file into statements on `;`, respecting quotes, dollar quotes and comments.
pub fn split_sql(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
                continue;
            }
            '\'' | '"' => {
                cur.push(c);
                i += 1;
                while i < chars.len() {
                    cur.push(chars[i]);
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            cur.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            '$' => {
                // $tag$ ... $tag$
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                if j < chars.len() && chars[j] == '$' {
                    let tag: String = chars[i..=j].iter().collect();
                    let rest: String = chars[j + 1..].iter().collect();
                    match rest.find(&tag) {
                        Some(end) => {
                            cur.push_str(&tag);
                            cur.push_str(&rest[..end]);
                            cur.push_str(&tag);
                            i = j + 1 + rest[..end].chars().count() + tag.chars().count();
                            continue;
                        }
                        None => cur.push(c),
                    }
                } else {
                    cur.push(c);
                }
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The report for people: one line per check.
pub fn render(r: &TestRestoreReport) -> String {
    let mut s = format!(
        "test-restore {} {} ({}, {}, taken {}) from {}\ninto {}\n\n",
        r.target,
        r.id,
        r.kind,
        crate::duration::bytes(r.size_bytes),
        r.backup_finished_at.format("%Y-%m-%d %H:%M:%SZ"),
        r.storage,
        r.scratch
    );
    let width = r
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(5)
        .min(60);
    for c in &r.checks {
        s.push_str(&format!(
            "{}  {:<width$}  {}\n",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail,
        ));
    }
    let failed = r.failed_checks().len();
    s.push_str(&format!(
        "\n{}: {} of {} check(s) passed in {}; the scratch copy was removed\n",
        if r.passed { "PASSED" } else { "FAILED" },
        r.checks.len() - failed,
        r.checks.len(),
        crate::duration::human(Duration::from_secs_f64(r.duration_seconds))
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        let v = split_sql(
            "-- a comment; with semicolon\nSELECT 'a;b' = 'a;b';\n/* block ; */ SELECT $x$ ; $x$ <> '';\nSELECT \"we;ird\" FROM t\n",
        );
        assert_eq!(
            v,
            vec![
                "SELECT 'a;b' = 'a;b'",
                "SELECT $x$ ; $x$ <> ''",
                "SELECT \"we;ird\" FROM t"
            ]
        );
    }

    #[test]
    fn orphan_query_covers_every_column() {
        let fk = Fk {
            name: "f".into(),
            child: "public.c".into(),
            parent: "p".into(),
            cols: vec!["a".into(), "\"B\"".into()],
            pcols: vec!["x".into(), "y".into()],
            validated: true,
        };
        assert_eq!(
            orphan_sql(&fk),
            "SELECT count(*) FROM public.c c WHERE c.a IS NOT NULL AND c.\"B\" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM p p WHERE p.x = c.a AND p.y = c.\"B\")"
        );
    }
}
