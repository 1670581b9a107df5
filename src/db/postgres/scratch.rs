//! Scratch places for `backup test-restore`: a temporary PostgreSQL cluster (initdb in a
//! temp dir, socket-only, trust auth inside a 0700 folder) or a scratch database on a
//! configured server. Both are removed when their guard drops, on every error path, and
//! on SIGINT/SIGTERM/SIGHUP ([`CleanupGuard`]).

use super::{quote_ident, quote_literal, ConnInfo, Psql, Tool};
use crate::engine::cleanup::CleanupGuard;
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Finds the server binaries: configured folder, `pg_config --bindir`, newest Debian one.
pub fn server_bin_dir(configured: Option<&Path>) -> Result<PathBuf> {
    let has = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Some(d) = configured {
        if has(d) {
            return Ok(d.to_path_buf());
        }
        return Err(crate::error::Fail::Config(format!(
            "initdb/pg_ctl not found in test_restore.bin_dir {}; install the PostgreSQL server package or fix the key",
            d.display()
        ))
        .into());
    }
    let mut candidates = Vec::new();
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        if o.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    for v in versions.iter().rev() {
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")));
    }
    if let Ok(p) = which::which("initdb") {
        if let Some(d) = p.parent() {
            candidates.push(d.to_path_buf());
        }
    }
    candidates.into_iter().find(|d| has(d)).ok_or_else(|| {
        crate::error::Fail::Config(
            "initdb and pg_ctl not found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH); install the PostgreSQL server \
             package (Debian: postgresql) or set test_restore.bin_dir, or set test_restore.url to use a scratch database on a server"
                .into(),
        )
        .into()
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A temporary cluster: socket only (no TCP), trust auth, in a private folder.
pub struct ScratchCluster {
    pub dir: PathBuf,
    #[allow(dead_code)]
    pub port: u16,
    pub version: String,
    /// Connection URL (unix socket in `dir`).
    pub url: String,
    _guard: CleanupGuard,
    _tmp: Arc<Mutex<Option<tempfile::TempDir>>>,
}

fn as_user(user: Option<&str>, prog: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

fn run_quiet(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            crate::db::postgres::one_paragraph(&format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        );
    }
    Ok(())
}

impl ScratchCluster {
    pub fn create(
        bin_dir: Option<&Path>,
        os_user: Option<&str>,
        parent: Option<&Path>,
        ui: &Ui,
    ) -> Result<ScratchCluster> {
        let bin = server_bin_dir(bin_dir)?;
        let user: Option<String> = if is_root() {
            Some(os_user.unwrap_or("postgres").to_string())
        } else {
            None
        };
        let mut b = tempfile::Builder::new();
        b.prefix("backup-test-restore-");
        let tmp = match parent {
            Some(p) => b.tempdir_in(p),
            None => b.tempdir(),
        }
        .context("creating the scratch cluster's temp folder")?;
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        let log = dir.join("server.log");
        let pg_ctl = bin.join("pg_ctl");
        // The cleanup: stop the server (immediate), kill what is left, remove the folder.
        let tmp = Arc::new(Mutex::new(Some(tmp)));
        let guard = {
            let (pg_ctl, data, user, tmp) =
                (pg_ctl.clone(), data.clone(), user.clone(), tmp.clone());
            CleanupGuard::new(move || {
                if data.join("postmaster.pid").exists() {
                    let _ = as_user(user.as_deref(), &pg_ctl)
                        .args(["-w", "-t", "20", "-m", "immediate", "-D"])
                        .arg(&data)
                        .arg("stop")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                if let Some(pid) = postmaster_pid(&data) {
                    // SAFETY: kill(2) on a pid read from our own cluster's pid file.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                if let Some(t) = tmp.lock().unwrap().take() {
                    let _ = t.close();
                }
            })
        };
        if let Some(u) = &user {
            let c = std::ffi::CString::new(u.as_str())?;
            // SAFETY: getpwnam with a valid C string; the result is only read here.
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if pw.is_null() {
                return Err(crate::error::Fail::Config(format!(
                    "running as root, the scratch cluster must run as another OS user, but user `{u}` does not exist; \
                     create it or set test_restore.os_user"
                ))
                .into());
            }
            // SAFETY: pw is non-null and points to a passwd record.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            let cpath = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
            // SAFETY: chown on the folder we just created.
            if unsafe { libc::chown(cpath.as_ptr(), uid, gid) } != 0 {
                bail!("cannot hand {} to user `{u}`", dir.display());
            }
            // The parent (e.g. /tmp) must let the user reach the folder.
        }
        let t = std::time::Instant::now();
        let mut initdb = as_user(user.as_deref(), &bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data);
        run_quiet(initdb, "initdb for the scratch cluster")?;
        let port = free_port()?;
        // Socket only, in our 0700 folder: nobody else on the host can reach the copy.
        let opts = format!(
            "-p {port} -c listen_addresses='' -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        let mut start = as_user(user.as_deref(), &pg_ctl);
        start
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "start"]);
        if let Err(e) = run_quiet(start, "pg_ctl start for the scratch cluster") {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(e.context(format!(
                "server log: {}",
                crate::db::postgres::one_paragraph(&tail)
            )));
        }
        let version = std::fs::read_to_string(data.join("PG_VERSION"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let url = format!(
            "postgresql:///postgres?host={}&port={port}&user=postgres",
            url::form_urlencoded::byte_serialize(dir.as_os_str().as_encoded_bytes())
                .collect::<String>()
        );
        ui.info(format!(
            "scratch cluster: PostgreSQL {version} in {} (port {port}, socket only), ready in {:.1}s",
            dir.display(),
            t.elapsed().as_secs_f64()
        ));
        Ok(ScratchCluster {
            dir,
            port,
            version,
            url,
            _guard: guard,
            _tmp: tmp,
        })
    }
}

fn postmaster_pid(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok().filter(|p| *p > 0)
}

/// A scratch database on a configured server, dropped when the guard drops.
pub struct ScratchDatabase {
    pub name: String,
    _guard: CleanupGuard,
}

impl ScratchDatabase {
    pub fn create(psql: &Tool, server_url: &str, id: &str) -> Result<ScratchDatabase> {
        let conn = ConnInfo::parse_url(server_url)?;
        let name = format!(
            "backup_test_restore_{}",
            id.to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        let mut s = Psql::connect(psql, &conn, None)
            .with_context(|| format!("connecting to test_restore.url {}", conn.display()))?;
        let exists = s.query_one(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(&name)
        ))? != "0";
        if exists {
            // A leftover of a killed run (SIGKILL cannot be caught): it is ours by name.
            s.query(&format!("DROP DATABASE {}", quote_ident(&name)))
                .with_context(|| format!("dropping leftover scratch database {name}"))?;
        }
        s.query(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .with_context(|| format!("creating scratch database {name}"))?;
        s.close()?;
        let guard = {
            let (psql, conn, name) = (psql.clone(), conn.clone(), name.clone());
            CleanupGuard::new(move || {
                let drop = |force: bool| -> Result<()> {
                    let mut s = Psql::connect(&psql, &conn, None)?;
                    s.query(&format!(
                        "DROP DATABASE IF EXISTS {}{}",
                        quote_ident(&name),
                        if force { " WITH (FORCE)" } else { "" }
                    ))?;
                    s.close()
                };
                if let Err(e) = drop(true).or_else(|_| drop(false)) {
                    eprintln!("could not drop scratch database {name}: {e:#}; drop it by hand");
                }
            })
        };
        Ok(ScratchDatabase {
            name,
            _guard: guard,
        })
    }
}

/// Role names a SQL script needs (owners, grantees, schema authorizations).
pub fn roles_in_sql(line: &str, out: &mut std::collections::BTreeSet<String>) {
    let l = line.trim();
    let mut take_after = |marker: &str, list: bool| {
        if let Some(i) = l.find(marker) {
            let mut rest = &l[i + marker.len()..];
            loop {
                rest = rest.trim_start();
                let (name, after) = match read_ident(rest) {
                    Some(x) => x,
                    None => break,
                };
                let lower = name.to_ascii_lowercase();
                if ![
                    "public",
                    "current_user",
                    "session_user",
                    "current_role",
                    "group",
                ]
                .contains(&lower.as_str())
                {
                    out.insert(name);
                }
                rest = after.trim_start();
                if list && rest.starts_with(',') {
                    rest = &rest[1..];
                    continue;
                }
                break;
            }
        }
    };
    if l.starts_with("ALTER ") && l.contains(" OWNER TO ") {
        take_after(" OWNER TO ", false);
    } else if l.starts_with("GRANT ") {
        take_after(" TO ", true);
        if let Some(i) = l.find(" GRANTED BY ") {
            let _ = i;
            take_after(" GRANTED BY ", false);
        }
    } else if l.starts_with("REVOKE ") {
        take_after(" FROM ", true);
    } else if l.starts_with("CREATE SCHEMA ") && l.contains(" AUTHORIZATION ") {
        take_after(" AUTHORIZATION ", false);
    } else if l.starts_with("ALTER DEFAULT PRIVILEGES FOR ROLE ") {
        take_after(" FOR ROLE ", false);
    } else if let Some(rest) = l.strip_prefix("SET SESSION AUTHORIZATION ") {
        // SET SESSION AUTHORIZATION 'name' (quoted literal in pg_dump output).
        let rest = rest.trim_end_matches(';');
        let n = rest.trim().trim_matches('\'').replace("''", "'");
        if !n.is_empty() && n != "DEFAULT" {
            out.insert(n);
        }
    }
}

/// Reads one SQL identifier (quoted or not) from the start of `s`.
fn read_ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if matches!(chars.peek(), Some((_, '"'))) {
                    name.push('"');
                    chars.next();
                    continue;
                }
                return Some((name, &rest[i + 1..]));
            }
            name.push(c);
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    // Unquoted identifiers fold to lower case.
    Some((s[..end].to_lowercase(), &s[end..]))
}

/// Creates the roles that do not exist yet (NOLOGIN: the copy is never logged into as them).
pub fn create_missing_roles(
    psql: &Tool,
    conn: &ConnInfo,
    roles: &std::collections::BTreeSet<String>,
    allow_create: bool,
) -> Result<Vec<String>> {
    if roles.is_empty() {
        return Ok(vec![]);
    }
    let mut s = Psql::connect(psql, conn, None)?;
    let mut missing = Vec::new();
    for r in roles {
        let n = s.query_one(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = {}",
            quote_literal(r)
        ))?;
        if n == "0" {
            missing.push(r.clone());
        }
    }
    if !missing.is_empty() && !allow_create {
        return Err(anyhow!(
            "the dump needs role(s) {} that do not exist on the test_restore.url server; create them there \
             (CREATE ROLE name NOLOGIN) or remove test_restore.url to use a temporary cluster",
            missing.join(", ")
        ));
    }
    for r in &missing {
        s.query(&format!("CREATE ROLE {} NOLOGIN", quote_ident(r)))
            .with_context(|| format!("creating role {r} in the scratch cluster"))?;
    }
    s.close()?;
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_roles_in_dump_lines() {
        let mut r = std::collections::BTreeSet::new();
        for l in [
            "ALTER TABLE public.users OWNER TO app_owner;",
            "ALTER SCHEMA billing OWNER TO \"Billing Admin\";",
            "GRANT SELECT ON TABLE public.users TO reader, \"Mixed\";",
            "GRANT ALL ON SCHEMA public TO PUBLIC;",
            "REVOKE ALL ON TABLE public.users FROM old_role;",
            "CREATE SCHEMA x AUTHORIZATION Schema_Owner;",
            "INSERT INTO t VALUES ('ALTER TABLE x OWNER TO nobody');",
        ] {
            roles_in_sql(l, &mut r);
        }
        let v: Vec<_> = r.into_iter().collect();
        assert_eq!(
            v,
            vec![
                "Billing Admin",
                "Mixed",
                "app_owner",
                "old_role",
                "reader",
                "schema_owner"
            ]
        );
    }
}
