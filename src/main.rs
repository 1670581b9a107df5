//! `backup`: parse, run, and map the outcome to an exit code. The only exit path.

mod cli;
mod compress;
mod config;
mod daemon;
mod db;
mod duration;
mod engine;
mod error;
mod manifest;
mod redact;
mod storage;
mod ui;
mod watch;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    // `backup list | head`: println! panics when its reader has gone. That reader
    // leaving is not a failure; any other panic keeps the default report.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && stdout_closed() {
            std::process::exit(0);
        }
        default_hook(info)
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let ui = ui::Ui::new(cli.quiet, cli.no_progress);
    // PostgreSQL reads these exit codes: they bypass the normal mapping.
    match cli.command {
        Command::WalPush(a) => return cli::wal::push_main(cli.config.as_deref(), a, &ui),
        Command::WalFetch(a) => return cli::wal::fetch_main(cli.config.as_deref(), a, &ui),
        _ => {}
    }
    // From the start, not from the first cleanup registered: a signal in between (a
    // temp file created, its cleanup not yet registered) would kill the process by the
    // default action, leaving the file and the wrong exit code. The daemon handles its
    // own signals.
    if !matches!(cli.command, Command::Daemon(_)) {
        engine::cleanup::install();
    }
    match run(cli, &ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`backup list | head`) is not a failure; a broken pipe to a
            // child (psql, redis-cli) is, so stdout itself must be the closed one.
            if stdout_closed()
                && e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                })
            {
                return ExitCode::SUCCESS;
            }
            let code = error::exit_code(&e);
            ui.error(format!("{e:#}"));
            if let Some(h) = error::hint(&e) {
                ui.error(format!("hint: {h}"));
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli, ui: &ui::Ui) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions(a) => return cli::completions::completions(a),
        Command::Man(a) => return cli::completions::man(a),
        _ => {}
    }
    let cfg = cli::load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Run(a) => cli::run::execute(&cfg, a, ui),
        Command::List(a) => cli::list::execute(&cfg, a, ui),
        Command::Verify(a) => cli::verify::execute(&cfg, a, ui),
        Command::Restore(a) => cli::restore::execute(&cfg, a, ui),
        Command::TestRestore(a) => cli::test_restore::execute(&cfg, a, ui),
        Command::Status(a) => cli::status::execute(&cfg, a, ui),
        Command::Prune(a) => cli::prune::execute(&cfg, a, ui),
        Command::Copy(a) => cli::copy::execute(&cfg, a, ui),
        Command::Undelete(a) => cli::undelete::execute(&cfg, a, ui),
        Command::Pitr(a) => cli::pitr::execute(&cfg, a, ui),
        Command::Check(a) => cli::check::execute(&cfg, a, ui),
        Command::Schedule(a) => cli::schedule::execute(&cfg, a, ui),
        Command::Daemon(a) => cli::daemon::execute(&cfg, a, cli.config.as_deref(), ui),
        Command::Completions(_) | Command::Man(_) | Command::WalPush(_) | Command::WalFetch(_) => {
            unreachable!()
        }
    }
}

/// Whether stdout is a pipe whose reader has gone (poll reports an error on it).
fn stdout_closed() -> bool {
    let mut p = libc::pollfd {
        fd: 1,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLERR != 0
}
