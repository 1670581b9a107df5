//! How a WAL file is stored: compressed with the target's `compression`, its SHA-256
//! inside the object (gzip header comment, or a zstd skippable frame ahead of the data,
//! which `zstd -d` skips), and read back.

use crate::compress::Compression;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// zstd skippable frame magic (0x184D2A50..=0x184D2A5F); this one carries `sha256=<hex>`.
const SKIPPABLE_SHA: u32 = 0x184D_2A5E;

/// The stored form of a WAL file with its checksum inside (see the module comment).
pub fn pack(data: &[u8], sha: &str, c: Compression, level: i32) -> Result<Vec<u8>> {
    Ok(match c {
        Compression::Gzip => {
            let mut gz = flate2::GzBuilder::new()
                .comment(format!("sha256={sha}"))
                .write(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::new(level.clamp(1, 9) as u32),
                );
            gz.write_all(data)?;
            gz.finish()?
        }
        Compression::Zstd => {
            let note = format!("sha256={sha}");
            let mut out = Vec::with_capacity(data.len() / 4);
            out.extend_from_slice(&SKIPPABLE_SHA.to_le_bytes());
            out.extend_from_slice(&(note.len() as u32).to_le_bytes());
            out.extend_from_slice(note.as_bytes());
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            enc.include_contentsize(true)?;
            enc.set_pledged_src_size(Some(data.len() as u64))?;
            enc.write_all(data)?;
            enc.finish()?
        }
        Compression::None => data.to_vec(),
    })
}

/// Decompresses a stored WAL file into `out`; returns the SHA-256 of what was written
/// and the checksum the object carries inside (None: look in its metadata).
pub fn unpack(
    r: Box<dyn Read + Send>,
    c: Compression,
    out: &mut dyn Write,
) -> Result<(String, Option<String>)> {
    let r = std::io::BufReader::with_capacity(1 << 20, r);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 18];
    let mut copy = |dec: &mut dyn Read| -> Result<()> {
        loop {
            let n = dec.read(&mut buf).context("reading/decompressing")?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).context("writing")?;
        }
    };
    let sha_of = |note: &[u8]| {
        std::str::from_utf8(note)
            .ok()
            .and_then(|c| c.strip_prefix("sha256="))
            .map(str::to_string)
    };
    let embedded = match c {
        Compression::Gzip => {
            let mut dec = flate2::read::MultiGzDecoder::new(r);
            copy(&mut dec)?;
            dec.header().and_then(|hd| hd.comment()).and_then(sha_of)
        }
        Compression::Zstd => {
            let mut r = r;
            let mut head = [0u8; 8];
            r.read_exact(&mut head).context("reading the zstd header")?;
            let magic = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
            let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
            if magic == SKIPPABLE_SHA && len <= 4096 {
                let mut note = vec![0u8; len];
                r.read_exact(&mut note).context("reading the zstd header")?;
                let mut dec = zstd::stream::read::Decoder::with_buffer(r)?;
                copy(&mut dec)?;
                sha_of(&note)
            } else {
                // Written elsewhere (plain `zstd`): no checksum inside.
                let mut dec =
                    zstd::stream::read::Decoder::new(std::io::Cursor::new(head).chain(r))?;
                copy(&mut dec)?;
                None
            }
        }
        Compression::None => {
            let mut r = r;
            copy(&mut r)?;
            None
        }
    };
    Ok((hex::encode(h.finalize()), embedded))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::db::postgres::wal::*;
    use crate::db::recovery::WalConflict;
    use crate::db::{FetchOutcome, PushOutcome, Target};
    use std::path::Path;

    fn cfg(dir: &Path, extra: &str) -> Config {
        Config::parse(
            &format!(
                "[storages.l]\ntype=\"local\"\npath=\"{}\"\n[targets.pg]\nengine=\"postgres\"\nkind=\"physical\"\nstorages=[\"l\"]\n{extra}\n",
                dir.join("repo").display()
            ),
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn gzip_zstd_and_none_segments_mix_in_one_archive() {
        let d = tempfile::tempdir().unwrap();
        let (gz, zst, none) = (
            cfg(d.path(), ""),
            cfg(d.path(), "compression = \"zstd\""),
            cfg(d.path(), "compression = \"none\""),
        );
        let seg = |n: u8| {
            let p = d.path().join(format!("00000001000000000000000{n}"));
            std::fs::write(&p, vec![n; 70_000]).unwrap();
            p
        };
        let t = |c| Target::resolve(c, "pg").unwrap();
        assert_eq!(push(&t(&gz), &seg(1)).unwrap(), PushOutcome::Stored);
        assert_eq!(push(&t(&zst), &seg(2)).unwrap(), PushOutcome::Stored);
        assert_eq!(push(&t(&none), &seg(3)).unwrap(), PushOutcome::Stored);
        // Re-pushed after the change: found under its old extension, not stored twice.
        assert_eq!(
            push(&t(&zst), &seg(1)).unwrap(),
            PushOutcome::AlreadyArchived
        );
        let dir = d.path().join("repo/pg/wal/00000001");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "000000010000000000000001.gz",
                "000000010000000000000002.zst",
                "000000010000000000000003"
            ]
        );
        // A different file under a name archived with another compression: refused.
        std::fs::write(d.path().join("000000010000000000000002"), vec![9u8; 10]).unwrap();
        let e = push(&t(&gz), &d.path().join("000000010000000000000002")).unwrap_err();
        assert!(
            e.chain().any(|c| c.downcast_ref::<WalConflict>().is_some()),
            "{e:#}"
        );
        // Every reader finds each kind, whatever the target's compression now.
        for c in [&gz, &zst, &none] {
            for n in 1..=3u8 {
                let dest = d.path().join("out");
                let name = format!("00000001000000000000000{n}");
                assert_eq!(
                    fetch(&t(c), &name, &dest).unwrap(),
                    FetchOutcome::Fetched("l".into())
                );
                assert_eq!(std::fs::read(&dest).unwrap(), vec![n; 70_000]);
            }
        }
        let a = crate::db::postgres::archive::scan(
            crate::storage::open(&gz, "l").unwrap().as_ref(),
            "pg",
            DEFAULT_SEGMENT_SIZE,
        )
        .unwrap();
        assert_eq!(a.first_gap(1, 1, 3), None);
        // The zstd object carries its checksum inside: a copy without metadata still verifies.
        std::fs::remove_file(dir.join(".meta-000000010000000000000002.zst.json")).unwrap();
        let dest = d.path().join("out");
        fetch(&t(&zst), "000000010000000000000002", &dest).unwrap();
        // A damaged zstd object is refused.
        let p = dir.join("000000010000000000000002.zst");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 6] ^= 0xff;
        std::fs::write(&p, b).unwrap();
        assert!(fetch(&t(&zst), "000000010000000000000002", &dest).is_err());
    }
}
