use crate::config::Config;
use crate::db::{registry, RestoreOptions, Target};
use crate::engine::restore::{self, RestoreRequest};
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Target name from the config.
    pub target: String,
    /// A backup id (or unique prefix), or `latest` (the default).
    #[arg(value_name = "ID|latest", default_value = "latest")]
    pub id: String,
    /// Read the backup from this storage (default: local storages first).
    #[arg(long)]
    pub storage: Option<String>,
    /// Restore into this database (created when missing) instead of the target's.
    #[arg(long, value_name = "DB")]
    pub to_database: Option<String>,
    /// Restore only this table (`name` or `schema.name`, ClickHouse `db.table`); repeatable.
    /// PostgreSQL: custom-format dumps only.
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Drop the restored objects before recreating them, instead of refusing ones that
    /// exist and hold data (PostgreSQL custom format; plain dumps always do; Redis: the
    /// same as --flush; MongoDB: mongorestore --drop, also spelt --drop).
    #[arg(long, visible_alias = "drop")]
    pub clean: bool,
    /// Redis/MongoDB: restore into this server instead of the target's
    /// (`redis://[USER@]HOST:PORT`, `rediss://`, `mongodb://...`, also spelt --to-uri;
    /// password from REDISCLI_AUTH / MONGODB_PASSWORD, or the URL, where ps can see it).
    #[arg(long, value_name = "URL", visible_alias = "to-uri")]
    pub to_url: Option<String>,
    /// MongoDB: restore only the namespaces matching this pattern (`db.coll`, `db.*`;
    /// mongorestore --nsInclude); repeatable.
    #[arg(long = "ns-include", value_name = "PATTERN")]
    pub ns_include: Vec<String>,
    /// MongoDB: rename namespaces matching this pattern (`app.users`, `$db$.$coll$`)...
    #[arg(long = "ns-from", value_name = "PATTERN", requires = "ns_to")]
    pub ns_from: Option<String>,
    /// ...to this one (`app.users_restored`, `copy_$db$.$coll$`).
    #[arg(long = "ns-to", value_name = "PATTERN", requires = "ns_from")]
    pub ns_to: Option<String>,
    /// Redis: restore only this logical database (repeatable; default: every one).
    #[arg(long = "db", value_name = "N")]
    pub dbs: Vec<u64>,
    /// Redis: restore only the keys matching this glob (as KEYS/SCAN MATCH); never flushes.
    #[arg(long = "match", value_name = "GLOB")]
    pub key_match: Option<String>,
    /// Redis: empty the destination (the databases restored) first; `--clean` is an alias.
    #[arg(long)]
    pub flush: bool,
    /// Redis: stop the target's own server (`stop_command`), put the backup in place of its
    /// data file (and AOF), start it (`start_command`); the old file is kept until it answers.
    #[arg(long)]
    pub by_file: bool,
    /// Parallel pg_restore jobs into a fresh database (default: the target's restore_jobs, else 2).
    #[arg(long)]
    pub jobs: Option<u32>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip comparing restored row counts with the manifest.
    #[arg(long)]
    pub no_check: bool,
    /// PostgreSQL: do not ANALYZE after the restore (the first queries then run on empty
    /// planner statistics until autovacuum gets round to them).
    #[arg(long)]
    pub no_analyze: bool,
    /// Where to download remote backups before restoring (default: $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Ransomware runbook: restore from the versions a delete marker hides on a
    /// versioned S3 storage (with --storage; see `backup list --deleted`).
    #[arg(long, requires = "storage")]
    pub deleted: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: RestoreArgs, ui: &Ui) -> Result<()> {
    let t = Target::resolve(cfg, &args.target)?;
    let req = RestoreRequest {
        which: args.id.clone(),
        storage: args.storage.clone(),
        opts: RestoreOptions {
            to_database: args.to_database.clone(),
            tables: args.tables.clone(),
            clean: args.clean,
            jobs: args.jobs,
            to_url: args.to_url.clone(),
            dbs: args.dbs.clone(),
            key_match: args.key_match.clone(),
            flush: args.flush,
            by_file: args.by_file,
            backup_id: None,
            ns_include: args.ns_include.clone(),
            ns_from: args.ns_from.clone(),
            ns_to: args.ns_to.clone(),
            no_analyze: args.no_analyze,
        },
        yes: args.yes,
        dry_run: args.dry_run,
        check_counts: !args.no_check,
        temp_dir: args.temp_dir.clone(),
        deleted: args.deleted,
    };
    if let Some(u) = &args.to_url {
        if url::Url::parse(u).is_ok_and(|u| u.password().is_some()) {
            ui.warn(
                "the password in --to-url is visible in the process list; prefer REDISCLI_AUTH (Redis) or MONGODB_PASSWORD (MongoDB)",
            );
        }
    }
    let mut engine = registry::open(&t)?;
    if t.cfg.kind == "physical" && engine.physical().is_some() {
        return Err(crate::error::Fail::Usage(format!(
            "target `{}` takes physical backups: restore them with `backup pitr {} --data-dir DIR --target-immediate` (see docs/pitr.md)",
            t.name, t.name
        ))
        .into());
    }
    let res = match engine.stream_set() {
        Some(set) => crate::engine::stream_set::restore(&t, set, req, ui),
        None => restore::restore(&t, engine.logical(), req, ui),
    };
    if !args.dry_run {
        let mut act = crate::watch::audit::Act::new("restore", Some(&args.target)).outcome_of(&res);
        act.backup_id = Some(
            res.as_ref()
                .map(|o| o.id.clone())
                .unwrap_or(args.id.clone()),
        );
        act.storage = res
            .as_ref()
            .ok()
            .map(|o| o.storage.clone())
            .or(args.storage.clone());
        act.details = serde_json::json!({
            "database": res.as_ref().ok().map(|o| o.database.clone()).or(args.to_database.clone()),
            "to_url": args.to_url.as_deref().map(crate::redact::url),
            "tables": args.tables,
            "clean": args.clean || args.flush,
            "by_file": args.by_file,
        });
        crate::watch::audit::record(cfg, &[act], ui);
    }
    let out = res?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if out.dry_run {
        for p in &out.plan {
            println!("{p}");
        }
    } else {
        println!("{}", out.id);
    }
    Ok(())
}
