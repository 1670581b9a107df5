//! `mongodump --archive` as a [`DumpStream`]: the archive goes from mongodump's stdout
//! straight to the pipeline (gzip, SHA-256, storages); a copy of each chunk goes
//! through a bounded channel to a thread that reads it with the archive reader, so the
//! manifest's collections, indexes and document counts come from the archive itself
//! and a malformed archive fails the run before the manifest is written.

use super::archive::{self, Summary};
use super::tools::last_words;
use super::Conn;
use crate::db::DumpStream;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Chunks in flight to the reader thread (each at most one pipeline read).
const QUEUE: usize = 16;
/// Lines of mongodump's log kept for an error message.
const LOG_LINES: usize = 40;

/// The reader thread's side of the channel, as a `Read`.
struct Chunks {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Starts the reader thread; returns its sender and handle.
pub fn reader_thread() -> (SyncSender<Vec<u8>>, JoinHandle<Result<Summary>>) {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
    // After a bad spot nothing more is read: the sender then sees a closed channel.
    let h = std::thread::spawn(move || {
        archive::read(Chunks {
            rx,
            cur: Vec::new(),
            at: 0,
        })
    });
    (tx, h)
}

/// Keeps the last lines a tool writes to stderr.
pub fn log_collector(
    stderr: impl Read + Send + 'static,
) -> (Arc<Mutex<VecDeque<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let keep = lines.clone();
    let h = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut k = keep.lock().unwrap();
            if k.len() == LOG_LINES {
                k.pop_front();
            }
            k.push_back(line);
        }
    });
    (lines, h)
}

/// mongodump's own reason: its `Failed: ...` line, else its last line.
pub fn tool_failure(lines: &VecDeque<String>, conn: &Conn) -> String {
    let failed = lines
        .iter()
        .rev()
        .find_map(|l| l.split_once("Failed: ").map(|x| format!("Failed: {}", x.1)));
    match failed {
        Some(f) => last_words(&f, conn),
        None => last_words(&lines.iter().cloned().collect::<Vec<_>>().join("\n"), conn),
    }
}

pub struct MongoDump {
    pub child: Child,
    pub stdout: ChildStdout,
    pub log: Arc<Mutex<VecDeque<String>>>,
    pub log_thread: Option<JoinHandle<()>>,
    pub tx: Option<SyncSender<Vec<u8>>>,
    pub reader: Option<JoinHandle<Result<Summary>>>,
    pub conn: Conn,
    /// Facts known before the dump (role, server version, oplog decision).
    pub facts: DatabaseFacts,
    /// The `--config` file; removed when this is dropped.
    pub _config: Option<tempfile::TempPath>,
}

impl Read for MongoDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n > 0 {
            if let Some(tx) = &self.tx {
                if tx.send(buf[..n].to_vec()).is_err() {
                    // The reader stopped at a bad spot; finish() reports why.
                    self.tx = None;
                }
            }
        }
        Ok(n)
    }
}

impl DumpStream for MongoDump {
    fn finish(mut self: Box<Self>) -> Result<DatabaseFacts> {
        let st = self.child.wait()?;
        if let Some(h) = self.log_thread.take() {
            let _ = h.join();
        }
        drop(self.tx.take());
        let summary = self
            .reader
            .take()
            .map(|h| h.join().map_err(|_| anyhow!("the archive reader panicked")));
        if !st.success() {
            let how = match st.code() {
                Some(c) => format!("exit code {c}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("killed by signal {}", st.signal().unwrap_or(0))
                }
            };
            let why = tool_failure(&self.log.lock().unwrap(), &self.conn);
            bail!("mongodump failed ({how}): {why}");
        }
        let s = match summary {
            Some(Ok(Ok(s))) => s,
            Some(Ok(Err(e))) => bail!("mongodump exited 0 but its archive is not readable: {e:#}"),
            Some(Err(e)) => return Err(e),
            None => bail!("the archive reader was not started"),
        };
        let mut facts = std::mem::take(&mut self.facts);
        record(&mut facts, &s);
        Ok(facts)
    }

    fn kill(mut self: Box<Self>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.tx.take());
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// The archive's findings as manifest facts: a table per collection with its document
/// count, and under `extra` the indexes, sizes, archive header and oplog.
pub fn record(facts: &mut DatabaseFacts, s: &Summary) {
    facts.tables = s
        .collections
        .iter()
        .map(|c| TableFact {
            schema: c.db.clone(),
            name: c.name.clone(),
            rows: Some(c.documents),
        })
        .collect();
    facts.size_bytes = Some(s.collections.iter().map(|c| c.bytes).sum());
    let collections: serde_json::Map<String, serde_json::Value> = s
        .collections
        .iter()
        .map(|c| {
            (
                c.ns(),
                serde_json::json!({
                    "type": c.kind,
                    "documents": c.documents,
                    "bytes": c.bytes,
                    "indexes": c.indexes,
                }),
            )
        })
        .collect();
    facts
        .extra
        .insert("collections".into(), serde_json::Value::Object(collections));
    facts.extra.insert(
        "archive".into(),
        serde_json::json!({
            "format_version": s.header.format_version,
            "server_version": s.header.server_version,
            "tool_version": s.header.tool_version,
        }),
    );
    if s.has_oplog {
        facts.extra.insert(
            "oplog".into(),
            serde_json::json!({
                "entries": s.oplog_entries,
                "namespaces": s.oplog_namespaces,
            }),
        );
    }
}
