use crate::config::Config;
use crate::engine::status;
use crate::error::Fail;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this target (default: every target).
    pub target: Option<String>,
    /// Oldest acceptable newest backup, per target and storage (exit 7 when older).
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    pub max_age: String,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: StatusArgs, ui: &Ui) -> Result<()> {
    let max_age = crate::duration::parse(&args.max_age)
        .map_err(|e| Fail::Usage(format!("--max-age: {e}")))?;
    let st = status::status(cfg, args.target.as_deref(), max_age)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        println!(
            "{:<14} {:<10} {:<18} {:>9} {:>10} {:<6} LAST TEST-RESTORE",
            "TARGET", "STORAGE", "LAST BACKUP", "AGE", "SIZE", "STATE"
        );
        for t in &st {
            let tr = match &t.last_test_restore {
                Some(l) => format!(
                    "{} {} ({}, {})",
                    if l.passed { "passed" } else { "FAILED" },
                    l.at.format("%Y-%m-%d %H:%M:%SZ"),
                    l.id.as_deref().unwrap_or("-"),
                    l.summary
                ),
                None => "never".into(),
            };
            for s in &t.storages {
                println!(
                    "{:<14} {:<10} {:<18} {:>9} {:>10} {:<6} {}",
                    t.target,
                    s.storage,
                    s.last_id.as_deref().unwrap_or("none"),
                    s.age_seconds
                        .map(|a| crate::duration::human(Duration::from_secs(a.max(0) as u64)))
                        .unwrap_or_else(|| "-".into()),
                    s.size_bytes
                        .map(crate::duration::bytes)
                        .unwrap_or_else(|| "-".into()),
                    if s.error.is_some() {
                        "ERROR"
                    } else if s.stale {
                        "STALE"
                    } else {
                        "ok"
                    },
                    tr
                );
                if let Some(e) = &s.error {
                    ui.warn(format!("{} on `{}`: {e}", t.target, s.storage));
                }
            }
        }
    }
    let stale: Vec<String> = st
        .iter()
        .flat_map(|t| {
            t.storages
                .iter()
                .filter(|s| s.stale)
                .map(move |s| format!("{} on `{}`", t.target, s.storage))
        })
        .collect();
    if !stale.is_empty() {
        return Err(Fail::Stale(format!(
            "no backup newer than {} for: {}",
            args.max_age,
            stale.join(", ")
        ))
        .into());
    }
    Ok(())
}
