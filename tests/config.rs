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
