//! Names from storage listings and the command line: WAL file names and segment
//! numbers (any segment size a manifest could claim), LSNs, backup ids.
#![no_main]
use backup_fuzz::db::postgres::walname::*;
use backup_fuzz::manifest::{backup_id, parse_backup_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let seg = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Ok(name) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    if is_archive_name(name) {
        let key = wal_key_ext("t", name, ".zst");
        assert!(key.starts_with(&wal_prefix("t")));
    }
    let _ = segment_of_key(name, seg);
    if let Some((tli, segno)) = parse_segment(name, seg) {
        let again = segment_name(tli, segno, seg);
        assert_eq!(parse_segment(&again, seg), Some((tli, segno)));
    }
    if let Ok(l) = parse_lsn(name) {
        assert_eq!(parse_lsn(&format_lsn(l)).unwrap(), l);
        if valid_segment_size(seg) {
            let _ = segment_name(1, segno_of(l, seg), seg);
        }
    }
    if let Some(t) = parse_backup_id(name) {
        let _ = backup_id(t);
    }
});
