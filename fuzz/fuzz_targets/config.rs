//! `backup.toml`: parsed and validated as `Config::parse` does for every command, then
//! the derived settings (retention policies, Object Lock periods, schedule warnings)
//! and, for each policy, a retention plan over a fixed set of backups.
#![no_main]
use backup_fuzz::config::{schedule_warnings, Config};
use backup_fuzz::engine::retention::{plan, Backup, Policy, State};
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text, "fuzz.toml") else {
        return;
    };
    let _ = schedule_warnings(&cfg);
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let backups: Vec<Backup> = (0..40)
        .map(|i| {
            let time = now - chrono::Duration::hours(13 * i);
            Backup {
                id: backup_fuzz::manifest::backup_id(time),
                time,
                tag: (i % 7 == 0).then(|| "monthly".to_string()),
                state: State::Complete { verified: None },
                depends_on: Vec::new(),
            }
        })
        .collect();
    for storage in cfg.storages.keys() {
        let _ = cfg.lock_period(storage);
        for target in cfg.targets.keys() {
            let r = cfg.retention_for(target, storage);
            if let Ok(p) = Policy::from_config(r.as_ref()) {
                let _ = p.describe();
                let d = plan(&backups, &p, now);
                assert_eq!(d.len(), backups.len());
            }
        }
    }
    for t in cfg.targets.keys() {
        let _ = cfg.test_restore_for(t);
    }
});
