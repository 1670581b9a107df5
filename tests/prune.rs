//! `backup prune` against real backups on local storage and on moto S3.
//!
//! Real backups are taken "now". Older ones are made by copying a real backup under
//! an older id and rewriting the manifest's `id`, `started_at` and `finished_at` (the
//! artifact is the real one, so `verify` still passes on the copies). `--now` in the
//! future ages incomplete folders past their grace period.
mod common;
use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn id_at(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn time_of(id: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
}

/// The manifest of `bytes` moved to `id` (times set to the id's time).
fn aged_manifest(bytes: &[u8], id: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    let t = time_of(id).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    v["id"] = Value::from(id);
    v["started_at"] = Value::from(t.clone());
    v["finished_at"] = Value::from(t);
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Copies a local backup folder under another id; without the manifest when `complete`
/// is false (an interrupted run's leftovers).
fn copy_local(repo: &Path, from: &str, to: &str, complete: bool) {
    let src = repo.join("pg").join(from);
    let dst = repo.join("pg").join(to);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "manifest.json" {
            if complete {
                let m = aged_manifest(&std::fs::read(e.path()).unwrap(), to);
                write_manifest(&dst.join(&name), &m);
            }
        } else if name.starts_with(".meta-manifest") {
            // write_manifest records the aged manifest's own checksum.
        } else {
            std::fs::copy(e.path(), dst.join(&name)).unwrap();
        }
    }
}

/// Every file under a folder with its size (to prove nothing changed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), e.metadata().unwrap().len());
            }
        }
    }
    out
}

fn entry<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan.as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in plan {plan:#}"))
}

