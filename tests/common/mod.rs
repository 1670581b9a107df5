//! Test harness: real PostgreSQL clusters (initdb in a temp dir) and a real
//! S3-compatible server (moto), started per test and stopped on drop.
#![allow(dead_code)]

pub mod clickhouse_server;
pub mod faults;
pub mod physical;
pub mod redis_server;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn pg_bin() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BIN") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.last() {
        Some(v) => PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")),
        None => PathBuf::from("/usr/bin"),
    }
}

/// Runs a command as the `postgres` OS user when we are root (initdb refuses root).
fn as_pg_user(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

/// A throwaway PostgreSQL cluster on its own port, trust auth on 127.0.0.1.
pub struct Pg {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
}

impl Pg {
    pub fn start() -> Pg {
        Self::start_with(&[])
    }

    /// `settings` are extra `name=value` server settings (e.g. wal_level=replica).
    pub fn start_with(settings: &[&str]) -> Pg {
        Self::start_initdb(&[], settings)
    }

    /// With extra initdb arguments too (e.g. `--wal-segsize=1`).
    pub fn start_initdb(initdb: &[&str], settings: &[&str]) -> Pg {
        let dir = tempfile::Builder::new()
            .prefix("backup-test-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if is_root() {
            Command::new("chmod")
                .arg("0777")
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let bin = pg_bin();
        let out = as_pg_user(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .args(initdb)
            .arg("-D")
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            dir.path().display()
        );
        for s in settings {
            opts.push_str(&format!(" -c {s}"));
        }
        let out = as_pg_user(&bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-o", &opts, "start"])
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        Pg { dir, data, port }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql; returns trimmed unaligned output. Panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("psql failed for {sql}: {e}"))
    }

    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(pg_bin().join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    pub fn createdb(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    pub fn stop(&self) {
        let _ = as_pg_user(&pg_bin().join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// A schema with the hard cases: unicode, NULLs, large text, FKs, sequences, bytea.
    pub fn load_sample(&self, db: &str) {
        self.sql(
            db,
            r#"
CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE chats (id serial PRIMARY KEY, title text, owner_id bigint REFERENCES users(id));
CREATE TABLE messages (id bigserial PRIMARY KEY, chat_id int NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
  user_id bigint REFERENCES users(id), body text, payload bytea, score numeric(12,4), created_at timestamptz NOT NULL DEFAULT now());
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id serial PRIMARY KEY, user_id bigint REFERENCES users(id), amount_cents bigint NOT NULL, note text);
CREATE SEQUENCE standalone_seq START 1000;
SELECT setval('standalone_seq', 4242);
INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', CASE WHEN i % 7 = 0 THEN NULL ELSE 'Ünïcødé 名前 ' || i || ' 🚀' END FROM generate_series(1, 500) i;
INSERT INTO chats (title, owner_id) SELECT 'chat ' || i, (i % 500) + 1 FROM generate_series(1, 50) i;
INSERT INTO messages (chat_id, user_id, body, payload, score)
  SELECT (i % 50) + 1, CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 500) + 1 END,
         CASE WHEN i % 97 = 0 THEN repeat('large text ✓ ', 20000) ELSE 'message ' || i || E'\twith tab and \\ backslash and ''quote''' END,
         CASE WHEN i % 3 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') END, i / 7.0
  FROM generate_series(1, 3000) i;
INSERT INTO billing.invoices (user_id, amount_cents, note) SELECT (i % 500) + 1, i * 100, NULL FROM generate_series(1, 200) i;
"#,
        );
    }

    /// A fingerprint of schema and data for comparing two databases.
    pub fn fingerprint(&self, db: &str) -> String {
        let tables = self.sql(
            db,
            "SELECT string_agg(format('%I.%I', schemaname, tablename), ',' ORDER BY schemaname, tablename) \
             FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')",
        );
        let mut parts = vec![format!("tables={tables}")];
        for t in tables.split(',').filter(|t| !t.is_empty()) {
            parts.push(self.sql(
                db,
                &format!("SELECT '{t}=' || count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"),
            ));
        }
        parts.push(self.sql(
            db,
            "SELECT string_agg(format('%s.%s=%s', schemaname, sequencename, last_value), ',' ORDER BY sequencename) FROM pg_sequences",
        ));
        parts.push(self.sql(
            db,
            "SELECT string_agg(conname || ':' || pg_get_constraintdef(c.oid), ',' ORDER BY conname) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE contype IN ('f','p','u') AND n.nspname NOT IN ('pg_catalog','information_schema')",
        ));
        parts.push(self.sql(
            db,
            "SELECT string_agg(table_schema || '.' || table_name || '.' || column_name || ':' || data_type || ':' || is_nullable, ',' ORDER BY table_schema, table_name, column_name) FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog','information_schema')",
        ));
        parts.join("\n")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// moto's S3 server (no signature checks; API breadth).
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: pip install 'moto[server]'");
        wait_port(port);
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        http(self.port, "PUT", &format!("/{bucket}"));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_port(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A bare HTTP request (moto accepts unsigned requests); returns the status line.
pub fn http(port: u16, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.lines().next().unwrap_or("").to_string()
}

/// A test workspace: a config file, a state dir and a local repository.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("backup-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("backup.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The built binary with a clean environment pointing at this workspace.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("backup").unwrap();
        c.current_dir(self.dir.path())
            .env("BACKUP_CONFIG", self.dir.path().join("backup.toml"))
            .env("BACKUP_STATE_DIR", self.dir.path().join("state"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("PGPASSWORD")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGDATABASE")
            .env_remove("PGUSER");
        c
    }

    /// Runs the binary; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(
            code, 0,
            "backup {args:?} failed ({code}):\nstdout: {out}\nstderr: {err}"
        );
        out
    }
}

/// A local-storage config for one postgres target.
pub fn local_config(repo: &Path, url: &str, format: &str) -> String {
    format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[targets.pg]
engine = "postgres"
url = "{url}"
format = "{format}"
storages = ["local"]
"#,
        repo.display()
    )
}

/// s3s-fs: an S3 server over a folder that checks request signatures (moto does not).
/// A bucket is a sub-folder of its data folder.
pub struct S3sFs {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    keys: (String, String),
}

impl S3sFs {
    pub fn start(access_key: &str, secret_key: &str) -> S3sFs {
        let dir = tempfile::Builder::new()
            .prefix("backup-test-s3s-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let child = Self::spawn(port, access_key, secret_key, dir.path());
        S3sFs {
            child,
            port,
            dir,
            keys: (access_key.into(), secret_key.into()),
        }
    }

    fn spawn(port: u16, access_key: &str, secret_key: &str, dir: &Path) -> Child {
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret_key])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "s3s-fs not found: cargo install s3s-fs --version 0.14.1 --features binary --locked",
            );
        wait_port(port);
        child
    }

    /// SIGKILLs the server (its data stays in `dir`).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.keys.0, &self.keys.1, self.dir.path());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.dir.path().join(bucket)).unwrap();
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP response: status code, headers (names lowercased) and body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub bytes: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// A bare unsigned HTTP/1.1 request (moto accepts those), with the whole response.
pub fn http_full(port: u16, method: &str, path: &str) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let bytes = raw[(split + 4).min(raw.len())..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).to_string(),
        bytes,
    }
}

impl Pg {
    /// Creates a superuser that must log in with a password over TCP (scram-sha-256),
    /// while the harness's own `postgres` user keeps trust auth.
    pub fn add_password_user(&self, user: &str, password: &str) {
        self.sql(
            "postgres",
            &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{password}'"),
        );
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!("host all {user} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .unwrap();
        self.sql("postgres", "SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until a password-less login is refused.
        let t = Instant::now();
        loop {
            let out = Command::new(pg_bin().join("psql"))
                .args(["-X", "-w", "-c", "SELECT 1", "-d"])
                .arg(format!(
                    "postgresql://{user}@127.0.0.1:{}/postgres",
                    self.port
                ))
                .env_remove("PGPASSWORD")
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "pg_hba reload");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A table of incompressible text (~`mib` MiB of hex md5s) to make big dumps.
    pub fn load_noise(&self, db: &str, mib: usize) {
        // 64 md5s of 32 chars = 2 KiB per row.
        let rows = mib * 512;
        self.sql(
            db,
            &format!(
                "CREATE TABLE noise (id int PRIMARY KEY, t text); \
                 INSERT INTO noise SELECT i, (SELECT string_agg(md5(random()::text || i || j), '') FROM generate_series(1, 64) j) \
                 FROM generate_series(1, {rows}) i"
            ),
        );
    }
}

/// A bin_dir for a target: psql and pg_restore are the real ones (symlinks), pg_dump is
/// the shell script `pg_dump_body` (`$REAL` is the real pg_dump). Stand-ins at the
/// process boundary, used only to make the real pg_dump fail, slow down or look old.
pub fn bin_dir_with_pg_dump(dir: &Path, pg_dump_body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["psql", "pg_restore"] {
        let _ = std::fs::remove_file(bin.join(tool));
        std::os::unix::fs::symlink(pg_bin().join(tool), bin.join(tool)).unwrap();
    }
    let script = bin.join("pg_dump");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nREAL={}\n{pg_dump_body}\n",
            pg_bin().join("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Every regular file under a folder (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir, false)
}

/// Everything under a folder, folders included (to catch empty leftovers).
pub fn entries_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir, true)
}

fn walk(dir: &Path, with_dirs: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
                if !with_dirs {
                    continue;
                }
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The artifact file of the only backup of target `pg` in a local repository.
pub fn only_artifact(repo: &Path, id: &str) -> PathBuf {
    let dir = repo.join("pg").join(id);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("dump.")
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// A config with extra target keys (e.g. `bin_dir = "..."`) for one postgres target.
pub fn local_config_with(repo: &Path, url: &str, format: &str, extra: &str) -> String {
    format!("{}{extra}\n", local_config(repo, url, format))
}

/// A cluster with the sample data, a local repository of target `pg` in `format`, and
/// one backup of it (its id).
pub fn sample_backup(format: &str) -> (Pg, Env, String) {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), format));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    (pg, env, id)
}

/// A bare HTTP request with extra headers and a body; returns (status line, body).
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    // moto refuses anonymous reads; it does not check the signature itself.
    head.push_str("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n");
    head.push_str("Content-Type: application/octet-stream\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let status = String::from_utf8_lossy(&resp[..split])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (status, resp[split..].to_vec())
}

impl Moto {
    /// A bucket with S3 Object Lock and a default GOVERNANCE retention of `days`.
    pub fn create_locked_bucket(&self, bucket: &str, days: u32) {
        let (st, _) = http_with(
            self.port,
            "PUT",
            &format!("/{bucket}"),
            &[("x-amz-bucket-object-lock-enabled", "true")],
            b"",
        );
        assert!(st.contains("200"), "{st}");
        let cfg = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
        );
        let (st, body) = http_with(
            self.port,
            "PUT",
            &format!("/{bucket}?object-lock"),
            &[],
            cfg.as_bytes(),
        );
        assert!(
            st.contains("200"),
            "{st} {}",
            String::from_utf8_lossy(&body)
        );
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        let (st, resp) = http_with(
            self.port,
            "PUT",
            &format!("/{bucket}/{key}"),
            &[("Content-MD5", &md5)],
            body,
        );
        assert!(
            st.contains("200"),
            "PUT {key}: {st} {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(
            self.get_object(bucket, key).as_deref(),
            Some(body),
            "PUT {key} stored other bytes"
        );
    }

    /// An object's bytes, or None when it does not exist.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (st, body) = http_with(self.port, "GET", &format!("/{bucket}/{key}"), &[], b"");
        st.contains("200").then_some(body)
    }

    /// Keys under a prefix (ListObjectsV2, first page).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (_, body) = http_with(
            self.port,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            &[],
            b"",
        );
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

