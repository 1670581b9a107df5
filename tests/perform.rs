//! Restores that perform, against real PostgreSQL: statistics rebuilt after a restore
//! (`pg_stat_user_tables.last_analyze`), `--no-analyze`, and test-restore's timed
//! `benchmark_sql` queries beside the RTO check (report, text, metrics).
mod common;
use common::*;

/// `schema.table` of every user table in `db` whose `last_analyze` is set.
fn analyzed(pg: &Pg, db: &str) -> Vec<String> {
    let out = pg.sql(
        db,
        "SELECT coalesce(string_agg(schemaname || '.' || relname, ',' ORDER BY schemaname, relname), '') \
         FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL",
    );
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

const SAMPLE_TABLES: [&str; 4] = [
    "billing.invoices",
    "public.chats",
    "public.messages",
    "public.users",
];

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn restore_analyzes_the_restored_database_and_no_analyze_skips_it() {
    let (pg, env, id) = sample_backup("plain");
    let out = env.ok(&[
        "restore",
        "pg",
        &id,
        "--to-database",
        "copy",
        "--yes",
        "--json",
    ]);
    let r = json(&out);
    assert_eq!(r["analyze"]["done"], true, "{r:#}");
    assert_eq!(r["analyze"]["stages"], 1, "{r:#}");
    assert!(
        r["analyze"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("ANALYZE of the database"),
        "{r:#}"
    );
    assert_eq!(analyzed(&pg, "copy"), SAMPLE_TABLES, "{r:#}");

    let (code, out, err) = env.run(&[
        "restore",
        "pg",
        &id,
        "--to-database",
        "copy2",
        "--yes",
        "--json",
        "--no-analyze",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["analyze"]["done"], false, "{r:#}");
    assert_eq!(r["analyze"]["detail"], "skipped (--no-analyze)", "{r:#}");
    assert!(analyzed(&pg, "copy2").is_empty(), "{r:#}");
    // The same restore without --json names the skip on stderr.
    let (code, _, err) = env.run(&[
        "restore",
        "pg",
        &id,
        "--to-database",
        "copy3",
        "--yes",
        "--no-analyze",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no ANALYZE afterwards (--no-analyze)"),
        "{err}"
    );
}

#[test]
fn partial_restore_analyzes_only_its_tables_in_stages_when_configured() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&local_config_with(
        &env.repo(),
        &pg.url("app"),
        "custom",
        "analyze = \"stages\"",
    ));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    pg.createdb("part");
    let (code, out, err) = env.run(&[
        "restore",
        "pg",
        &id,
        "--to-database",
        "part",
        "--table",
        "billing.invoices",
        "--yes",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["analyze"]["done"], true, "{r:#}");
    assert_eq!(r["analyze"]["stages"], 3, "{r:#}");
    assert_eq!(r["analyze"]["tables"], 1, "{r:#}");
    assert!(err.contains("ANALYZE stage 3 of 3"), "{err}");
    assert_eq!(analyzed(&pg, "part"), ["billing.invoices"], "{r:#}");
}

#[test]
fn test_restore_times_benchmark_queries_beside_the_rto_and_a_failing_one_fails() {
    let (pg, env, _id) = sample_backup("plain");
    let prom = env.path().join("backup.prom");
    let scratch = scratch_dir(&env);
    let write = |queries: &str| {
        env.write_config(&format!(
            "{}\n[targets.pg.test_restore]\ntemp_dir = \"{}\"\nbenchmark_sql = [{queries}]\n\n[metrics]\ntextfile = \"{}\"\n",
            local_config(&env.repo(), &pg.url("app"), "plain"),
            scratch.display(),
            prom.display()
        ))
    };
    write(
        "\"SELECT count(*) FROM messages m JOIN users u ON u.id = m.user_id\", \
         \"SELECT chat_id, count(*) FROM messages GROUP BY chat_id\"",
    );
    let (code, out, err) = env.run(&["test-restore", "pg", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let rto = names.iter().position(|n| *n == "rto").unwrap();
    assert!(
        names[rto + 1].starts_with("benchmark #1: SELECT count(*)"),
        "{names:?}"
    );
    assert!(
        names[rto + 2].starts_with("benchmark #2: SELECT chat_id"),
        "{names:?}"
    );
    assert_eq!(names.len(), rto + 3, "{names:?}");
    let b2 = &r["checks"][rto + 2];
    assert_eq!(b2["passed"], true);
    assert!(b2["figures"]["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(b2["figures"]["rows"], 50, "{b2}");
    // The scratch restore was analyzed before the benchmarks ran.
    assert_eq!(r["checks"][0]["figures"]["analyze"]["done"], true, "{r:#}");
    let metrics = std::fs::read_to_string(&prom).unwrap();
    for m in [
        "test_restore_benchmark_seconds{target=\"pg\"",
        "test_restore_rto_seconds{target=\"pg\",storage=\"local\",kind=\"logical\"} 7200",
    ] {
        assert!(metrics.contains(m), "{m} not in\n{metrics}");
    }
    promtool_check_metrics(&metrics);

    // The text report shows the timings right after the RTO line; a failing query fails it.
    write("\"SELECT count(*) FROM users\", \"SELECT * FROM no_such_table\"");
    let (code, out, err) = env.run(&["test-restore", "pg"]);
    assert_eq!(code, 6, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let rto = lines
        .iter()
        .position(|l| l.starts_with("PASS  rto"))
        .unwrap();
    assert!(
        lines[rto + 1].starts_with("PASS  benchmark #1: SELECT count(*) FROM users"),
        "{out}"
    );
    assert!(
        lines[rto + 2].starts_with("FAIL  benchmark #2: SELECT * FROM no_such_table")
            && lines[rto + 2].contains("benchmark query failed:")
            && lines[rto + 2].contains("no_such_table"),
        "{out}"
    );
    assert!(err.contains("benchmark #2"), "{err}");
}

#[test]
fn benchmark_sql_is_refused_for_engines_that_do_not_run_it() {
    let env = Env::new();
    env.write_config(&format!(
        "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.cache]\nengine = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\nstorages = [\"local\"]\n\n[targets.cache.test_restore]\nbenchmark_sql = [\"SELECT 1\"]\n",
        env.repo().display(),
        free_port()
    ));
    let (code, _, err) = env.run(&["test-restore", "cache"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("benchmark_sql") && err.contains("redis targets do not run benchmark queries"),
        "{err}"
    );
}
