//! `backup test-restore` against real PostgreSQL: a temporary cluster per run, real
//! checks, and the scratch cluster gone afterwards in every case.
mod common;
use common::*;
use std::path::PathBuf;

/// Config with a test_restore section; scratch clusters go under `<env>/scratch`.
fn config(env: &Env, pg: &Pg, extra: &str) -> PathBuf {
    let scratch = scratch_dir(env);
    env.write_config(&format!(
        "{}\n[targets.pg.test_restore]\ntemp_dir = \"{}\"\n{extra}\n",
        local_config(&env.repo(), &pg.url("app"), "plain"),
        scratch.display()
    ))
}

fn scratch_leftovers(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.path().join("scratch"))
        .map(|r| {
            r.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// PIDs of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                out.push(name);
            }
        }
    }
    out
}

fn assert_scratch_gone(env: &Env) {
    assert!(
        scratch_leftovers(env).is_empty(),
        "left behind: {:?}",
        scratch_leftovers(env)
    );
    let scratch = env.path().join("scratch").display().to_string();
    assert!(
        processes_mentioning(&scratch).is_empty(),
        "scratch postgres still running"
    );
}

fn report(env: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    let (code, out, err) = env.run(args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v, err)
}

fn check<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name} in {r}"))
}

#[test]
fn good_backup_passes_every_check_with_owner_roles_and_is_removed() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    // Owners and grants to roles a fresh cluster does not have.
    pg.sql(
        "app",
        "CREATE ROLE app_owner NOLOGIN; CREATE ROLE \"Read Only\" NOLOGIN; \
         ALTER TABLE messages OWNER TO app_owner; GRANT SELECT ON users TO \"Read Only\"; \
         CREATE TABLE pairs (a int, b int, PRIMARY KEY (a, b)); \
         CREATE TABLE pair_refs (id int, a int, b int, FOREIGN KEY (a, b) REFERENCES pairs(a, b)); \
         INSERT INTO pairs VALUES (1, 1), (1, 2); INSERT INTO pair_refs VALUES (1, 1, 2), (2, NULL, 5);",
    );
    let env = Env::new();
    let checks = env.path().join("checks.sql");
    std::fs::write(
        &checks,
        "-- every user has an email\nSELECT count(*) = 0 FROM users WHERE email IS NULL;\n\
         SELECT id FROM chats WHERE owner_id IS NULL; -- no rows is a pass\n",
    )
    .unwrap();
    config(
        &env,
        &pg,
        &format!(
            "freshness = [\"messages.created_at\", \"public.users.created_at\"]\nfreshness_max_lag = \"1h\"\nchecks_sql = \"{}\"\n",
            checks.display()
        ),
    );
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let rep_file = env.path().join("report.json");
    let (code, r, err) = report(
        &env,
        &[
            "test-restore",
            "pg",
            "random",
            "--within",
            "30d",
            "--json",
            "--report",
            rep_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{r:#}\n{err}");
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["passed"], true);
    for name in [
        "restore",
        "row_counts",
        "foreign_keys",
        "freshness messages.created_at",
        "freshness public.users.created_at",
        "sql #1",
        "sql #2",
        "rto",
    ] {
        assert_eq!(check(&r, name)["passed"], true, "{name}: {r:#}");
    }
    assert_eq!(
        check(&r, "foreign_keys")["figures"]["constraints"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert!(
        err.contains("app_owner") && err.contains("Read Only"),
        "{err}"
    );
    let from_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rep_file).unwrap()).unwrap();
    assert_eq!(from_file["id"], r["id"]);
    assert_scratch_gone(&env);
    // The human report.
    let (code, out, _) = env.run(&["test-restore", "pg", "latest"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS  row_counts") && out.contains("PASSED:"),
        "{out}"
    );
    eprintln!("sample report:\n{out}");
    // status knows the last test-restore.
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", "pg", "--json"])).unwrap();
    assert_eq!(st[0]["last_test_restore"]["passed"], true, "{st}");
    assert_scratch_gone(&env);
}

#[test]
fn disagreeing_manifest_counts_fail_the_count_check() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    config(&env, &pg, "");
    let id = env.ok(&["run", "pg"]).trim().to_string();
    // The manifest says users had one more row than what the dump holds.
    let mpath = env.repo().join("pg").join(&id).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for t in m["database"]["tables"].as_array_mut().unwrap() {
        if t["name"] == "users" {
            t["rows"] = serde_json::json!(501);
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, r, err) = report(&env, &["test-restore", "pg", &id, "--json"]);
    assert_eq!(code, 6, "{r:#}\n{err}");
    assert_eq!(r["passed"], false);
    let c = check(&r, "row_counts");
    assert_eq!(c["passed"], false);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("public.users: 500 restored, manifest 501"),
        "{c}"
    );
    assert_eq!(check(&r, "foreign_keys")["passed"], true);
    assert!(err.contains("failed check(s): row_counts"), "{err}");
    assert_scratch_gone(&env);
}

#[test]
fn orphaned_foreign_key_and_false_operator_check_fail() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    // Orphans behind a NOT VALID constraint: pg_dump keeps it NOT VALID, so the rows restore.
    pg.sql(
        "app",
        "CREATE TABLE parents (a int, b int, PRIMARY KEY (a, b)); \
         CREATE TABLE kids (id int, a int, b int); INSERT INTO parents VALUES (1, 1); \
         INSERT INTO kids VALUES (1, 1, 1), (2, 1, 9), (3, 7, 7), (4, NULL, 9); \
         ALTER TABLE kids ADD CONSTRAINT kids_parent FOREIGN KEY (a, b) REFERENCES parents(a, b) NOT VALID;",
    );
    let env = Env::new();
    let checks = env.path().join("checks.sql");
    std::fs::write(
        &checks,
        "SELECT true;\nSELECT count(*) > 1000000 FROM users;\nSELECT * FROM no_such_table;\n",
    )
    .unwrap();
    config(
        &env,
        &pg,
        &format!("checks_sql = \"{}\"\n", checks.display()),
    );
    env.ok(&["run", "pg"]);
    let (code, r, err) = report(&env, &["test-restore", "pg", "--json"]);
    assert_eq!(code, 6, "{r:#}\n{err}");
    let fk = check(&r, "foreign_keys");
    assert_eq!(fk["passed"], false);
    assert!(
        fk["detail"]
            .as_str()
            .unwrap()
            .contains("kids_parent on kids (a, b) -> parents: 2 orphan row(s)"),
        "{fk}"
    );
    assert_eq!(check(&r, "sql #1")["passed"], true);
    assert_eq!(check(&r, "sql #2")["passed"], false);
    assert_eq!(check(&r, "sql #2")["detail"], "returned f");
    assert_eq!(check(&r, "sql #3")["passed"], false);
    assert!(check(&r, "sql #3")["detail"]
        .as_str()
        .unwrap()
        .contains("no_such_table"));
    assert_eq!(check(&r, "row_counts")["passed"], true);
    assert_scratch_gone(&env);
}

