//! ClickHouse test-restore and part-level (`kind = "physical"`) backups against real
//! `clickhouse-server` 18.16 instances (each on free ports in a temp dir). The native
//! mode (`BACKUP ... TO S3`) needs ClickHouse 22.x or later, which does not run here:
//! only its refusal of this 18.16 server is tested against a real server; its SQL
//! generation is unit-tested in src/db/clickhouse/native.rs.
mod common;
use common::clickhouse_server::{config, manifest, ClickHouseServer};
use common::*;

/// Two databases: a partitioned MergeTree, a ReplacingMergeTree in two parts, an MV
/// with an inner table reading the MergeTree, a Log table, a view, and a TinyLog
/// table in the second database.
fn load(ch: &ClickHouseServer) {
    for sql in [
        "CREATE DATABASE analytics",
        "CREATE DATABASE staging",
        "CREATE TABLE analytics.events (day Date, id UInt64, user Nullable(String), tags Array(String), price Decimal(18, 4)) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (day, id)",
        "CREATE MATERIALIZED VIEW analytics.daily ENGINE = SummingMergeTree ORDER BY day AS SELECT day, count() AS n FROM analytics.events GROUP BY day",
        "INSERT INTO analytics.events SELECT toDate('2026-09-01') + number % 90, number, if(number % 5 = 0, NULL, concat('u', toString(number % 97))), arrayMap(x -> toString(x), range(number % 3)), toDecimal64(number / 7, 4) FROM numbers(20000)",
        "CREATE TABLE analytics.users (id UInt32, name String, ver UInt32) ENGINE = ReplacingMergeTree(ver) ORDER BY id",
        "INSERT INTO analytics.users SELECT number, concat('name-', toString(number)), 1 FROM numbers(300)",
        "INSERT INTO analytics.users SELECT number, concat('renamed-', toString(number)), 2 FROM numbers(50)",
        "CREATE TABLE analytics.audit (at DateTime, what String) ENGINE = Log",
        "INSERT INTO analytics.audit SELECT toDateTime('2026-01-01 00:00:00') + number, concat('event ', toString(number)) FROM numbers(700)",
        "CREATE VIEW analytics.recent AS SELECT * FROM analytics.events WHERE day > '2026-11-01'",
        "CREATE TABLE staging.raw (line String) ENGINE = TinyLog",
        "INSERT INTO staging.raw SELECT concat('line ', toString(number)) FROM numbers(1500)",
    ] {
        ch.q(sql);
    }
}

const DATA: &[(&str, &str)] = &[
    ("analytics", "events"),
    ("analytics", ".inner.daily"),
    ("analytics", "users"),
    ("analytics", "audit"),
    ("staging", "raw"),
];

fn fingerprints(ch: &ClickHouseServer) -> Vec<String> {
    DATA.iter()
        .map(|(d, t)| format!("{d}.{t}: {}", ch.fingerprint(d, t)))
        .collect()
}

fn databases(ch: &ClickHouseServer) -> Vec<String> {
    ch.q("SELECT name FROM system.databases ORDER BY name FORMAT TSV")
        .lines()
        .map(str::to_string)
        .collect()
}

