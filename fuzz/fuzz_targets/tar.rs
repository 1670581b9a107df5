//! A base backup's tar stream (base.tar.gz after gunzip): checked as `verify` does and
//! unpacked as `pitr` does, into a scratch folder that must hold nothing else afterwards
//! (no entry may land outside the data directory).
#![no_main]
use backup_fuzz::db::postgres::tar::{check_base_backup, extract};
use backup_fuzz::Scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_base_backup(&mut &data[..]);
    let s = Scratch::new();
    let root = s.0.join("root");
    std::fs::create_dir(&root).unwrap();
    let _ = extract(&mut &data[..], &root);
    let names: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["root"],
        "an entry was written beside the data directory"
    );
});
