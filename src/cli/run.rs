use crate::config::Config;
use crate::db::{registry, Target};
use crate::engine::backup;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Target name from the config (`postgres` in the embedded default).
    pub target: String,
    /// Tag kept in the manifest and as an S3 object tag (e.g. pre-deployment-v1.2.3).
    #[arg(long)]
    pub tag: Option<String>,
    /// Physical targets with method = "files": `full`, `diff` (changes since the last
    /// full) or `incr` (since the last backup of any type). Default full.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["full", "diff", "incr"])]
    pub backup_type: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: RunArgs, ui: &Ui) -> Result<()> {
    let started = std::time::Instant::now();
    let t = Target::resolve(cfg, &args.target)?;
    let tag = args.tag.as_deref();
    let res = registry::open(&t).and_then(|mut engine| {
        if let Some(physical) = engine.physical().filter(|_| t.cfg.kind == "physical") {
            // A physical target's `run` is its physical backup; every other one is logical.
            return physical.backup(&t, tag, args.backup_type.as_deref(), ui);
        }
        if args.backup_type.as_deref().is_some_and(|k| k != "full") {
            return Err(crate::error::Fail::Usage(format!(
                "--type {}: target `{}` takes logical backups, which are always full; \
                 differential and incremental backups are for kind = \"physical\" with method = \"files\"",
                args.backup_type.as_deref().unwrap_or_default(),
                t.name
            ))
            .into());
        }
        if let Some(set) = engine.stream_set() {
            return crate::engine::stream_set::run(&t, set, tag, ui);
        }
        backup::run(&t, engine.logical(), tag, ui)
    });
    crate::watch::after_backup(cfg, &args.target, &res, started.elapsed().as_secs_f64(), ui);
    let out = res?;
    let m = &out.manifest;
    if args.json {
        let v = serde_json::json!({
            "id": m.id,
            "target": m.target,
            "engine": m.engine,
            "kind": m.kind,
            "format": m.format,
            "tag": m.tag,
            "started_at": m.started_at,
            "finished_at": m.finished_at,
            "duration_seconds": m.duration_seconds,
            "size_bytes": m.size_bytes(),
            "raw_size_bytes": m.artifacts.iter().map(|a| a.raw_size_bytes).sum::<u64>(),
            "sha256": m.artifacts.first().map(|a| a.sha256.clone()),
            "tables": m.database.tables.len(),
            "storages": out.stored_on,
            "failed_storages": out.failed.iter().map(|(s, e)| serde_json::json!({"storage": s, "error": e})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", m.id);
    }
    if !out.failed.is_empty() {
        anyhow::bail!(
            "backup {} is stored on [{}] but failed on {}",
            m.id,
            out.stored_on.join(", "),
            backup::describe_failures(&out.failed)
        );
    }
    ui.info(format!(
        "backup {} {} done: {} ({} raw) in {:.1}s, {} table(s)",
        m.target,
        m.id,
        crate::duration::bytes(m.size_bytes()),
        crate::duration::bytes(m.artifacts.iter().map(|a| a.raw_size_bytes).sum()),
        m.duration_seconds,
        m.database.tables.len()
    ));
    // Only after a backup that succeeded everywhere (a failed run returned above).
    if !t.cfg.copy_after_run.is_empty() {
        let from = out.stored_on.first().cloned().unwrap_or_default();
        super::copy::after_run(cfg, &args.target, &m.id, &from, ui).map_err(|e| {
            e.context(format!(
                "backup {} is stored on [{}], but copying it to [{}] (copy_after_run) failed; `backup copy {} {} --to STORAGE` retries",
                m.id,
                out.stored_on.join(", "),
                t.cfg.copy_after_run.join(", "),
                args.target,
                m.id
            ))
        })?;
    }
    if t.cfg.prune_after_run {
        super::prune::after_run(cfg, &args.target, ui).map_err(|e| {
            e.context(format!(
                "backup {} is stored, but pruning afterwards (prune_after_run) failed",
                m.id
            ))
        })?;
    }
    Ok(())
}
