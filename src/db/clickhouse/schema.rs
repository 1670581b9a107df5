//! Which objects a ClickHouse backup holds, the artifacts they become, and the DDL
//! rewriting a restore into another database needs.
//!
//! Kinds: `table` (DDL + data), `inner` (the `.inner.` table of a materialized view:
//! data only, since the view creates it), `mv` and `view` (DDL only; an MV's data is
//! its target table's), `nodata` (engines that keep no local data: Distributed,
//! Kafka, URL, MySQL, Buffer, Null...: DDL only, listed as such).

use super::http::{ident, literal, Client};
use super::{glob, Options};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub const SYSTEM_DATABASES: &[&str] = &[
    "system",
    "INFORMATION_SCHEMA",
    "information_schema",
    "_temporary_and_external_tables",
];

/// One object of a backup, as the manifest records it (`database.extra.clickhouse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub database: String,
    pub name: String,
    pub engine: String,
    /// `table`, `inner`, `mv`, `view`, `nodata`.
    pub kind: String,
    /// The DDL artifact (None for inner tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
    /// The data artifact (tables and inner tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Object {
    pub fn full(&self) -> String {
        format!("{}.{}", self.database, self.name)
    }
    pub fn quoted(&self, db: &str) -> String {
        format!("{}.{}", ident(db), ident(&self.name))
    }
}

/// Engines whose rows live in the server's own data folder and can be read back.
fn keeps_data(engine: &str) -> bool {
    engine.ends_with("MergeTree") || matches!(engine, "Log" | "TinyLog" | "StripeLog" | "Memory")
}

/// A file-name-safe form of a name (anything but letters, digits, `_` and `-` is
/// percent-encoded, dots included, so `db.table` splits unambiguously).
pub fn safe(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The database's DDL artifact.
pub fn database_ddl(db: &str) -> String {
    format!("{}.sql", safe(db))
}

/// The objects of the databases `o` selects, in restore order (tables and objects
/// without data, then inner tables, then materialized views, then views).
pub fn discover(c: &Client, o: &Options) -> Result<(Vec<String>, Vec<Object>)> {
    let all: Vec<String> = c
        .rows("SELECT name FROM system.databases ORDER BY name")?
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    let dbs: Vec<String> = match &o.databases {
        Some(want) => {
            for d in want {
                if !all.contains(d) {
                    bail!(
                        "database `{d}` (key `databases`) does not exist on {}; it has {}",
                        c.display(),
                        all.join(", ")
                    );
                }
            }
            want.clone()
        }
        None => all
            .into_iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
            .collect(),
    };
    let list = dbs
        .iter()
        .map(|d| literal(d))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = if dbs.is_empty() {
        vec![]
    } else {
        c.rows(&format!(
            "SELECT database, name, engine FROM system.tables WHERE database IN ({list}) AND NOT is_temporary ORDER BY database, name"
        ))?
    };
    let picked = |db: &str, name: &str| {
        let full = format!("{db}.{name}");
        let m = |p: &String| {
            if p.contains('.') {
                glob(p, &full)
            } else {
                glob(p, name)
            }
        };
        (o.include_tables.is_empty() || o.include_tables.iter().any(m))
            && !o.exclude_tables.iter().any(m)
    };
    let mut objs = Vec::new();
    let s = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or("").to_string();
    for r in &rows {
        let (database, name, engine) = (s(r, "database"), s(r, "name"), s(r, "engine"));
        let base = format!("{}.{}", safe(&database), safe(&name));
        let kind = if let Some(mv) = name.strip_prefix(".inner.") {
            if !picked(&database, mv) {
                continue;
            }
            "inner"
        } else if !picked(&database, &name) {
            continue;
        } else if engine == "MaterializedView" {
            "mv"
        } else if engine == "View" {
            "view"
        } else if keeps_data(&engine) {
            "table"
        } else {
            "nodata"
        };
        objs.push(Object {
            ddl: (kind != "inner").then(|| format!("{base}.sql")),
            data: matches!(kind, "table" | "inner").then(|| format!("{base}.native.gz")),
            database,
            name,
            engine,
            kind: kind.into(),
        });
    }
    // Globs that pick tables leave out the databases with none picked (a database
    // named in `databases` is kept, empty or not).
    let dbs = if o.include_tables.is_empty() || o.databases.is_some() {
        dbs
    } else {
        dbs.into_iter()
            .filter(|d| objs.iter().any(|x: &Object| &x.database == d))
            .collect()
    };
    let rank = |k: &str| match k {
        "table" | "nodata" => 0,
        "mv" => 1,
        "inner" => 2,
        _ => 3,
    };
    objs.sort_by_key(|o| rank(&o.kind));
    Ok((dbs, objs))
}

/// Rewrites a `CREATE ...` statement for a restore: the database `from` becomes `to`
/// wherever it qualifies a name (outside string literals), and `IF NOT EXISTS` is
/// added when `if_not_exists`.
pub fn rewrite(ddl: &str, from: &str, to: &str, if_not_exists: bool) -> String {
    let mut out = String::with_capacity(ddl.len());
    let b = ddl.as_bytes();
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let plain = format!("{from}.");
    let quoted = format!("{}.", ident(from));
    let mut i = 0;
    let mut start = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' {
            // Skip a string literal (with backslash escapes).
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        let boundary = i == 0 || !(ident_char(b[i - 1]) || b[i - 1] == b'.' || b[i - 1] == b'`');
        if boundary {
            if let Some(pat) = [&plain, &quoted]
                .into_iter()
                .find(|p| b[i..].starts_with(p.as_bytes()))
            {
                out.push_str(&ddl[start..i]);
                out.push_str(&ident(to));
                out.push('.');
                i += pat.len();
                start = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&ddl[start.min(ddl.len())..]);
    if if_not_exists {
        for head in ["CREATE TABLE ", "CREATE MATERIALIZED VIEW ", "CREATE VIEW "] {
            if let Some(rest) = out.strip_prefix(head) {
                if !rest.starts_with("IF NOT EXISTS") {
                    return format!("{head}IF NOT EXISTS {rest}");
                }
            }
        }
    }
    out
}

/// `CREATE DATABASE IF NOT EXISTS to ...` from the stored `CREATE DATABASE from ...`
/// (the engine clause kept).
pub fn database_create(ddl: &str, from: &str, to: &str) -> String {
    let rest = [
        format!("CREATE DATABASE {from}"),
        format!("CREATE DATABASE {}", ident(from)),
    ]
    .iter()
    .find_map(|h| ddl.strip_prefix(h.as_str()))
    .unwrap_or("");
    format!("CREATE DATABASE IF NOT EXISTS {}{rest}", ident(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_moves_every_qualified_name() {
        let d = "CREATE MATERIALIZED VIEW p.mv2 TO p.tgt ( d Date) AS SELECT d, 'p.x' FROM p.src JOIN `p`.o USING d WHERE ap.q = 1";
        assert_eq!(
            rewrite(d, "p", "n", true),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `n`.mv2 TO `n`.tgt ( d Date) AS SELECT d, 'p.x' FROM `n`.src JOIN `n`.o USING d WHERE ap.q = 1"
        );
        assert_eq!(
            database_create("CREATE DATABASE p ENGINE = Ordinary", "p", "n"),
            "CREATE DATABASE IF NOT EXISTS `n` ENGINE = Ordinary"
        );
    }

    #[test]
    fn safe_names_split_on_dots() {
        assert_eq!(safe("a.b c"), "a%2Eb%20c");
        assert_eq!(safe(".inner.mv"), "%2Einner%2Emv");
    }
}
