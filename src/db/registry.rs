//! The registry: the one place that knows every engine. It checks each target's
//! engine keys when the configuration is loaded, and builds the engine for a target.
//!
//! Adding an engine: a `db/<engine>/` folder with an `Options` struct and a type that
//! implements [`Engine`] (and the capability traits it has), then one arm in
//! [`ENGINES`], [`check_target`] and [`open`] here. Nothing else names engines.

use super::{clickhouse, mongodb, postgres, redis, Engine, LogArchive, Target};
use crate::config::{Config, TargetConfig, COMMON_KEYS};
use anyhow::Result;
use serde::de::DeserializeOwned;

/// Engines this build can back up.
pub const ENGINES: &[&str] = &["postgres", "redis", "clickhouse", "mongodb"];
/// Engines the project plans; named in the error so nobody hunts for a typo.
const PLANNED: &[&str] = &[];

/// Checks every target's engine, kind and engine keys; errors name the file, the
/// line and the key. Called once, right after the configuration is parsed.
pub fn check_config(cfg: &Config) -> Result<()> {
    for (name, t) in &cfg.targets {
        check_target(cfg, name, t)?;
    }
    Ok(())
}

fn check_target(cfg: &Config, name: &str, t: &TargetConfig) -> Result<()> {
    match t.engine.as_str() {
        "postgres" => {
            let o: postgres::Options = options(cfg, name, t)?;
            o.validate(t)
                .map_err(|(key, msg)| cfg.key_error(&format!("targets.{name}.{key}"), msg))
        }
        "redis" => {
            let o: redis::Options = options(cfg, name, t)?;
            o.validate(t)
                .map_err(|(key, msg)| cfg.key_error(&format!("targets.{name}.{key}"), msg))
        }
        "mongodb" => {
            let o: mongodb::Options = options(cfg, name, t)?;
            o.validate(t)
                .map_err(|(key, msg)| cfg.key_error(&format!("targets.{name}.{key}"), msg))
        }
        "clickhouse" => {
            let o: clickhouse::Options = options(cfg, name, t)?;
            o.validate(t)
                .map_err(|(key, msg)| cfg.key_error(&format!("targets.{name}.{key}"), msg))
        }
        other => {
            let why = if PLANNED.contains(&other) {
                "is not supported by this version yet".to_string()
            } else {
                format!("is not an engine; use one of {}", ENGINES.join(", "))
            };
            Err(cfg.key_error(
                &format!("targets.{name}.engine"),
                format!("`{other}` {why}"),
            ))
        }
    }
}

/// Parses a target's engine keys into the engine's own options; an unknown key is
/// named with every key the target may hold.
pub fn options<T: DeserializeOwned>(cfg: &Config, name: &str, t: &TargetConfig) -> Result<T> {
    let de = toml::Value::Table(t.options.clone());
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let msg = crate::redact::serde_message(msg.lines().next().unwrap_or("").trim());
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let engine_keys = msg.split_once("expected one of ").map(|x| x.1);
            return cfg.key_error(
                &format!("targets.{name}.{field}"),
                format!(
                    "unknown field `{field}` for engine {}, expected one of {}{}",
                    t.engine,
                    COMMON_KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    engine_keys.map(|k| format!(", {k}")).unwrap_or_default()
                ),
            );
        }
        let key = if path.is_empty() || path == "." {
            format!("targets.{name}")
        } else {
            format!("targets.{name}.{path}")
        };
        cfg.key_error(&key, msg)
    })
}

/// Builds the engine for a resolved target.
pub fn open(t: &Target) -> Result<Box<dyn Engine>> {
    match t.cfg.engine.as_str() {
        "postgres" => Ok(Box::new(postgres::Postgres::new(t)?)),
        "redis" => Ok(Box::new(redis::Redis::new(t)?)),
        "mongodb" => Ok(Box::new(mongodb::Mongo::new(t)?)),
        "clickhouse" => Ok(Box::new(clickhouse::ClickHouse::new(t)?)),
        other => Err(crate::error::Fail::Config(format!(
            "engine `{other}` of target `{}` is not supported by this version",
            t.name
        ))
        .into()),
    }
}

/// The log archive of a target, when its engine and kind have one. Needs no
/// connection to the database (`list`, `verify` and `prune` only read storages).
pub fn log_archive(t: &Target) -> Option<Box<dyn LogArchive>> {
    match (t.cfg.engine.as_str(), t.cfg.kind.as_str()) {
        ("postgres", "physical") => Some(Box::new(postgres::archive::WalArchive)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let r = Config::parse(text, "b.toml").and_then(|c| check_config(&c));
        format!("{:#}", r.unwrap_err())
    }

    const BASE: &str =
        "[storages.l]\ntype=\"local\"\npath=\"/x\"\n[targets.pg]\nstorages = [\"l\"]\n";

    #[test]
    fn malformed_url_is_named_with_its_line() {
        let e = err(&format!(
            "{BASE}engine = \"postgres\"\nurl = \"mysql://x\"\n"
        ));
        assert!(e.contains("b.toml:7: key `targets.pg.url`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_engine_key_lists_every_key() {
        let e = err(&format!("{BASE}engine = \"postgres\"\nformt = \"plain\"\n"));
        assert!(e.contains("b.toml:7: key `targets.pg.formt`"), "{e}");
        assert!(e.contains("`storages`") && e.contains("`format`"), "{e}");
    }

    #[test]
    fn unknown_engines_are_named_with_the_choices() {
        let e = err(&format!("{BASE}engine = \"oracle\"\n"));
        assert!(
            e.contains("is not an engine; use one of postgres, redis, clickhouse, mongodb"),
            "{e}"
        );
    }

    #[test]
    fn bad_engine_value_names_the_key() {
        let e = err(&format!("{BASE}engine = \"postgres\"\nformat = \"tar\"\n"));
        assert!(e.contains("targets.pg.format"), "{e}");
    }

    #[test]
    fn the_example_configuration_passes_every_engine_check() {
        let cfg = Config::parse(
            include_str!("../../examples/backup.toml"),
            "examples/backup.toml",
        )
        .unwrap();
        check_config(&cfg).unwrap();
        assert!(cfg.targets.values().any(|t| t.engine == "redis"));
    }
}
