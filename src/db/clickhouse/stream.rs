//! The streams of a logical backup: DDL held in memory, and `SELECT * FORMAT Native`
//! as it arrives from the server, each chunk also handed to a parser thread through a
//! bounded channel, so rows are counted and the stream proven whole on the way.

use super::native::{self, Summary};
use super::schema::Object;
use crate::db::DumpStream;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::sync::mpsc;

/// A small stream held in memory (DDL).
pub struct Text(pub std::io::Cursor<Vec<u8>>);

impl Read for Text {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl DumpStream for Text {
    fn finish(self: Box<Self>) -> Result<DatabaseFacts> {
        Ok(DatabaseFacts::default())
    }
    fn kill(self: Box<Self>) {}
}

/// `SELECT * FORMAT Native` as it arrives, each chunk also handed to a parser
/// thread through a bounded channel (16 chunks at most in flight).
pub struct NativeDump {
    body: Box<dyn Read + Send + Sync>,
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    parser: Option<std::thread::JoinHandle<Result<Summary>>>,
    table: Object,
}

impl NativeDump {
    pub fn start(body: Box<dyn Read + Send + Sync>, table: Object) -> NativeDump {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
        let parser = std::thread::spawn(move || {
            native::read_stream(Chunks {
                rx,
                cur: vec![],
                pos: 0,
            })
        });
        NativeDump {
            body,
            tx: Some(tx),
            parser: Some(parser),
            table,
        }
    }

    fn verdict(&mut self) -> Result<Summary> {
        self.tx = None;
        match self.parser.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the Native reader panicked"))?,
            None => bail!("the Native reader already stopped"),
        }
    }
}

impl Read for NativeDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.body.read(buf).map_err(|e| {
            std::io::Error::other(format!(
                "reading {} from the server: {e} (connection cut?)",
                self.table.full()
            ))
        })?;
        if n > 0 {
            let sent = self.tx.as_ref().map(|tx| tx.send(buf[..n].to_vec()));
            if !matches!(sent, Some(Ok(()))) {
                let e = match self.verdict() {
                    Err(e) => format!("{}: {e:#}", self.table.full()),
                    Ok(_) => format!("{}: the Native reader stopped early", self.table.full()),
                };
                return Err(std::io::Error::other(e));
            }
        }
        Ok(n)
    }
}

impl DumpStream for NativeDump {
    fn finish(mut self: Box<Self>) -> Result<DatabaseFacts> {
        let sum = self
            .verdict()
            .with_context(|| format!("table {}", self.table.full()))?;
        Ok(DatabaseFacts {
            tables: vec![TableFact {
                schema: self.table.database.clone(),
                name: self.table.name.clone(),
                rows: Some(sum.rows),
            }],
            ..Default::default()
        })
    }

    fn kill(mut self: Box<Self>) {
        let _ = self.verdict();
    }
}

/// The parser's side of the channel, as a reader; the end of the channel is the end
/// of the stream.
struct Chunks {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
