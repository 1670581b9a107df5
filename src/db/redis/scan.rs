//! `mode = "scan"`, for servers that refuse SYNC (managed services): every logical
//! database is walked with `SCAN`, and each key's `DUMP` payload and `PTTL` are
//! fetched, pipelined per SCAN page. The artifact is written as a standard RDB file:
//! a `DUMP` payload is an RDB value (type byte + value) plus a 10-byte footer
//! (RDB version, CRC64), so each key becomes `[EXPIRETIME_MS] type key value` after a
//! `SELECTDB`, and the file ends with EOF and its CRC64. The tool's own reader,
//! `redis-check-rdb` and `redis-server` all read it, and verify, restore and
//! test-restore work on it unchanged.
//!
//! Not a point-in-time snapshot: keys written, changed or deleted during the scan may
//! or may not be in it, each key as it was when its DUMP ran. SCAN may return a key
//! twice (while the server rehashes); a 128-bit hash per key of the current database
//! keeps duplicates out, so memory grows by about 32 bytes per key of the largest
//! database, on top of one page of values.

use super::rdb::CRC64;
use super::{one_line, rdb_version_of, Conn};
use anyhow::{anyhow, bail, Result};
use crc::{Digest, Table};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::io::Read;

/// Keys per SCAN page (a hint to the server) and per pipelined DUMP round trip.
const PAGE: usize = 1000;

/// One SCAN page: its db and (key, DUMP payload, PTTL) per key that still exists.
type Page = (u64, Vec<(Vec<u8>, Vec<u8>, i64)>);

pub struct ScanSource {
    con: redis::Connection,
    dbs: Vec<u64>,
    db: usize,
    cursor: u64,
    /// SCAN of the current db has started (a cursor of 0 then means done).
    scanning: bool,
    seen: HashSet<u128>,
    server_version: String,
    /// RDB version of the header, from the first payload (or the server version).
    version: Option<u16>,
    out: Vec<u8>,
    pos: usize,
    digest: Digest<'static, u64, Table<16>>,
    done: bool,
    selected: Option<u64>,
}

impl ScanSource {
    pub fn open(conn: &Conn, dbs: Vec<u64>, server_version: String) -> Result<ScanSource> {
        Ok(ScanSource {
            con: conn.connect()?,
            dbs,
            db: 0,
            cursor: 0,
            scanning: false,
            seen: HashSet::new(),
            server_version,
            version: None,
            out: Vec::new(),
            pos: 0,
            digest: CRC64.digest(),
            done: false,
            selected: None,
        })
    }

