//! What a test-restore checks in a restored PostgreSQL database: row counts against the
//! manifest, foreign keys without orphans (queries generated from pg_constraint),
//! freshness columns, and the operator's SQL checks. Each is a pass/fail with figures.

use super::{quote_ident, ConnInfo, Postgres, Psql, Tool};
use crate::db::{Check, LogicalEngine, RestoreOptions};
use crate::manifest::Manifest;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;

/// Restored row counts against the manifest's (taken in the dump's own snapshot).
pub(super) fn row_counts(scratch: &mut Postgres, database: &str, m: &Manifest) -> Check {
    let wanted: Vec<_> = m
        .database
        .tables
        .iter()
        .filter(|t| t.rows.is_some())
        .collect();
    if wanted.is_empty() {
        // Nothing recorded to compare with (an empty database, or row_counts = "off").
        return Check::new(
            "row_counts",
            true,
            if m.database.tables.is_empty() {
                "skipped: the manifest lists no tables".to_string()
            } else {
                "skipped: the manifest has no row counts (row_counts = \"off\")".to_string()
            },
        );
    }
    let got = scratch.count_rows(&RestoreOptions {
        to_database: Some(database.to_string()),
        ..Default::default()
    });
    let got = match got {
        Ok(g) => g,
        Err(e) => return Check::new("row_counts", false, format!("counting rows: {e:#}")),
    };
    let mut tables = Vec::new();
    let mut bad = Vec::new();
    let mut total = 0u64;
    for w in &wanted {
        let expected = w.rows.unwrap_or(0);
        total += expected;
        let restored = got
            .iter()
            .find(|g| g.schema == w.schema && g.name == w.name)
            .and_then(|g| g.rows);
        let name = format!("{}.{}", w.schema, w.name);
        if restored != Some(expected) {
            bad.push(match restored {
                Some(r) => format!("{name}: {r} restored, manifest {expected}"),
                None => format!("{name}: missing after restore, manifest {expected}"),
            });
        }
        tables.push(serde_json::json!({"table": name, "expected": expected, "restored": restored}));
    }
    Check {
        name: "row_counts".into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "{} table(s), {total} row(s) match the manifest",
                wanted.len()
            )
        } else {
            format!(
                "{} of {} table(s) differ: {}",
                bad.len(),
                wanted.len(),
                bad.join("; ")
            )
        },
        figures: serde_json::json!({ "tables": tables }),
    }
}

const FK_SQL: &str = "SELECT coalesce(json_agg(json_build_object(\
 'name', c.conname, 'child', c.conrelid::regclass::text, 'parent', c.confrelid::regclass::text, \
 'cols', (SELECT array_agg(quote_ident(a.attname) ORDER BY k.o) FROM unnest(c.conkey) WITH ORDINALITY k(n, o) \
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n), \
 'pcols', (SELECT array_agg(quote_ident(a.attname) ORDER BY k.o) FROM unnest(c.confkey) WITH ORDINALITY k(n, o) \
          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n), \
 'validated', c.convalidated) ORDER BY c.conrelid::regclass::text, c.conname), '[]'::json) \
 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
 WHERE c.contype = 'f' AND c.conparentid = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

#[derive(Deserialize)]
struct Fk {
    name: String,
    child: String,
    parent: String,
    cols: Vec<String>,
    pcols: Vec<String>,
    validated: bool,
}

/// The orphan count query of one foreign key (MATCH SIMPLE: rows with a NULL in the
/// key reference nothing and are not orphans).
fn orphan_sql(fk: &Fk) -> String {
    let not_null: Vec<String> = fk
        .cols
        .iter()
        .map(|c| format!("c.{c} IS NOT NULL"))
        .collect();
    let join: Vec<String> = fk
        .cols
        .iter()
        .zip(&fk.pcols)
        .map(|(c, p)| format!("p.{p} = c.{c}"))
        .collect();
    format!(
        "SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})",
        fk.child,
        not_null.join(" AND "),
        fk.parent,
        join.join(" AND ")
    )
}