#[test]
fn stale_freshness_damaged_artifact_and_missing_window_fail() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    pg.sql(
        "app",
        "UPDATE messages SET created_at = now() - interval '3 days'",
    );
    let env = Env::new();
    config(&env, &pg, "freshness = [\"messages.created_at\"]\n");
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let (code, r, _) = report(&env, &["test-restore", "pg", "--json"]);
    assert_eq!(code, 6);
    let f = check(&r, "freshness messages.created_at");
    assert_eq!(f["passed"], false, "{f}");
    assert!(f["figures"]["lag_seconds"].as_i64().unwrap() >= 3 * 86400 - 60);
    assert_scratch_gone(&env);

    // A damaged artifact never reaches the scratch database: the restore check fails.
    let dump = env.repo().join("pg").join(&id).join("dump.sql.gz");
    let mut b = std::fs::read(&dump).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&dump, b).unwrap();
    let (code, r, _) = report(&env, &["test-restore", "pg", &id, "--json"]);
    assert_eq!(code, 6);
    let c = check(&r, "restore");
    assert_eq!(c["passed"], false);
    assert!(c["detail"].as_str().unwrap().contains("SHA-256"), "{c}");
    assert_eq!(check(&r, "rto")["passed"], false);
    assert_scratch_gone(&env);

    // Nothing within the window: a failed test, not a pass.
    let (code, _, err) = env.run(&["test-restore", "pg", "random", "--within", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code2, _, err2) = env.run(&["test-restore", "pg", "random", "--within", "1s"]);
    assert!(code == 6 || code2 == 6, "{err}\n{err2}");
    assert!(
        err2.contains("no complete backup of target `pg` within"),
        "{err2}"
    );
}

