use crate::config::Config;
use crate::engine::status;
use crate::error::Fail;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use std::time::Duration;

/// Without `--max-age` or a target's `max_age`: a daily backup plus two hours' slack.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this target (default: every target).
    pub target: Option<String>,
    /// Oldest acceptable newest backup, per target and storage (exit 7 when older;
    /// default: each target's `max_age`, else 26h).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: StatusArgs, ui: &Ui) -> Result<()> {
    let max_age = match &args.max_age {
        Some(a) => {
            Some(crate::duration::parse(a).map_err(|e| Fail::Usage(format!("--max-age: {e}")))?)
        }
        None => None,
    };
    let st = status::status(cfg, args.target.as_deref(), max_age, DEFAULT_MAX_AGE)?;
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
                if let Some(ty) = &s.last_type {
                    println!(
                        "    newest is {ty}; newest full finished {}",
                        s.last_full_finished_at
                            .map(|f| f.format("%Y-%m-%d %H:%M:%SZ").to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
                if let Some(e) = &s.error {
                    ui.warn(format!("{} on `{}`: {e}", t.target, s.storage));
                }
            }
        }
    }
    let stale: Vec<(String, u64)> = st
        .iter()
        .flat_map(|t| {
            t.storages.iter().filter(|s| s.stale).map(move |s| {
                (
                    format!("{} on `{}`", t.target, s.storage),
                    t.max_age_seconds,
                )
            })
        })
        .collect();
    if let Some((_, first)) = stale.first() {
        let spec = |secs: u64| crate::duration::spec(Duration::from_secs(secs));
        // One limit for all (`--max-age`, or the same key everywhere): say it once.
        let msg = if stale.iter().all(|(_, m)| m == first) {
            format!(
                "no backup newer than {} for: {}",
                spec(*first),
                stale
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "no backup new enough for: {}",
                stale
                    .iter()
                    .map(|(n, m)| format!("{n} (max {})", spec(*m)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Fail::Stale(msg).into());
    }
    Ok(())
}
