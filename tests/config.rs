//! Configuration: one-line errors naming file and key (exit 2), the lookup order, and
//! the embedded default that works on libpq's environment with no file at all.
mod common;
use common::*;

/// Runs `list` with a config text; returns (code, stderr).
fn with_config(env: &Env, text: &str) -> (i32, String) {
    env.write_config(text);
    let (code, _, err) = env.run(&["list"]);
    (code, err)
}

fn assert_config_error(err: &str, key: &str, env: &Env) {
    let file = env.path().join("backup.toml").display().to_string();
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(errors[0].contains(&file), "names the file: {err}");
    assert!(errors[0].contains(key), "names `{key}`: {err}");
}

#[test]
fn unknown_key_missing_storage_and_malformed_url() {
    let env = Env::new();
    let repo = env.repo();
    let (code, err) = with_config(
        &env,
        &format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\ncompresion = 9\n",
            repo.display()
        ),
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "compresion", &env);

    let (code, err) = with_config(
        &env,
        "[storages.local]\ntype = \"local\"\npath = \"/tmp/x\"\n\n[targets.pg]\nengine = \"postgres\"\nstorages = [\"local\", \"s3\"]\n",
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "targets.pg.storages", &env);
    assert!(err.contains("`s3`"), "{err}");

    let (code, err) = with_config(
        &env,
        "[storages.local]\ntype = \"local\"\npath = \"/tmp/x\"\n\n[targets.pg]\nengine = \"postgres\"\nurl = \"postgresql://u:hunter2@[::1\"\nstorages = [\"local\"]\n",
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "targets.pg.url", &env);
    assert!(!err.contains("hunter2"), "the password leaked: {err}");

    let (code, err) = with_config(
        &env,
        "[storages.s3]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"localhost:9000\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "storages.s3.endpoint", &env);

    let (code, err) = with_config(&env, "[storages.local\ntype = \"local\"\n");
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "backup.toml:", &env);

    // --config naming a missing file.
    let (code, _, err) = env.run(&["--config", "/nonexistent/backup.toml", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/backup.toml"), "{err}");
}

#[test]
fn no_config_file_uses_the_embedded_default_on_libpq_environment() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    assert!(
        !std::path::Path::new("/etc/backup/backup.toml").exists(),
        "this test needs a machine without /etc/backup/backup.toml"
    );
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .env_remove("BACKUP_CONFIG")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "app")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let id = run(&["run", "postgres"]).trim().to_string();
    // The repository is ./backups of the current folder.
    assert!(
        env.path()
            .join("backups/postgres")
            .join(&id)
            .join("manifest.json")
            .exists(),
        "{:?}",
        files_under(env.path())
    );
    assert!(run(&["list"]).contains(&id));
    assert!(run(&["verify"]).starts_with("OK"));
    run(&["restore", "postgres", "--to-database", "copy", "--yes"]);
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
}

#[test]
fn backup_toml_in_the_current_folder_is_found() {
    let pg = Pg::start();
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("postgres"), "plain"));
    let out = env
        .cmd()
        .env_remove("BACKUP_CONFIG")
        .args(["list", "pg", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command asked of a target whose engine (or kind) lacks the capability: one line,
/// exit 2 (126 for wal-fetch, which PostgreSQL reads), before any database is touched.
#[test]
fn a_capability_the_target_lacks_is_one_line_and_exit_2() {
    let env = Env::new();
    env.write_config(&format!(
        "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.app]\nengine = \"postgres\"\n\
         url = \"postgresql://nobody@127.0.0.1:1/none\"\nstorages = [\"local\"]\n",
        env.repo().display()
    ));
    let dir = env.path().join("restored");
    let dir = dir.to_str().unwrap();
    for (args, what) in [
        (
            vec!["pitr", "app", "--data-dir", dir, "--target-immediate"],
            "has no point-in-time recovery",
        ),
        (vec!["check", "app"], "has no WAL archive to check"),
    ] {
        let (code, out, err) = env.run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
        assert!(
            lines[0].contains("target `app` (postgres, kind = \"logical\")")
                && lines[0].contains(what),
            "{args:?}: {err}"
        );
    }
    assert!(!std::path::Path::new(dir).exists(), "nothing was written");
    let (code, _, err) = env.run(&["wal-fetch", "app", "000000010000000000000001", dir]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("has no WAL archive"), "{err}");
}

/// Engine keys are checked by the engine when the file is loaded: an unknown one is
/// named with its line, and the keys a target may hold are listed.
#[test]
fn unknown_engine_key_names_line_and_the_keys_it_could_be() {
    let env = Env::new();
    let (code, err) = with_config(
        &env,
        "[storages.local]\ntype = \"local\"\npath = \"/tmp/x\"\n\n[targets.pg]\nengine = \"postgres\"\nstorages = [\"local\"]\nrow_count = \"off\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "backup.toml:8: key `targets.pg.row_count`", &env);
    assert!(
        err.contains("`row_counts`") && err.contains("`storages`"),
        "{err}"
    );
}

#[test]
fn must_exist_is_refused_on_a_postgresql_target_and_globally() {
    let env = Env::new();
    let base = "[storages.local]\ntype = \"local\"\npath = \"/tmp/x\"\n\n[targets.pg]\nengine = \"postgres\"\nstorages = [\"local\"]\n";
    let (code, err) = with_config(
        &env,
        &format!("{base}\n[targets.pg.test_restore]\nmust_exist = [\"config:global\"]\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "targets.pg.test_restore", &env);
    assert!(
        err.contains("must_exist") && err.contains("checks_sql"),
        "{err}"
    );
    let (code, err) = with_config(
        &env,
        &format!("{base}\n[test_restore]\nmust_exist = [\"config:global\"]\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert_config_error(&err, "test_restore", &env);
    assert!(err.contains("[targets.NAME.test_restore]"), "{err}");
}
