//! How artifacts are compressed on the way to storage: `gzip`, `zstd` or `none`.
//!
//! One place for the choice, its file extension and its level, so logical dumps, WAL
//! segments and physical files agree. Both formats are the standard ones, so a stored
//! artifact stays readable without this tool (`gunzip`, `zstd -d`).

use anyhow::{Context, Result};
use std::io::{Read, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

/// A compressing writer that must be finished (it writes the format's trailer).
pub trait Encoder: Write + Send {
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

impl<W: Write + Send> Encoder for flate2::write::GzEncoder<W> {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        flate2::write::GzEncoder::finish(*self).map(|_| ())
    }
}

impl<W: Write + Send> Encoder for zstd::stream::write::Encoder<'static, W> {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        zstd::stream::write::Encoder::finish(*self).map(|_| ())
    }
}

/// Stores as is.
struct Plain<W>(W);

impl<W: Write + Send> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Encoder for Plain<W> {
    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Compression {
    /// Parses a `compression` key's value.
    pub fn parse(s: &str) -> std::result::Result<Compression, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "`{other}` is not a compression; use \"zstd\", \"gzip\" or \"none\""
            )),
        }
    }

    /// From a manifest's artifact `compression` field (unknown values read as none).
    pub fn from_manifest(s: &str) -> Compression {
        Compression::parse(s).unwrap_or(Compression::None)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// The file name extension, with its dot (`.gz`, `.zst`; empty for none).
    pub fn ext(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::None => "",
        }
    }

    /// The levels this compression accepts (none accepts any and ignores it).
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=19,
            Compression::None => i32::MIN..=i32::MAX,
        }
    }

    /// The level used when none is configured: gzip's own 6; zstd 3 (zstd's own default,
    /// also pgBackRest's), which compresses better than gzip -6 at several times the speed.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }

    /// Checks a configured level against this compression.
    pub fn check_level(self, level: i32) -> std::result::Result<(), String> {
        let r = self.levels();
        if r.contains(&level) {
            Ok(())
        } else {
            Err(format!(
                "{level} is outside {}..={} for {}",
                r.start(),
                r.end(),
                self.name()
            ))
        }
    }

    /// A writer compressing into `w` at `level` (None: the default level).
    pub fn encoder<'a, W: Write + Send + 'a>(
        self,
        w: W,
        level: Option<i32>,
    ) -> Result<Box<dyn Encoder + 'a>> {
        let level = level.unwrap_or(self.default_level());
        Ok(match self {
            Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            Compression::Zstd => {
                Box::new(zstd::stream::write::Encoder::new(w, level).context("starting zstd")?)
            }
            Compression::None => Box::new(Plain(w)),
        })
    }

    /// A reader decompressing `r`. gzip reads every member (as `gunzip` does).
    pub fn decoder<'a, R: Read + Send + 'a>(self, r: R) -> Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(r).context("starting zstd")?)
            }
            Compression::None => Box::new(r),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_compression() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
            impl Write for Shared {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let mut e = c.encoder(Shared(buf.clone()), None).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap();
            let stored = buf.lock().unwrap().clone();
            let mut out = Vec::new();
            c.decoder(&stored[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c}");
        }
    }

    #[test]
    fn parses_and_checks_levels() {
        assert_eq!(Compression::parse("zstd"), Ok(Compression::Zstd));
        assert!(Compression::parse("lz4").unwrap_err().contains("\"zstd\""));
        assert!(Compression::Gzip.check_level(12).is_err());
        assert!(Compression::Zstd.check_level(12).is_ok());
        assert!(Compression::Zstd.check_level(0).is_err());
    }
}