    /// The next SCAN page with keys in it (None: every db is done).
    fn page(&mut self) -> Result<Option<Page>> {
        loop {
            let Some(&db) = self.dbs.get(self.db) else {
                return Ok(None);
            };
            if self.scanning && self.cursor == 0 {
                self.db += 1;
                self.scanning = false;
                self.seen.clear();
                continue;
            }
            redis::cmd("SELECT")
                .arg(db)
                .query::<()>(&mut self.con)
                .map_err(|e| anyhow!("SELECT {db} failed: {}", one_line(&e)))?;
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(self.cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query(&mut self.con)
                .map_err(|e| anyhow!("SCAN in db {db} failed: {}", one_line(&e)))?;
            self.cursor = next;
            self.scanning = true;
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| {
                    let h = Sha256::digest(k);
                    self.seen
                        .insert(u128::from_le_bytes(h[..16].try_into().unwrap()))
                })
                .collect();
            if keys.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            for k in &keys {
                p.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
            }
            let replies: Vec<redis::Value> = p
                .query(&mut self.con)
                .map_err(|e| anyhow!("DUMP in db {db} failed: {}", one_line(&e)))?;
            let mut out = Vec::with_capacity(keys.len());
            for (k, pair) in keys.into_iter().zip(replies.chunks(2)) {
                let (redis::Value::BulkString(payload), redis::Value::Int(ttl)) =
                    (&pair[0], &pair[1])
                else {
                    // Deleted (or expired) between SCAN and DUMP: not in the backup.
                    continue;
                };
                if *ttl == -2 {
                    continue;
                }
                out.push((k, payload.clone(), *ttl));
            }
            return Ok(Some((db, out)));
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.out.extend_from_slice(bytes);
    }

    fn header(&mut self, version: u16) {
        self.version = Some(version);
        self.emit(format!("REDIS{version:04}").as_bytes());
        let v = self.server_version.clone();
        self.emit(&aux_field("redis-ver", &v));
        // Unknown aux fields are ignored by Redis (the RDB format's contract).
        self.emit(&aux_field("backup-mode", "scan"));
        // Function libraries: FUNCTION DUMP is FUNCTION2 opcodes plus a DUMP footer.
        let dump: Option<Vec<u8>> = redis::cmd("FUNCTION")
            .arg("DUMP")
            .query(&mut self.con)
            .ok()
            .flatten();
        if let Some(d) = dump.filter(|d| d.len() > 10) {
            let body = d[..d.len() - 10].to_vec();
            self.emit(&body);
        }
    }

    fn fill(&mut self) -> Result<()> {
        let page = self.page()?;
        if self.version.is_none() {
            let v = page
                .as_ref()
                .and_then(|(_, keys)| keys.first())
                .map(|(_, p, _)| footer(p).map(|f| f.0))
                .transpose()?
                .unwrap_or_else(|| rdb_version_of(&self.server_version));
            self.header(v);
        }
        let Some((db, keys)) = page else {
            self.emit(&[0xFF]);
            let crc = self.digest.clone().finalize();
            self.out.extend_from_slice(&crc.to_le_bytes());
            self.done = true;
            return Ok(());
        };
        let now = chrono::Utc::now().timestamp_millis();
        let header = self.version.unwrap_or(0);
        let mut b = Vec::new();
        if self.selected != Some(db) {
            b.push(0xFE);
            put_len(&mut b, db);
            self.selected = Some(db);
        }
        for (key, payload, ttl) in keys {
            let (version, body) =
                footer(&payload).map_err(|e| anyhow!("DUMP of a key in db {db}: {e}"))?;
            if version > header {
                bail!("DUMP payloads of RDB version {version} after version {header}: did the server change during the backup?");
            }
            if ttl >= 0 {
                b.push(0xFC);
                b.extend_from_slice(&(now + ttl).to_le_bytes());
            }
            b.push(body[0]);
            put_string(&mut b, &key);
            b.extend_from_slice(&body[1..]);
        }
        self.emit(&b);
        Ok(())
    }
}

/// A DUMP payload's footer checked: (RDB version, type byte + value).
fn footer(p: &[u8]) -> Result<(u16, &[u8])> {
    if p.len() < 11 {
        bail!("payload too short ({} bytes)", p.len());
    }
    let (body, crc) = p.split_at(p.len() - 8);
    if CRC64.checksum(body).to_le_bytes() != crc {
        bail!("payload CRC64 mismatch (damaged in transit?)");
    }
    let version = u16::from_le_bytes([body[body.len() - 2], body[body.len() - 1]]);
    Ok((version, &body[..body.len() - 2]))
}

fn aux_field(k: &str, v: &str) -> Vec<u8> {
    let mut b = vec![0xFA];
    put_string(&mut b, k.as_bytes());
    put_string(&mut b, v.as_bytes());
    b
}

/// RDB length encoding (rdbSaveLen).
fn put_len(b: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        b.push(n as u8);
    } else if n < 1 << 14 {
        b.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u32::MAX as u64 {
        b.push(0x80);
        b.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        b.push(0x81);
        b.extend_from_slice(&n.to_be_bytes());
    }
}

fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    put_len(b, s.len() as u64);
    b.extend_from_slice(s);
}

impl Read for ScanSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = (self.out.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            self.fill()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_as_rdb_writes_them() {
        for (n, want) in [
            (5u64, vec![5u8]),
            (300, vec![0x41, 0x2c]),
            (70000, vec![0x80, 0, 1, 0x11, 0x70]),
        ] {
            let mut b = vec![];
            put_len(&mut b, n);
            assert_eq!(b, want, "{n}");
        }
    }

    #[test]
    fn footer_is_checked() {
        let p = super::super::rdb::dump_payload(vec![0, 1, b'x'], 10);
        let (v, body) = footer(&p).unwrap();
        assert_eq!((v, body), (10, &[0u8, 1, b'x'][..]));
        let mut bad = p.clone();
        bad[1] ^= 1;
        assert!(footer(&bad).is_err());
    }
}
