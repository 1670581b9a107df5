//! ClickHouse against real `clickhouse-server` 18.16 instances (each on free ports in
//! a temp dir): logical backups per table over HTTP, verify with the Native reader,
//! restores in dependency order (whole, `--table`, `--to-database`), the standard
//! tools' restore of one artifact, and the failures: a query the server stops after
//! some blocks, a server killed mid-backup, a corrupted byte.
mod common;
use common::clickhouse_server::{config, manifest, ClickHouseServer, SECRET_PASSWORD};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Two databases; MergeTree with partitions, ReplacingMergeTree, Log, TinyLog and
/// Memory tables; many column types (NaN and infinities, strings with zero bytes and
/// invalid UTF-8); an MV with an inner table, an MV with TO, a view, and engines
/// without local data (Null, URL).
fn load_dataset(ch: &ClickHouseServer) {
    for sql in [
        "CREATE DATABASE analytics",
        "CREATE DATABASE staging",
        "CREATE TABLE analytics.events (day Date, id UInt64, ts DateTime, user Nullable(String), tags Array(String), price Decimal(18, 4), ratio Float64, code FixedString(3), kind Enum8('click' = 1, 'view' = 2), uid UUID, pair Tuple(UInt8, String), scores Array(Nullable(Float32)), blob String) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (day, id)",
        "CREATE MATERIALIZED VIEW analytics.daily ENGINE = SummingMergeTree ORDER BY day AS SELECT day, count() AS n FROM analytics.events GROUP BY day",
        "CREATE TABLE analytics.by_kind (kind Enum8('click' = 1, 'view' = 2), n UInt64) ENGINE = SummingMergeTree ORDER BY kind",
        "CREATE MATERIALIZED VIEW analytics.by_kind_mv TO analytics.by_kind AS SELECT kind, count() AS n FROM analytics.events GROUP BY kind",
        "INSERT INTO analytics.events SELECT toDate('2026-09-01') + number % 90, number, toDateTime('2026-09-01 00:00:00') + number * 7, if(number % 5 = 0, NULL, concat('user-', toString(number % 97))), arrayMap(x -> toString(x), range(number % 4)), toDecimal64(number / 7, 4), number / 3, substring(toString(number * 131), 1, 3), if(number % 3 = 0, 'click', 'view'), generateUUIDv4(), (toUInt8(number % 200), toString(number)), [toFloat32(number), NULL], concat('b', toString(number)) FROM numbers(30000)",
        "INSERT INTO analytics.events VALUES ('2026-10-05', 1000001, '2026-10-05 01:02:03', 'zero\\0byte', ['a\\0b', ''], -1.5, nan, 'ab\\0', 'view', '61f0c404-5cb3-11e7-907b-a6006ad3dba0', (1, 'x\\0y'), [nan, inf, -inf, NULL], 'bad \\xFF\\xFE utf8'), ('2026-10-06', 1000002, '2026-10-06 00:00:00', NULL, [], 0, inf, 'xyz', 'click', '00000000-0000-0000-0000-000000000000', (0, ''), [], ''), ('2026-10-07', 1000003, '2026-10-07 00:00:00', '', ['\\xC3\\x28'], 99999999999999.9999, -inf, '\\xFF\\xFF\\xFF', 'click', '00000000-0000-0000-0000-000000000001', (255, '\\x80'), [-0.0], unhex('00FF00'))",
        "CREATE TABLE analytics.users (id UInt32, name String, ver UInt32) ENGINE = ReplacingMergeTree(ver) ORDER BY id",
        "INSERT INTO analytics.users SELECT number, concat('name-', toString(number)), 1 FROM numbers(500)",
        "INSERT INTO analytics.users SELECT number, concat('renamed-', toString(number)), 2 FROM numbers(100)",
        "CREATE TABLE analytics.audit (at DateTime, what String) ENGINE = Log",
        "INSERT INTO analytics.audit SELECT toDateTime('2026-01-01 00:00:00') + number, concat('event ', toString(number)) FROM numbers(1000)",
        "CREATE TABLE analytics.cache (k String, v Nullable(Int64)) ENGINE = Memory",
        "INSERT INTO analytics.cache VALUES ('a', 1), ('b', NULL), ('c\\0', -9223372036854775808)",
        "CREATE VIEW analytics.recent AS SELECT * FROM analytics.events WHERE day > '2026-10-01'",
        "CREATE TABLE analytics.sink (x UInt8) ENGINE = Null",
        "CREATE TABLE analytics.remote (x UInt8) ENGINE = URL('http://127.0.0.1:1/data.csv', CSV)",
        "CREATE TABLE staging.raw (line String) ENGINE = TinyLog",
        "INSERT INTO staging.raw SELECT concat('line ', toString(number)) FROM numbers(2000)",
        "CREATE TABLE staging.empty (x UInt8) ENGINE = MergeTree ORDER BY x",
    ] {
        ch.q(sql);
    }
}