impl Env {
    /// Like [`Env::cmd`], as a std Command (for spawning and signalling).
    pub fn std_cmd(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("backup"));
        c.current_dir(self.dir.path())
            .env("BACKUP_CONFIG", self.dir.path().join("backup.toml"))
            .env("BACKUP_STATE_DIR", self.dir.path().join("state"))
            .env_remove("PGPASSWORD")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGDATABASE")
            .env_remove("PGUSER");
        c
    }
}

/// `age-keygen -o DIR/NAME.txt` (the real age CLI, Debian package `age`); returns the
/// identity file and its recipient.
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.txt"));
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (Debian package `age`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (key, recipient)
}

/// `promtool check metrics` on an exposition (skipped, with a line, without promtool).
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "SKIPPED promtool check metrics: promtool not installed (Debian package `prometheus`)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a local backup's manifest as the tool would (for crafted backups): the JSON,
/// and its SHA-256 in the side file `verify` checks it against.
pub fn write_manifest(path: &Path, bytes: &[u8]) {
    use sha2::Digest;
    std::fs::write(path, bytes).unwrap();
    let side = path.with_file_name(".meta-manifest.json.json");
    let mut meta: std::collections::BTreeMap<String, String> = std::fs::read(&side)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    meta.insert(
        "manifest-sha256".into(),
        hex::encode(sha2::Sha256::digest(bytes)),
    );
    std::fs::write(&side, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// The Python of the CI venv (`.ci/run` installs pymongo, PyYAML, kubernetes-validate...
/// there): `BACKUP_TEST_PYTHON`, else /opt/backup-ci/venv/bin/python3, else python3.
pub fn ci_python() -> String {
    if let Ok(p) = std::env::var("BACKUP_TEST_PYTHON") {
        return p;
    }
    let venv = "/opt/backup-ci/venv/bin/python3";
    if Path::new(venv).exists() {
        return venv.into();
    }
    "python3".into()
}

/// `<env>/scratch` for test-restore's temporary clusters, reachable by the cluster's OS
/// user (`postgres` when we are root).
pub fn scratch_dir(env: &Env) -> PathBuf {
    let scratch = env.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    for d in [env.path(), scratch.as_path()] {
        Command::new("chmod").arg("0755").arg(d).status().unwrap();
    }
    scratch
}
