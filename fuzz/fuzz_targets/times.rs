//! Durations and times as operators write them: `keep_within`, `--max-age`,
//! `--target-time`, `--now`.
#![no_main]
use backup_fuzz::db::recovery::{fmt_time, parse_time};
use backup_fuzz::duration;
use backup_fuzz::engine::retention::parse_instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = duration::parse(s) {
        let _ = duration::human(d);
        let spec = duration::spec(d);
        assert_eq!(duration::parse(&spec), Ok(d), "{spec}");
        let _ = duration::bytes(d.as_secs());
    }
    let _ = duration::chrono(s);
    if let Ok(t) = parse_time(s) {
        let _ = fmt_time(t);
    }
    let _ = parse_instant(s);
});
