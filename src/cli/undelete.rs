//! `backup undelete`: remove the delete markers hiding backups on a versioned S3 storage.

use crate::config::Config;
use crate::engine::restore::confirm;
use crate::engine::undelete;
use crate::storage;
use crate::ui::Ui;
use crate::watch::audit::{self, Act};
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct UndeleteArgs {
    /// Target name from the config.
    pub target: String,
    /// A deleted backup's id (or unique prefix), or `latest` (default: every deleted backup).
    #[arg(value_name = "ID|latest")]
    pub id: Option<String>,
    /// The versioned S3 storage the backups were deleted from.
    #[arg(long)]
    pub storage: String,
    /// Print what would be brought back; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: UndeleteArgs, ui: &Ui) -> Result<()> {
    cfg.target(&args.target)?;
    let view = storage::open_deleted(cfg, &args.storage)?;
    let plan = undelete::undelete(view.as_ref(), &args.target, args.id.as_deref(), true)?;
    if plan.backups.is_empty() {
        ui.info(format!(
            "no deleted backup of {} on `{}`",
            args.target, args.storage
        ));
    }
    let out = if args.dry_run || plan.backups.is_empty() {
        plan
    } else {
        confirm(
            ui,
            &format!(
                "undelete {} backup(s) of {} on `{}` ({} object(s))",
                plan.backups.len(),
                args.target,
                args.storage,
                plan.objects
            ),
            args.yes,
        )?;
        let res = undelete::undelete(view.as_ref(), &args.target, args.id.as_deref(), false);
        let acts: Vec<Act> = plan
            .backups
            .iter()
            .map(|id| Act {
                backup_id: Some(id.clone()),
                storage: Some(args.storage.clone()),
                ..Act::new("undelete", Some(&args.target)).outcome_of(&res)
            })
            .collect();
        audit::record(cfg, &acts, ui);
        res?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for id in &out.backups {
            println!(
                "{} {id} on {}: {}",
                out.target,
                out.storage,
                if out.dry_run {
                    "would be undeleted"
                } else {
                    "undeleted"
                }
            );
        }
    }
    Ok(())
}
