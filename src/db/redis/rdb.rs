//! A streaming reader of Redis RDB files (versions 9 to 11: Redis 5.0 to 7.2).
//!
//! It walks the file opcode by opcode over any `Read`, in bounded memory: values are
//! skipped through the CRC64 (never held whole) unless the caller asks to capture them
//! for `RESTORE`. Keys, aux fields and function code are small and kept. Each key
//! comes out with its database, expiry and (when captured) the raw type byte + value
//! bytes, which is exactly the body of a `DUMP` payload (see [`dump_payload`]).
//!
//! The layouts follow Redis' `rdb.c` / `rdb.h` (rdbLoadObject, rdbLoadLen,
//! rdbGenericLoadStringObject, the stream and module loaders). Nested encodings
//! (ziplist, listpack, intset, zipmap) are opaque strings here: their length is all
//! the outer structure needs, and the CRC64 covers their bytes.

use anyhow::{anyhow, bail, Context, Result};
use crc::{Crc, Digest, Table, CRC_64_REDIS};
use std::collections::BTreeMap;
use std::io::{BufReader, Read};

/// Redis' crc64 (Jones polynomial, reflected, init 0): the RDB trailer and the `DUMP`
/// payload footer both use it.
pub static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// The oldest and newest RDB versions this reader knows every opcode of.
pub const MIN_VERSION: u16 = 9;
pub const MAX_VERSION: u16 = 11;

/// One key as it passes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub db: u64,
    pub key: Vec<u8>,
    /// Absolute expiry, Unix milliseconds.
    pub expire_ms: Option<i64>,
    /// Type byte + value bytes (empty unless capturing).
    pub value: Vec<u8>,
}

/// Counts per logical database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbCount {
    pub keys: u64,
    pub expires: u64,
}

/// What a whole pass over a file found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub version: u16,
    pub aux: BTreeMap<String, String>,
    pub dbs: BTreeMap<u64, DbCount>,
    pub functions: u64,
    pub module_aux: u64,
    /// Keys whose value belongs to a module (type 7).
    pub module_values: u64,
    /// False when the writer had `rdbchecksum no` (trailer of zeros).
    pub checksum_checked: bool,
}

impl Summary {
    pub fn keys(&self) -> u64 {
        self.dbs.values().map(|d| d.keys).sum()
    }
    pub fn expires(&self) -> u64 {
        self.dbs.values().map(|d| d.expires).sum()
    }
    /// `RDB version 10, 12 keys (3 with expiry) in 2 databases, 1 function, CRC64 ok`.
    pub fn describe(&self) -> String {
        format!(
            "RDB version {}, {} keys ({} with expiry) in {} database(s), {} function(s), {}",
            self.version,
            self.keys(),
            self.expires(),
            self.dbs.len(),
            self.functions,
            if self.checksum_checked {
                "CRC64 ok"
            } else {
                "no CRC64 (written with rdbchecksum no)"
            }
        )
    }
}

/// Bytes in, through the CRC64 and (optionally) a capture buffer.
struct Src<R: Read> {
    inner: BufReader<R>,
    digest: Digest<'static, u64, Table<16>>,
    pos: u64,
    capture: Option<Vec<u8>>,
}

