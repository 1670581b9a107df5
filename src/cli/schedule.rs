use crate::config::Config;
use crate::engine::schedule;
use crate::error::Fail;
use crate::ui::Ui;
use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// How many fire times to list per job.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub count: usize,
    /// List fire times after this instant (RFC 3339, default now).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: ScheduleArgs, ui: &Ui) -> Result<()> {
    let from: DateTime<Utc> = match &args.from {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                Fail::Usage(format!(
                    "--from `{s}`: {e}; write RFC 3339, e.g. 2026-12-01T00:00:00Z"
                ))
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    for (key, w) in crate::config::schedule_warnings(cfg) {
        ui.warn(format!("{key}: {w}"));
    }
    let jobs = schedule::jobs(cfg);
    if args.json {
        let v: Vec<_> = jobs
            .iter()
            .map(|j| {
                let next = j.upcoming(from, args.count);
                serde_json::json!({
                    "job": j.id,
                    "target": j.target,
                    "what": j.kind,
                    "type": j.backup_type,
                    "cron": j.cron,
                    "timezone": j.tz.name(),
                    "command": j.command(),
                    "next": next,
                    "next_local": next.iter().map(|t| t.with_timezone(&j.tz).to_rfc3339()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if jobs.is_empty() {
        ui.warn(format!(
            "no target in {} has a schedule; add e.g. schedule = \"0 2 * * *\" to a [targets.NAME] table",
            cfg.describe_source()
        ));
        return Ok(());
    }
    println!(
        "{:<22} {:<13} {:<18} {:<16} NEXT",
        "JOB", "WHAT", "CRON", "TIMEZONE"
    );
    for j in &jobs {
        let next: Vec<String> = j
            .upcoming(from, args.count)
            .iter()
            .map(|t| {
                t.with_timezone(&j.tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .collect();
        println!(
            "{:<22} {:<13} {:<18} {:<16} {}",
            j.id,
            j.kind.as_str(),
            j.cron,
            j.tz.name(),
            next.join(", ")
        );
    }
    Ok(())
}