fn reasons(e: &Value) -> Vec<String> {
    e["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn local_plan_dry_run_refusal_and_deletion() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    let repo = env.repo();
    let base = local_config(&repo, &pg.url("app"), "plain");
    env.write_config(&base);
    let real = env.ok(&["run", "pg"]).trim().to_string();
    let t = time_of(&real);
    let day = |n: i64| id_at(t - Duration::days(n));
    let (a, b, c, garbage) = (day(3), day(2), day(1), day(5));
    copy_local(&repo, &real, &a, true);
    copy_local(&repo, &real, &b, true);
    copy_local(&repo, &real, &c, true);
    copy_local(&repo, &real, &garbage, false);

    // No policy: everything is kept, and prune says so.
    let (code, out, err) = env.run(&["prune", "pg", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no retention policy"), "{err}");
    let plan = json(&out);
    for id in [&real, &a, &b, &c] {
        assert_eq!(entry(&plan, id)["action"], "keep");
    }

    env.write_config(&format!(
        "{base}\n[storages.local.retention]\nkeep_daily = 2\n"
    ));
    let before = snapshot(&repo);
    let (code, out, err) = env.run(&["prune", "pg", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let plan = json(&out);
    assert_eq!(plan.as_array().unwrap().len(), 5);
    for e in plan.as_array().unwrap() {
        for k in ["id", "target", "storage", "action", "reasons", "incomplete"] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
        assert_eq!(e["storage"], "local");
        assert_eq!(e["target"], "pg");
        assert!(e["result"].is_null(), "a dry run acts on nothing: {e}");
    }
    let daily = |id: &str| format!("daily {}", time_of(id).format("%Y-%m-%d"));
    let r = reasons(entry(&plan, &real));
    assert!(r.contains(&daily(&real)), "{r:?}");
    assert!(r.contains(&"newest good backup".to_string()), "{r:?}");
    assert!(r.contains(&"younger than min_age 1h".to_string()), "{r:?}");
    assert_eq!(reasons(entry(&plan, &c)), [daily(&c)]);
    for id in [&a, &b] {
        assert_eq!(entry(&plan, id)["action"], "remove");
        assert_eq!(reasons(entry(&plan, id)), ["matches no keep rule"]);
    }
    // The leftover folder was written moments ago: inside its grace period.
    let g = entry(&plan, &garbage);
    assert_eq!(g["incomplete"], true);
    assert_eq!(g["action"], "keep");
    assert_eq!(reasons(g)[0], "incomplete, younger than 24h (grace)");

    // Periods are UTC whatever the machine's zone: the plan is identical.
    for tz in ["Pacific/Kiritimati", "America/Adak", "Asia/Kathmandu"] {
        let o = env
            .cmd()
            .env("TZ", tz)
            .args(["prune", "pg", "--dry-run", "--json"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), out, "TZ={tz}");
    }

    // Two days later the leftovers are garbage; the human plan says why.
    let later = (Utc::now() + Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (code, out, err) = env.run(&["prune", "pg", "--dry-run", "--now", &later]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("incomplete, older than 24h"), "{out}");
    assert!(out.contains("REMOVE"), "{out}");
    assert!(err.contains("nothing was deleted"), "{err}");
    assert_eq!(snapshot(&repo), before, "--dry-run deleted something");

    // Without --yes and without a terminal: refused, exit 5, nothing touched.
    let (code, out, err) = env.run(&["prune", "pg", "--now", &later]);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(out.contains(&a), "the plan is printed before asking: {out}");
    assert_eq!(snapshot(&repo), before);

    let (code, out, err) = env.run(&["prune", "pg", "--now", &later, "--yes", "--json"]);
    assert_eq!(code, 0, "{err}");
    let plan = json(&out);
    for id in [&a, &b, &garbage] {
        assert_eq!(entry(&plan, id)["result"], "removed", "{plan:#}");
        assert!(!repo.join("pg").join(id).exists(), "{id} still on disk");
    }
    for id in [&real, &c] {
        assert!(entry(&plan, id)["result"].is_null());
        assert!(repo.join("pg").join(id).join("manifest.json").exists());
        assert!(repo.join("pg").join(id).join("dump.sql.gz").exists());
    }
    let list = json(&env.ok(&["list", "pg", "--all", "--json"]));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list:#}");
    assert!(ids.contains(&real.as_str()) && ids.contains(&c.as_str()));
    env.ok(&["verify", "pg"]);
    // Nothing left to do: no question asked even without --yes.
    let (code, _, err) = env.run(&["prune", "pg", "--now", &later]);
    assert_eq!(code, 0, "{err}");
}

fn s3_config(moto: &Moto, bucket: &str, url: &str, retention: &str) -> String {
    format!(
        r#"
[storages.s3]
type = "s3"
bucket = "{bucket}"
prefix = "prod"
endpoint = "{}"
force_path_style = true

[storages.s3.retention]
{retention}

[targets.pg]
engine = "postgres"
url = "{url}"
storages = ["s3"]
"#,
        moto.endpoint()
    )
}

/// Copies an S3 backup under an older id through moto's plain HTTP API.
fn copy_s3(moto: &Moto, bucket: &str, from: &str, to: &str) {
    let m = moto
        .get_object(bucket, &format!("prod/pg/{from}/manifest.json"))
        .unwrap();
    let dump = moto
        .get_object(bucket, &format!("prod/pg/{from}/dump.sql.gz"))
        .unwrap();
    moto.put_object(bucket, &format!("prod/pg/{to}/dump.sql.gz"), &dump);
    moto.put_object(
        bucket,
        &format!("prod/pg/{to}/manifest.json"),
        &aged_manifest(&m, to),
    );
}

#[test]
fn s3_prune_deletes_and_reports_object_lock_as_retained() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.sql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1)");
    let moto = Moto::start();
    moto.create_bucket("plain-bucket");
    moto.create_locked_bucket("locked-bucket", 30);

    // A plain bucket: the old backup goes, manifest and artifact.
    let env = Env::new();
    env.write_config(&s3_config(
        &moto,
        "plain-bucket",
        &pg.url("app"),
        "keep_last = 1",
    ));
    let real = env.ok(&["run", "pg"]).trim().to_string();
    let old = id_at(time_of(&real) - Duration::days(3));
    copy_s3(&moto, "plain-bucket", &real, &old);
    let plan = json(&env.ok(&["prune", "pg", "--dry-run", "--json"]));
    assert_eq!(entry(&plan, &old)["action"], "remove");
    assert_eq!(entry(&plan, &old)["storage"], "s3");
    assert_eq!(
        moto.keys("plain-bucket", &format!("prod/pg/{old}/")).len(),
        2
    );
    // An interrupted run's leftover artifact (no manifest), garbage two days later.
    let orphan = id_at(time_of(&real) - Duration::days(4));
    moto.put_object(
        "plain-bucket",
        &format!("prod/pg/{orphan}/dump.sql.gz"),
        b"partial",
    );
    let later = (Utc::now() + Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let plan = json(&env.ok(&["prune", "pg", "--yes", "--json", "--now", &later]));
    assert_eq!(entry(&plan, &old)["result"], "removed");
    assert_eq!(entry(&plan, &orphan)["incomplete"], true);
    assert_eq!(entry(&plan, &orphan)["result"], "removed");
    assert!(moto
        .keys("plain-bucket", &format!("prod/pg/{orphan}/"))
        .is_empty());
    assert!(moto
        .keys("plain-bucket", &format!("prod/pg/{old}/"))
        .is_empty());
    assert_eq!(
        moto.keys("plain-bucket", &format!("prod/pg/{real}/")).len(),
        2
    );

    // An Object Lock bucket: a plain delete would only add delete markers; the held
    // backup is reported as retained by the lock, stays listed, and the prune succeeds.
    let env = Env::new();
    env.write_config(&s3_config(
        &moto,
        "locked-bucket",
        &pg.url("app"),
        "keep_last = 1",
    ));
    let real = env.ok(&["run", "pg"]).trim().to_string();
    let old = id_at(time_of(&real) - Duration::days(3));
    copy_s3(&moto, "locked-bucket", &real, &old);
    let (code, out, err) = env.run(&["prune", "pg", "--yes", "--json"]);
    assert_eq!(code, 0, "{err}");
    let e = entry(&json(&out), &old).clone();
    assert_eq!(e["action"], "remove");
    assert_eq!(e["result"], "retained", "{e}");
    assert!(e["detail"].as_str().unwrap().contains("object lock"), "{e}");
    assert!(err.contains("retained"), "{err}");
    let list = json(&env.ok(&["list", "pg", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    assert_eq!(
        moto.keys("locked-bucket", &format!("prod/pg/{old}/")).len(),
        2
    );
}

#[test]
fn prune_after_run_only_after_a_successful_backup() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.sql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1)");
    let env = Env::new();
    let repo = env.repo();
    let cfg = |url: &str| {
        format!(
            "{}prune_after_run = true\n\n[storages.local.retention]\nkeep_last = 1\nmin_age = \"0s\"\n",
            local_config(&repo, url, "plain")
        )
    };
    env.write_config(&cfg(&pg.url("app")));
    let first = env.ok(&["run", "pg"]).trim().to_string();
    let old = id_at(time_of(&first) - Duration::days(3));
    copy_local(&repo, &first, &old, true);

    // A failed backup never prunes.
    env.write_config(&cfg(&pg.url("no_such_db")));
    let (code, _, _) = env.run(&["run", "pg"]);
    assert_ne!(code, 0);
    assert!(repo.join("pg").join(&old).join("manifest.json").exists());
    assert!(repo.join("pg").join(&first).join("manifest.json").exists());

    env.write_config(&cfg(&pg.url("app")));
    let (code, out, err) = env.run(&["run", "pg"]);
    assert_eq!(code, 0, "{err}");
    let second = out.trim().to_string();
    assert_eq!(second.len(), 16, "stdout stays the id: {out}");
    assert!(err.contains("prune pg"), "{err}");
    assert!(!repo.join("pg").join(&old).exists());
    assert!(!repo.join("pg").join(&first).exists());
    assert!(repo.join("pg").join(&second).join("manifest.json").exists());
}
