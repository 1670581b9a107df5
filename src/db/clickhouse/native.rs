//! A bounded reader of ClickHouse's Native format, block by block, as an HTTP
//! `SELECT ... FORMAT Native` sends it (no block-info header): per block the column
//! count and row count (var-ints), then per column its name, its type and the values.
//!
//! It parses to count rows and to prove a stream whole; values are skipped, never
//! kept, so memory stays at the buffer whatever the size of a block. Every length read
//! from the input is capped. No maintained crate parses Native from a byte stream
//! (the client crates speak the TCP protocol or RowBinary), hence this file.
//!
//! Layouts checked against ClickHouse 18.16: `Nullable(T)` is a null map (one byte a
//! row) then T for every row; `Array(T)` is cumulative `UInt64` offsets then T for
//! every element; `Tuple(...)` is each element column in turn; `String` is a var-int
//! length then bytes (zero bytes and invalid UTF-8 included); `FixedString(N)`, enums,
//! dates, `Decimal(P, S)` (4, 8 or 16 bytes by P) and `UUID` are fixed widths.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{self, Read};

/// Caps on lengths read from the input: a column name or type, a column count, a
/// block's rows, one string value, the elements of one array column in a block.
const MAX_NAME: u64 = 64 * 1024;
const MAX_COLUMNS: u64 = 100_000;
const MAX_ROWS: u64 = 1 << 32;
const MAX_STRING: u64 = 1 << 30;
const MAX_ELEMENTS: u64 = 1 << 36;
/// Bytes kept from the start of each block, to show the server's error text when
/// ClickHouse appended one to a stream that had begun with status 200.
const KEEP: usize = 512;

/// How a column's values are laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Fixed(u64),
    Str,
    Nullable(Box<Layout>),
    Array(Box<Layout>),
    Tuple(Vec<Layout>),
}

/// The layout of a ClickHouse type name; an error names a type this reader does not
/// know (e.g. `AggregateFunction(...)` states).
pub fn layout(ty: &str) -> Result<Layout> {
    let ty = ty.trim();
    let (name, args) = match ty.find('(') {
        Some(i) if ty.ends_with(')') => (&ty[..i], Some(&ty[i + 1..ty.len() - 1])),
        _ => (ty, None),
    };
    let one = |a: Option<&str>| -> Result<Layout> {
        layout(a.ok_or_else(|| anyhow!("type {ty} needs an argument"))?)
    };
    Ok(match name {
        "UInt8" | "Int8" | "Enum8" | "Nothing" => Layout::Fixed(1),
        "UInt16" | "Int16" | "Date" | "Enum16" => Layout::Fixed(2),
        "UInt32" | "Int32" | "Float32" | "DateTime" | "Decimal32" | "IPv4" => Layout::Fixed(4),
        "UInt64" | "Int64" | "Float64" | "Decimal64" | "DateTime64" => Layout::Fixed(8),
        "UUID" | "Decimal128" | "IPv6" => Layout::Fixed(16),
        "Decimal" => {
            let p: u32 = args
                .and_then(|a| a.split(',').next())
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| anyhow!("type {ty}: no precision"))?;
            Layout::Fixed(match p {
                1..=9 => 4,
                10..=18 => 8,
                19..=38 => 16,
                _ => bail!("type {ty}: precision out of range"),
            })
        }
        "FixedString" => {
            let n: u64 = args
                .and_then(|a| a.trim().parse().ok())
                .filter(|n| *n > 0 && *n <= MAX_NAME)
                .ok_or_else(|| anyhow!("type {ty}: bad length"))?;
            Layout::Fixed(n)
        }
        "String" => Layout::Str,
        "Nullable" => Layout::Nullable(Box::new(one(args)?)),
        "Array" => Layout::Array(Box::new(one(args)?)),
        "Tuple" => Layout::Tuple(
            split_args(args.unwrap_or(""))
                .into_iter()
                .map(layout)
                .collect::<Result<_>>()?,
        ),
        _ => bail!("column type {ty} is not supported by this tool's Native reader"),
    })
}

