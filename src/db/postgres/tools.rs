//! PostgreSQL's client tools: finding them (PATH, `bin_dir`, a newer installed
//! major), their versions, and a psql session for queries.

use super::ConnInfo;
use crate::error::Fail;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
    pub major: u32,
}

/// Finds a PostgreSQL client tool: `bin_dir` first, else PATH.
pub fn find_tool(name: &str, bin_dir: Option<&Path>) -> Result<Tool> {
    let path = match bin_dir {
        Some(d) => {
            let p = d.join(name);
            if !p.exists() {
                return Err(Fail::Config(format!(
                    "{name} not found in bin_dir {}; install the PostgreSQL client tools or fix bin_dir",
                    d.display()
                ))
                .into());
            }
            p
        }
        None => which::which(name).map_err(|_| {
            Fail::Config(format!(
                "{name} not found on PATH; install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client) or set bin_dir in the target's config"
            ))
        })?,
    };
    tool_version(name, &path)
}

fn tool_version(name: &str, path: &Path) -> Result<Tool> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = parse_version(&text).ok_or_else(|| {
        anyhow!(
            "cannot read the version of {} (it printed {:?})",
            path.display(),
            text.trim()
        )
    })?;
    let major = major_of(&version);
    let _ = name;
    Ok(Tool {
        path: path.to_path_buf(),
        version,
        major,
    })
}

/// `pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)` -> `15.19`.
pub fn parse_version(text: &str) -> Option<String> {
    let after = text.split(')').nth(1).unwrap_or(text);
    after
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string()
        })
}

fn major_of(v: &str) -> u32 {
    let mut parts = v.split('.');
    let first: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if first < 10 {
        // 9.6 -> 9 (older numbering: the "major" is 9.6, still older than 10).
        return first;
    }
    first
}

/// Looks for a newer tool in Debian's versioned folders when the one on PATH is too old.
pub(crate) fn newer_tool(name: &str, min_major: u32) -> Option<Tool> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(v, p)| *v >= min_major && p.exists())
        .collect();
    dirs.sort();
    let (_, p) = dirs.into_iter().next_back()?;
    tool_version(name, &p).ok()
}

/// A long-lived psql session for queries (and for holding an exported snapshot).
pub struct Psql {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    seq: u64,
}

impl Psql {
    pub fn connect(psql: &Tool, conn: &ConnInfo, dbname: Option<&str>) -> Result<Psql> {
        let mut cmd = Command::new(&psql.path);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-P",
            "pager=off",
        ]);
        let ci = conn.conninfo(dbname);
        if !ci.is_empty() {
            cmd.arg(format!("--dbname={ci}"));
        }
        conn.apply(&mut cmd);
        cmd.env("PGAPPNAME", "backup");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", psql.path.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = spawn_stderr_collector(child.stderr.take().unwrap(), stderr.clone());
        let mut s = Psql {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr,
            stderr_thread: Some(stderr_thread),
            seq: 0,
        };
        s.query("SELECT 1")
            .with_context(|| format!("connecting to PostgreSQL at {}", conn.display()))?;
        Ok(s)
    }

    /// Runs one statement; returns its output lines (unaligned, tuples only).
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.seq += 1;
        let marker = format!("__backup_end_{}__", self.seq);
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("psql session closed"))?;
        let script = format!("{};\n\\echo {marker}\n", sql.trim().trim_end_matches(';'));
        if stdin
            .write_all(script.as_bytes())
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return Err(self.died());
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line)?;
            if n == 0 {
                return Err(self.died());
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l == marker {
                return Ok(lines);
            }
            lines.push(l.to_string());
        }
    }

    pub fn query_one(&mut self, sql: &str) -> Result<String> {
        let lines = self.query(sql)?;
        lines
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("query returned no row: {sql}"))
    }

    fn died(&mut self) -> anyhow::Error {
        self.stdin.take();
        let _ = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let msg = self.stderr.lock().unwrap().trim().to_string();
        if msg.is_empty() {
            anyhow!("psql exited unexpectedly")
        } else {
            anyhow!("{}", one_paragraph(&msg))
        }
    }

    pub fn close(mut self) -> Result<()> {
        self.stdin.take();
        let st = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if !st.success() {
            let msg = self.stderr.lock().unwrap().trim().to_string();
            bail!("psql failed: {}", one_paragraph(&msg));
        }
        Ok(())
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Keeps the last 64 KiB of a child's stderr.
pub(crate) fn spawn_stderr_collector(
    mut stderr: impl Read + Send + 'static,
    buf: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = buf.lock().unwrap();
                    b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    if b.len() > 65536 {
                        let cut = b.len() - 65536;
                        let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(0);
                        b.drain(..cut);
                    }
                }
            }
        }
    })
}

/// A tool's stderr as one readable line: error lines first, newlines folded.
pub fn one_paragraph(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            l.contains("error") || l.contains("ERROR") || l.contains("FATAL") || l.contains("fatal")
        })
        .collect();
    let pick = if errors.is_empty() { lines } else { errors };
    let mut out = pick.join("; ");
    if out.len() > 2000 {
        out.truncate(
            out.char_indices()
                .take_while(|(i, _)| *i < 2000)
                .last()
                .map(|(i, _)| i)
                .unwrap_or(0),
        );
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)").as_deref(),
            Some("15.19")
        );
        assert_eq!(
            parse_version("psql (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6.24")
        );
        assert_eq!(major_of("9.6.24"), 9);
        assert_eq!(major_of("16.1"), 16);
    }
}
