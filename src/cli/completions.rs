use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write backup.1 and backup-<command>.1 into.
    #[arg(long, default_value = "man")]
    pub out: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "backup", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd, &args.out)
        .with_context(|| format!("writing man pages to {}", args.out.display()))?;
    Ok(())
}