pub(super) fn foreign_keys(psql: &Tool, conn: &ConnInfo, db: &str) -> Check {
    let run = || -> Result<Check> {
        let mut s = Psql::connect(psql, conn, Some(db))?;
        let fks: Vec<Fk> = serde_json::from_str(&s.query_one(FK_SQL)?)?;
        let mut bad = Vec::new();
        let mut list = Vec::new();
        for fk in &fks {
            let n: u64 = s
                .query_one(&orphan_sql(fk))
                .with_context(|| format!("checking foreign key {} on {}", fk.name, fk.child))?
                .trim()
                .parse()
                .unwrap_or(0);
            if n > 0 {
                bad.push(format!(
                    "{} on {} ({}) -> {}: {n} orphan row(s){}",
                    fk.name,
                    fk.child,
                    fk.cols.join(", "),
                    fk.parent,
                    if fk.validated {
                        ""
                    } else {
                        " (constraint NOT VALID)"
                    }
                ));
            }
            list.push(serde_json::json!({"constraint": fk.name, "table": fk.child, "references": fk.parent,
                "columns": fk.cols, "orphans": n, "validated": fk.validated}));
        }
        s.close()?;
        Ok(Check {
            name: "foreign_keys".into(),
            passed: bad.is_empty(),
            detail: if bad.is_empty() {
                format!("{} foreign key(s), no orphan rows", fks.len())
            } else {
                bad.join("; ")
            },
            figures: serde_json::json!({ "constraints": list }),
        })
    };
    run().unwrap_or_else(|e| Check::new("foreign_keys", false, format!("{e:#}")))
}

pub(super) fn freshness(
    psql: &Tool,
    conn: &ConnInfo,
    db: &str,
    col: &str,
    m: &Manifest,
    max_lag: Duration,
) -> Check {
    let name = format!("freshness {col}");
    let parts: Vec<&str> = col.split('.').collect();
    let (table, column) = match parts.as_slice() {
        [t, c] => (quote_ident(t), quote_ident(c)),
        [s, t, c] => (
            format!("{}.{}", quote_ident(s), quote_ident(t)),
            quote_ident(c),
        ),
        _ => return Check::new(name, false, "write table.column or schema.table.column"),
    };
    let run = || -> Result<Check> {
        let mut s = Psql::connect(psql, conn, Some(db))?;
        let v = s.query_one(&format!(
            "SELECT extract(epoch FROM max({column}))::float8 FROM {table}"
        ))?;
        s.close()?;
        let reference = m.started_at;
        if v.trim().is_empty() {
            return Ok(Check::new(
                &name,
                false,
                format!("{col} has no value (empty table?)"),
            ));
        }
        let secs: f64 = v.trim().parse().context("reading the newest value")?;
        let newest = DateTime::<Utc>::from_timestamp(secs as i64, 0).unwrap_or_default();
        let lag = (reference - newest).num_seconds();
        let ok = lag <= max_lag.as_secs() as i64;
        Ok(Check {
            name: name.clone(),
            passed: ok,
            detail: format!(
                "newest {} is {} before the backup (max {})",
                newest.format("%Y-%m-%d %H:%M:%SZ"),
                crate::duration::human(Duration::from_secs(lag.max(0) as u64)),
                crate::duration::human(max_lag)
            ),
            figures: serde_json::json!({ "newest": newest, "lag_seconds": lag, "max_lag_seconds": max_lag.as_secs() }),
        })
    };
    run().unwrap_or_else(|e| Check::new(&name, false, format!("{e:#}")))
}

