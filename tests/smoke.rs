//! The core loop against a real cluster: run, list, verify, restore.
mod common;
use common::*;

#[test]
fn plain_round_trip_restores_identical_database() {
    let pg = Pg::start();
    pg.createdb("app");
    pg.load_sample("app");
    let env = Env::new();
    env.write_config(&local_config(&env.repo(), &pg.url("app"), "plain"));
    let id = env.ok(&["run", "pg"]).trim().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["id"], id);
    env.ok(&["verify", "pg"]);
    env.ok(&["restore", "pg", &id, "--to-database", "copy", "--yes"]);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("copy"));
}
