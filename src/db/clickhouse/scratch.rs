//! `backup test-restore` for ClickHouse ([`ScratchEngine`]): the backup is restored
//! through the ordinary restore path (every artifact verified first) into scratch
//! databases `backup_test_restore_<id>_<db>`, one per backed-up database, on the
//! target's server or on `test_restore.url`. Then every table's row count is compared
//! with the manifest, the operator's `checks_sql` statements run (each must return 1,
//! or no rows), and the scratch databases are dropped on every way out (errors and
//! signals included; a leftover of a killed run is dropped first).

use super::http::{ident, Client};
use super::{ClickHouse, Options};
use crate::db::{Check, RestoreOptions, ScratchEngine, ScratchOutcome, ScratchRequest, Target};
use crate::engine::cleanup::CleanupGuard;
use crate::engine::test_restore::{counts_check, timed_restore_set};
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::Result;
use std::sync::{Arc, Mutex};

/// The scratch databases' common prefix for backup `id`.
pub fn prefix(id: &str) -> String {
    let id: String = id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("backup_test_restore_{id}_")
}

/// Drops every database whose name starts with `prefix`; returns how many. A DROP
/// can fail while a statement of the interrupted restore is still writing into that
/// database ("Directory not empty"): each is tried again, a few times, after a pause.
fn drop_scratch(c: &Client, prefix: &str) -> Result<usize> {
    let mut dropped = 0;
    let mut last_err = None;
    for attempt in 0..10 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let names: Vec<String> = c
            .text("SELECT name FROM system.databases FORMAT TSV")?
            .lines()
            .filter(|n| n.starts_with(prefix))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Ok(dropped);
        }
        for n in &names {
            match c.exec(&format!("DROP DATABASE IF EXISTS {}", ident(n))) {
                Ok(()) => dropped += 1,
                Err(e) => last_err = Some(e),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("scratch databases {prefix}* keep coming back")))
}

