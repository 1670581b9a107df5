//! The WAL archive's `compression` (zstd segments next to older gzip ones, PITR across
//! both), `async = true` under a burst of segments, and `archive_queue_max` dropping WAL
//! (loudly) rather than filling pg_wal, all against real PostgreSQL clusters archiving
//! through `backup wal-push`.

mod common;

use common::physical::{archive_now, bin, open_up, pitr, Restored};
use common::{Env, Pg};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A physical target `pg` in `env`'s repo; `extra` goes into the target table. The
/// state folder is shared with the server's OS user (it archives with async markers).
fn config(env: &Env, url: &str, repo: &Path, extra: &str) -> String {
    format!(
        r#"
state_dir = "{}"

[storages.local]
type = "local"
path = "{}"

[targets.pg]
engine = "postgres"
kind = "physical"
url = "{url}"
storages = ["local"]
compression_level = 1
{extra}
"#,
        env.path().join("state").display(),
        repo.display()
    )
}

/// A cluster archiving into `env`'s repo with `extra` target keys; `initdb` arguments.
fn cluster(env: &Env, initdb: &[&str], extra: &str) -> Pg {
    let repo = env.repo();
    for d in ["state/locks", "state/wal-spool", "repo/pg/wal"] {
        std::fs::create_dir_all(env.path().join(d)).unwrap();
    }
    let cfg = env.write_config(&config(
        env,
        "postgresql://postgres@127.0.0.1:1/postgres",
        &repo,
        extra,
    ));
    open_up(env.path());
    let archive = format!(
        "archive_command='{} --config {} wal-push pg %p'",
        bin().display(),
        cfg.display()
    );
    let pg = Pg::start_initdb(
        initdb,
        &[
            "wal_level=replica",
            "archive_mode=on",
            &archive,
            "max_wal_senders=5",
        ],
    );
    env.write_config(&config(env, &pg.url("postgres"), &repo, extra));
    open_up(env.path());
    pg
}

fn now(pg: &Pg) -> String {
    pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

fn archived(repo: &Path, ext: &str) -> Vec<String> {
    let dir = repo.join("pg/wal/00000001");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 + ext.len() && n.ends_with(ext))
        .collect();
    v.sort();
    v
}

fn rows(r: &Restored) -> String {
    r.sql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t")
}

#[test]
fn zstd_and_gzip_segments_mix_in_one_archive_and_pitr_reads_both() {
    let env = Env::new();
    let pg = cluster(&env, &[], "");
    pg.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    env.ok(&["run", "pg"]);
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("postgres", "INSERT INTO t VALUES (1)");
    archive_now(&pg);
    let gz = archived(&env.repo(), ".gz");
    assert!(!gz.is_empty());

    // The same target switches to zstd: new segments are .zst, old .gz stay readable.
    let repo = env.repo();
    env.write_config(&config(
        &env,
        &pg.url("postgres"),
        &repo,
        "compression = \"zstd\"",
    ));
    open_up(env.path());
    pg.sql("postgres", "INSERT INTO t VALUES (2)");
    archive_now(&pg);
    pg.sql("postgres", "INSERT INTO t VALUES (3)");
    let goal = now(&pg);
    pg.sql("postgres", "INSERT INTO t VALUES (4)");
    archive_now(&pg);
    let zst = archived(&env.repo(), ".zst");
    assert!(zst.len() >= 2, "{zst:?}");
    // Readable without this tool: `zstd -d` skips the checksum frame.
    let one = env.repo().join("pg/wal/00000001").join(&zst[0]);
    let out = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(&one)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 16 * 1024 * 1024);

    let out = env.ok(&["verify", "pg"]);
    assert!(out.contains("OK   pg wal local"), "{out}");
    // `check` waits for the forced segment under its .zst name.
    let out = env.ok(&["check", "pg"]);
    assert!(out.contains("arrived on `local`"), "{out}");
    // A re-push of a segment archived before the switch finds its .gz: no second copy.
    let first = gz.last().unwrap().trim_end_matches(".gz").to_string();
    let seg = env.path().join("again").join(&first);
    std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
    env.ok(&["wal-fetch", "pg", &first, seg.to_str().unwrap()]);
    let out = env.ok(&["wal-push", "pg", seg.to_str().unwrap()]);
    let _ = out;
    assert!(!env
        .repo()
        .join("pg/wal/00000001")
        .join(format!("{first}.zst"))
        .exists());

    let (r, _) = pitr(&env, "r", &["--target-time", &goal]);
    assert_eq!(rows(&r), "1,2,3");
}