fn run_id(env: &Env) -> String {
    let out = env.ok(&["run", "analytics", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// A target with `checks_sql` holding `sql` (and `extra` test_restore keys).
fn with_checks(env: &Env, ch: &ClickHouseServer, sql: &str, extra: &str) {
    let checks = env.path().join("checks.sql");
    std::fs::write(&checks, sql).unwrap();
    config(
        env,
        &ch.url(),
        &format!(
            "[targets.analytics.test_restore]\n{extra}checks_sql = \"{}\"\n",
            checks.display()
        ),
    );
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[test]
fn test_restore_into_scratch_databases_passes_and_drops_them() {
    let ch = ClickHouseServer::start();
    load(&ch);
    let env = Env::new();
    with_checks(
        &env,
        &ch,
        "-- the view and the MV came back\nSELECT count() > 0 FROM recent;\nSELECT sum(n) = 20000 FROM daily;\nSELECT (SELECT count() FROM staging.raw) = 1500",
        "rto = \"1h\"\n",
    );
    let before = databases(&ch);
    let id = run_id(&env);
    // Rows written after the backup: the checks must see the scratch copy, not these.
    ch.q("INSERT INTO staging.raw VALUES ('late')");
    let (code, out, err) = env.run(&["test-restore", "analytics", "latest", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["id"], id.as_str());
    assert!(check(&r, "restore")["detail"]
        .as_str()
        .unwrap()
        .contains("backup_test_restore_"));
    let counts = check(&r, "row_counts");
    assert_eq!(counts["passed"], true, "{counts:#}");
    assert_eq!(counts["figures"]["tables"], 5, "{counts:#}");
    assert_eq!(check(&r, "sql #1")["passed"], true);
    assert_eq!(check(&r, "sql #2")["passed"], true);
    assert_eq!(check(&r, "sql #3")["passed"], true, "{r:#}");
    assert_eq!(check(&r, "rto")["passed"], true);
    assert_eq!(check(&r, "scratch dropped")["passed"], true);
    assert_eq!(databases(&ch), before, "the scratch databases were dropped");
    // The real databases were not touched.
    assert_eq!(ch.q("SELECT count() FROM analytics.events"), "20000");
}

#[test]
fn test_restore_with_a_failing_check_exits_6_and_still_drops_the_scratch() {
    let ch = ClickHouseServer::start();
    load(&ch);
    let env = Env::new();
    with_checks(
        &env,
        &ch,
        "SELECT count() = 20000 FROM events;\nSELECT count() = 1 FROM users;\nSELECT no_such_column FROM events",
        "",
    );
    let before = databases(&ch);
    let id = run_id(&env);
    // A leftover of a killed run (same name, rows in the way) is dropped first.
    let leftover = format!("backup_test_restore_{}_analytics", id.to_ascii_lowercase());
    ch.q(&format!("CREATE DATABASE {leftover}"));
    ch.q(&format!(
        "CREATE TABLE {leftover}.audit (x UInt8) ENGINE = Log"
    ));
    ch.q(&format!("INSERT INTO {leftover}.audit VALUES (1)"));
    let (code, out, err) = env.run(&["test-restore", "analytics", "--json"]);
    assert_eq!(code, 6, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["passed"], false);
    assert_eq!(check(&r, "sql #1")["passed"], true, "{r:#}");
    let second = check(&r, "sql #2");
    assert_eq!(second["passed"], false);
    assert!(
        second["detail"].as_str().unwrap().contains("not all 1"),
        "{second:#}"
    );
    assert_eq!(check(&r, "sql #3")["passed"], false);
    assert_eq!(check(&r, "row_counts")["passed"], true);
    assert_eq!(check(&r, "scratch dropped")["passed"], true);
    assert!(err.contains("failed check(s): sql #2"), "{err}");
    assert_eq!(databases(&ch), before, "the scratch databases were dropped");
}

#[test]
fn sigterm_during_test_restore_drops_the_scratch_databases() {
    let ch = ClickHouseServer::start();
    load(&ch);
    let env = Env::new();
    // Interrupted the moment the first scratch database appears (mid-restore: a DROP
    // then races the restore's own statements); slow checks widen the window.
    with_checks(
        &env,
        &ch,
        "SELECT sleep(3) = 0;\nSELECT sleep(3) = 0;\nSELECT sleep(3) = 0",
        "",
    );
    let before = databases(&ch);
    run_id(&env);
    let child = env
        .std_cmd()
        .args(["test-restore", "analytics"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !databases(&ch)
        .iter()
        .any(|d| d.starts_with("backup_test_restore_"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no scratch database appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "{err}");
    assert_eq!(
        databases(&ch),
        before,
        "the scratch databases were dropped: {err}"
    );
}

fn physical(env: &Env, ch: &ClickHouseServer, extra: &str) {
    config(env, &ch.url(), &format!("kind = \"physical\"\n{extra}"));
}

/// Increment folders left in `shadow/` (FREEZE's hard links).
fn shadow_left(ch: &ClickHouseServer) -> Vec<String> {
    std::fs::read_dir(ch.data_path().join("shadow"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn parts_of(m: &serde_json::Value) -> Vec<serde_json::Value> {
    m["database"]["extra"]["clickhouse_parts"]
        .as_array()
        .unwrap()
        .clone()
}

fn drop_all(ch: &ClickHouseServer) {
    ch.q("DROP DATABASE analytics");
    ch.q("DROP DATABASE staging");
}

#[test]
fn part_level_backup_and_restore_round_trip() {
    let ch = ClickHouseServer::start();
    load(&ch);
    let before = fingerprints(&ch);
    let env = Env::new();
    physical(&env, &ch, "");
    let id = run_id(&env);
    assert!(shadow_left(&ch).is_empty(), "{:?}", shadow_left(&ch));
    let m = manifest(&env, &id);
    assert_eq!(m["kind"], "physical");
    assert!(m["depends_on"].as_array().map_or(true, |d| d.is_empty()));
    let parts = parts_of(&m);
    // events has one part per month (3), the MV's inner table at least one.
    let of = |t: &str| parts.iter().filter(|p| p["table"] == t).count();
    assert!(of("events") >= 3 && of(".inner.daily") >= 1, "{parts:#?}");
    let tars = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"].as_str().unwrap().ends_with(".tar"))
        .count();
    assert_eq!(tars, parts.len(), "every part stored once");
    // Tables that are not MergeTree go as Native, and the manifest says so.
    assert!(env
        .repo()
        .join("analytics")
        .join(&id)
        .join("analytics.audit.native.gz")
        .exists());
    assert!(!env
        .repo()
        .join("analytics")
        .join(&id)
        .join("analytics.events.native.gz")
        .exists());
    let rows = |t: &str| {
        m["database"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["schema"] == "analytics" && x["name"] == t)
            .map(|x| x["rows"].as_u64().unwrap())
    };
    assert_eq!(rows("events"), Some(20000));
    assert_eq!(rows("audit"), Some(700));

    let (code, _, err) = env.run(&["verify", "analytics"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("part tar whole"), "{err}");

    drop_all(&ch);
    let (code, out, err) = env.run(&["restore", "analytics", "latest", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(fingerprints(&ch), before);
    assert_eq!(
        ch.q("SELECT count() FROM analytics.recent"),
        ch.q("SELECT count() FROM analytics.events WHERE day > '2026-11-01'")
    );
    // The parts went through detached/ and nothing is left there.
    for t in ["events", "%2Einner%2Edaily", "users"] {
        let d = ch
            .data_path()
            .join("data/analytics")
            .join(t)
            .join("detached");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{}", d.display());
    }

    // One table into another database, and a non-empty table is refused.
    let (code, _, err) = env.run(&[
        "restore",
        "analytics",
        "--table",
        "analytics.events",
        "--yes",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists and holds rows"), "{err}");
    env.ok(&[
        "restore",
        "analytics",
        "--table",
        "analytics.events",
        "--to-database",
        "copy",
        "--yes",
    ]);
    assert_eq!(
        ch.fingerprint("copy", "events"),
        ch.fingerprint("analytics", "events")
    );

    // --clean replaces a table that holds rows (and extra rows go away).
    let events = ch.fingerprint("analytics", "events");
    ch.q("INSERT INTO analytics.events (day, id) VALUES ('2026-09-02', 999999999)");
    env.ok(&[
        "restore",
        "analytics",
        "--table",
        "analytics.events",
        "--clean",
        "--yes",
    ]);
    assert_eq!(ch.fingerprint("analytics", "events"), events);

    // Part-level backups have no log archive: pitr says to use restore.
    let (code, _, err) = env.run(&[
        "pitr",
        "analytics",
        "--data-dir",
        "/tmp/x",
        "--target-immediate",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use `backup restore`"), "{err}");

    // A test-restore of a part-level backup attaches the parts in scratch databases.
    let (code, out, err) = env.run(&["test-restore", "analytics", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(check(&r, "row_counts")["passed"], true, "{r:#}");
    assert!(!databases(&ch)
        .iter()
        .any(|d| d.starts_with("backup_test_restore_")));
}

#[test]
fn a_second_part_level_backup_stores_only_new_parts_and_prune_keeps_what_it_needs() {
    let ch = ClickHouseServer::start();
    load(&ch);
    // Background merges would replace parts between the two backups at random.
    ch.q("SYSTEM STOP MERGES");
    let env = Env::new();
    physical(&env, &ch, "");
    let first = run_id(&env);
    ch.q("INSERT INTO analytics.events SELECT toDate('2026-11-20'), 100000 + number, 'late', [], 1 FROM numbers(200)");
    let second = run_id(&env);
    assert!(shadow_left(&ch).is_empty());
    let (m1, m2) = (manifest(&env, &first), manifest(&env, &second));
    assert_eq!(m2["depends_on"], serde_json::json!([first]));
    let parts2 = parts_of(&m2);
    let own: Vec<&serde_json::Value> = parts2.iter().filter(|p| p["home"].is_null()).collect();
    let names1: Vec<String> = parts_of(&m1)
        .iter()
        .map(|p| format!("{}.{}", p["table"], p["name"]))
        .collect();
    // Only the new part of events (and the MV's new inner part) were uploaded.
    assert!(!own.is_empty() && own.len() <= 2, "{own:#?}");
    for p in &own {
        assert!(
            !names1.contains(&format!("{}.{}", p["table"], p["name"])),
            "{p}"
        );
    }
    let tar_bytes = |m: &serde_json::Value| -> u64 {
        m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"].as_str().unwrap().ends_with(".tar"))
            .map(|a| a["size_bytes"].as_u64().unwrap())
            .sum()
    };
    assert!(
        tar_bytes(&m2) * 5 < tar_bytes(&m1),
        "second {} vs first {}",
        tar_bytes(&m2),
        tar_bytes(&m1)
    );

    // The second backup restores whole, reading the first one's parts.
    let want = fingerprints(&ch);
    drop_all(&ch);
    env.ok(&["restore", "analytics", &second, "--yes"]);
    assert_eq!(fingerprints(&ch), want);

    // Retention keeps the first backup while the second needs it.
    env.write_config(&format!(
        "{}\n[storages.local.retention]\nkeep_last = 1\nmin_age = \"0s\"\n",
        std::fs::read_to_string(env.path().join("backup.toml")).unwrap()
    ));
    let (code, out, err) = env.run(&["prune", "analytics", "--yes", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(env
        .repo()
        .join("analytics")
        .join(&first)
        .join("manifest.json")
        .exists());
    assert!(out.contains(&format!("needed by {second}")), "{out}");

    // verify says so when the backup a kept one depends on is gone.
    let (code, _, err) = env.run(&["verify", "analytics", &second]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("depends on {first}: present")),
        "{err}"
    );
    std::fs::remove_dir_all(env.repo().join("analytics").join(&first)).unwrap();
    let (code, _, err) = env.run(&["verify", "analytics", &second]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("depends on backup {first}, which is missing")),
        "{err}"
    );
}

#[test]
fn part_level_backups_refuse_a_data_path_they_cannot_read_and_always_remove_the_shadow() {
    let ch = ClickHouseServer::start();
    load(&ch);
    let env = Env::new();
    physical(&env, &ch, "data_path = \"/nonexistent/clickhouse\"");
    let (code, _, err) = env.run(&["run", "analytics"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent/clickhouse is not readable")
            && err.contains("kind = \"logical\" works from any host"),
        "{err}"
    );
    assert!(shadow_left(&ch).is_empty());

    // A run that fails after the tables were frozen (its storage cannot be written)
    // removes the shadow increments all the same.
    physical(&env, &ch, "");
    std::fs::create_dir_all(env.repo()).unwrap();
    std::fs::write(env.repo().join("analytics"), b"not a folder").unwrap();
    let (code, _, err) = env.run(&["run", "analytics"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        ch.data_path().join("shadow").exists(),
        "the tables were frozen before the run failed: {err}"
    );
    assert!(shadow_left(&ch).is_empty(), "{:?}\n{err}", shadow_left(&ch));
}

/// kind = "native" needs ClickHouse 22.8+ (BACKUP ... TO S3). Only 18.16 runs here, so
/// this is the one part of native mode tested against a real server: the refusal,
/// before any storage is touched. The SQL itself was never run against a real server.
#[test]
fn native_mode_refuses_this_18_16_server_in_one_line() {
    let ch = ClickHouseServer::start();
    load(&ch);
    let env = Env::new();
    env.write_config(&format!(
        r#"
[storages.s3]
type = "s3"
bucket = "ch-backups"
endpoint = "http://127.0.0.1:1"
region = "us-east-1"

[targets.analytics]
engine = "clickhouse"
kind = "native"
url = "{}"
storages = ["s3"]
"#,
        ch.url()
    ));
    let (code, _, err) = env.run(&["run", "analytics"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("ClickHouse 18.16.1")
            && err.contains("needs ClickHouse 22.8 or later")
            && err.contains("kind = \"logical\"")
            && err.contains("kind = \"physical\""),
        "{err}"
    );
}

#[test]
fn test_restore_of_a_part_level_backup_on_test_restore_url() {
    let ch = ClickHouseServer::start();
    let other = ClickHouseServer::start();
    load(&ch);
    let env = Env::new();
    physical(
        &env,
        &ch,
        &format!(
            "[targets.analytics.test_restore]\nurl = \"{}\"\n",
            other.url()
        ),
    );
    let (before, other_before) = (databases(&ch), databases(&other));
    run_id(&env);
    let (code, out, err) = env.run(&["test-restore", "analytics", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        r["scratch"].as_str().unwrap().contains(&other.url()),
        "{r:#}"
    );
    assert_eq!(check(&r, "row_counts")["figures"]["tables"], 5, "{r:#}");
    // The parts were attached on the other server (its own data path, on this host).
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(databases(&ch), before);
    assert_eq!(databases(&other), other_before);
}

#[test]
fn sigterm_during_a_part_level_backup_removes_the_shadow_and_lists_nothing() {
    let ch = ClickHouseServer::start();
    ch.q("CREATE DATABASE analytics");
    ch.q("CREATE TABLE analytics.big (id UInt64, s String) ENGINE = MergeTree ORDER BY id");
    // About 70 MB of parts: streaming them takes long enough to be interrupted.
    ch.q("INSERT INTO analytics.big SELECT number, toString(cityHash64(number)) FROM numbers(3000000)");
    let env = Env::new();
    physical(&env, &ch, "");
    // The signal must land between FREEZE and the end of the run; a run that finished
    // first (a fast machine) is tried again.
    let mut finished = 0;
    for _ in 0..5 {
        let mut child = env
            .std_cmd()
            .args(["run", "analytics"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while shadow_left(&ch).is_empty() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(0) {
            finished += 1;
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + 15), "{err}");
        assert!(shadow_left(&ch).is_empty(), "{:?}\n{err}", shadow_left(&ch));
        let list: serde_json::Value =
            serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
        assert_eq!(list.as_array().unwrap().len(), finished, "{err}");
        return;
    }
    panic!("every run finished before the signal");
}