impl<R: Read> Src<R> {
    fn take(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow!("the file ends early, at byte {} (truncated?)", self.pos)
            } else {
                anyhow!("reading at byte {}: {e}", self.pos)
            }
        })?;
        self.digest.update(buf);
        if let Some(c) = &mut self.capture {
            c.extend_from_slice(buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.take(&mut b)?;
        Ok(b)
    }
    fn vec(&mut self, n: u64) -> Result<Vec<u8>> {
        // Read in steps so a corrupt huge length fails at the end of the data, not in
        // one giant allocation.
        let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
        let mut left = n;
        let mut chunk = [0u8; 8192];
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            self.take(&mut chunk[..k])?;
            v.extend_from_slice(&chunk[..k]);
            left -= k as u64;
        }
        Ok(v)
    }
    fn skip(&mut self, n: u64) -> Result<()> {
        let mut left = n;
        let mut chunk = [0u8; 16384];
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            self.take(&mut chunk[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
}

enum Len {
    Len(u64),
    Encoded(u8),
}

/// A pull reader over one RDB file.
pub struct RdbReader<R: Read> {
    src: Src<R>,
    pub version: u16,
    db: u64,
    capture: bool,
    done: bool,
    pub summary: Summary,
    /// Function library code (`FUNCTION LOAD` text) seen since the last take.
    functions: Vec<Vec<u8>>,
}

impl<R: Read> RdbReader<R> {
    /// Reads the magic and version; refuses versions outside 9..=11 by name.
    pub fn new(r: R) -> Result<RdbReader<R>> {
        let mut src = Src {
            inner: BufReader::with_capacity(1 << 16, r),
            digest: CRC64.digest(),
            pos: 0,
            capture: None,
        };
        let head: [u8; 9] = src.array().context("reading the RDB header")?;
        if &head[..5] != b"REDIS" {
            bail!("not an RDB file: it does not start with REDIS");
        }
        let version: u16 = std::str::from_utf8(&head[5..])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("not an RDB file: the version after REDIS is not 4 digits"))?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            bail!(
                "RDB version {version} is not supported: this version of backup reads {MIN_VERSION} to {MAX_VERSION} (Redis 5.0 to 7.2)"
            );
        }
        Ok(RdbReader {
            src,
            version,
            db: 0,
            capture: false,
            done: false,
            summary: Summary {
                version,
                ..Summary::default()
            },
            functions: Vec::new(),
        })
    }

    /// Keep each key's type byte + value bytes in [`Entry::value`] (for `RESTORE`).
    pub fn capture_values(&mut self, on: bool) {
        self.capture = on;
    }

    /// Function libraries read so far and not yet taken.
    pub fn take_functions(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.functions)
    }

    /// The next key, or None after the EOF opcode and a good CRC64 trailer.
    pub fn next_key(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        let mut expire_ms = None;
        loop {
            let at = self.src.pos;
            let op = self.src.u8()?;
            match op {
                // AUX: key, value (redis-ver, ctime, used-mem, aof-base...).
                0xFA => {
                    let k = self.string()?;
                    let v = self.string()?;
                    self.summary.aux.insert(
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
                // SELECTDB n.
                0xFE => self.db = self.len()?,
                // RESIZEDB: hash table sizes (hints only).
                0xFB => {
                    self.len()?;
                    self.len()?;
                }
                0xFD => expire_ms = Some(i32::from_le_bytes(self.src.array()?) as i64 * 1000),
                0xFC => expire_ms = Some(i64::from_le_bytes(self.src.array()?)),
                // IDLE (LRU) and FREQ (LFU) hints before a key.
                0xF8 => {
                    self.len()?;
                }
                0xF9 => {
                    self.src.u8()?;
                }
                // FUNCTION2: one library's code.
                0xF5 => {
                    let code = self.string()?;
                    self.summary.functions += 1;
                    self.functions.push(code);
                }
                0xF6 => bail!("at byte {at}: a function of the pre-7.0 release-candidate format (opcode 246) cannot be read"),
                // MODULE_AUX: module id, `when` opcode + value, then the module's opcodes.
                0xF7 => {
                    self.len()?;
                    let when_op = self.len()?;
                    if when_op != 2 {
                        bail!("at byte {at}: module aux data without its `when` field");
                    }
                    self.len()?;
                    self.module_opcodes()?;
                    self.summary.module_aux += 1;
                }
                0xFF => {
                    self.finish()?;
                    return Ok(None);
                }
                t => {
                    // A key: its type byte opens the value (and the DUMP payload).
                    let key = self.string().with_context(|| format!("at byte {at}: key"))?;
                    if self.capture {
                        self.src.capture = Some(vec![t]);
                    }
                    let r = self.value(t);
                    let value = self.src.capture.take().unwrap_or_default();
                    r.with_context(|| {
                        format!(
                            "at byte {at}: value of key `{}` (type {t}) in db {}",
                            String::from_utf8_lossy(&key[..key.len().min(64)]),
                            self.db
                        )
                    })?;
                    if t == 7 {
                        self.summary.module_values += 1;
                    }
                    let c = self.summary.dbs.entry(self.db).or_default();
                    c.keys += 1;
                    if expire_ms.is_some() {
                        c.expires += 1;
                    }
                    return Ok(Some(Entry {
                        db: self.db,
                        key,
                        expire_ms,
                        value,
                    }));
                }
            }
        }
    }

    /// Reads to the end; the summary of the whole file.
    pub fn summarise(mut self) -> Result<Summary> {
        self.capture = false;
        while self.next_key()?.is_some() {}
        Ok(self.summary)
    }

    fn finish(&mut self) -> Result<()> {
        let computed = self.src.digest.clone().finalize();
        let mut stored = [0u8; 8];
        self.src
            .inner
            .read_exact(&mut stored)
            .map_err(|_| anyhow!("the file ends before its CRC64 trailer (truncated?)"))?;
        let stored = u64::from_le_bytes(stored);
        if stored == 0 {
            self.summary.checksum_checked = false;
        } else if stored != computed {
            bail!("CRC64 mismatch: the trailer says {stored:016x}, the content gives {computed:016x} (the file is damaged)");
        } else {
            self.summary.checksum_checked = true;
        }
        let mut extra = [0u8; 1];
        if self.src.inner.read(&mut extra)? != 0 {
            bail!("data after the RDB's end (byte {})", self.src.pos + 8);
        }
        self.done = true;
        Ok(())
    }

    fn len_or_enc(&mut self) -> Result<Len> {
        let b = self.src.u8()?;
        Ok(match b >> 6 {
            0 => Len::Len((b & 0x3f) as u64),
            1 => Len::Len((((b & 0x3f) as u64) << 8) | self.src.u8()? as u64),
            2 => match b {
                0x80 => Len::Len(u32::from_be_bytes(self.src.array()?) as u64),
                0x81 => Len::Len(u64::from_be_bytes(self.src.array()?)),
                _ => bail!("bad length byte {b:#04x} at byte {}", self.src.pos - 1),
            },
            _ => Len::Encoded(b & 0x3f),
        })
    }

    fn len(&mut self) -> Result<u64> {
        match self.len_or_enc()? {
            Len::Len(n) => Ok(n),
            Len::Encoded(_) => bail!(
                "an encoded string where a length belongs, at byte {}",
                self.src.pos - 1
            ),
        }
    }

    /// A string, kept (keys, aux fields, function code).
    fn string(&mut self) -> Result<Vec<u8>> {
        Ok(match self.len_or_enc()? {
            Len::Len(n) => self.src.vec(n)?,
            Len::Encoded(0) => (self.src.u8()? as i8).to_string().into_bytes(),
            Len::Encoded(1) => i16::from_le_bytes(self.src.array()?)
                .to_string()
                .into_bytes(),
            Len::Encoded(2) => i32::from_le_bytes(self.src.array()?)
                .to_string()
                .into_bytes(),
            Len::Encoded(3) => {
                let clen = self.len()?;
                let ulen = self.len()?;
                let c = self.src.vec(clen)?;
                lzf_decompress(&c, ulen as usize)?
            }
            Len::Encoded(e) => bail!("unknown string encoding {e}"),
        })
    }

    /// A string, skipped (values).
    fn skip_string(&mut self) -> Result<()> {
        match self.len_or_enc()? {
            Len::Len(n) => self.src.skip(n),
            Len::Encoded(0) => self.src.skip(1),
            Len::Encoded(1) => self.src.skip(2),
            Len::Encoded(2) => self.src.skip(4),
            Len::Encoded(3) => {
                let clen = self.len()?;
                self.len()?;
                self.src.skip(clen)
            }
            Len::Encoded(e) => bail!("unknown string encoding {e}"),
        }
    }

    fn strings(&mut self, n: u64) -> Result<()> {
        for _ in 0..n {
            self.skip_string()?;
        }
        Ok(())
    }

    fn value(&mut self, t: u8) -> Result<()> {
        match t {
            // STRING; and the single-blob encodings: zipmap, ziplist, intset,
            // zset/hash ziplist, hash/zset/set listpack.
            0 | 9..=13 | 16 | 17 | 20 => self.skip_string(),
            // LIST (linked), SET, LIST_QUICKLIST (ziplists): n strings.
            1 | 2 | 14 => {
                let n = self.len()?;
                self.strings(n)
            }
            // ZSET: member + score as a string (253 NaN, 254 +inf, 255 -inf).
            3 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    let l = self.src.u8()?;
                    if l < 253 {
                        self.src.skip(l as u64)?;
                    }
                }
                Ok(())
            }
            4 => {
                let n = self.len()?;
                self.strings(n.checked_mul(2).ok_or_else(|| anyhow!("bad hash size"))?)
            }
            // ZSET_2: member + binary double.
            5 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    self.src.skip(8)?;
                }
                Ok(())
            }
            6 => bail!("a module value of the pre-release format (type 6) cannot be read"),
            7 => {
                self.len()?;
                self.module_opcodes()
            }
            15 | 19 | 21 => self.stream(t),
            // LIST_QUICKLIST_2: nodes of (container: 1 plain, 2 packed; blob).
            18 => {
                for _ in 0..self.len()? {
                    let c = self.len()?;
                    if c != 1 && c != 2 {
                        bail!("quicklist node container {c} is neither plain (1) nor packed (2)");
                    }
                    self.skip_string()?;
                }
                Ok(())
            }
            _ => bail!("unknown value type {t}"),
        }
    }

    /// Module data is self-describing: typed opcodes up to an EOF opcode.
    fn module_opcodes(&mut self) -> Result<()> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len()?;
                }
                3 => self.src.skip(4)?,
                4 => self.src.skip(8)?,
                5 => self.skip_string()?,
                op => bail!("unknown module data opcode {op}"),
            }
        }
    }

    /// Streams: listpacks v1 (type 15), v2 (19, Redis 7.0), v3 (21, Redis 7.2).
    fn stream(&mut self, t: u8) -> Result<()> {
        for _ in 0..self.len()? {
            // Node key (the master entry id, 16 bytes) and the listpack.
            self.skip_string()?;
            self.skip_string()?;
        }
        // Length, last id.
        self.len()?;
        self.len()?;
        self.len()?;
        if t >= 19 {
            // First id, max deleted id, entries added.
            for _ in 0..5 {
                self.len()?;
            }
        }
        for _ in 0..self.len()? {
            self.skip_string()?; // group name
            self.len()?;
            self.len()?; // last delivered id
            if t >= 19 {
                self.len()?; // entries read
            }
            // The group's pending entries: raw id, delivery time (ms), count.
            for _ in 0..self.len()? {
                self.src.skip(16 + 8)?;
                self.len()?;
            }
            for _ in 0..self.len()? {
                self.skip_string()?; // consumer name
                self.src.skip(8)?; // seen time
                if t >= 21 {
                    self.src.skip(8)?; // active time
                }
                let pending = self.len()?;
                self.src.skip(
                    pending
                        .checked_mul(16)
                        .ok_or_else(|| anyhow!("bad consumer PEL size"))?,
                )?;
            }
        }
        Ok(())
    }
}

