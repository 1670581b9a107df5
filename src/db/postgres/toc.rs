//! Restoring part of a custom archive: pg_restore's table of contents, parsed, and the
//! entries a `--table` selection needs (the table, its sequences, indexes, constraints,
//! triggers, the schemas they live in, and foreign keys between chosen tables).

use super::tools::{one_paragraph, Tool};
use crate::error::Fail;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// One entry of `pg_restore --list --verbose`.
#[derive(Debug, Clone, PartialEq)]
struct TocEntry {
    id: u64,
    desc: String,
    namespace: String,
    tag: String,
    deps: Vec<u64>,
    line: String,
}

/// Descriptions of more than one word in a TOC listing (longest first).
const MULTI_WORD_DESCS: &[&str] = &[
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW DATA",
    "MATERIALIZED VIEW",
    "FK CONSTRAINT",
    "CHECK CONSTRAINT",
    "DEFAULT ACL",
    "FOREIGN TABLE",
    "LARGE OBJECT",
    "SEQUENCE SET",
    "TABLE DATA",
    "TABLE ATTACH",
    "INDEX ATTACH",
    "BLOB",
];

fn parse_toc(listing: &str) -> Vec<TocEntry> {
    let mut out: Vec<TocEntry> = Vec::new();
    for line in listing.lines() {
        if let Some(deps) = line.strip_prefix(";\tdepends on:") {
            if let Some(last) = out.last_mut() {
                last.deps.extend(
                    deps.split_whitespace()
                        .filter_map(|d| d.parse::<u64>().ok()),
                );
            }
            continue;
        }
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // `<id>; <tableoid> <oid> <DESC> <namespace> <tag> <owner>`
        let Some((id, rest)) = line.split_once("; ") else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            continue;
        };
        let rest = rest.splitn(3, ' ').nth(2).unwrap_or("");
        let desc = MULTI_WORD_DESCS
            .iter()
            .find(|d| rest.starts_with(&format!("{d} ")))
            .map(|d| d.to_string())
            .unwrap_or_else(|| rest.split(' ').next().unwrap_or("").to_string());
        let words: Vec<&str> = rest[desc.len()..].split_whitespace().collect();
        let namespace = words.first().copied().unwrap_or("").to_string();
        let tag = match words.len() {
            0 | 1 => String::new(),
            2 => words[1].to_string(),
            n => words[1..n - 1].join(" "),
        };
        out.push(TocEntry {
            id,
            desc,
            namespace,
            tag,
            deps: Vec::new(),
            line: line.to_string(),
        });
    }
    out
}