/// Tables with data, as `db.name`.
const DATA: &[(&str, &str)] = &[
    ("analytics", "events"),
    ("analytics", ".inner.daily"),
    ("analytics", "by_kind"),
    ("analytics", "users"),
    ("analytics", "audit"),
    ("analytics", "cache"),
    ("staging", "raw"),
    ("staging", "empty"),
];

fn fingerprints(ch: &ClickHouseServer) -> Vec<String> {
    DATA.iter()
        .map(|(d, t)| format!("{d}.{t}: {}", ch.fingerprint(d, t)))
        .collect()
}

fn artifact(env: &Env, id: &str, name: &str) -> PathBuf {
    env.repo().join("analytics").join(id).join(name)
}

fn flip_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x55;
    std::fs::write(p, b).unwrap();
}

#[test]
fn round_trip_every_table_kind_and_type_without_doubling_mv_data() {
    let ch = ClickHouseServer::start();
    load_dataset(&ch);
    let before = fingerprints(&ch);
    let env = Env::new();
    config(&env, &ch.url(), "");

    let out = env.ok(&["run", "analytics", "--json"]);
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let m = manifest(&env, &id);
    let rows = |db: &str, t: &str| {
        m["database"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["schema"] == db && x["name"] == t)
            .map(|x| x["rows"].as_u64().unwrap())
    };
    assert_eq!(rows("analytics", "events"), Some(30003));
    assert_eq!(rows("analytics", "users"), Some(600));
    assert_eq!(rows("staging", "empty"), Some(0));
    let objs = m["database"]["extra"]["clickhouse"].as_array().unwrap();
    let kind = |n: &str| {
        objs.iter()
            .find(|o| o["name"] == n)
            .map(|o| o["kind"].as_str().unwrap().to_string())
    };
    assert_eq!(kind("sink").as_deref(), Some("nodata"));
    assert_eq!(kind("remote").as_deref(), Some("nodata"));
    assert_eq!(kind("recent").as_deref(), Some("view"));
    assert_eq!(kind("daily").as_deref(), Some("mv"));
    assert_eq!(kind(".inner.daily").as_deref(), Some("inner"));
    assert!(artifact(&env, &id, "analytics.events.native.gz").exists());
    assert!(artifact(&env, &id, "analytics.events.sql").exists());
    assert!(artifact(&env, &id, "analytics.sql").exists());
    assert!(!artifact(&env, &id, "analytics.sink.native.gz").exists());

    let (code, _, err) = env.run(&["verify", "analytics"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Native stream whole") && err.contains("30003 rows"),
        "{err}"
    );
    let list = env.ok(&["list", "analytics"]);
    assert!(list.contains(&id), "{list}");

    let recent = ch.q("SELECT count() FROM analytics.recent");
    ch.q("DROP DATABASE analytics");
    ch.q("DROP DATABASE staging");
    let (code, _, err) = env.run(&["restore", "analytics", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("row counts of 8 table(s) match"), "{err}");
    assert_eq!(fingerprints(&ch), before, "MV data doubled or rows changed");
    assert_eq!(ch.q("SELECT count() FROM analytics.recent"), recent);
    assert_eq!(
        ch.q("SELECT engine FROM system.tables WHERE database = 'analytics' AND name = 'remote'"),
        "URL"
    );

    // The restored MVs are live: a new row reaches both.
    let n = |sql: &str| ch.q(sql).parse::<u64>().unwrap();
    let daily = n("SELECT sum(n) FROM analytics.daily");
    let kinds = n("SELECT sum(n) FROM analytics.by_kind");
    ch.q("INSERT INTO analytics.events (day, id, kind) VALUES ('2026-12-01', 5, 'click')");
    assert_eq!(n("SELECT sum(n) FROM analytics.daily"), daily + 1);
    assert_eq!(n("SELECT sum(n) FROM analytics.by_kind"), kinds + 1);

    // Existing data is not mixed with the backup's without --clean.
    let (code, _, err) = env.run(&["restore", "analytics", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already exists") && err.contains("--clean"),
        "{err}"
    );
    let (code, _, err) = env.run(&["restore", "analytics", "--clean", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fingerprints(&ch), before);
}

#[test]
fn partial_restore_reads_only_the_tables_asked_for_and_to_database() {
    let ch = ClickHouseServer::start();
    load_dataset(&ch);
    let env = Env::new();
    config(&env, &ch.url(), "include_tables = [\"analytics.*\"]");
    let id = env.ok(&["run", "analytics"]).trim().to_string();
    let m = manifest(&env, &id);
    assert!(
        !m.to_string().contains("staging"),
        "include_tables left staging out"
    );
    let users = ch.fingerprint("analytics", "users");

    // A damaged events artifact does not stop a restore that does not need it.
    flip_byte(&artifact(&env, &id, "analytics.events.native.gz"));
    let (code, _, err) = env.run(&[
        "restore",
        "analytics",
        "--table",
        "analytics.users",
        "--to-database",
        "copy",
        "--yes",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("verify 3 of"), "{err}");
    assert_eq!(ch.fingerprint("copy", "users"), users);
    assert_eq!(
        ch.q("SELECT count() FROM system.tables WHERE database = 'copy'"),
        "1"
    );

    // The one that needs it is refused before the server is touched.
    let (code, _, err) = env.run(&[
        "restore",
        "analytics",
        "--table",
        "analytics.events",
        "--to-database",
        "copy2",
        "--yes",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the database was not touched"), "{err}");
    assert_eq!(
        ch.q("SELECT count() FROM system.databases WHERE name = 'copy2'"),
        "0"
    );
    let (code, _, _) = env.run(&["verify", "analytics"]);
    assert_eq!(code, 3);

    // An unknown table is one line, exit 2.
    let (code, _, err) = env.run(&["restore", "analytics", "--table", "nope", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no such table"), "{err}");
}

#[test]
fn an_mv_restored_into_another_database_reads_from_there() {
    let ch = ClickHouseServer::start();
    load_dataset(&ch);
    let env = Env::new();
    config(&env, &ch.url(), "databases = [\"analytics\"]");
    env.ok(&["run", "analytics"]);
    let inner = ch.fingerprint("analytics", ".inner.daily");
    let events = ch.fingerprint("analytics", "events");
    let (code, _, err) = env.run(&[
        "restore",
        "analytics",
        "--table",
        "analytics.events",
        "--table",
        "analytics.daily",
        "--to-database",
        "copy",
        "--yes",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ch.fingerprint("copy", "events"), events);
    assert_eq!(
        ch.fingerprint("copy", ".inner.daily"),
        inner,
        "MV data doubled"
    );
    ch.q("INSERT INTO copy.events (day, id) VALUES ('2030-01-01', 1)");
    assert_eq!(
        ch.q("SELECT sum(n) FROM copy.daily WHERE day = '2030-01-01'"),
        "1"
    );
    assert_eq!(
        ch.q("SELECT count() FROM analytics.daily WHERE day = '2030-01-01'"),
        "0"
    );
}

#[test]
fn standard_tools_restore_one_artifact() {
    let ch = ClickHouseServer::start();
    load_dataset(&ch);
    let env = Env::new();
    config(&env, &ch.url(), "");
    let id = env.ok(&["run", "analytics"]).trim().to_string();
    let events = ch.fingerprint("analytics", "events");
    ch.q("DROP TABLE analytics.daily");
    ch.q("DROP TABLE analytics.by_kind_mv");
    ch.q("DROP TABLE analytics.recent");
    ch.q("DROP TABLE analytics.events");
    // clickhouse-client --query "$(cat analytics.events.sql)"; gunzip | clickhouse-client INSERT.
    let ddl = std::fs::read_to_string(artifact(&env, &id, "analytics.events.sql")).unwrap();
    let st = ch.client().arg("--query").arg(&ddl).status().unwrap();
    assert!(st.success());
    let gz = std::fs::File::open(artifact(&env, &id, "analytics.events.native.gz")).unwrap();
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .stdin(gz)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = ch
        .client()
        .args(["--query", "INSERT INTO analytics.events FORMAT Native"])
        .stdin(gunzip.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(st.success() && gunzip.wait().unwrap().success());
    assert_eq!(ch.fingerprint("analytics", "events"), events);
}

fn nothing_kept(env: &Env) {
    let (code, out, _) = env.run(&["list", "analytics", "--json"]);
    assert_eq!(code, 0);
    assert!(!out.contains("\"id\""), "a failed backup is listed: {out}");
    assert!(
        files_under(&env.repo()).is_empty(),
        "left behind: {:?}",
        files_under(&env.repo())
    );
}

#[test]
fn a_query_the_server_stops_after_some_blocks_fails_the_backup() {
    let ch = ClickHouseServer::start();
    // A Log table: the limit is checked block by block as rows are read (MergeTree
    // would refuse up front from its index), and rows wide enough that the server has
    // sent status 200 and several blocks before it appends the error.
    ch.q("CREATE DATABASE big");
    ch.q("CREATE TABLE big.t (x UInt64, s String) ENGINE = Log");
    ch.q(&format!(
        "INSERT INTO big.t SELECT number, concat(toString(number), '{}') FROM numbers(100000)",
        "a".repeat(100)
    ));
    let env = Env::new();
    config(&env, &ch.url(), "user = \"limited\"\ndatabases = [\"big\"]");
    let (code, _, err) = env.run(&["run", "analytics"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the server reported an error after") && err.contains("Limit for rows"),
        "{err}"
    );
    assert!(err.contains("nothing was kept"), "{err}");
    nothing_kept(&env);
}

#[test]
fn a_server_killed_mid_backup_lists_nothing() {
    let mut ch = ClickHouseServer::start();
    ch.q("CREATE DATABASE big");
    ch.q("CREATE TABLE big.t (x UInt64, s String) ENGINE = MergeTree ORDER BY x");
    ch.q("INSERT INTO big.t SELECT number, concat(toString(cityHash64(number)), toString(number)) FROM numbers(10000000)");
    let env = Env::new();
    config(&env, &ch.url(), "databases = [\"big\"]");
    let child = env
        .std_cmd()
        .args(["run", "analytics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the data stream is being stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !entries_under(&env.repo())
        .iter()
        .any(|p| p.to_string_lossy().contains("big.t.native"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ch.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing was kept"), "{err}");
    nothing_kept(&env);
}

#[test]
fn the_password_goes_in_a_header_never_in_argv_logs_or_manifests() {
    let ch = ClickHouseServer::start();
    ch.q("CREATE DATABASE d");
    ch.q("CREATE TABLE d.t (x UInt8) ENGINE = Log");
    ch.q("INSERT INTO d.t VALUES (1)");
    let env = Env::new();
    let pw = env.path().join("pw");
    std::fs::write(&pw, format!("{SECRET_PASSWORD}\n")).unwrap();
    config(
        &env,
        &ch.url(),
        &format!("user = \"secret\"\npassword_file = \"{}\"", pw.display()),
    );
    let (code, out, err) = env.run(&["run", "analytics", "--json"]);
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = std::fs::read_to_string(artifact(&env, &id, "manifest.json")).unwrap();
    for text in [&out, &err, &m] {
        assert!(!text.contains(SECRET_PASSWORD));
    }
    // In the URL it is moved out at once, and a wrong one is named without showing it.
    config(
        &env,
        &format!("http://secret:wrong-pw@127.0.0.1:{}", ch.http_port),
        "",
    );
    let (code, _, err) = env.run(&["run", "analytics"]);
    assert_eq!(code, 1);
    assert!(!err.contains("wrong-pw"), "{err}");
    assert!(err.contains("password"), "{err}");
    let out = env
        .cmd()
        .env("CLICKHOUSE_PASSWORD", SECRET_PASSWORD)
        .args(["run", "analytics"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "CLICKHOUSE_PASSWORD wins over the URL's: {err}"
    );
}

#[test]
fn config_refusals_are_one_line_exit_2() {
    let env = Env::new();
    for (extra, key) in [
        ("kind = \"incremental\"", "targets.analytics.kind"),
        ("data_path = \"/x\"", "targets.analytics.data_path"),
        ("databse = [\"x\"]", "targets.analytics.databse"),
        ("databases = []", "targets.analytics.databases"),
        ("tls_ca_file = \"/x.pem\"", "targets.analytics.tls_ca_file"),
    ] {
        config(&env, "http://127.0.0.1:1", extra);
        let (code, _, err) = env.run(&["run", "analytics"]);
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(key), "{extra}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    config(&env, "http://user:pw@127.0.0.1:1/?password=zz", "");
    let (code, _, err) = env.run(&["run", "analytics"]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("zz") && !err.contains(":pw@"), "{err}");
}
