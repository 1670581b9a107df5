//! Real `clickhouse-server` (Debian's 18.16) instances for the ClickHouse tests: a
//! minimal `<yandex>` config in a temp dir, HTTP, TCP and interserver ports all free
//! ones (never 8123/9000: moto likes 9000), run as the current user, killed by pid on
//! drop. Users: `default` (no password), `secret` (password `s3cr3t-pw`), and
//! `limited`, whose profile stops a query after 20,000 rows read.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET_PASSWORD: &str = "s3cr3t-pw";

pub struct ClickHouseServer {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub tcp_port: u16,
    child: Option<Child>,
}

impl ClickHouseServer {
    pub fn start() -> ClickHouseServer {
        let dir = tempfile::Builder::new()
            .prefix("backup-ch-")
            .tempdir()
            .unwrap();
        let (http_port, tcp_port, inter) =
            (super::free_port(), super::free_port(), super::free_port());
        let d = dir.path();
        std::fs::write(
            d.join("config.xml"),
            format!(
                r#"<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <interserver_http_port>{inter}</interserver_http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <mark_cache_size>5368709120</mark_cache_size>
</yandex>
"#,
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("users.xml"),
            format!(
                r#"<yandex>
  <profiles>
    <default></default>
    <limited>
      <max_rows_to_read>20000</max_rows_to_read>
      <read_overflow_mode>throw</read_overflow_mode>
      <max_block_size>1000</max_block_size>
    </limited>
  </profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <secret><password>{SECRET_PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></secret>
    <limited><password></password><networks><ip>127.0.0.1</ip></networks><profile>limited</profile><quota>default</quota></limited>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={}", d.join("config.xml").display()))
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server (apt-get install -y clickhouse-server)");
        let s = ClickHouseServer {
            dir,
            http_port,
            tcp_port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.try_query("SELECT 1").is_err() {
            assert!(Instant::now() < deadline, "clickhouse-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn try_query(&self, sql: &str) -> Result<Vec<u8>, String> {
        match ureq::post(&self.url()).send_string(sql) {
            Ok(r) => {
                let mut v = Vec::new();
                r.into_reader()
                    .read_to_end(&mut v)
                    .map_err(|e| e.to_string())?;
                Ok(v)
            }
            Err(ureq::Error::Status(c, r)) => {
                Err(format!("{c}: {}", r.into_string().unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs SQL as `default`; panics with the server's message on failure.
    pub fn q(&self, sql: &str) -> String {
        let v = self.try_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        String::from_utf8_lossy(&v).trim().to_string()
    }

    /// `count()` and the SHA-256 of every row (every column, as TSV) in a fixed
    /// order (sorted by every column): equal fingerprints mean identical tables.
    pub fn fingerprint(&self, db: &str, table: &str) -> String {
        use sha2::Digest;
        let cols: Vec<String> = self
            .q(&format!(
                "SELECT name FROM system.columns WHERE database = '{db}' AND table = '{table}' FORMAT TSV"
            ))
            .lines()
            .map(|c| format!("`{c}`"))
            .collect();
        assert!(!cols.is_empty(), "{db}.{table} has no columns");
        let cols = cols.join(", ");
        let rows = self
            .try_query(&format!(
                "SELECT {cols} FROM `{db}`.`{table}` ORDER BY {cols} FORMAT TSV"
            ))
            .unwrap();
        let count = self.q(&format!("SELECT count() FROM `{db}`.`{table}`"));
        format!(
            "{count} rows, sha256 {}",
            hex::encode(sha2::Sha256::digest(&rows))
        )
    }

    pub fn client(&self) -> Command {
        let mut c = Command::new("clickhouse-client");
        c.arg("--host=127.0.0.1")
            .arg(format!("--port={}", self.tcp_port));
        c
    }

    /// Stops the server hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A config with a local storage and the target `analytics` on `url`, plus `extra`
/// lines under the target.
pub fn config(env: &super::Env, url: &str, extra: &str) -> PathBuf {
    env.write_config(&format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[targets.analytics]
engine = "clickhouse"
url = "{url}"
storages = ["local"]
{extra}
"#,
        env.repo().display()
    ))
}

/// The manifest of backup `id` of `analytics` on the local storage.
pub fn manifest(env: &super::Env, id: &str) -> serde_json::Value {
    let p = env.repo().join("analytics").join(id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}