/// Splits `A, B(C, D), E('x,y' = 1)` at top-level commas.
fn split_args(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

/// What one pass over a Native stream found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub blocks: u64,
    pub rows: u64,
    /// `name type` of each column, from the first block.
    pub columns: Vec<String>,
}

/// Reads a whole Native stream; an error says where it stopped and, when the server
/// appended an error to the stream, the server's message.
pub fn read_stream(r: impl Read) -> Result<Summary> {
    let mut rd = Reader {
        r: io::BufReader::with_capacity(256 * 1024, r),
        kept: Vec::with_capacity(KEEP),
        keeping: false,
    };
    let mut sum = Summary::default();
    loop {
        rd.kept.clear();
        rd.keeping = true;
        let res = rd.block(&mut sum);
        match res {
            Ok(false) => return Ok(sum),
            Ok(true) => sum.blocks += 1,
            Err(e) => {
                let text = String::from_utf8_lossy(&rd.kept);
                if let Some(i) = text.find("Code: ") {
                    let msg = text[i..].lines().next().unwrap_or("").trim().to_string();
                    bail!(
                        "the server reported an error after {} rows: {msg}",
                        sum.rows
                    );
                }
                return Err(e.context(format!(
                    "the Native stream is not whole after {} block(s), {} rows",
                    sum.blocks, sum.rows
                )));
            }
        }
    }
}

