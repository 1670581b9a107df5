//! The native tools: mongodump and mongorestore (found, versions, the `--config` file
//! that carries the password) and mongosh, which answers the questions the tool asks
//! the server itself (role and version, document counts, dropping a scratch
//! database) with short scripts that print one line of JSON.
//!
//! mongosh gets the URI with its password in its environment (`BACKUP_MONGODB_URI`,
//! read by the script as `process.env`), never on its command line: mongosh has no
//! config file for a password, and the environment of a process is readable only by
//! its owner.

use super::{Conn, Role, Server};
use crate::error::Fail;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable the mongosh scripts read the URI from.
pub const URI_ENV: &str = "BACKUP_MONGODB_URI";

#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
}

/// The tools a precheck found (each looked up once).
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub mongodump: Option<Tool>,
    pub mongorestore: Option<Tool>,
    pub mongosh: Option<Tool>,
}

impl Found {
    pub fn get(&mut self, name: &str) -> Result<Tool> {
        let slot = match name {
            "mongodump" => &mut self.mongodump,
            "mongorestore" => &mut self.mongorestore,
            _ => &mut self.mongosh,
        };
        if let Some(t) = slot {
            return Ok(t.clone());
        }
        let t = find(name)?;
        *slot = Some(t.clone());
        Ok(t)
    }
}

fn find(name: &str) -> Result<Tool> {
    let path = which::which(name).map_err(|_| {
        let what = if name == "mongosh" {
            "the MongoDB Shell (mongosh), which the tool uses to ask the server its role, version and document counts"
        } else {
            "the MongoDB Database Tools (mongodump, mongorestore)"
        };
        Fail::Config(format!(
            "{name} not found on PATH; install {what} from https://www.mongodb.com/try/download"
        ))
    })?;
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text).ok_or_else(|| {
        anyhow!(
            "cannot read the version of {} (it printed {:?})",
            path.display(),
            text.trim()
        )
    })?;
    Ok(Tool { path, version })
}

/// `mongodump version: 100.10.0` or mongosh's bare `2.3.1` -> the number.
pub fn parse_version(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ':')
        .find(|w| {
            w.contains('.')
                && w.chars().next().is_some_and(|c| c.is_ascii_digit())
                && w.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(String::from)
}

/// The `--config` file mongodump and mongorestore read the password from: YAML
/// `password: ...`, mode 0600, removed when the returned path is dropped.
pub fn config_file(password: &str) -> Result<tempfile::TempPath> {
    let mut f = tempfile::Builder::new()
        .prefix("backup-mongo-")
        .suffix(".yaml")
        .tempfile()
        .context("creating the tools' --config file")?;
    {
        use std::os::unix::fs::PermissionsExt;
        f.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    // A single-quoted YAML scalar: only the quote itself needs escaping (doubled).
    writeln!(f, "password: '{}'", password.replace('\'', "''"))?;
    f.as_file().sync_all()?;
    Ok(f.into_temp_path())
}

/// `--uri=...` (no password) and, when there is a password, `--config=FILE`.
pub fn connection_args(conn: &Conn, config: Option<&Path>) -> Vec<String> {
    let mut v = vec![format!("--uri={}", conn.display())];
    if let Some(p) = config {
        v.push(format!("--config={}", p.display()));
    }
    v
}

/// The last line of a tool's output that says something, with any password masked.
pub fn last_words(text: &str, conn: &Conn) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    match conn.password() {
        Some(p) if !p.is_empty() => line.replace(p, "***"),
        _ => line,
    }
}

/// Runs a mongosh script against `conn` and parses the last line it prints as JSON.
fn mongosh(
    tool: &Tool,
    conn: &Conn,
    args: &serde_json::Value,
    body: &str,
) -> Result<serde_json::Value> {
    let script =
        format!("const args = {args};\nconst conn = new Mongo(process.env.{URI_ENV});\n{body}\n");
    let out = Command::new(&tool.path)
        .args(["--nodb", "--quiet", "--norc", "--eval", &script])
        .env(URI_ENV, conn.uri_with_password())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", tool.path.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = match last_words(&stderr, conn) {
            w if w.is_empty() => last_words(&stdout, conn),
            w => w,
        };
        bail!("mongosh could not query {}: {why}", conn.display());
    }
    let line = last_words(&stdout, conn);
    serde_json::from_str(&line)
        .map_err(|e| anyhow!("mongosh printed {line:?}, not the JSON line expected ({e})"))
}

/// The server's role and version (`hello` and `buildInfo`).
pub fn hello(tool: &Tool, conn: &Conn) -> Result<Server> {
    let v = mongosh(
        tool,
        conn,
        &serde_json::json!({}),
        "const admin = conn.getDB('admin');\n\
         const h = admin.runCommand({hello: 1});\n\
         const b = admin.runCommand({buildInfo: 1});\n\
         print(JSON.stringify({setName: h.setName || null, isWritablePrimary: !!(h.isWritablePrimary || h.ismaster), secondary: !!h.secondary, msg: h.msg || null, version: b.version}));",
    )?;
    let set_name = v["setName"].as_str().map(String::from);
    let role = if v["msg"].as_str() == Some("isdbgrid") {
        Role::Mongos
    } else if set_name.is_some() {
        if v["isWritablePrimary"].as_bool() == Some(true) {
            Role::Primary
        } else if v["secondary"].as_bool() == Some(true) {
            Role::Secondary
        } else {
            Role::OtherMember
        }
    } else {
        Role::Standalone
    };
    Ok(Server {
        role,
        version: v["version"].as_str().unwrap_or("?").to_string(),
        set_name,
    })
}

/// `countDocuments({})` of each `(db, collection)`.
pub fn count_documents(
    tool: &Tool,
    conn: &Conn,
    namespaces: &[(String, String)],
) -> Result<Vec<u64>> {
    if namespaces.is_empty() {
        return Ok(Vec::new());
    }
    let v = mongosh(
        tool,
        conn,
        &serde_json::json!({ "namespaces": namespaces }),
        "const counts = args.namespaces.map(([d, c]) => conn.getDB(d).getCollection(c).countDocuments({}));\n\
         print(JSON.stringify({counts: counts}));",
    )?;
    let counts: Vec<u64> = v["counts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    if counts.len() != namespaces.len() {
        bail!(
            "mongosh returned {} count(s) for {} collection(s)",
            counts.len(),
            namespaces.len()
        );
    }
    Ok(counts)
}

/// Drops database `db` (test-restore's scratch database).
pub fn drop_database(tool: &Tool, conn: &Conn, db: &str) -> Result<()> {
    let v = mongosh(
        tool,
        conn,
        &serde_json::json!({ "database": db }),
        "const r = conn.getDB(args.database).dropDatabase();\n\
         print(JSON.stringify({ok: r.ok}));",
    )?;
    if v["ok"].as_f64() != Some(1.0) {
        bail!("dropDatabase of {db} did not answer ok: {v}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("mongodump version: 100.10.0\ngit version: abc\nGo version: go1.21")
                .as_deref(),
            Some("100.10.0")
        );
        assert_eq!(parse_version("2.3.1\n").as_deref(), Some("2.3.1"));
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn config_file_is_private_and_quoted() {
        use std::os::unix::fs::PermissionsExt;
        let p = config_file("it's: #secret").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "password: 'it''s: #secret'\n"
        );
        let path = p.to_path_buf();
        drop(p);
        assert!(!path.exists());
    }
}