impl ScratchEngine for ClickHouse {
    fn test_restore(
        &mut self,
        t: &Target,
        storage: &dyn Storage,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome> {
        let trc = req.settings;
        let c = match &trc.url {
            Some(u) => {
                let o = Options {
                    url: Some(u.clone()),
                    ..self.o.clone()
                };
                super::client(&o).map_err(|e| Fail::Usage(format!("test_restore.url: {e:#}")))?
            }
            None => self.logical.client().clone(),
        };
        let prefix = prefix(&m.id);
        let mut eng = self.scratch_engine(t, m, c.clone(), prefix.clone(), trc.url.is_none());
        // A leftover of a killed run (SIGKILL cannot be caught) is ours by name.
        drop_scratch(&c, &prefix)?;
        let outcome: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let guard = {
            let (c, prefix, outcome) = (c.for_cleanup(), prefix.clone(), outcome.clone());
            CleanupGuard::new(move || {
                let mut r = drop_scratch(&c, &prefix);
                if crate::engine::cleanup::terminating() {
                    // A statement sent just before the signal may still create a
                    // database: look once more after it had time to finish.
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    r = r.and_then(|n| Ok(n + drop_scratch(&c, &prefix)?));
                }
                if let Err(e) = &r {
                    eprintln!(
                        "could not drop the scratch databases {prefix}*: {e:#}; drop them by hand"
                    );
                }
                *outcome.lock().unwrap() = Some(match r {
                    Ok(n) => format!("dropped {n} scratch database(s) {prefix}*"),
                    Err(e) => format!("FAILED: {e:#}"),
                });
            })
        };

        let opts = RestoreOptions::default();
        let (restored, restore_seconds, mut check) = timed_restore_set(
            t,
            eng.as_mut(),
            storage,
            m,
            opts.clone(),
            trc.temp_dir.clone(),
            ui,
        );
        if restored {
            check.detail =
                check
                    .detail
                    .replacen("restored", &format!("restored into {prefix}*"), 1);
        }
        let mut checks = vec![check];
        if restored {
            checks.push(counts_check(
                eng.as_logical(),
                &opts,
                m,
                "row_counts",
                ("table", "row"),
            ));
            if let Some(text) = req.checks_sql {
                let dbs: Vec<String> = m
                    .database
                    .extra
                    .get("databases")
                    .and_then(|d| serde_json::from_value(d.clone()).ok())
                    .unwrap_or_default();
                checks.extend(operator_checks(&c, &prefix, &dbs, text));
            }
        }
        drop(guard);
        let dropped = outcome.lock().unwrap().take().unwrap_or_default();
        checks.push(Check::new(
            "scratch dropped",
            !dropped.starts_with("FAILED"),
            dropped,
        ));
        Ok(ScratchOutcome {
            place: format!("scratch databases {prefix}* on {}", c.display()),
            restore_seconds,
            restored,
            checks,
        })
    }
}

/// The operator's statements, with every backed-up database's name moved to its
/// scratch copy and the first one's copy as the default database: a pass is no rows,
/// or every value of every row `1`.
fn operator_checks(c: &Client, prefix: &str, dbs: &[String], text: &str) -> Vec<Check> {
    let default = format!("{prefix}{}", dbs.first().map_or("default", |d| d.as_str()));
    split_sql(text)
        .iter()
        .enumerate()
        .map(|(i, stmt)| {
            let short: String = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = short.chars().take(60).collect();
            let name = format!("sql #{}: {short}", i + 1);
            let sql = dbs.iter().fold(stmt.clone(), |s, d| {
                super::schema::rewrite(&s, d, &format!("{prefix}{d}"), false)
            });
            match c.text_in(&default, &format!("{sql} FORMAT TSV")) {
                Err(e) => Check::new(name, false, format!("{e:#}")),
                Ok(out) => {
                    let rows: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
                    let ok = rows.iter().all(|r| r.split('\t').all(|v| v == "1"));
                    let detail = match (rows.len(), ok) {
                        (0, _) => "no rows".to_string(),
                        (n, true) => format!("{n} row(s), all 1"),
                        (n, false) => format!(
                            "{n} row(s), not all 1: {}",
                            rows.iter().take(3).copied().collect::<Vec<_>>().join(" | ")
                        ),
                    };
                    let mut ch = Check::new(name, ok, detail);
                    ch.figures = serde_json::json!({ "rows": rows.len() });
                    ch
                }
            }
        })
        .collect()
}

/// Splits a file of ClickHouse statements on `;` outside quotes and comments.
/// ClickHouse's lexing differs from PostgreSQL's (backslash escapes in strings,
/// backquoted names, no dollar quotes), hence not `postgres::checks::split_sql`.
pub fn split_sql(text: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '-' if it.peek() == Some(&'-') => {
                for n in it.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                cur.push('\n');
            }
            '/' if it.peek() == Some(&'*') => {
                it.next();
                let mut prev = ' ';
                for n in it.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                cur.push(' ');
            }
            '\'' | '"' | '`' => {
                cur.push(c);
                while let Some(n) = it.next() {
                    cur.push(n);
                    if n == '\\' {
                        cur.extend(it.next());
                    } else if n == c {
                        break;
                    }
                }
            }
            ';' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_clickhouse_statements() {
        let v = split_sql(
            "-- a; comment\nSELECT 'a;\\'b' = 'x';\n/* c; */ SELECT `we;ird` FROM t;\n\nSELECT 1",
        );
        assert_eq!(
            v,
            vec![
                "SELECT 'a;\\'b' = 'x'",
                "SELECT `we;ird` FROM t",
                "SELECT 1"
            ]
        );
    }

    #[test]
    fn scratch_names_are_plain() {
        assert_eq!(
            prefix("20261130T124500Z"),
            "backup_test_restore_20261130t124500z_"
        );
    }
}
