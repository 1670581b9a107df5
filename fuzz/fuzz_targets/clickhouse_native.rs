//! ClickHouse Native streams (a table's artifact, or a server's answer) and the column
//! type names inside them.
#![no_main]
use backup_fuzz::db::clickhouse::native::{layout, read_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_stream(data);
    if let Ok(ty) = std::str::from_utf8(data) {
        let _ = layout(ty);
    }
});