/// Waits until the server reports `seg` archived; returns pg_stat_archiver's failures.
fn wait_archived(pg: &Pg, seg: &str, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        let last = pg.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last.as_str() >= seg {
            return pg.sql("postgres", "SELECT failed_count FROM pg_stat_archiver");
        }
        assert!(
            t.elapsed() < limit,
            "{seg} not archived (last {last}); server log: {}",
            server_log(pg)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server_log(pg: &Pg) -> String {
    std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
}

/// `n` segments as fast as the server can switch them, each with a row in it.
fn burst(pg: &Pg, n: u32) -> String {
    pg.sql(
        "postgres",
        &format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP INSERT INTO t VALUES (i); PERFORM pg_switch_wal(); END LOOP; END $$"
        ),
    );
    pg.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")
}

#[test]
fn async_wal_push_keeps_up_with_a_burst_of_200_segments() {
    let env = Env::new();
    // 1 MiB segments: 200 of them stay small on a CI disk.
    let pg = cluster(&env, &["--wal-segsize=1"], "async = true\narchive_jobs = 4");
    pg.sql("postgres", "CREATE TABLE t (id int)");
    env.ok(&["run", "pg"]);
    let started = Instant::now();
    let last = burst(&pg, 200);
    // The segment being written is not archived yet; the one before it must be.
    pg.sql("postgres", "SELECT pg_switch_wal()");
    let failed = wait_archived(&pg, &last, Duration::from_secs(300));
    eprintln!(
        "200 segments archived with async in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, "0", "{}", server_log(&pg));
    let log = server_log(&pg);
    let from_worker = log
        .matches("stored earlier by the background worker")
        .count();
    eprintln!("{from_worker} of 200 answered from the worker's markers");
    assert!(
        from_worker >= 20,
        "{from_worker} answered from the worker:\n{log}"
    );
    let segs = archived(&env.repo(), ".gz");
    assert!(segs.len() >= 200, "{}", segs.len());
    let out = env.ok(&["verify", "pg"]);
    assert!(out.contains("OK   pg wal local"), "{out}");
    // The spool does not keep markers for files PostgreSQL no longer waits on.
    std::thread::sleep(Duration::from_secs(5));
    let left: Vec<PathBuf> = std::fs::read_dir(env.path().join("state/wal-spool/pg"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "error"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_queue_limit_drops_wal_loudly_and_verify_reports_the_gap() {
    let env = Env::new();
    let limit = "archive_queue_max = \"3MiB\"";
    let pg = cluster(&env, &["--wal-segsize=1"], limit);
    pg.sql("postgres", "CREATE TABLE t (id int)");
    env.ok(&["run", "pg"]);
    archive_now(&pg);
    // The storage breaks: segments pile up in pg_wal.
    let broken = env.path().join("not-a-folder");
    std::fs::write(&broken, b"x").unwrap();
    env.write_config(&config(&env, &pg.url("postgres"), &broken, limit));
    open_up(env.path());
    burst(&pg, 6);
    let t = Instant::now();
    while pg.sql("postgres", "SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", server_log(&pg));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Back: the oldest segments past the limit are dropped, the rest archived.
    let repo = env.repo();
    env.write_config(&config(&env, &pg.url("postgres"), &repo, limit));
    open_up(env.path());
    let last = burst(&pg, 1);
    pg.sql("postgres", "SELECT pg_switch_wal()");
    wait_archived(&pg, &last, Duration::from_secs(120));
    let log = server_log(&pg);
    assert!(log.contains("WAL DROPPED"), "{log}");
    assert!(
        log.contains("more than archive_queue_max (3.0 MiB)"),
        "{log}"
    );
    let (code, out, err) = env.run(&["verify", "pg"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("first missing segment"), "{out}");
}
