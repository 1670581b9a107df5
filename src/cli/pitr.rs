use crate::config::Config;
use crate::db::recovery::parse_time;
use crate::db::{lacks, registry, Goal, PitrRequest, Target};
use crate::error::Fail;
use crate::ui::Ui;
use anyhow::Result;
use clap::{ArgGroup, Args};
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("goal").required(true).args(["target_time", "target_name", "target_xid", "target_lsn", "target_immediate", "target_latest"])))]
pub struct PitrArgs {
    /// Target name (a kind = "physical" target).
    pub target: String,
    /// Recover up to this time (UTC unless a zone is given), e.g. 2026-11-24T14:05:00Z.
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover up to a restore point made with pg_create_restore_point().
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Recover up to and including this transaction id.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Recover up to this WAL location, e.g. 0/3000060.
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover only to the end of the base backup (the earliest consistent point).
    #[arg(long)]
    pub target_immediate: bool,
    /// Recover everything the archive holds, on the newest timeline (data-center loss);
    /// with --start, reports the last transaction reached: the recovery point achieved.
    #[arg(long)]
    pub target_latest: bool,
    /// New, empty data directory to restore into (with --delta: a stopped cluster's).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Restore into the existing data directory of a stopped cluster, rewriting only
    /// the files whose checksum differs and removing files the backup does not have
    /// (backups taken with method = "files").
    #[arg(long)]
    pub delta: bool,
    /// What the server does at the target: promote (default), pause or shutdown.
    #[arg(long, default_value = "promote", value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: String,
    /// recovery_target_timeline (default: latest).
    #[arg(long, value_name = "T")]
    pub timeline: Option<String>,
    /// Use this base backup (id or unique prefix) instead of the newest that fits.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Start the server, follow recovery and confirm it reached the target.
    #[arg(long)]
    pub start: bool,
    /// Port for the started server (with --start).
    #[arg(long, requires = "start")]
    pub port: Option<u16>,
    /// OS user that owns the data directory and runs the server (as root; default postgres).
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Give up following recovery after this long (with --start), e.g. 30m.
    #[arg(long, default_value = "6h")]
    pub timeout: String,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(cfg: &Config, args: PitrArgs, ui: &Ui) -> Result<()> {
    let goal = if let Some(t) = &args.target_time {
        Goal::Time(parse_time(t)?)
    } else if let Some(n) = &args.target_name {
        Goal::Name(n.clone())
    } else if let Some(x) = &args.target_xid {
        if !x.chars().all(|c| c.is_ascii_digit()) || x.is_empty() {
            return Err(Fail::Usage(format!(
                "--target-xid `{x}` is not a transaction id (digits)"
            ))
            .into());
        }
        Goal::Xid(x.clone())
    } else if let Some(l) = &args.target_lsn {
        Goal::Lsn(l.clone())
    } else if args.target_latest {
        Goal::Latest
    } else {
        Goal::Immediate
    };
    let timeout = crate::duration::parse(&args.timeout)
        .map_err(|e| Fail::Usage(format!("--timeout: {e}")))?;
    let t = Target::resolve(cfg, &args.target)?;
    let mut engine = registry::open(&t)?;
    let Some(physical) = engine.physical() else {
        // A physical target of an engine without a log archive (ClickHouse parts).
        let hint = if t.cfg.kind == "physical" {
            "; its physical backups have no log archive to recover along: use `backup restore`"
        } else {
            "; it needs a kind = \"physical\" target (see docs/pitr.md)"
        };
        return Err(lacks(&t, "point-in-time recovery", hint));
    };
    let data_dir = args.data_dir.display().to_string();
    let res = physical.recover(
        &t,
        PitrRequest {
            target: args.target.clone(),
            goal,
            data_dir: args.data_dir,
            action: args.target_action,
            timeline: args.timeline,
            backup: args.backup,
            start: args.start,
            port: args.port,
            owner: args.owner,
            timeout,
            server_opts: None,
            delta: args.delta,
        },
        ui,
    );
    let mut act = crate::watch::audit::Act::new("pitr", Some(&args.target)).outcome_of(&res);
    if let Ok(o) = &res {
        act.backup_id = Some(o.backup_id.clone());
        act.storage = Some(o.storage.clone());
        act.details =
            serde_json::json!({ "goal": o.goal, "data_dir": o.data_dir, "started": o.started });
    } else {
        act.details = serde_json::json!({ "data_dir": data_dir });
    }
    crate::watch::audit::record(cfg, &[act], ui);
    let out = res?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "base backup {} from `{}` -> {}",
        out.backup_id, out.storage, out.data_dir
    );
    for d in &out.done {
        println!("  done: {d}");
    }
    for s in &out.settings {
        println!("  set:  {s}");
    }
    if let Some(s) = &out.stopped_at {
        println!("recovery stopped: {s}");
    }
    if let Some(t) = &out.last_transaction {
        println!("last replayed transaction: {t}");
    }
    if let Some(n) = &out.next {
        println!("next: {n}");
    }
    Ok(())
}
