use crate::config::Config;
use crate::daemon::{self, log};
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use std::path::Path;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Log lines as `key=value` text or as JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: log::Format,
}

pub fn execute(cfg: &Config, args: DaemonArgs, config_path: Option<&Path>, _ui: &Ui) -> Result<()> {
    let log = log::Log {
        format: args.log_format,
    };
    for (key, w) in crate::config::schedule_warnings(cfg) {
        log.event(
            "warning",
            &[
                ("key", serde_json::json!(key)),
                ("message", serde_json::json!(w)),
            ],
        );
    }
    let opts = daemon::Options {
        config_path: config_path.map(Path::to_path_buf),
        log,
    };
    daemon::run(cfg.clone(), opts, &super::load_config)
}
