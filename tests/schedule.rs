//! `backup schedule` and the schedule keys: the strategy document's whole schedule,
//! and one-line refusals (exit 2) naming the file, the key and the field.

mod common;
use common::Env;
use serde_json::Value;

const STORAGE: &str = "[storages.local]\ntype = \"local\"\npath = \"repo\"\n";

/// The document's schedule (database-backup-strategy.md, "Backup Schedule"), all in UTC.
/// Targets are named after the document's databases; their engines are the ones this
/// build has (the schedule does not depend on the engine).
fn strategy_config() -> String {
    format!(
        r#"{STORAGE}
[targets.postgres]
engine = "postgres"
url = "postgresql://127.0.0.1:1/app"
storages = ["local"]
schedules = [{{ cron = "0 2 * * *", type = "full" }}]
test_restore_schedule = "0 10 * * SUN#1"
prune_schedule = "30 5 * * *"

[targets.mongodb]
engine = "postgres"
url = "postgresql://127.0.0.1:1/m"
storages = ["local"]
schedule = "0 3 * * *"

[targets.clickhouse]
engine = "postgres"
url = "postgresql://127.0.0.1:1/c"
storages = ["local"]
schedule = "0 4 * * *"

[targets.redis]
engine = "redis"
url = "redis://127.0.0.1:1"
storages = ["local"]
schedule = "0 6,18 * * *"
verify_schedule = "0 7 * * *"
"#
    )
}

fn next_of(v: &Value, job: &str) -> Vec<String> {
    let j = v
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == job)
        .unwrap_or_else(|| panic!("no job {job} in {v}"));
    j["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_strategy_documents_whole_schedule() {
    let env = Env::new();
    env.write_config(&strategy_config());
    // 2026-11-30 is a Monday.
    let out = env.ok(&[
        "schedule",
        "--json",
        "--from",
        "2026-11-30T00:00:00Z",
        "-n",
        "3",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 7, "{v}");
    let day = |d: &str, h: &str| format!("2026-{d}T{h}:00:00Z");
    assert_eq!(
        next_of(&v, "postgres/backup"),
        [day("11-30", "02"), day("12-01", "02"), day("12-02", "02")]
    );
    assert_eq!(next_of(&v, "mongodb/backup")[0], day("11-30", "03"));
    assert_eq!(next_of(&v, "clickhouse/backup")[0], day("11-30", "04"));
    assert_eq!(
        next_of(&v, "redis/backup"),
        [day("11-30", "06"), day("11-30", "18"), day("12-01", "06")]
    );
    assert_eq!(next_of(&v, "redis/verify")[0], day("11-30", "07"));
    assert_eq!(next_of(&v, "postgres/prune")[0], "2026-11-30T05:30:00Z");
    // First Sunday of each month at 10:00.
    assert_eq!(
        next_of(&v, "postgres/test_restore"),
        [
            day("12-06", "10"),
            "2027-01-03T10:00:00Z".to_string(),
            "2027-02-07T10:00:00Z".to_string()
        ]
    );
    let job = v
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "postgres/prune")
        .unwrap();
    assert_eq!(
        job["command"],
        serde_json::json!(["prune", "postgres", "--yes"])
    );
    // The table form lists the same jobs.
    let table = env.ok(&["schedule", "--from", "2026-11-30T00:00:00Z"]);
    assert!(
        table.contains("postgres/test_restore") && table.contains("2026-12-06 10:00:00 UTC"),
        "{table}"
    );
}

#[test]
fn a_named_time_zone_across_the_autumn_dst_change() {
    let env = Env::new();
    env.write_config(&format!(
        "{STORAGE}[targets.pg]\nengine = \"postgres\"\nstorages = [\"local\"]\nschedule = \"30 2 * * *\"\ntimezone = \"America/New_York\"\n"
    ));
    // New York leaves daylight time on 2026-11-01: 02:30 local is 06:30Z before, 07:30Z after.
    let out = env.ok(&["schedule", "--json", "--from", "2026-10-30T12:00:00Z"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        next_of(&v, "pg/backup"),
        [
            "2026-10-31T06:30:00Z",
            "2026-11-01T07:30:00Z",
            "2026-11-02T07:30:00Z"
        ]
    );
    assert_eq!(v[0]["next_local"][1], "2026-11-01T02:30:00-05:00");
}

fn refused(target_keys: &str) -> String {
    let env = Env::new();
    env.write_config(&format!(
        "{STORAGE}[targets.pg]\nengine = \"postgres\"\nstorages = [\"local\"]\n{target_keys}\n"
    ));
    let (code, out, err) = env.run(&["schedule"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("backup.toml"), "{err}");
    err
}

#[test]
fn bad_schedules_are_one_line_naming_file_key_and_field() {
    let e = refused("schedule = \"0 25 * * *\"");
    assert!(
        e.contains("backup.toml:7")
            && e.contains("targets.pg.schedule")
            && e.contains("field 2 (hour) `25`"),
        "{e}"
    );
    let e = refused("verify_schedule = \"0 2 * *\"");
    assert!(
        e.contains("targets.pg.verify_schedule") && e.contains("has 4 fields"),
        "{e}"
    );
    let e = refused(
        "schedules = [{ cron = \"0 2 * * *\" }, { cron = \"0 8,14,20 * * *\", type = \"incr\" }]",
    );
    assert!(
        e.contains("targets.pg.schedules")
            && e.contains("entry 2")
            && e.contains("method = \"files\""),
        "{e}"
    );
    let e = refused("copy_schedule = \"0 5 * * *\"");
    assert!(
        e.contains("targets.pg.copy_schedule") && e.contains("backup copy"),
        "{e}"
    );
    let e = refused("schedule = \"0 2 * * *\"\ntimezone = \"Mars/Olympus\"");
    assert!(e.contains("targets.pg.timezone"), "{e}");
    let e = refused("schedules = [{ crn = \"0 2 * * *\" }]");
    assert!(e.contains("crn"), "{e}");
}

#[test]
fn both_day_fields_restricted_is_a_warning() {
    let env = Env::new();
    env.write_config(&format!(
        "{STORAGE}[targets.pg]\nengine = \"postgres\"\nstorages = [\"local\"]\ntest_restore_schedule = \"0 10 1-7 * SUN\"\n"
    ));
    let (code, out, err) = env.run(&[
        "schedule",
        "--json",
        "--from",
        "2026-11-30T00:00:00Z",
        "-n",
        "8",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("targets.pg.test_restore_schedule")
            && err.contains("EITHER")
            && err.contains("SUN#1"),
        "{err}"
    );
    // The classic rule: days 1-7 and also every Sunday (Dec 1 is a Tuesday).
    let v: Value = serde_json::from_str(&out).unwrap();
    let next = next_of(&v, "pg/test_restore");
    assert_eq!(next[0], "2026-12-01T10:00:00Z");
    assert_eq!(next[7], "2026-12-13T10:00:00Z");
}
