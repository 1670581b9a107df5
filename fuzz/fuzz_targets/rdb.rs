//! A Redis RDB file (dump.rdb, from storage or from the server): summarised as
//! `verify` does, then read key by key capturing values as `restore` does.
#![no_main]
use backup_fuzz::db::redis::rdb::{dump_payload, lzf_decompress, RdbReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RdbReader::new(data) {
        let _ = r.summarise().map(|s| s.describe());
    }
    if let Ok(mut r) = RdbReader::new(data) {
        r.capture_values(true);
        while let Ok(Some(e)) = r.next_key() {
            let _ = dump_payload(e.value, r.version);
            let _ = r.take_functions();
        }
    }
    if data.len() > 4 {
        let out = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        let _ = lzf_decompress(&data[4..], out);
    }
});
