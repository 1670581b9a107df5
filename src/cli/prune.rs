use crate::config::Config;
use crate::engine::prune::{self, Prune, Request};
use crate::engine::restore::confirm;
use crate::engine::retention::{parse_instant, Action};
use crate::error::Fail;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use std::io::Write;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this target (default: every target in the config).
    pub target: Option<String>,
    /// Only this storage (default: every storage of each target).
    #[arg(long)]
    pub storage: Option<String>,
    /// Print the plan and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate the policy as of this instant (UTC): 2026-12-01T02:00:00Z, 20261201T020000Z
    /// or 2026-12-01.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Print the plan (with each removal's result) as a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also extend the S3 Object Lock of every backup the policy keeps (and the WAL it
    /// needs) to a full lock period from now when less than half is left; never shortens.
    #[arg(long)]
    pub extend_locks: bool,
    /// Delete without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn execute(cfg: &Config, args: PruneArgs, ui: &Ui) -> Result<()> {
    let started = std::time::Instant::now();
    let now = match &args.now {
        Some(t) => parse_instant(t).ok_or_else(|| {
            Fail::Usage(format!(
                "--now `{t}` is not a time; write e.g. 2026-12-01T02:00:00Z, 20261201T020000Z or 2026-12-01 (UTC)"
            ))
        })?,
        None => chrono::Utc::now(),
    };
    let mut plan = prune::prepare(
        cfg,
        &Request {
            target: args.target.as_deref(),
            storage: args.storage.as_deref(),
            now,
            lock: !args.dry_run,
            archives: &crate::db::registry::log_archive,
        },
    )?;
    for e in &plan.errors {
        ui.error(e);
    }
    for p in &plan.plans {
        if p.empty_policy {
            ui.info(format!(
                "target `{}` on `{}` has no retention policy: keeping every backup (set [storages.{}.retention] or [targets.{}.retention.{}])",
                p.target, p.storage, p.storage, p.target, p.storage
            ));
        }
    }
    let t = plan.totals();
    if !args.json {
        print_table(&plan, &mut std::io::stdout().lock())?;
    }
    let mut lock_errors = Vec::new();
    if args.extend_locks && args.dry_run {
        ui.info("dry run: no lock was extended (--extend-locks)");
    } else if args.extend_locks {
        let (n, errors) = crate::engine::locks::extend(&mut plan, chrono::Utc::now(), ui);
        ui.info(format!("object locks: {n} object(s) extended"));
        for e in &errors {
            ui.error(e);
        }
        lock_errors = errors;
    }
    let summary = format!(
        "{} to keep, {} to remove ({})",
        t.keep,
        t.remove,
        crate::duration::bytes(t.remove_bytes)
    );
    let outcome = if args.dry_run {
        ui.info(format!("dry run: {summary}; nothing was deleted"));
        Ok(())
    } else if t.remove == 0 {
        ui.info(format!("{summary}: nothing to do"));
        crate::watch::after_prune(cfg, &plan, started.elapsed().as_secs_f64(), ui);
        Ok(())
    } else {
        if args.json && !args.yes && ui.is_tty() {
            // The person answering should see what they agree to.
            print_table(&plan, &mut std::io::stderr().lock())?;
        }
        match confirm(ui, &format!("prune: {summary}; remove them"), args.yes) {
            Ok(()) => {
                plan.execute(ui);
                crate::watch::after_prune(cfg, &plan, started.elapsed().as_secs_f64(), ui);
                ui.info(format!("pruned: {}", plan.totals().done()));
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    if args.json {
        let v: Vec<&prune::Entry> = plan.entries().collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    outcome?;
    prune::finish(&plan)?;
    if !lock_errors.is_empty() {
        anyhow::bail!(
            "{} object lock(s) could not be extended: {}",
            lock_errors.len(),
            lock_errors.join("; ")
        );
    }
    Ok(())
}

fn print_table(plan: &Prune, out: &mut dyn Write) -> Result<()> {
    for p in &plan.plans {
        writeln!(
            out,
            "{} on {} ({}): {}",
            p.target, p.storage, p.location, p.policy
        )?;
        if p.entries.is_empty() {
            writeln!(out, "  (no backups)")?;
            continue;
        }
        writeln!(
            out,
            "  {:<18} {:<17} {:<6} {:>10}  REASONS",
            "ID", "TAKEN (UTC)", "ACTION", "SIZE"
        )?;
        for incomplete in [false, true] {
            let rows: Vec<_> = p
                .entries
                .iter()
                .filter(|e| e.incomplete == incomplete)
                .collect();
            if rows.is_empty() {
                continue;
            }
            if incomplete {
                writeln!(out, "  incomplete (no usable manifest):")?;
            }
            for e in rows {
                writeln!(
                    out,
                    "  {:<18} {:<17} {:<6} {:>10}  {}",
                    e.id,
                    e.time.format("%Y-%m-%d %H:%M"),
                    match e.action {
                        Action::Keep => "keep",
                        Action::Remove => "REMOVE",
                    },
                    crate::duration::bytes(e.size_bytes),
                    e.reasons.join("; ")
                )?;
            }
        }
        let kept: Vec<_> = p.kept().collect();
        writeln!(
            out,
            "  {} backup(s) kept{}, {} to remove",
            kept.len(),
            kept.last()
                .map(|e| format!(" (oldest {})", e.id))
                .unwrap_or_default(),
            p.entries
                .iter()
                .filter(|e| e.action == Action::Remove)
                .count()
        )?;
    }
    Ok(())
}

/// `prune_after_run`: prune the target's storages right after a successful run.
pub fn after_run(cfg: &Config, target: &str, ui: &Ui) -> Result<()> {
    let started = std::time::Instant::now();
    let mut prune = prune::prepare(
        cfg,
        &Request {
            target: Some(target),
            storage: None,
            now: chrono::Utc::now(),
            lock: true,
            archives: &crate::db::registry::log_archive,
        },
    )?;
    for p in &prune.plans {
        if p.empty_policy {
            ui.info(format!(
                "prune {target} on `{}`: no retention policy, keeping every backup",
                p.storage
            ));
        }
    }
    prune.execute(ui);
    crate::watch::after_prune(cfg, &prune, started.elapsed().as_secs_f64(), ui);
    let t = prune.totals();
    ui.info(format!("prune {target}: kept {}, {}", t.keep, t.done()));
    prune::finish(&prune)
}
