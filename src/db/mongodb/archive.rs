//! A streaming reader of mongodump's archive format (mongo-tools
//! `common/archive/spec.md`):
//!
//! ```text
//! archive   = magic (0x8199e26d, little-endian) header *collection-metadata terminator
//!             *(namespace-segment | namespace-eof)
//! segment   = namespace-header +document terminator
//! eof       = eof-header terminator          (eof-header: EOF = true, CRC = CRC-64)
//! terminator = 0xffffffff
//! ```
//!
//! Every document is read into one reused buffer capped at 16 MiB (mongo-tools'
//! `MaxBSONSize`, the limit its own parser applies) and checked element by element
//! with the `bson` crate; nothing else is kept but counts. The CRC in each EOF header
//! is CRC-64 with the ECMA polynomial as Go's `hash/crc64` computes it (reflected,
//! all-ones init and final xor: the catalogue's CRC-64/XZ) over the documents' bytes.
//! The oplog of a `--oplog` dump is the namespace with db `""` and collection `oplog`.

use anyhow::{anyhow, bail, Context, Result};
use bson::raw::{RawBsonRef, RawDocument};
use std::collections::BTreeMap;
use std::io::Read;

pub const MAGIC: u32 = 0x8199_e26d;
/// mongo-tools `db.MaxBSONSize`.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// Deeper nesting than MongoDB stores (100 levels) is damage, and would exhaust the
/// stack of a recursive check.
const MAX_DEPTH: usize = 200;
static CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// The oplog's namespace inside an archive.
pub const OPLOG_NS: &str = ".oplog";

/// The archive header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub format_version: String,
    pub server_version: String,
    pub tool_version: String,
}

/// One collection as the prelude describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collection {
    pub db: String,
    pub name: String,
    /// `collection`, `view`, `timeseries` (from the metadata; empty when absent).
    pub kind: String,
    /// Index names from the metadata's `indexes`.
    pub indexes: Vec<String>,
    /// Documents read for it.
    pub documents: u64,
    /// Bytes of those documents.
    pub bytes: u64,
}

impl Collection {
    pub fn ns(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

/// What one pass over an archive found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub header: Header,
    /// In prelude order, the oplog left out.
    pub collections: Vec<Collection>,
    /// Whether the archive carries an oplog (a `--oplog` dump).
    pub has_oplog: bool,
    pub oplog_entries: u64,
    /// Oplog entries per namespace they change (`ns` field).
    pub oplog_namespaces: BTreeMap<String, u64>,
    /// Bytes of the whole archive.
    pub bytes: u64,
}

impl Summary {
    pub fn documents(&self) -> u64 {
        self.collections.iter().map(|c| c.documents).sum()
    }

    pub fn describe(&self) -> String {
        format!(
            "mongodump archive {} (server {}): {} collection(s), {} document(s){}, every document well-formed, CRC-64 of every namespace matches",
            self.header.format_version,
            self.header.server_version,
            self.collections.len(),
            self.documents(),
            if self.has_oplog {
                format!(", oplog of {} entr(ies)", self.oplog_entries)
            } else {
                String::new()
            }
        )
    }
}

#[derive(Default)]
struct Open {
    crc: Option<crc::Digest<'static, u64>>,
    closed: bool,
    documents: u64,
    bytes: u64,
}

struct Reader<R> {
    r: R,
    pos: u64,
    buf: Vec<u8>,
}

enum Item {
    Doc,
    Terminator,
    End,
}

impl<R: Read> Reader<R> {
    /// Reads exactly `n` bytes into `buf[at..at+n]`; a short read is truncation.
    fn fill(&mut self, at: usize, n: usize, what: &str) -> Result<()> {
        self.buf.resize(at + n, 0);
        self.r.read_exact(&mut self.buf[at..at + n]).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow!(
                    "the archive is truncated: it ends inside {what} (near byte {})",
                    self.pos
                )
            } else {
                anyhow!("reading the archive at byte {}: {e}", self.pos)
            }
        })?;
        self.pos += n as u64;
        Ok(())
    }

    /// The next document (into `buf`) or a terminator; `End` only where a block may end.
    fn next(&mut self, what: &str, end_ok: bool) -> Result<Item> {
        self.buf.clear();
        self.buf.resize(4, 0);
        let mut got = 0;
        while got < 4 {
            match self.r.read(&mut self.buf[got..4]) {
                Ok(0) if got == 0 && end_ok => return Ok(Item::End),
                Ok(0) => bail!(
                    "the archive is truncated: it ends inside {what} (near byte {})",
                    self.pos + got as u64
                ),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => bail!("reading the archive at byte {}: {e}", self.pos),
            }
        }
        self.pos += 4;
        let len = i32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes"));
        if len == -1 {
            return Ok(Item::Terminator);
        }
        if len < 5 || len as usize > MAX_DOCUMENT {
            bail!(
                "corruption at byte {}: {len} is neither a BSON document length (5 to {MAX_DOCUMENT}) nor a terminator, in {what}",
                self.pos - 4
            );
        }
        self.fill(4, len as usize - 4, what)?;
        Ok(Item::Doc)
    }

    fn doc(&self, what: &str) -> Result<&RawDocument> {
        let d = RawDocument::from_bytes(&self.buf)
            .map_err(|e| anyhow!("{what} near byte {} is not BSON: {e}", self.pos))?;
        check(d, 0).map_err(|e| anyhow!("{what} near byte {} is malformed: {e}", self.pos))?;
        Ok(d)
    }
}

