use crate::config::Config;
use crate::db::{lacks, registry, Target};
use crate::engine::test_restore::{self, TestRestoreRequest};
use crate::error::Fail;
use crate::ui::Ui;
use crate::watch;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct TestRestoreArgs {
    /// Target name from the config.
    pub target: String,
    /// A backup id (or unique prefix), `latest` (default) or `random` (uniformly among good backups in the window).
    #[arg(value_name = "ID|latest|random", default_value = "latest")]
    pub id: String,
    /// Only backups finished within this long (e.g. 30d); fails when the chosen one is older.
    #[arg(long, value_name = "DURATION")]
    pub within: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the report (JSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

pub fn execute(cfg: &Config, args: TestRestoreArgs, ui: &Ui) -> Result<()> {
    let t = Target::resolve(cfg, &args.target)?;
    let within = match &args.within {
        Some(w) => {
            Some(crate::duration::parse(w).map_err(|e| Fail::Usage(format!("--within: {e}")))?)
        }
        None => None,
    };
    let req = TestRestoreRequest {
        which: args.id.clone(),
        within,
    };
    let started = std::time::Instant::now();
    let res = registry::open(&t).and_then(|mut engine| match engine.scratch() {
        Some(scratch) => test_restore::run(&t, scratch, &req, ui),
        None => Err(lacks(&t, "throwaway instance for test-restore", "")),
    });
    watch::after_test_restore(cfg, &args.target, &res, started.elapsed().as_secs_f64(), ui);
    let report = res?;
    if let Some(p) = &args.report {
        let mut b = serde_json::to_vec_pretty(&report)?;
        b.push(b'\n');
        crate::watch::sink::write_atomic(p, &b)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", test_restore::render(&report));
    }
    if !report.passed {
        let failed: Vec<String> = report
            .failed_checks()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        return Err(Fail::CheckFailed(format!(
            "test-restore of {} {} failed check(s): {}",
            report.target,
            report.id,
            failed.join(", ")
        ))
        .into());
    }
    Ok(())
}