pub(super) fn operator_checks(psql: &Tool, conn: &ConnInfo, db: &str, text: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let mut session = Session::new(psql, conn, db);
    for (i, stmt) in split_sql(text).iter().enumerate() {
        let name = format!("sql #{}: {}", i + 1, short_sql(stmt));
        let s = match session.ready() {
            Ok(s) => s,
            Err(e) => {
                out.push(Check::new(name, false, format!("{e:#}")));
                continue;
            }
        };
        match s.query(stmt) {
            Ok(rows) => {
                let rows: Vec<&String> = rows.iter().filter(|r| !r.is_empty()).collect();
                let ok = rows.iter().all(|r| r.split('|').all(|v| v == "t"));
                out.push(Check {
                    name,
                    passed: ok,
                    detail: if rows.is_empty() {
                        "no rows".into()
                    } else if ok {
                        format!("{} row(s), all true", rows.len())
                    } else {
                        format!(
                            "returned {}",
                            rows.iter()
                                .take(5)
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    figures: serde_json::json!({ "rows": rows.len() }),
                });
            }
            Err(e) => {
                session.failed();
                out.push(Check::new(name, false, format!("error: {e:#}")));
            }
        }
    }
    out
}

/// One psql session for a list of statements, opened on first use; psql stops at an
/// error, so after one the next statement gets a new session.
struct Session<'a> {
    psql: &'a Tool,
    conn: &'a ConnInfo,
    db: &'a str,
    open: Option<Psql>,
}

impl<'a> Session<'a> {
    fn new(psql: &'a Tool, conn: &'a ConnInfo, db: &'a str) -> Session<'a> {
        Session {
            psql,
            conn,
            db,
            open: None,
        }
    }

    fn ready(&mut self) -> Result<&mut Psql> {
        if self.open.is_none() {
            self.open = Some(Psql::connect(self.psql, self.conn, Some(self.db))?);
        }
        Ok(self.open.as_mut().unwrap())
    }

    fn failed(&mut self) {
        self.open = None;
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.open.take() {
            let _ = s.close();
        }
    }
}

/// A statement on one line, cut at 60 characters, for a check's name.
fn short_sql(stmt: &str) -> String {
    let short: String = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
    if short.chars().count() > 60 {
        format!("{}…", short.chars().take(60).collect::<String>())
    } else {
        short
    }
}

/// The operator's `benchmark_sql` queries, each timed in one session on the restored
/// database (after ANALYZE, as the restore leaves it). A query that fails fails its
/// check; the rows are read and dropped (aggregate them to keep the transfer out of the
/// timing).
pub(super) fn benchmarks(psql: &Tool, conn: &ConnInfo, db: &str, queries: &[String]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut session = Session::new(psql, conn, db);
    for (i, q) in queries.iter().enumerate() {
        let name = format!("benchmark #{}: {}", i + 1, short_sql(q));
        // Connected before the clock starts: the query's time, not the connection's.
        let s = match session.ready() {
            Ok(s) => s,
            Err(e) => {
                out.push(Check::new(name, false, format!("{e:#}")));
                continue;
            }
        };
        let started = std::time::Instant::now();
        let res = s.query(q);
        let seconds = started.elapsed().as_secs_f64();
        match res {
            Ok(rows) => out.push(Check {
                name,
                passed: true,
                // Milliseconds matter here, unlike for a restore.
                detail: if seconds < 60.0 {
                    format!("{seconds:.3}s ({} row(s))", rows.len())
                } else {
                    format!(
                        "{} ({} row(s))",
                        crate::duration::human(Duration::from_secs_f64(seconds)),
                        rows.len()
                    )
                },
                figures: serde_json::json!({ "seconds": seconds, "rows": rows.len(), "index": i + 1 }),
            }),
            Err(e) => {
                session.failed();
                out.push(Check {
                    name,
                    passed: false,
                    detail: format!("benchmark query failed: {e:#}"),
                    figures: serde_json::json!({ "seconds": seconds, "index": i + 1 }),
                });
            }
        }
    }
    out
}

/// Splits a SQL file into statements on `;`, respecting quotes, dollar quotes and comments.
pub fn split_sql(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
                continue;
            }
            '\'' | '"' => {
                cur.push(c);
                i += 1;
                while i < chars.len() {
                    cur.push(chars[i]);
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            cur.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            '$' => {
                // $tag$ ... $tag$
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                if j < chars.len() && chars[j] == '$' {
                    let tag: String = chars[i..=j].iter().collect();
                    let rest: String = chars[j + 1..].iter().collect();
                    match rest.find(&tag) {
                        Some(end) => {
                            cur.push_str(&tag);
                            cur.push_str(&rest[..end]);
                            cur.push_str(&tag);
                            i = j + 1 + rest[..end].chars().count() + tag.chars().count();
                            continue;
                        }
                        None => cur.push(c),
                    }
                } else {
                    cur.push(c);
                }
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        let v = split_sql(
            "-- a comment; with semicolon\nSELECT 'a;b' = 'a;b';\n/* block ; */ SELECT $x$ ; $x$ <> '';\nSELECT \"we;ird\" FROM t\n",
        );
        assert_eq!(
            v,
            vec![
                "SELECT 'a;b' = 'a;b'",
                "SELECT $x$ ; $x$ <> ''",
                "SELECT \"we;ird\" FROM t"
            ]
        );
    }

    #[test]
    fn orphan_query_covers_every_column() {
        let fk = Fk {
            name: "f".into(),
            child: "public.c".into(),
            parent: "p".into(),
            cols: vec!["a".into(), "\"B\"".into()],
            pcols: vec!["x".into(), "y".into()],
            validated: true,
        };
        assert_eq!(
            orphan_sql(&fk),
            "SELECT count(*) FROM public.c c WHERE c.a IS NOT NULL AND c.\"B\" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM p p WHERE p.x = c.a AND p.y = c.\"B\")"
        );
    }
}
