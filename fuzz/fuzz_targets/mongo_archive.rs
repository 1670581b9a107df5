//! A mongodump archive (dump.archive.gz after gunzip), read whole as `verify` does.
#![no_main]
use backup_fuzz::db::mongodb::archive::read;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = read(data) {
        let _ = s.describe();
    }
});