/// Picks the named tables out of an archive's table of contents: each table, its data,
/// and every object that depends on nothing but them (primary key and unique
/// constraints, indexes, triggers, owned sequences, column defaults, comments, grants).
/// `pg_restore --table` alone restores neither those nor tables of several schemas at
/// once. A foreign key of a chosen table is restored when the table it references is
/// chosen too or exists in the database (`exists(schema, table)`). Returns the list for
/// `--use-list` and the tables' schemas.
fn select_tables(
    toc: &[TocEntry],
    tables: &[String],
    mut exists: impl FnMut(&str, &str) -> bool,
) -> std::result::Result<(String, Vec<String>), String> {
    use std::collections::BTreeSet;
    let mut chosen: BTreeSet<u64> = BTreeSet::new();
    let mut schemas = BTreeSet::new();
    let mut missing = Vec::new();
    for t in tables {
        let (schema, name) = split_table(t);
        let hits: Vec<&TocEntry> = toc
            .iter()
            .filter(|e| {
                e.desc == "TABLE"
                    && e.tag == name
                    && schema.as_ref().map_or(true, |s| *s == e.namespace)
            })
            .collect();
        if hits.is_empty() {
            missing.push(t.clone());
        }
        for h in hits {
            chosen.insert(h.id);
            schemas.insert(h.namespace.clone());
            for d in toc
                .iter()
                .filter(|e| e.desc == "TABLE DATA" && e.namespace == h.namespace && e.tag == h.tag)
            {
                chosen.insert(d.id);
            }
        }
    }
    if !missing.is_empty() {
        let known: Vec<String> = toc
            .iter()
            .filter(|e| e.desc == "TABLE")
            .map(|e| format!("{}.{}", e.namespace, e.tag))
            .collect();
        return Err(format!(
            "table(s) {} not in the backup; it holds: {}",
            missing.join(", "),
            known.join(", ")
        ));
    }
    loop {
        let before = chosen.len();
        for e in toc {
            if !chosen.contains(&e.id)
                && !matches!(e.desc.as_str(), "DATABASE" | "SCHEMA" | "EXTENSION")
                && !e.deps.is_empty()
                && e.deps.iter().all(|d| chosen.contains(d))
            {
                chosen.insert(e.id);
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    // The table an entry belongs to: itself, or the table it depends on (constraints).
    let table_of = |id: u64| -> Option<&TocEntry> {
        let e = toc.iter().find(|e| e.id == id)?;
        if e.desc == "TABLE" {
            return Some(e);
        }
        e.deps
            .iter()
            .filter_map(|d| toc.iter().find(|t| t.id == *d && t.desc == "TABLE"))
            .next()
    };
    let mut fks = Vec::new();
    for e in toc.iter().filter(|e| e.desc == "FK CONSTRAINT") {
        if chosen.contains(&e.id) || !e.deps.iter().any(|d| chosen.contains(d)) {
            continue;
        }
        let ok = e.deps.iter().filter(|d| !chosen.contains(d)).all(|d| {
            table_of(*d).is_some_and(|t| chosen.contains(&t.id) || exists(&t.namespace, &t.tag))
        });
        if ok {
            fks.push(e.id);
        }
    }
    chosen.extend(fks);
    let mut list = String::new();
    for e in toc.iter().filter(|e| chosen.contains(&e.id)) {
        list.push_str(&e.line);
        list.push('\n');
    }
    Ok((list, schemas.into_iter().collect()))
}

pub(super) fn table_selection(
    pg_restore: &Tool,
    file: &Path,
    tables: &[String],
    exists: impl FnMut(&str, &str) -> bool,
) -> Result<(String, Vec<String>)> {
    let out = Command::new(&pg_restore.path)
        .args(["--list", "--verbose"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("running pg_restore --list")?;
    if !out.status.success() {
        bail!(
            "pg_restore --list failed: {}",
            one_paragraph(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let toc = parse_toc(&String::from_utf8_lossy(&out.stdout));
    select_tables(&toc, tables, exists).map_err(|e| Fail::Usage(e).into())
}

/// `schema.table` or `table`.
pub fn split_table(t: &str) -> (Option<String>, String) {
    match t.split_once('.') {
        Some((s, n)) => (Some(s.to_string()), n.to_string()),
        None => (None, t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_selection_takes_subsidiary_objects_and_several_schemas() {
        let listing = "3371; 1262 16407 DATABASE - tst postgres
6; 2615 16434 SCHEMA - bil postgres
219; 1259 16435 TABLE bil m postgres
;\tdepends on: 6
218; 1259 16420 TABLE public m postgres
217; 1259 16419 SEQUENCE public m_id_seq postgres
;\tdepends on: 218
3372; 0 0 SEQUENCE OWNED BY public m_id_seq postgres
;\tdepends on: 217
216; 1259 16409 TABLE public u postgres
3208; 2604 16423 DEFAULT public m id postgres
;\tdepends on: 217 218 218
3365; 0 16435 TABLE DATA bil m postgres
;\tdepends on: 219
3364; 0 16420 TABLE DATA public m postgres
;\tdepends on: 218
3362; 0 16409 TABLE DATA public u postgres
;\tdepends on: 216
3374; 0 0 SEQUENCE SET public m_id_seq postgres
;\tdepends on: 217
3217; 2606 16439 CONSTRAINT bil m m_pkey postgres
;\tdepends on: 219
3215; 2606 16427 CONSTRAINT public m m_pkey postgres
;\tdepends on: 218
3212; 2606 16416 CONSTRAINT public u u_pkey postgres
;\tdepends on: 216
3213; 1259 16433 INDEX public m_b postgres
;\tdepends on: 218
3218; 2606 16428 FK CONSTRAINT public m m_u_fkey postgres
;\tdepends on: 218 216 3212
";
        let toc = parse_toc(listing);
        assert_eq!(toc[2].desc, "TABLE");
        assert_eq!(
            (toc[2].namespace.as_str(), toc[2].tag.as_str()),
            ("bil", "m")
        );
        assert_eq!(toc.last().unwrap().desc, "FK CONSTRAINT");
        let ids = |list: &str| -> Vec<u64> {
            list.lines()
                .map(|l| l.split(';').next().unwrap().parse().unwrap())
                .collect()
        };
        let (list, schemas) = select_tables(&toc, &["public.m".into()], |_, _| false).unwrap();
        assert_eq!(
            ids(&list),
            vec![218, 217, 3372, 3208, 3364, 3374, 3215, 3213]
        );
        // The foreign key to `u` comes along when `u` is in the database.
        let (list, _) =
            select_tables(&toc, &["public.m".into()], |s, t| (s, t) == ("public", "u")).unwrap();
        assert_eq!(ids(&list).last(), Some(&3218));
        let (list, _) = select_tables(&toc, &["m".into(), "u".into()], |_, _| false).unwrap();
        assert!(ids(&list).contains(&3218));
        assert_eq!(schemas, vec!["public"]);
        // An unqualified name matches every schema; two schemas in one selection.
        let (list, schemas) = select_tables(&toc, &["m".into()], |_, _| false).unwrap();
        assert!(ids(&list).contains(&219) && ids(&list).contains(&3217));
        assert_eq!(schemas, vec!["bil", "public"]);
        let e = select_tables(&toc, &["nope".into(), "bil.u".into()], |_, _| true).unwrap_err();
        assert!(e.contains("nope, bil.u") && e.contains("public.u"), "{e}");
    }
}
