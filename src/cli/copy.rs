//! `backup copy`: off-site copies, storage to storage (see `engine::copy`).

use crate::config::Config;
use crate::engine::copy::{self, CopyReport, Which};
use crate::error::Fail;
use crate::storage;
use crate::ui::Ui;
use crate::watch::audit::{self, Act};
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Target name from the config.
    pub target: String,
    /// A backup id (or unique prefix), or `latest` (the default).
    #[arg(value_name = "ID|latest")]
    pub id: Option<String>,
    /// Copy every complete backup the source holds (those already complete at the
    /// destination are skipped).
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Storage to read from (default: the target's first storage).
    #[arg(long, value_name = "STORAGE")]
    pub from: Option<String>,
    /// Storage to write to (default: every storage in the target's `copy_to`).
    #[arg(long, value_name = "STORAGE")]
    pub to: Option<String>,
    /// Print what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: CopyArgs, ui: &Ui) -> Result<()> {
    let t = cfg.target(&args.target)?;
    let from = match &args.from {
        Some(f) => f.clone(),
        None => t.storages.first().cloned().ok_or_else(|| {
            Fail::Config(format!(
                "target `{}` has no storages: name one with --from",
                args.target
            ))
        })?,
    };
    let to: Vec<String> = match &args.to {
        Some(s) => vec![s.clone()],
        None if !t.copy_to.is_empty() => t.copy_to.clone(),
        None => {
            return Err(Fail::Usage(format!(
                "name the destination with --to STORAGE (or set copy_to = [\"...\"] on targets.{})",
                args.target
            ))
            .into())
        }
    };
    let which = if args.all {
        Which::All
    } else {
        Which::One(args.id.clone().unwrap_or_else(|| "latest".into()))
    };
    let reports = run(cfg, &args.target, &from, &to, &which, args.dry_run, ui)?;
    if args.json {
        let v = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(&reports)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            for b in &r.backups {
                println!("{} {} {} -> {}: {}", r.target, b.id, r.from, r.to, b.action);
            }
        }
    }
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.failures().into_iter().map(move |b| {
                format!(
                    "{} to `{}`: {}",
                    b.id,
                    r.to,
                    b.error.as_deref().unwrap_or("failed")
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} backup copy(ies) failed ({}); completed copies are kept and a new `backup copy` resumes the rest",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// Copies to each destination in turn and records each copied backup in the audit log.
/// Shared with `copy_after_run`.
pub fn run(
    cfg: &Config,
    target: &str,
    from: &str,
    to: &[String],
    which: &Which,
    dry_run: bool,
    ui: &Ui,
) -> Result<Vec<CopyReport>> {
    let src = storage::open(cfg, from)?;
    let mut out = Vec::new();
    for name in to {
        let dst = storage::open(cfg, name)?;
        let res = copy::copy(
            target,
            src.as_ref(),
            dst.as_ref(),
            which,
            dry_run,
            &cfg.state_dir(),
            ui,
        );
        if !dry_run {
            let acts: Vec<Act> = match &res {
                Ok(r) => r
                    .backups
                    .iter()
                    .filter(|b| b.action == "copied" || b.action == "failed")
                    .map(|b| Act {
                        backup_id: Some(b.id.clone()),
                        storage: Some(name.clone()),
                        outcome: if b.action == "copied" { "ok" } else { "failed" }.into(),
                        error: b.error.clone(),
                        details: serde_json::json!({ "from": from, "to": name }),
                        ..Act::new("copy", Some(target))
                    })
                    .collect(),
                Err(_) => vec![Act {
                    storage: Some(name.clone()),
                    details: serde_json::json!({ "from": from, "to": name }),
                    ..Act::new("copy", Some(target)).outcome_of(&res)
                }],
            };
            audit::record(cfg, &acts, ui);
        }
        out.push(res?);
    }
    Ok(out)
}

/// `copy_after_run`: after a backup stored everywhere, copy it to the off-site storages.
pub fn after_run(cfg: &Config, target: &str, id: &str, from: &str, ui: &Ui) -> Result<()> {
    let t = cfg.target(target)?;
    let reports = run(
        cfg,
        target,
        from,
        &t.copy_after_run,
        &Which::One(id.to_string()),
        false,
        ui,
    )?;
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.failures()
                .into_iter()
                .map(move |b| format!("`{}`: {}", r.to, b.error.as_deref().unwrap_or("failed")))
        })
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(())
}
