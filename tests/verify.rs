//! `backup verify` reads every artifact back; a damaged one fails verification (exit 3)
//! and `restore` refuses it before the database is touched.
mod common;
use common::*;

fn flip_bytes(path: &std::path::Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 16] {
        *x ^= 0x5a;
    }
    std::fs::write(path, b).unwrap();
}

fn truncate(path: &std::path::Path) {
    let b = std::fs::read(path).unwrap();
    std::fs::write(path, &b[..b.len() * 2 / 3]).unwrap();
}

/// Damages the artifact, then: verify says what is wrong (exit 3), and restore into
/// the target's own (changed) database refuses before touching it.
fn damaged_backup_is_caught(format: &str, damage: fn(&std::path::Path), expect: &[&str]) {
    let (pg, env, id) = sample_backup(format);
    let good = env.ok(&["verify", "pg", &id]);
    assert!(good.starts_with("OK"), "{good}");
    damage(&only_artifact(&env.repo(), &id));

    let (code, out, err) = env.run(&["verify", "pg", &id]);
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("FAIL"), "{out}");
    for e in expect {
        assert!(err.contains(e), "verify should say `{e}`: {err}");
    }
    // `verify` of everything also fails.
    assert_eq!(env.run(&["verify", "--all"]).0, 3);

    // The database changed since the backup; a refused restore must leave it as is.
    pg.sql(
        "app",
        "DELETE FROM messages WHERE id > 1000; INSERT INTO users (email) VALUES ('after@example.com')",
    );
    let before = pg.fingerprint("app");
    let (code, _, err) = env.run(&["restore", "pg", &id, "--yes"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the database was not touched"), "{err}");
    assert_eq!(pg.fingerprint("app"), before);
    // Nor is a new database created for it.
    let (code, _, _) = env.run(&["restore", "pg", &id, "--to-database", "copy", "--yes"]);
    assert_eq!(code, 3);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        ),
        "0",
        "a restore of a damaged backup must not create its database"
    );
}

#[test]
fn flipped_bytes_in_plain_dump() {
    damaged_backup_is_caught("plain", flip_bytes, &["SHA-256", "dump.sql.gz"]);
}

#[test]
fn truncated_plain_dump() {
    damaged_backup_is_caught("plain", truncate, &["size is", "dump.sql.gz"]);
}

#[test]
fn flipped_bytes_in_custom_archive() {
    damaged_backup_is_caught("custom", flip_bytes, &["SHA-256", "dump.pgdump"]);
}

#[test]
fn truncated_custom_archive() {
    damaged_backup_is_caught("custom", truncate, &["size is", "dump.pgdump"]);
}

#[test]
fn missing_artifact_and_json_report() {
    let (_pg, env, id) = sample_backup("plain");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["verify", "pg", "latest", "--json"])).unwrap();
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["id"], id.as_str());
    std::fs::remove_file(only_artifact(&env.repo(), &id)).unwrap();
    let (code, out, err) = env.run(&["verify", "pg", "--json"]);
    assert_eq!(code, 3, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["ok"], false);
    assert!(
        v[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{v}"
    );
}

#[test]
fn nothing_to_verify_is_a_failure() {
    let pg = Pg::start();
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("postgres"), "plain"));
    let (code, _, err) = env.run(&["verify", "pg"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no backup"), "{err}");
}

#[test]
fn backups_stay_verifiable_and_restorable_after_the_format_changes() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let plain = env.ok(&["run", "pg"]).trim().to_string();
    // The operator switches to custom format; old plain backups are still good.
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "custom"));
    let custom = env.ok(&["run", "pg"]).trim().to_string();
    let out = env.ok(&["verify", "pg", "--all"]);
    assert_eq!(out.matches("OK").count(), 2, "{out}");
    env.ok(&[
        "restore",
        "pg",
        &plain,
        "--to-database",
        "from_plain",
        "--yes",
    ]);
    assert_eq!(pg.fingerprint("from_plain"), pg.fingerprint("app"));
    // And back: custom backups under a plain config.
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    env.ok(&["verify", "pg", &custom]);
    env.ok(&[
        "restore",
        "pg",
        &custom,
        "--to-database",
        "from_custom",
        "--yes",
    ]);
    assert_eq!(pg.fingerprint("from_custom"), pg.fingerprint("app"));
}
