use crate::config::Config;
use crate::db::{lacks, registry, Target};
use crate::error::Fail;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Target name (a kind = "physical" target).
    pub target: String,
    /// How long to wait for the switched WAL segment to arrive, e.g. 60s.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
}

pub fn execute(cfg: &Config, args: CheckArgs, ui: &Ui) -> Result<()> {
    let timeout = crate::duration::parse(&args.timeout)
        .map_err(|e| Fail::Usage(format!("--timeout: {e}")))?;
    let t = Target::resolve(cfg, &args.target)?;
    // Storages that promise Object Lock must be able to keep the promise.
    let mut locked = 0;
    for name in t.cfg.all_storages() {
        let s = crate::storage::open(cfg, &name)?;
        if let Some(l) = s.lock_policy() {
            s.check_lock_promise()?;
            locked += 1;
            println!(
                "storage `{name}`: {} object lock for {} on every new object; bucket versioning and Object Lock are enabled",
                l.mode,
                crate::duration::human(l.period)
            );
        }
    }
    let mut engine = registry::open(&t)?;
    let Some(physical) = engine.physical() else {
        if locked > 0 {
            return Ok(());
        }
        return Err(lacks(
            &t,
            "WAL archive to check",
            "; `check` tests WAL archiving of kind = \"physical\" PostgreSQL targets",
        ));
    };
    for line in physical.check_archiving(&t, timeout, ui)? {
        println!("{line}");
    }
    ui.info(format!(
        "WAL archiving of `{}` works end to end",
        args.target
    ));
    Ok(())
}
