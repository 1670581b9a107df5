use crate::config::Config;
use crate::db::{registry, Target};
use crate::engine::{catalog, verify};
use crate::error::Fail;
use crate::manifest::VerifyReport;
use crate::storage;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this target (default: every target).
    pub target: Option<String>,
    /// A backup id (or unique prefix), or `latest` (the default).
    #[arg(value_name = "ID|latest")]
    pub id: Option<String>,
    /// Verify every backup, not only the latest.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Only this storage (default: every storage of the target).
    #[arg(long)]
    pub storage: Option<String>,
    /// Print the reports as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: VerifyArgs, ui: &Ui) -> Result<()> {
    let started = std::time::Instant::now();
    let targets: Vec<String> = match &args.target {
        Some(t) => {
            cfg.target(t)?;
            vec![t.clone()]
        }
        None => cfg.targets.keys().cloned().collect(),
    };
    if let Some(s) = &args.storage {
        cfg.storage(s)?;
    }
    let which = args.id.clone().unwrap_or_else(|| "latest".into());
    let mut reports = Vec::new();
    let mut missing = Vec::new();
    for t in &targets {
        let target = Target::resolve(cfg, t)?;
        let tcfg = target.cfg;
        let mut engine = registry::open(&target)?;
        let archive = registry::log_archive(&target);
        // An explicit --storage is read even when the target does not name it (a copy
        // made with `backup copy --to` to a storage outside copy_to).
        let names = match &args.storage {
            Some(s) => vec![s.clone()],
            None => tcfg.all_storages(),
        };
        for sname in &names {
            if args.storage.as_ref().is_some_and(|s| s != sname) {
                continue;
            }
            let s = storage::open(cfg, sname)?;
            let cat = catalog::scan(s.as_ref(), t)?;
            let chosen: Vec<_> = if args.all {
                cat.backups.iter().collect()
            } else {
                catalog::pick(&cat, &which).into_iter().collect()
            };
            if chosen.is_empty() {
                missing.push(format!("no backup `{which}` of `{t}` on `{sname}`"));
            }
            if let Some(a) = &archive {
                ui.info(format!("verifying the WAL archive of {t} on `{sname}`"));
                let (checks, problems) = a.verify(s.as_ref(), t, &cat.backups);
                let r = VerifyReport {
                    target: t.to_string(),
                    id: a.folder().into(),
                    storage: s.name().to_string(),
                    ok: problems.is_empty(),
                    checks,
                    problems,
                    unreadable: false,
                };
                if !args.json {
                    print_report(&r, ui);
                }
                reports.push(r);
            }
            for m in chosen {
                ui.info(format!("verifying {t} {} on `{sname}`", m.id));
                let _reading =
                    crate::engine::readers::read(&cfg.state_dir(), t, &m.id, "backup verify")?;
                let r = verify::verify_backup(s.as_ref(), m, engine.logical());
                if !args.json {
                    print_report(&r, ui);
                }
                reports.push(r);
            }
        }
    }
    let results: Vec<(String, String, bool)> = reports
        .iter()
        .map(|r| (r.target.clone(), r.storage.clone(), r.ok))
        .collect();
    crate::watch::after_verify(cfg, &results, started.elapsed().as_secs_f64(), ui);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    let bad: Vec<_> = reports.iter().filter(|r| !r.ok).collect();
    if !bad.is_empty() {
        // No identity, or the wrong one, is the operator's to fix (exit 2), not damage.
        let fail = if bad.iter().all(|r| r.unreadable) {
            Fail::Usage
        } else {
            Fail::Verify
        };
        return Err(fail(format!(
            "{} of {} backup(s) failed verification: {}",
            bad.len(),
            reports.len(),
            bad.iter()
                .map(|r| format!(
                    "{} {} on `{}`: {}",
                    r.target,
                    r.id,
                    r.storage,
                    r.problems.join("; ")
                ))
                .collect::<Vec<_>>()
                .join(" | ")
        ))
        .into());
    }
    if reports.is_empty() {
        return Err(Fail::Verify(format!("nothing to verify: {}", missing.join("; "))).into());
    }
    if !missing.is_empty() && args.id.is_some() {
        ui.warn(missing.join("; "));
    }
    ui.info(format!("{} backup(s) verified", reports.len()));
    Ok(())
}

fn print_report(r: &VerifyReport, ui: &Ui) {
    println!(
        "{} {} {} {}",
        if r.ok { "OK  " } else { "FAIL" },
        r.target,
        r.id,
        r.storage
    );
    for c in &r.checks {
        ui.info(format!("  ok: {c}"));
    }
    for p in &r.problems {
        println!("  problem: {p}");
    }
}
