//! `backup restore` against real clusters: whole-database round trips in both formats,
//! single tables from custom archives, and the refusals that protect a database.
mod common;
use common::*;

#[test]
fn plain_round_trip_into_new_and_existing_database() {
    let (pg, env, id) = sample_backup("plain");
    let original = pg.fingerprint("app");
    assert!(original.contains("public.messages=3000:"), "{original}");
    assert!(
        original.contains("public.standalone_seq=4242"),
        "{original}"
    );

    // Into a database that does not exist yet (created by restore).
    env.ok(&["restore", "pg", "latest", "--to-database", "copy", "--yes"]);
    assert_eq!(pg.fingerprint("copy"), original);
    // Unicode and large text came back byte for byte.
    assert_eq!(
        pg.sql("copy", "SELECT name FROM users WHERE id = 1"),
        "Ünïcødé 名前 1 🚀"
    );
    assert_eq!(
        pg.sql("copy", "SELECT length(body) FROM messages WHERE id = 97"),
        pg.sql("app", "SELECT length(body) FROM messages WHERE id = 97")
    );
    // Sequences continue where they were.
    assert_eq!(pg.sql("copy", "SELECT nextval('users_id_seq')"), "501");

    // Over the target's own database after damage: the dump replaces what is there.
    pg.sql(
        "app",
        "DELETE FROM messages WHERE id > 100; UPDATE users SET name = 'x'; SELECT setval('standalone_seq', 5)",
    );
    assert_ne!(pg.fingerprint("app"), original);
    env.ok(&["restore", "pg", &id, "--yes"]);
    assert_eq!(pg.fingerprint("app"), original);
}

#[test]
fn custom_round_trip_with_parallel_jobs() {
    let (pg, env, id) = sample_backup("custom");
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["format"], "custom");
    env.ok(&["verify", "pg", &id]);
    env.ok(&[
        "restore",
        "pg",
        &id,
        "--to-database",
        "copy",
        "--jobs",
        "2",
        "--yes",
    ]);
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
}

#[test]
fn custom_restore_with_clean_over_existing_database() {
    let (pg, env, _id) = sample_backup("custom");
    let original = pg.fingerprint("app");
    pg.sql(
        "app",
        "DELETE FROM messages; UPDATE billing.invoices SET note = 'changed'",
    );
    env.ok(&["restore", "pg", "latest", "--clean", "--yes"]);
    assert_eq!(pg.fingerprint("app"), original);
}

#[test]
fn single_table_restore_from_custom_format() {
    let (pg, env, id) = sample_backup("custom");
    let messages = pg.sql(
        "app",
        "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM messages x",
    );
    let invoices = pg.sql(
        "app",
        "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM billing.invoices x",
    );
    // Someone deletes rows in two tables; the rest of the database moves on.
    pg.sql(
        "app",
        "DELETE FROM messages WHERE id % 2 = 0; DELETE FROM billing.invoices; INSERT INTO users (email) VALUES ('new@example.com')",
    );
    env.ok(&[
        "restore",
        "pg",
        &id,
        "--table",
        "messages",
        "--table",
        "billing.invoices",
        "--clean",
        "--yes",
    ]);
    assert_eq!(
        pg.sql(
            "app",
            "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM messages x"
        ),
        messages
    );
    assert_eq!(
        pg.sql(
            "app",
            "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM billing.invoices x"
        ),
        invoices
    );
    // The tables came back with their primary keys, indexes and column defaults
    // (pg_restore --table alone drops those with --clean).
    assert_eq!(
        pg.sql(
            "app",
            "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid IN ('messages'::regclass, 'billing.invoices'::regclass)"
        ),
        "invoices_pkey,invoices_user_id_fkey,messages_chat_id_fkey,messages_pkey,messages_user_id_fkey"
    );
    assert_eq!(
        pg.sql(
            "app",
            "INSERT INTO messages (chat_id, body) VALUES (1, 'after') RETURNING id"
        ),
        "3001"
    );
    // Tables not named were left alone.
    assert_eq!(
        pg.sql(
            "app",
            "SELECT count(*) FROM users WHERE email = 'new@example.com'"
        ),
        "1"
    );

    // Into an empty database: only the named table appears.
    pg.createdb("one");
    env.ok(&[
        "restore",
        "pg",
        &id,
        "--table",
        "billing.invoices",
        "--to-database",
        "one",
        "--yes",
    ]);
    assert_eq!(
        pg.sql(
            "one",
            "SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')"
        ),
        "billing.invoices"
    );
    assert_eq!(
        pg.sql("one", "SELECT count(*) FROM billing.invoices"),
        "200"
    );
}

