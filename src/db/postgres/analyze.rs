//! Rebuilding the planner's statistics after a logical restore. pg_dump carries no
//! statistics (before PostgreSQL 18), so a restored database has none until autovacuum
//! gets round to it, and the first queries are planned blind: sequential scans and
//! nested loops where an index and a hash join were meant. So the restore ends with
//! ANALYZE; for big databases in three stages like `vacuumdb --analyze-in-stages`
//! (statistics target 1, then 10, then the configured one), so that rough statistics
//! exist within seconds and full ones follow. It runs through the same psql session
//! machinery as every other query (libpq settings, the password in the environment).
//!
//! Physical restores (`backup pitr`) need none of this: pg_statistic is part of the
//! data files, so the restored cluster has the original's planner statistics.

use super::tools::{quote_ident, Psql};
use super::{Options, Postgres};
use crate::db::{Analyze, RestoreOptions};
use crate::manifest::TableFact;
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::time::Instant;

/// Above this database size, `auto` analyzes in stages.
const STAGES_ABOVE_BYTES: u64 = 1 << 30;

/// vacuumdb's stages: cheap statistics first, full ones last.
const STAGES: [&str; 3] = [
    "SET default_statistics_target = 1; SET vacuum_cost_delay = 0",
    "SET default_statistics_target = 10; RESET vacuum_cost_delay",
    "RESET default_statistics_target",
];

/// The target's `analyze` key.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One ANALYZE, or three stages when the database is over 1 GiB.
    #[default]
    Auto,
    Stages,
    Single,
    /// Never (autovacuum will, eventually).
    Off,
}

/// The restore plan's note on statistics.
pub fn plan_note(cfg: &Options, opts: &RestoreOptions) -> String {
    if opts.no_analyze {
        "; no ANALYZE afterwards (--no-analyze)".into()
    } else if cfg.analyze == Mode::Off {
        "; no ANALYZE afterwards (analyze = \"off\")".into()
    } else if opts.tables.is_empty() {
        "; then ANALYZE the database".into()
    } else {
        "; then ANALYZE the restored table(s)".into()
    }
}

fn skipped(why: &str) -> Analyze {
    Analyze {
        done: false,
        detail: format!("skipped ({why})"),
        stages: 0,
        tables: 0,
        seconds: 0.0,
    }
}

impl Postgres {
    /// ANALYZE what the restore wrote: the whole database, or the selected tables.
    pub(super) fn analyze_restored(
        &mut self,
        opts: &RestoreOptions,
        tables: &[TableFact],
        ui: &Ui,
    ) -> Result<Analyze> {
        if opts.no_analyze {
            return Ok(skipped("--no-analyze"));
        }
        if self.opts.analyze == Mode::Off {
            return Ok(skipped("analyze = \"off\""));
        }
        let started = Instant::now();
        let psql = self.psql()?;
        let mut s = Psql::connect(&psql, &self.conn, opts.to_database.as_deref())?;
        // A partial restore analyzes only its tables (as the manifest names them; the
        // selectors themselves when the manifest lists none).
        let names: Vec<String> = if opts.tables.is_empty() {
            Vec::new()
        } else if tables.is_empty() {
            opts.tables
                .iter()
                .map(|t| t.split('.').map(quote_ident).collect::<Vec<_>>().join("."))
                .collect()
        } else {
            tables
                .iter()
                .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
                .collect()
        };
        let staged = match self.opts.analyze {
            Mode::Stages => true,
            Mode::Single | Mode::Off => false,
            Mode::Auto => s
                .query_one("SELECT pg_database_size(current_database())")?
                .parse::<u64>()
                .is_ok_and(|b| b > STAGES_ABOVE_BYTES),
        };
        let stages: &[&str] = if staged { &STAGES } else { &STAGES[2..] };
        for (i, set) in stages.iter().enumerate() {
            if staged {
                ui.info(format!("ANALYZE stage {} of 3", i + 1));
            }
            s.query(set)?;
            if names.is_empty() {
                s.query("ANALYZE").context("ANALYZE")?;
            } else {
                for n in &names {
                    s.query(&format!("ANALYZE {n}"))
                        .with_context(|| format!("ANALYZE {n}"))?;
                }
            }
        }
        // Closing the session also flushes its activity statistics (last_analyze).
        s.close()?;
        let seconds = started.elapsed().as_secs_f64();
        let what = if names.is_empty() {
            "the database".to_string()
        } else {
            format!("{} table(s)", names.len())
        };
        Ok(Analyze {
            done: true,
            detail: format!(
                "ANALYZE{} of {what} in {}",
                if staged { " in 3 stages" } else { "" },
                crate::duration::human(started.elapsed())
            ),
            stages: stages.len() as u32,
            tables: names.len(),
            seconds,
        })
    }
}
