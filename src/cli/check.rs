use crate::config::Config;
use crate::engine::physical;
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
    for line in physical::check(cfg, &args.target, timeout, ui)? {
        println!("{line}");
    }
    ui.info(format!(
        "WAL archiving of `{}` works end to end",
        args.target
    ));
    Ok(())
}