/// Every element of a document (and of the documents and arrays in it) parses.
fn check(d: &RawDocument, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("nested deeper than {MAX_DEPTH} levels");
    }
    for el in d.iter() {
        check_value(el?.1, depth)?;
    }
    Ok(())
}

fn check_value(v: RawBsonRef, depth: usize) -> Result<()> {
    match v {
        RawBsonRef::Document(inner) => check(inner, depth + 1),
        RawBsonRef::Array(a) => {
            if depth + 1 > MAX_DEPTH {
                bail!("nested deeper than {MAX_DEPTH} levels");
            }
            for x in a {
                check_value(x?, depth + 1)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => check(c.scope, depth + 1),
        _ => Ok(()),
    }
}

fn str_field(d: &RawDocument, key: &str) -> Result<String> {
    match d.get(key)? {
        Some(RawBsonRef::String(s)) => Ok(s.to_string()),
        None => Ok(String::new()),
        Some(_) => bail!("field `{key}` is not a string"),
    }
}

/// Index names and the collection type from the metadata (canonical Extended JSON).
fn parse_metadata(text: &str) -> Result<(String, Vec<String>)> {
    if text.is_empty() {
        return Ok((String::new(), Vec::new()));
    }
    let v: serde_json::Value =
        serde_json::from_str(text).context("collection metadata is not JSON")?;
    let kind = v
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("collection")
        .to_string();
    let indexes = v
        .get("indexes")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("name").and_then(|n| n.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok((kind, indexes))
}

/// Reads a whole archive, checking everything the format allows to check.
pub fn read(r: impl Read) -> Result<Summary> {
    let mut rd = Reader {
        r,
        pos: 0,
        buf: Vec::with_capacity(64 * 1024),
    };
    rd.fill(0, 4, "the magic number")?;
    let magic = u32::from_le_bytes(rd.buf[..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        bail!("not a mongodump archive (magic number {magic:#010x}, expected {MAGIC:#010x})");
    }
    let mut s = Summary::default();
    match rd.next("the archive header", false)? {
        Item::Doc => {}
        _ => bail!("the archive header is missing"),
    }
    let h = rd.doc("the archive header")?;
    s.header = Header {
        format_version: str_field(h, "version")?,
        server_version: str_field(h, "server_version")?,
        tool_version: str_field(h, "tool_version")?,
    };
    if s.header.format_version != "0.1" {
        bail!(
            "archive format version `{}`; this tool reads 0.1 (the only one mongodump writes)",
            s.header.format_version
        );
    }

    // The prelude: collection metadata until the terminator.
    let mut open: BTreeMap<String, Open> = BTreeMap::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        match rd.next("the archive prelude", false)? {
            Item::Terminator => break,
            Item::End => unreachable!("end is not allowed here"),
            Item::Doc => {}
        }
        let d = rd.doc("collection metadata")?;
        let (db, name) = (str_field(d, "db")?, str_field(d, "collection")?);
        if name.is_empty() {
            bail!(
                "collection metadata near byte {} names no collection",
                rd.pos
            );
        }
        let (kind, indexes) = parse_metadata(&str_field(d, "metadata")?)
            .with_context(|| format!("metadata of {db}.{name}"))?;
        let ns = format!("{db}.{name}");
        if open.insert(ns.clone(), Open::default()).is_some() {
            bail!("the prelude lists {ns} twice");
        }
        if ns == OPLOG_NS {
            s.has_oplog = true;
            continue;
        }
        index.insert(ns, s.collections.len());
        s.collections.push(Collection {
            db,
            name,
            kind,
            indexes,
            ..Default::default()
        });
    }

    // Namespace blocks.
    loop {
        match rd.next("a namespace header", true)? {
            Item::End => break,
            Item::Terminator => bail!(
                "corruption at byte {}: two terminators in a row (a block without a header)",
                rd.pos - 4
            ),
            Item::Doc => {}
        }
        let d = rd.doc("a namespace header")?;
        let ns = format!("{}.{}", str_field(d, "db")?, str_field(d, "collection")?);
        let eof = matches!(d.get("EOF")?, Some(RawBsonRef::Boolean(true)));
        let crc = match d.get("CRC")? {
            Some(RawBsonRef::Int64(v)) => v,
            Some(RawBsonRef::Int32(v)) => v as i64,
            _ => 0,
        };
        let st = open
            .get_mut(&ns)
            .ok_or_else(|| anyhow!("a block for {ns}, which the prelude does not list"))?;
        if st.closed {
            bail!(
                "a block for {ns} after its EOF header (near byte {})",
                rd.pos
            );
        }
        let digest = st.crc.get_or_insert_with(|| CRC.digest());
        if eof {
            let got = std::mem::replace(digest, CRC.digest()).finalize() as i64;
            if got != crc {
                bail!(
                    "CRC mismatch for {}: the documents give {got}, the EOF header says {crc} (the archive is corrupt)",
                    shown(&ns)
                );
            }
            st.closed = true;
            match rd.next("an EOF block", false)? {
                Item::Terminator => continue,
                _ => bail!(
                    "the EOF block of {} is not followed by a terminator",
                    shown(&ns)
                ),
            }
        }
        loop {
            match rd.next(&format!("a document of {}", shown(&ns)), false)? {
                Item::Terminator => break,
                Item::End => unreachable!("end is not allowed here"),
                Item::Doc => {}
            }
            let doc = rd.doc(&format!("a document of {}", shown(&ns)))?;
            if ns == OPLOG_NS {
                if let Ok(Some(RawBsonRef::String(target))) = doc.get("ns") {
                    if !target.is_empty() {
                        *s.oplog_namespaces.entry(target.to_string()).or_default() += 1;
                    }
                }
            }
            let st = open.get_mut(&ns).expect("opened above");
            st.crc.as_mut().expect("opened above").update(&rd.buf);
            st.documents += 1;
            st.bytes += rd.buf.len() as u64;
        }
    }
    let unfinished: Vec<String> = open
        .iter()
        .filter(|(_, st)| !st.closed)
        .map(|(ns, _)| shown(ns))
        .collect();
    if !unfinished.is_empty() {
        bail!(
            "the archive ends before the EOF of {} (truncated, or mongodump did not finish)",
            unfinished.join(", ")
        );
    }
    for (ns, st) in &open {
        if ns == OPLOG_NS {
            s.oplog_entries = st.documents;
        } else if let Some(i) = index.get(ns) {
            s.collections[*i].documents = st.documents;
            s.collections[*i].bytes = st.bytes;
        }
    }
    s.bytes = rd.pos;
    Ok(s)
}

fn shown(ns: &str) -> String {
    if ns == OPLOG_NS {
        "the oplog".into()
    } else {
        ns.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn bytes(d: &bson::Document) -> Vec<u8> {
        let mut v = Vec::new();
        d.to_writer(&mut v).unwrap();
        v
    }

    /// An archive of `app.users` (3 documents, in two segments) and an oplog entry.
    fn sample() -> Vec<u8> {
        let mut a = MAGIC.to_le_bytes().to_vec();
        a.extend(bytes(&doc! {"concurrent_collections": 4, "version": "0.1", "server_version": "7.0.14", "tool_version": "100.10.0"}));
        let meta = r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},{"v":{"$numberInt":"2"},"key":{"email":{"$numberInt":"1"}},"name":"email_1"}],"uuid":"0123","collectionName":"users","type":"collection"}"#;
        a.extend(bytes(
            &doc! {"db": "app", "collection": "users", "metadata": meta, "size": 10},
        ));
        a.extend(bytes(
            &doc! {"db": "", "collection": "oplog", "metadata": "", "size": 0},
        ));
        a.extend([0xff; 4]);
        let docs: Vec<Vec<u8>> = (0..3)
            .map(|i| bytes(&doc! {"_id": i, "n": {"a": [1, {"b": "x"}]}}))
            .collect();
        let mut crc = CRC.digest();
        for (seg, range) in [(0, 0..2), (1, 2..3)] {
            let _ = seg;
            a.extend(bytes(
                &doc! {"db": "app", "collection": "users", "EOF": false, "CRC": 0i64},
            ));
            for d in &docs[range] {
                crc.update(d);
                a.extend(d);
            }
            a.extend([0xff; 4]);
        }
        let op = bytes(&doc! {"op": "i", "ns": "app.users", "o": {"_id": 3}});
        a.extend(bytes(
            &doc! {"db": "", "collection": "oplog", "EOF": false, "CRC": 0i64},
        ));
        a.extend(&op);
        a.extend([0xff; 4]);
        a.extend(bytes(
            &doc! {"db": "app", "collection": "users", "EOF": true, "CRC": crc.finalize() as i64},
        ));
        a.extend([0xff; 4]);
        a.extend(bytes(
            &doc! {"db": "", "collection": "oplog", "EOF": true, "CRC": CRC.checksum(&op) as i64},
        ));
        a.extend([0xff; 4]);
        a
    }

    #[test]
    fn crc_is_gos_crc64_ecma() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ECMA))
        assert_eq!(CRC.checksum(b"123456789"), 0x995d_c9bb_df19_39fa);
    }

    #[test]
    fn reads_counts_indexes_and_oplog() {
        let s = read(&sample()[..]).unwrap();
        assert_eq!(s.header.server_version, "7.0.14");
        assert_eq!(s.collections.len(), 1);
        let c = &s.collections[0];
        assert_eq!((c.ns().as_str(), c.documents), ("app.users", 3));
        assert_eq!(c.indexes, vec!["_id_", "email_1"]);
        assert!(s.has_oplog);
        assert_eq!(s.oplog_entries, 1);
        assert_eq!(s.oplog_namespaces["app.users"], 1);
    }

    #[test]
    fn every_truncation_and_any_flipped_byte_is_caught() {
        let a = sample();
        for cut in 0..a.len() {
            assert!(read(&a[..cut]).is_err(), "cut at {cut} passed");
        }
        let mut caught = 0;
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x01;
            if read(&b[..]).is_err() {
                caught += 1;
            }
        }
        // Flips inside ignored header fields (tool_version text, `size`) cannot be seen.
        assert!(caught * 100 / a.len() >= 70, "{caught} of {}", a.len());
    }

    #[test]
    fn a_flipped_document_byte_fails_the_crc() {
        let a = sample();
        let at = a.windows(2).rposition(|w| w == b"x\0").unwrap();
        let mut b = a.clone();
        b[at] = b'y';
        let e = format!("{:#}", read(&b[..]).unwrap_err());
        assert!(e.contains("CRC mismatch for app.users"), "{e}");
    }

    #[test]
    fn lengths_are_capped() {
        let mut a = MAGIC.to_le_bytes().to_vec();
        a.extend(((MAX_DOCUMENT + 1) as i32).to_le_bytes());
        let e = format!("{:#}", read(&a[..]).unwrap_err());
        assert!(e.contains("neither a BSON document length"), "{e}");
    }
}
