//! The snapshot over the replication protocol, the way `redis-cli --rdb` takes it:
//! `AUTH`, `REPLCONF rdb-only 1` (Redis 7.0+: the server sends the RDB and no
//! command stream after it), `SYNC`, then the payload as `$<len>\r\n` + bytes, or in
//! the diskless form `$EOF:<40-byte mark>\r\n` + bytes + the same mark.
//!
//! This is raw RESP over a `TcpStream`: the `redis` crate has no API for the
//! replication payload. The RDB goes straight to the pipeline (gzip, SHA-256,
//! storages); a copy of each chunk goes through a bounded channel to a thread that
//! parses it with [`RdbReader`], so the manifest's key counts come from the snapshot
//! itself and a malformed snapshot fails the run before the manifest is written.

use super::rdb::{RdbReader, Summary};
use super::Conn;
use crate::db::DumpStream;
use crate::manifest::{DatabaseFacts, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

/// The one line for a server that will not replicate (managed services rename or
/// forbid SYNC/PSYNC).
pub fn refused_hint(conn: &Conn, why: &str) -> String {
    format!(
        "{} refuses replication ({why}), so mode = \"rdb\" cannot take a snapshot there; set mode = \"scan\" in the target (managed services: ElastiCache, MemoryDB, proxies; see docs/redis.md)",
        conn.display()
    )
}

enum Body {
    Len(u64),
    /// Diskless transfer: the payload ends with this mark.
    Mark([u8; 40]),
}

/// A plain or TLS connection.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// The RDB payload as it arrives, header and end mark removed.
struct Payload {
    sock: BufReader<Box<dyn Stream>>,
    body: Body,
    /// Mark mode: bytes read but not yet handed out (the mark may be in them).
    pending: Vec<u8>,
    done: bool,
    received: u64,
}

impl Payload {
    fn open(conn: &Conn) -> Result<(Payload, TcpStream)> {
        let addr = (conn.host.as_str(), conn.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", conn.display()))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", conn.display()))?;
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .with_context(|| format!("connecting to {}", conn.display()))?;
        // A server busy with a large fork still sends a newline every second.
        sock.set_read_timeout(Some(Duration::from_secs(120)))?;
        // Shutting the TCP socket down also ends a TLS stream's blocked read.
        let ctl = sock.try_clone()?;
        let stream: Box<dyn Stream> = if conn.tls {
            Box::new(conn.tls_files.wrap(&conn.host, sock)?)
        } else {
            Box::new(sock)
        };
        let mut r = BufReader::with_capacity(1 << 16, stream);
        if let Some(pw) = conn.password() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &conn.user {
                args.push(u.as_bytes());
            }
            args.push(pw.as_bytes());
            send(&mut r, &args)?;
            let line = read_line(&mut r)?;
            if let Some(err) = line.strip_prefix('-') {
                // The server's words only: never the password.
                bail!("{} refused the login: {err}", conn.display());
            }
        }
        send(&mut r, &[b"REPLCONF", b"rdb-only", b"1"])?;
        // Older servers answer -ERR: they then stream commands after the RDB, which
        // we never read (the connection is closed at the end of the payload).
        read_line(&mut r)?;
        send(&mut r, &[b"SYNC"])?;
        let header = loop {
            let line = read_line(&mut r)?;
            // Keep-alive newlines while the server forks and writes.
            if !line.is_empty() {
                break line;
            }
        };
        let body = if let Some(err) = header.strip_prefix('-') {
            bail!("{}", refused_hint(conn, &format!("SYNC: {err}")));
        } else if let Some(mark) = header.strip_prefix("$EOF:") {
            let m: [u8; 40] = mark
                .as_bytes()
                .try_into()
                .map_err(|_| anyhow!("bad diskless-sync header from the server: {header}"))?;
            Body::Mark(m)
        } else if let Some(n) = header.strip_prefix('$').and_then(|n| n.parse().ok()) {
            Body::Len(n)
        } else {
            bail!(
                "unexpected answer to SYNC from {}: {header}",
                conn.display()
            );
        };
        Ok((
            Payload {
                sock: r,
                body,
                pending: Vec::new(),
                done: false,
                received: 0,
            },
            ctl,
        ))
    }
}

/// Writes one command (only before the payload: nothing is buffered for reading yet
/// that the write could disturb).
fn send(r: &mut BufReader<Box<dyn Stream>>, args: &[&[u8]]) -> Result<()> {
    let w = r.get_mut();
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
    w.write_all(&buf).context("sending to the server")?;
    w.flush().context("sending to the server")?;
    Ok(())
}