/// LZF (liblzf's format, as Redis compresses strings); hand-written: a dozen lines,
/// not worth a dependency.
pub fn lzf_decompress(inp: &[u8], out_len: usize) -> Result<Vec<u8>> {
    let bad = || anyhow!("LZF-compressed string is damaged");
    // The length is read from the file: reserve no more than the input can expand to
    // (found by fuzzing: a damaged length asked for gigabytes up front).
    let mut out = Vec::with_capacity(out_len.min(inp.len().saturating_mul(4)));
    let mut i = 0;
    while i < inp.len() {
        let ctrl = inp[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(inp.get(i..i + n).ok_or_else(bad)?);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += *inp.get(i).ok_or_else(bad)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *inp.get(i).ok_or_else(bad)? as usize + 1;
            i += 1;
            if back > out.len() {
                return Err(bad());
            }
            let start = out.len() - back;
            for k in 0..n + 2 {
                out.push(out[start + k]);
            }
        }
        if out.len() > out_len {
            return Err(bad());
        }
    }
    if out.len() != out_len {
        return Err(bad());
    }
    Ok(out)
}

/// A `DUMP`/`RESTORE` payload: type byte + value, the RDB version (2 bytes LE), and the
/// CRC64 of all that (8 bytes LE).
pub fn dump_payload(mut value: Vec<u8>, version: u16) -> Vec<u8> {
    value.extend_from_slice(&version.to_le_bytes());
    let crc = CRC64.checksum(&value);
    value.extend_from_slice(&crc.to_le_bytes());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny RDB 10 file: one string key with an expiry in db 0, one int-encoded
    /// value in db 2.
    fn sample() -> Vec<u8> {
        let mut f = b"REDIS0010".to_vec();
        f.extend([0xFA, 9]);
        f.extend(b"redis-ver");
        f.extend([6]);
        f.extend(b"7.0.15");
        f.extend([0xFE, 0, 0xFB, 1, 1]);
        f.extend([0xFC]);
        f.extend(1_900_000_000_000i64.to_le_bytes());
        f.extend([0, 1, b'k', 2, b'v', b'1']);
        f.extend([0xFE, 2, 0, 1, b'n', 0xC0, 42]);
        f.push(0xFF);
        let crc = CRC64.checksum(&f);
        f.extend(crc.to_le_bytes());
        f
    }

    #[test]
    fn crc64_is_redis_crc64() {
        // The check value in Redis' own crc64.c test: crc64(0, "123456789").
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn reads_keys_and_checks_the_trailer() {
        let f = sample();
        let mut r = RdbReader::new(&f[..]).unwrap();
        r.capture_values(true);
        let e = r.next_key().unwrap().unwrap();
        assert_eq!((e.db, &e.key[..]), (0, &b"k"[..]));
        assert_eq!(e.expire_ms, Some(1_900_000_000_000));
        assert_eq!(e.value, vec![0, 2, b'v', b'1']);
        let e = r.next_key().unwrap().unwrap();
        assert_eq!((e.db, &e.key[..], e.expire_ms), (2, &b"n"[..], None));
        assert!(r.next_key().unwrap().is_none());
        let s = RdbReader::new(&f[..]).unwrap().summarise().unwrap();
        assert_eq!(s.keys(), 2);
        assert_eq!(s.expires(), 1);
        assert_eq!(s.aux["redis-ver"], "7.0.15");
        assert!(s.checksum_checked);
    }

    #[test]
    fn a_flipped_byte_fails() {
        let mut f = sample();
        let i = f.len() - 12;
        f[i] ^= 0x01;
        let e = RdbReader::new(&f[..]).unwrap().summarise().unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("CRC64 mismatch") || e.contains("byte"), "{e}");
        let mut g = sample();
        g.truncate(g.len() - 3);
        assert!(RdbReader::new(&g[..]).unwrap().summarise().is_err());
        let e = RdbReader::new(&b"REDIS0012"[..]).err().unwrap().to_string();
        assert!(e.contains("12") && e.contains("9 to 11"), "{e}");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/rdb.rs): an LZF string whose stated length
    /// is a terabyte allocated it before reading a byte.
    #[test]
    fn fuzz_lzf_length_of_a_terabyte_is_refused_without_allocating_it() {
        assert!(lzf_decompress(&[0, b'a'], 1 << 40).is_err());
        assert!(lzf_decompress(&[0, b'a'], usize::MAX).is_err());
    }

    #[test]
    fn lzf_round_trip_of_a_known_block() {
        // "aaaaaaaaaa": literal "a", then a back reference of length 9 at distance 1.
        let c = [0x00, b'a', 0xE0, 0x00, 0x00];
        assert_eq!(lzf_decompress(&c, 10).unwrap(), b"aaaaaaaaaa");
        assert!(lzf_decompress(&c, 11).is_err());
    }
}
