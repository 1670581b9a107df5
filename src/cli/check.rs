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
    let mut engine = registry::open(&t)?;
    let Some(physical) = engine.physical() else {
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