#[test]
fn single_table_from_plain_format_is_a_usage_error() {
    let (pg, env, id) = sample_backup("plain");
    let before = pg.fingerprint("app");
    let (code, _, err) = env.run(&["restore", "pg", &id, "--table", "users", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("custom format"), "{err}");
    assert_eq!(pg.fingerprint("app"), before);
}

#[test]
fn without_yes_and_no_terminal_it_refuses_and_changes_nothing() {
    let (pg, env, id) = sample_backup("plain");
    pg.sql("app", "DELETE FROM messages WHERE id > 10");
    let before = pg.fingerprint("app");
    // assert_cmd gives the child no terminal on stdin.
    let (code, out, err) = env.run(&["restore", "pg", &id]);
    assert_eq!(code, 5, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(pg.fingerprint("app"), before);
    // Nor does it create a database it was asked to restore into.
    let (code, _, err) = env.run(&["restore", "pg", &id, "--to-database", "fresh"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'fresh'"
        ),
        "0"
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let (pg, env, id) = sample_backup("custom");
    pg.sql("app", "DELETE FROM messages WHERE id > 10");
    let before = pg.fingerprint("app");
    let out = env.ok(&["restore", "pg", &id, "--dry-run"]);
    assert!(out.contains(&id), "{out}");
    assert!(out.contains("pg_restore"), "{out}");
    let out = env.ok(&["restore", "pg", &id, "--to-database", "fresh", "--dry-run"]);
    assert!(out.contains("fresh"), "{out}");
    assert_eq!(pg.fingerprint("app"), before);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'fresh'"
        ),
        "0"
    );
    // --json carries the plan too.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["restore", "pg", &id, "--dry-run", "--json"])).unwrap();
    assert_eq!(v["dry_run"], true);
    assert!(v["plan"].as_array().unwrap().len() >= 3, "{v}");
}

#[test]
fn unknown_backup_id_is_a_clear_error() {
    let (_pg, env, _id) = sample_backup("plain");
    let (code, _, err) = env.run(&["restore", "pg", "19990101T000000Z", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no backup `19990101T000000Z`"), "{err}");
}

#[test]
fn a_table_not_in_the_backup_is_named() {
    let (pg, env, id) = sample_backup("custom");
    let before = pg.fingerprint("app");
    let (code, _, err) = env.run(&["restore", "pg", &id, "--table", "nope", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nope") && err.contains("public.messages"),
        "{err}"
    );
    assert_eq!(pg.fingerprint("app"), before);
}

#[test]
fn a_failing_plain_restore_leaves_the_database_as_it_was() {
    let (pg, env, id) = sample_backup("plain");
    // A view on `messages` makes the dump's DROP TABLE fail partway through the
    // script, after other objects were already dropped and recreated.
    pg.sql(
        "app",
        "DELETE FROM messages WHERE id > 2000; UPDATE billing.invoices SET note = 'changed'; \
         CREATE VIEW recent AS SELECT * FROM messages WHERE id > 1900",
    );
    let before = pg.fingerprint("app");
    let (code, _, err) = env.run(&["restore", "pg", &id, "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("other objects depend on it"), "{err}");
    assert_eq!(pg.fingerprint("app"), before);
    assert_eq!(pg.sql("app", "SELECT count(*) FROM recent"), "100");
}

#[test]
fn database_names_that_need_quoting() {
    let (pg, env, id) = sample_backup("custom");
    for db in ["copy with space", "Quoted\"Name", "ünï-cødé"] {
        env.ok(&["restore", "pg", &id, "--to-database", db, "--yes"]);
        assert_eq!(pg.fingerprint(db), pg.fingerprint("app"), "{db}");
    }
}

#[test]
fn custom_restore_over_existing_objects_without_clean_changes_nothing() {
    let (pg, env, id) = sample_backup("custom");
    pg.sql("app", "DELETE FROM messages WHERE id > 100");
    let before = pg.fingerprint("app");
    let (code, _, err) = env.run(&["restore", "pg", &id, "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("--clean"), "the fix is named: {err}");
    assert_eq!(pg.fingerprint("app"), before);
}

/// The runbook for the day the tool is unavailable: the stored artifacts restore with
/// the stock tools alone.
#[test]
fn artifacts_restore_with_gunzip_psql_and_pg_restore_alone() {
    let (pg, env, id) = sample_backup("plain");
    let dump = env.repo().join("pg").join(&id).join("dump.sql.gz");
    pg.createdb("by_hand");
    let st = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; gunzip -c '{}' | '{}' -X -q -v ON_ERROR_STOP=1 -o /dev/null -d '{}'",
            dump.display(),
            pg_bin().join("psql").display(),
            pg.url("by_hand")
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(pg.fingerprint("by_hand"), pg.fingerprint("app"));

    env.write_config(&local_config(&env.repo(), &pg.url("app"), "custom"));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    pg.createdb("by_hand_custom");
    let out = std::process::Command::new(pg_bin().join("pg_restore"))
        .args(["--exit-on-error", "-d", &pg.url("by_hand_custom")])
        .arg(env.repo().join("pg").join(&id).join("dump.pgdump"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pg.fingerprint("by_hand_custom"), pg.fingerprint("app"));
}

#[test]
fn redis_restore_flags_on_a_postgresql_target_are_a_usage_error() {
    let (pg, env, id) = sample_backup("plain");
    let before = pg.fingerprint("app");
    for flags in [
        &["--db", "1"][..],
        &["--match", "a*"][..],
        &["--flush"][..],
        &["--to-url", "redis://127.0.0.1:1"][..],
    ] {
        let mut args = vec!["restore", "pg", &id, "--yes"];
        args.extend(flags);
        let (code, _, err) = env.run(&args);
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(err.contains("for Redis targets"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(pg.fingerprint("app"), before);
}

#[test]
fn zstd_plain_dump_restores_with_zstd_cli_and_with_restore() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&local_config_with(
        &env.repo(),
        &pg.url("app"),
        "plain",
        "compression = \"zstd\"\ncompression_level = 5",
    ));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let original = pg.fingerprint("app");
    let art = only_artifact(&env.repo(), &id);
    assert_eq!(art.file_name().unwrap(), "dump.sql.zst");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo().join("pg").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["artifacts"][0]["compression"], "zstd");
    let out = env.ok(&["verify", "pg", &id, "--json"]);
    assert!(out.contains("dump.sql.zst: zstd stream whole"), "{out}");

    // The runbook way, without this tool: zstd -dc dump.sql.zst | psql.
    pg.createdb("by_cli");
    let sh = format!(
        "zstd -dc '{}' | '{}' -X -q -v ON_ERROR_STOP=1 -d '{}' >/dev/null",
        art.display(),
        pg_bin().join("psql").display(),
        pg.url("by_cli")
    );
    let st = std::process::Command::new("sh")
        .args(["-c", &sh])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(pg.fingerprint("by_cli"), original);

    env.ok(&["restore", "pg", &id, "--to-database", "by_tool", "--yes"]);
    assert_eq!(pg.fingerprint("by_tool"), original);

    // The key is checked when the configuration is loaded.
    env.write_config(&local_config_with(
        &env.repo(),
        &pg.url("app"),
        "plain",
        "compression = \"zstd\"\ncompression_level = 22",
    ));
    let (code, _, err) = env.run(&["list"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("compression_level") && err.contains("1..=19"),
        "{err}"
    );
}