struct Reader<R> {
    r: R,
    kept: Vec<u8>,
    keeping: bool,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut got = 0;
        let res = loop {
            if got == buf.len() {
                break Ok(());
            }
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break Err(anyhow!("the stream ends inside a block (connection cut?)")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(anyhow!("reading the stream: {e} (connection cut?)")),
            }
        };
        // Kept even when the read fell short: that is where an appended error ends.
        if self.keeping {
            let room = KEEP - self.kept.len();
            self.kept.extend_from_slice(&buf[..got.min(room)]);
            self.keeping = self.kept.len() < KEEP;
        }
        res
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if self.keeping {
            // Small skips at a block's start go through `exact` so they are kept.
            let mut small = [0u8; 64];
            let mut left = n;
            while left > 0 && self.keeping {
                let k = left.min(64) as usize;
                self.exact(&mut small[..k])?;
                left -= k as u64;
            }
            return self.skip_raw(left);
        }
        self.skip_raw(n)
    }

    fn skip_raw(&mut self, n: u64) -> Result<()> {
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if got != n {
            bail!("the stream ends inside a value (connection cut?)");
        }
        Ok(())
    }

    /// A var-int; `Ok(None)` at a clean end of stream (only where `eof_ok`).
    fn varint(&mut self, eof_ok: bool) -> Result<Option<u64>> {
        let mut v = 0u64;
        for i in 0..10 {
            let mut b = [0u8; 1];
            if i == 0 && eof_ok {
                if self.r.read(&mut b)? == 0 {
                    return Ok(None);
                }
                if self.keeping {
                    self.kept.push(b[0]);
                }
            } else {
                self.exact(&mut b)?;
            }
            v |= u64::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        bail!("a length in the stream is malformed")
    }

    fn len(&mut self, cap: u64, what: &str) -> Result<u64> {
        let n = self.varint(false)?.expect("not at eof");
        if n > cap {
            bail!("{what} of {n} is over the limit of {cap}: the stream is not Native data");
        }
        Ok(n)
    }

    fn text(&mut self, what: &str) -> Result<String> {
        let n = self.len(MAX_NAME, what)? as usize;
        let mut b = vec![0u8; n];
        self.exact(&mut b)?;
        String::from_utf8(b).map_err(|_| anyhow!("{what} is not UTF-8"))
    }

    /// One block; false at the end of the stream.
    fn block(&mut self, sum: &mut Summary) -> Result<bool> {
        let Some(cols) = self.varint(true)? else {
            return Ok(false);
        };
        if cols > MAX_COLUMNS {
            bail!("a block of {cols} columns: the stream is not Native data");
        }
        let rows = self.len(MAX_ROWS, "a block's row count")?;
        for _ in 0..cols {
            let name = self.text("a column name")?;
            let ty = self.text("a column type")?;
            let l = layout(&ty).with_context(|| format!("column {name}"))?;
            self.values(&l, rows)
                .with_context(|| format!("column {name} ({ty})"))?;
            if sum.blocks == 0 {
                sum.columns.push(format!("{name} {ty}"));
            }
        }
        sum.rows += rows;
        Ok(true)
    }

    fn values(&mut self, l: &Layout, n: u64) -> Result<()> {
        match l {
            Layout::Fixed(w) => self.skip(n.checked_mul(*w).ok_or_else(|| anyhow!("overflow"))?),
            Layout::Str => {
                for _ in 0..n {
                    let len = self.len(MAX_STRING, "a string's length")?;
                    self.skip(len)?;
                }
                Ok(())
            }
            Layout::Nullable(inner) => {
                self.skip(n)?;
                self.values(inner, n)
            }
            Layout::Array(inner) => {
                let mut last = 0u64;
                let mut b = [0u8; 8];
                for _ in 0..n {
                    self.exact(&mut b)?;
                    let off = u64::from_le_bytes(b);
                    if off < last || off > MAX_ELEMENTS {
                        bail!("array offsets out of order or over the limit");
                    }
                    last = off;
                }
                self.values(inner, last)
            }
            Layout::Tuple(items) => items.iter().try_for_each(|i| self.values(i, n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT * FROM p.t FORMAT Native` from ClickHouse 18.16 over HTTP: two rows of
    /// Nullable, Array, Tuple, FixedString, Enum8, Decimal, UUID, Date, DateTime, a
    /// String with a zero byte, Float64 NaN and inf, Array(Array), Array(Nullable).
    const TYPES: &[u8] = include_bytes!("../../../tests/data/clickhouse-18.16-types.native");

    #[test]
    fn reads_every_type_the_server_sent() {
        let s = read_stream(TYPES).unwrap();
        assert_eq!((s.blocks, s.rows), (1, 2));
        assert_eq!(s.columns.len(), 13);
        assert_eq!(s.columns[0], "n Nullable(Int32)");
    }

    #[test]
    fn every_cut_of_the_stream_fails() {
        for cut in 1..TYPES.len() {
            assert!(read_stream(&TYPES[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn an_error_appended_by_the_server_is_shown() {
        let mut s = TYPES.to_vec();
        s.extend_from_slice(
            b"Code: 158, e.displayText() = DB::Exception: Limit for rows to read exceeded\n",
        );
        let e = format!("{:#}", read_stream(&s[..]).unwrap_err());
        assert!(
            e.contains("after 2 rows: Code: 158") && e.contains("Limit"),
            "{e}"
        );
    }

    #[test]
    fn lengths_are_capped() {
        // One column, one row, a name claiming 2^40 bytes.
        let s = [1u8, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        let e = format!("{:#}", read_stream(&s[..]).unwrap_err());
        assert!(e.contains("over the limit"), "{e}");
    }

    #[test]
    fn layouts() {
        assert_eq!(layout("Decimal(18, 4)").unwrap(), Layout::Fixed(8));
        assert_eq!(
            layout("DateTime('Europe/Berlin')").unwrap(),
            Layout::Fixed(4)
        );
        assert_eq!(
            layout("Tuple(Enum8('a,b' = 1), Nullable(String))").unwrap(),
            Layout::Tuple(vec![
                Layout::Fixed(1),
                Layout::Nullable(Box::new(Layout::Str))
            ])
        );
        assert!(layout("AggregateFunction(uniq, UInt64)").is_err());
        assert_eq!(read_stream(&b""[..]).unwrap().rows, 0);
    }
}
