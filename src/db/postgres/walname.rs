//! WAL file names and log positions, pure: `0/2000028` LSNs, segment names
//! (`000000010000000000000003`), the archive's file names and storage keys. Kept apart
//! from `wal` (which stores and fetches) so the fuzz crate in `fuzz/` can compile these
//! parsers of names that a storage listing or an operator hands over.

use anyhow::{anyhow, bail, Result};

pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// `0/2000028` -> 0x2000028.
pub fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s.trim().split_once('/').ok_or_else(|| {
        anyhow!("`{s}` is not an LSN (write it as in pg_current_wal_lsn(), e.g. 0/3000060)")
    })?;
    let hi = u64::from_str_radix(hi, 16).map_err(|_| anyhow!("`{s}` is not an LSN"))?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| anyhow!("`{s}` is not an LSN"))?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        bail!("`{s}` is not an LSN");
    }
    Ok((hi << 32) | lo)
}

pub fn format_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

/// PostgreSQL's WAL segment sizes: a power of two from 1 MiB to 1 GiB
/// (`initdb --wal-segsize`). A size read from a manifest is used only if it is one.
pub fn valid_segment_size(v: u64) -> bool {
    v.is_power_of_two() && (1 << 20..=1 << 30).contains(&v)
}

/// Segments per 4 GiB "xlogid". Never zero, whatever size a caller passes: found by
/// fuzzing, a manifest claiming a segment size over 4 GiB divided by zero here.
fn segs_per_id(seg_size: u64) -> u64 {
    (0x1_0000_0000 / seg_size.max(1)).max(1)
}

pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = segs_per_id(seg_size);
    format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
}

/// The segment holding the byte at `lsn`.
pub fn segno_of(lsn: u64, seg_size: u64) -> u64 {
    lsn / seg_size
}

/// `000000010000000000000003` -> (1, 3). Only plain segment names.
pub fn parse_segment(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    // Found by fuzzing: a segment part past the last of its xlogid (`...000000000100`
    // with 16 MiB segments) is no name PostgreSQL writes, and read as segment 256 it
    // would alias `...000100000000`.
    if seg >= segs_per_id(seg_size) {
        return None;
    }
    Some((tli, log * segs_per_id(seg_size) + seg))
}

/// File names PostgreSQL archives: segments, `.partial`, `.backup`, `.history`.
pub fn is_archive_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    if hex(name, 24) {
        return true;
    }
    if let Some(base) = name.strip_suffix(".partial") {
        return hex(base, 24);
    }
    if let Some(base) = name.strip_suffix(".history") {
        return hex(base, 8);
    }
    if let Some(base) = name.strip_suffix(".backup") {
        // ASCII first: found by fuzzing, a multi-byte character across byte 24 made
        // the slices below panic.
        return base.len() == 33
            && base.is_ascii()
            && hex(&base[..24], 24)
            && &base[24..25] == "."
            && hex(&base[25..], 8);
    }
    false
}

/// The segment number a WAL archive key names (`pg/wal/00000001/<24 hex>[.partial|
/// .NNNNNNNN.backup][.gz|.zst]`); None for history files and anything else in the folder.
pub fn segment_of_key(key: &str, seg_size: u64) -> Option<u64> {
    let file = key.rsplit('/').next().unwrap_or("");
    let name = file
        .strip_suffix(".gz")
        .or_else(|| file.strip_suffix(".zst"))
        .unwrap_or(file);
    if name.ends_with(".history") {
        return None;
    }
    // `get`, not slicing: a stray key with a multi-byte character is no panic.
    parse_segment(name.get(..24)?, seg_size).map(|(_, segno)| segno)
}

pub fn wal_prefix(target: &str) -> String {
    format!("{target}/wal/")
}

/// The key of WAL file `name` stored with extension `ext` (`.gz`, `.zst`, none).
pub fn wal_key_ext(target: &str, name: &str, ext: &str) -> String {
    format!("{target}/wal/{}/{name}{ext}", &name[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/names.rs): a segment size over 4 GiB, as a
    /// hand-edited manifest could claim, made `segment_name` divide by zero.
    #[test]
    fn fuzz_segment_size_over_4_gib_does_not_divide_by_zero() {
        let huge = 0x2400_0000_0100_0000;
        assert!(!valid_segment_size(huge) && !valid_segment_size(0));
        assert!(valid_segment_size(DEFAULT_SEGMENT_SIZE) && valid_segment_size(1 << 30));
        let _ = segment_name(1, 5, huge);
        let _ = segment_name(1, 5, 0);
        assert_eq!(
            parse_segment("000000010000000500000000", huge),
            Some((1, 5))
        );
    }

    /// Found by fuzzing: with 16 MiB segments (256 per xlogid) `...000000000100` was
    /// read as segment 256, the same as `...000100000000`; names past the last segment
    /// of an xlogid are no segment names.
    #[test]
    fn fuzz_segment_part_past_its_xlogid_is_not_a_segment() {
        let s = DEFAULT_SEGMENT_SIZE;
        assert_eq!(parse_segment("0000000100000000000000FF", s), Some((1, 255)));
        assert_eq!(parse_segment("000000010000000000000100", s), None);
        assert_eq!(parse_segment("000000010000000100000000", s), Some((1, 256)));
        assert_eq!(segment_name(1, 256, s), "000000010000000100000000");
    }

    /// Found by fuzzing: a `.backup` name with a multi-byte character across byte 24
    /// panicked `is_archive_name` (wal-push, wal-fetch); a stray key like it in the
    /// archive folder did the same to a prune of the WAL.
    #[test]
    fn fuzz_multibyte_character_in_a_wal_name_is_no_panic() {
        let name = "00000001000000000000000é00000028.backup";
        assert_eq!(name.len(), 40);
        assert!(!is_archive_name(name));
        assert_eq!(
            segment_of_key("pg/wal/00000001/ééééééééééééé.gz", 1 << 24),
            None
        );
        let s = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            segment_of_key("pg/wal/00000001/000000010000000000000003.gz", s),
            Some(3)
        );
        assert_eq!(
            segment_of_key(
                "pg/wal/00000001/000000010000000000000003.00000028.backup.gz",
                s
            ),
            Some(3)
        );
        assert_eq!(
            segment_of_key("pg/wal/00000002/00000002.history.gz", s),
            None
        );
    }
}
