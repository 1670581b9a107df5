//! `manifest.json` as read back from storage (a damaged or hand-edited file): parsed,
//! summed, written again, and the written form parsed back.
#![no_main]
use backup_fuzz::manifest::{parse_backup_id, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::from_json(data, "fuzz/1/manifest.json") else {
        return;
    };
    let _ = m.size_bytes();
    let _ = parse_backup_id(&m.id);
    let out = m.to_json().expect("a parsed manifest serialises");
    Manifest::from_json(&out, "again").expect("a written manifest parses back");
});
