//! The corruption matrix: every artifact kind damaged three ways (a byte flipped, the
//! file cut short, the file gone). `verify` exits 3 naming the artifact, and a restore
//! refuses (exit 3) before it touches the database. Table-driven, one server per
//! engine: each damage is undone before the next, and the backup verifies again at the
//! end. Damage that keeps the stored checksums right (only the format's own checks can
//! see it) is in tests/redis.rs (RDB CRC64) and tests/mongodb.rs (archive CRC-64); the
//! MongoDB archive's three cases are there too, where its stand-in tools live.
mod common;
use common::clickhouse_server::{manifest, ClickHouseServer};
use common::redis_server::RedisServer;
use common::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip,
    Truncate,
    Missing,
}

const ALL: [Damage; 3] = [Damage::Flip, Damage::Truncate, Damage::Missing];

fn apply(p: &Path, d: Damage) {
    let mut b = std::fs::read(p).unwrap();
    match d {
        Damage::Flip => {
            let i = b.len() / 2;
            b[i] ^= 0x55;
            std::fs::write(p, b).unwrap();
        }
        Damage::Truncate => std::fs::write(p, &b[..b.len() * 2 / 3]).unwrap(),
        Damage::Missing => std::fs::remove_file(p).unwrap(),
    }
}

/// For each file and each damage: `verify ARGS` exits 3 and names the file, then
/// `refused` checks the restore's refusal; the file is put back after each. Once all
/// are done the backup verifies again.
fn matrix(env: &Env, verify: &[&str], files: &[PathBuf], refused: impl Fn(&Path, Damage)) {
    let mut args = vec!["verify"];
    args.extend_from_slice(verify);
    env.ok(&args);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let name = name.trim_end_matches(".gz");
        let good = std::fs::read(f).unwrap();
        for d in ALL {
            apply(f, d);
            let (code, out, err) = env.run(&args);
            assert_eq!(code, 3, "{name} {d:?}: {out}{err}");
            assert!(
                format!("{out}{err}").contains(name),
                "{name} {d:?}: {out}{err}"
            );
            refused(f, d);
            std::fs::write(f, &good).unwrap();
        }
    }
    env.ok(&args);
}

fn refused_untouched(err: &str, what: &str) {
    assert!(err.contains("was not touched"), "{what}: {err}");
}

/// PostgreSQL logical: a plain dump (dump.sql.gz) and a custom archive (dump.pgdump).
/// A refused restore creates no database.
#[test]
fn postgres_logical_dumps() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    for format in ["plain", "custom"] {
        env.write_config(&local_config(&env.repo(), &pg.url("app"), format));
        let id = env.ok(&["run", "pg"]).trim().to_string();
        let file = only_artifact(&env.repo(), &id);
        matrix(&env, &["pg", &id], &[file], |_, d| {
            let (code, _, err) = env.run(&["restore", "pg", &id, "--to-database", "copy", "--yes"]);
            assert_eq!(code, 3, "{format} {d:?}: {err}");
            refused_untouched(&err, &format!("{format} {d:?}"));
            assert_eq!(
                pg.sql(
                    "postgres",
                    "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
                ),
                "0"
            );
        });
    }
}

/// PostgreSQL physical: the base backup (base.tar.gz) and the first WAL segment it
/// needs. pitr refuses a damaged base backup before it writes into the data directory.
#[test]
fn postgres_base_backup_and_wal_segment() {
    use common::physical::{archive_now, archiving_cluster_with};
    let env = Env::new();
    std::fs::create_dir_all(env.repo().join("pg/wal")).unwrap();
    let repo = env.repo();
    let pg = archiving_cluster_with(&env, move |url| {
        format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.pg]\nengine = \"postgres\"\nkind = \"physical\"\nurl = \"{url}\"\nstorages = [\"local\"]\ncompression_level = 1\n",
            repo.display()
        )
    });
    let id = env.ok(&["run", "pg"]).trim().to_string();
    archive_now(&pg);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join("pg").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let first = m["wal"]["start_segment"].as_str().unwrap();
    let base = env.repo().join("pg").join(&id).join("base.tar.gz");
    let wal = env
        .repo()
        .join("pg/wal")
        .join(&first[..8])
        .join(format!("{first}.gz"));
    matrix(&env, &["pg"], &[base.clone(), wal], |f, d| {
        if *f != base {
            return;
        }
        let dir = env.path().join("restored");
        let (code, _, err) = env.run(&[
            "pitr",
            "pg",
            "--target-immediate",
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        // A missing base backup is an error naming it (exit 1: pitr reports the
        // storage's answer), damage is exit 3.
        let want = if matches!(d, Damage::Missing) { 1 } else { 3 };
        assert_eq!(code, want, "{d:?}: {err}");
        assert!(err.contains("base.tar.gz"), "{d:?}: {err}");
        assert!(!dir.join("PG_VERSION").exists(), "{d:?}");
    });
}

/// Redis: dump.rdb.gz (the only form a Redis backup takes). A refused restore leaves
/// the (empty) destination server empty.
#[test]
fn redis_rdb() {
    let src = RedisServer::start();
    src.cmd(&[b"SET", b"a", &[b'z'; 5000]]);
    src.cmd(&[b"RPUSH", b"l", b"1", b"2"]);
    let dest = RedisServer::start();
    let env = Env::new();
    let write = |url: &str| {
        env.write_config(&format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.cache]\nengine = \"redis\"\nurl = \"{url}\"\nstorages = [\"local\"]\n",
            env.repo().display()
        ))
    };
    write(&src.url());
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let file = env.repo().join("cache").join(&id).join("dump.rdb.gz");
    write(&dest.url());
    matrix(&env, &["cache", &id], &[file], |_, d| {
        let (code, _, err) = env.run(&["restore", "cache", &id, "--yes"]);
        assert_eq!(code, 3, "{d:?}: {err}");
        refused_untouched(&err, &format!("{d:?}"));
        assert_eq!(dest.cmd(&[b"DBSIZE"]).int(), 0);
    });
}

/// ClickHouse: a logical backup's Native artifact and a part-level backup's part tar.
/// A refused restore creates no database.
#[test]
fn clickhouse_native_artifact_and_part() {
    let ch = ClickHouseServer::start();
    for sql in [
        "CREATE DATABASE analytics",
        "CREATE TABLE analytics.events (day Date, id UInt64, user String) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (day, id)",
        "INSERT INTO analytics.events SELECT toDate('2026-09-01') + number % 40, number, concat('u', toString(number % 97)) FROM numbers(5000)",
    ] {
        ch.q(sql);
    }
    let env = Env::new();
    for kind in ["logical", "physical"] {
        common::clickhouse_server::config(&env, &ch.url(), &format!("kind = \"{kind}\""));
        let id = env.ok(&["run", "analytics"]).trim().to_string();
        let m = manifest(&env, &id);
        let name = m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .find(|n| n.starts_with("analytics.events"))
            .unwrap_or_else(|| panic!("no events artifact: {m}"));
        let file = env.repo().join("analytics").join(&id).join(&name);
        matrix(&env, &["analytics", &id], &[file], |_, d| {
            let (code, _, err) = env.run(&[
                "restore",
                "analytics",
                &id,
                "--to-database",
                "copy",
                "--yes",
            ]);
            assert_eq!(code, 3, "{kind} {d:?}: {err}");
            refused_untouched(&err, &format!("{kind} {d:?}"));
            assert_eq!(
                ch.q("SELECT count() FROM system.databases WHERE name = 'copy'"),
                "0"
            );
        });
    }
}