fn read_line(r: &mut BufReader<Box<dyn Stream>>) -> Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .context("reading the server's answer")?;
    if line.is_empty() {
        bail!("the server closed the connection");
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

impl Read for Payload {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.body {
            Body::Len(left) => {
                if *left == 0 || out.is_empty() {
                    return Ok(0);
                }
                let k = (*left).min(out.len() as u64) as usize;
                let n = self.sock.read(&mut out[..k])?;
                if n == 0 {
                    return Err(std::io::Error::other(format!(
                        "the server closed the connection after {} bytes of the snapshot, {left} short",
                        self.received
                    )));
                }
                *left -= n as u64;
                self.received += n as u64;
                Ok(n)
            }
            Body::Mark(mark) => loop {
                // Hold back 40 bytes until the end mark is seen: they may be it.
                let keep = if self.done { 0 } else { 40 };
                if self.pending.len() > keep {
                    let n = (self.pending.len() - keep).min(out.len());
                    out[..n].copy_from_slice(&self.pending[..n]);
                    self.pending.drain(..n);
                    self.received += n as u64;
                    return Ok(n);
                }
                if self.done {
                    return Ok(0);
                }
                let mut chunk = [0u8; 65536];
                let n = self.sock.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::Error::other(format!(
                        "the server closed the connection after {} bytes, before the end of the snapshot",
                        self.received
                    )));
                }
                let from = self.pending.len().saturating_sub(39);
                self.pending.extend_from_slice(&chunk[..n]);
                if let Some(p) = self.pending[from..]
                    .windows(40)
                    .position(|w| w == &mark[..])
                {
                    self.pending.truncate(from + p);
                    self.done = true;
                }
            },
        }
    }
}

/// A running snapshot: the payload for the pipeline, a parser on a copy. The payload
/// is the replication stream (`mode = "rdb"`) or the RDB written from a SCAN
/// (`mode = "scan"`, see `scan.rs`); either way the same reader counts it.
pub struct RdbDump {
    payload: Box<dyn Read + Send>,
    /// Closes the source (the replication socket) at the end or on a kill.
    ctl: Option<TcpStream>,
    tx: Option<SyncSender<Vec<u8>>>,
    parser: Option<JoinHandle<Result<Summary>>>,
    server: BTreeMap<String, String>,
    display: String,
}

/// Reads the chunks the pipeline sent (end: the sender is dropped).
struct ChanReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = (self.cur.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `mode = "rdb"`: the snapshot over SYNC.
pub fn start(conn: &Conn, server: BTreeMap<String, String>) -> Result<RdbDump> {
    let (payload, ctl) = Payload::open(conn)?;
    Ok(tee(Box::new(payload), Some(ctl), server, conn))
}

/// The payload to the pipeline, a copy of each chunk to a parser thread.
pub fn tee(
    payload: Box<dyn Read + Send>,
    ctl: Option<TcpStream>,
    server: BTreeMap<String, String>,
    conn: &Conn,
) -> RdbDump {
    // 16 chunks of at most 1 MiB in flight: the parser's share of memory is bounded.
    let (tx, rx) = sync_channel::<Vec<u8>>(16);
    let parser = std::thread::spawn(move || {
        let mut r = ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let res = RdbReader::new(&mut r).and_then(|p| p.summarise());
        // On an error, keep draining so the pipeline never blocks on a full channel.
        while r.rx.recv().is_ok() {}
        res
    });
    RdbDump {
        payload,
        ctl,
        tx: Some(tx),
        parser: Some(parser),
        server,
        display: conn.display(),
    }
}

impl Read for RdbDump {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.payload.read(out)?;
        if n > 0 {
            if let Some(tx) = &self.tx {
                if tx.send(out[..n].to_vec()).is_err() {
                    self.tx = None;
                }
            }
        }
        Ok(n)
    }
}

impl DumpStream for RdbDump {
    fn finish(mut self: Box<Self>) -> Result<DatabaseFacts> {
        if let Some(c) = &self.ctl {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.tx = None;
        let summary = self
            .parser
            .take()
            .expect("finish is called once")
            .join()
            .map_err(|_| anyhow!("the RDB parser thread panicked"))?
            .context("the snapshot the server sent is not a readable RDB")?;
        Ok(facts(&summary, &self.server, &self.display))
    }

    fn kill(mut self: Box<Self>) {
        if let Some(c) = &self.ctl {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.tx = None;
        if let Some(p) = self.parser.take() {
            let _ = p.join();
        }
    }
}

/// The manifest facts: key counts per db as tables `dbN.keys` (so restore compares
/// them), the rest under `extra`.
pub fn facts(s: &Summary, server: &BTreeMap<String, String>, display: &str) -> DatabaseFacts {
    let mut f = DatabaseFacts {
        name: Some(display.to_string()),
        size_bytes: server.get("used_memory").and_then(|v| v.parse().ok()),
        ..Default::default()
    };
    for (db, c) in &s.dbs {
        f.tables.push(TableFact {
            schema: format!("db{db}"),
            name: "keys".into(),
            rows: Some(c.keys),
        });
    }
    let expires: BTreeMap<String, u64> = s
        .dbs
        .iter()
        .map(|(db, c)| (format!("db{db}"), c.expires))
        .collect();
    let x = &mut f.extra;
    x.insert("rdb_version".into(), s.version.into());
    x.insert("keys".into(), s.keys().into());
    x.insert("keys_with_expiry".into(), serde_json::json!(expires));
    x.insert("functions".into(), s.functions.into());
    x.insert("crc64_checked".into(), s.checksum_checked.into());
    for (k, name) in [
        ("mode", "mode"),
        ("redis_version", "redis_version"),
        ("role", "role"),
        ("used_memory", "used_memory"),
    ] {
        if let Some(v) = server.get(k) {
            let v = v
                .parse::<u64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| v.clone().into());
            x.insert(name.into(), v);
        }
    }
    f
}