#[test]
fn sigterm_mid_run_removes_the_scratch_cluster() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let checks = env.path().join("checks.sql");
    std::fs::write(&checks, "SELECT true FROM pg_sleep(60);\n").unwrap();
    config(
        &env,
        &pg,
        &format!("checks_sql = \"{}\"\n", checks.display()),
    );
    env.ok(&["run", "pg"]);
    let mut child = env
        .std_cmd()
        .args(["test-restore", "pg"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the operator check (a 60 s sleep) runs: the cluster is up, the restore done.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push(l.clone());
        if l.contains("operator check") {
            break;
        }
    }
    assert!(seen.last().unwrap().contains("operator check"), "{seen:?}");
    assert!(!scratch_leftovers(&env).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe_kill(child.id(), 15);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(128 + 15), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("cleaning up before exiting")),
        "{rest:?}"
    );
    assert_scratch_gone(&env);
}

fn unsafe_kill(pid: u32, sig: i32) {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

#[test]
fn scratch_database_on_a_configured_server_is_created_and_dropped() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&format!(
        "{}\n[test_restore]\nurl = \"{}\"\n",
        local_config(&env.repo(), &pg.url("app"), "custom"),
        pg.url("postgres")
    ));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let (code, r, err) = report(&env, &["test-restore", "pg", "latest", "--json"]);
    assert_eq!(code, 0, "{r:#}\n{err}");
    let db = format!("backup_test_restore_{}", id.to_lowercase());
    assert!(r["scratch"].as_str().unwrap().contains(&db), "{r}");
    assert_eq!(check(&r, "row_counts")["passed"], true);
    assert_eq!(
        pg.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'")
        ),
        "0"
    );
    // Roles are never created on a shared server: a missing one is named.
    pg.sql(
        "app",
        "CREATE ROLE gone_owner NOLOGIN; ALTER TABLE chats OWNER TO gone_owner",
    );
    env.ok(&["run", "pg"]);
    pg.sql(
        "app",
        "ALTER TABLE chats OWNER TO postgres; DROP ROLE gone_owner",
    );
    let (code, _, err) = env.run(&["test-restore", "pg"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gone_owner") && err.contains("CREATE ROLE"),
        "{err}"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'backup_test_restore_%'"
        ),
        "0"
    );
}

#[test]
fn custom_format_backup_on_s3_restores_from_a_download() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    pg.sql(
        "app",
        "CREATE ROLE s3_owner NOLOGIN; ALTER TABLE chats OWNER TO s3_owner",
    );
    let moto = Moto::start();
    moto.create_bucket("tr-bucket");
    let env = Env::new();
    let scratch = scratch_dir(&env);
    env.write_config(&format!(
        r#"
[storages.s3]
type = "s3"
bucket = "tr-bucket"
endpoint = "{}"
force_path_style = true

[targets.pg]
engine = "postgres"
url = "{}"
format = "custom"
storages = ["s3"]

[targets.pg.test_restore]
temp_dir = "{}"
"#,
        moto.endpoint(),
        pg.url("app"),
        scratch.display()
    ));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    let (code, r, err) = report(&env, &["test-restore", "pg", "random", "--json"]);
    assert_eq!(code, 0, "{r:#}\n{err}");
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["storage"], "s3");
    assert_eq!(
        check(&r, "restore")["figures"]["roles"],
        serde_json::json!(["s3_owner"])
    );
    assert_eq!(check(&r, "row_counts")["passed"], true);
    assert_scratch_gone(&env);
}
