//! Key counts per logical database as the manifest records them (tables `dbN.keys`,
//! `extra.keys_with_expiry`), and their comparison with what an RDB holds.

use super::rdb::Summary;
use crate::manifest::DatabaseFacts;
use std::collections::BTreeMap;

/// Per db: (keys, keys with an expiry when recorded).
pub type Counts = BTreeMap<u64, (u64, Option<u64>)>;

/// Whether the manifest recorded key counts at all (it always does for backups
/// taken by this tool; `extra.keys` is the total).
pub fn recorded(f: &DatabaseFacts) -> bool {
    f.extra.contains_key("keys")
}

/// The manifest's key counts per db.
pub fn expected(f: &DatabaseFacts) -> Counts {
    let exp: BTreeMap<String, u64> = f
        .extra
        .get("keys_with_expiry")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut out = Counts::new();
    for t in f.tables.iter().filter(|t| t.name == "keys") {
        if let Some(db) = db_number(&t.schema) {
            out.insert(db, (t.rows.unwrap_or(0), exp.get(&t.schema).copied()));
        }
    }
    out
}

/// `db3` -> 3.
pub fn db_number(schema: &str) -> Option<u64> {
    schema.strip_prefix("db")?.parse().ok()
}

/// Where the RDB's counts differ from the manifest's, one phrase per difference
/// naming the db and both counts. Nothing when the manifest recorded no counts.
pub fn differences(s: &Summary, f: &DatabaseFacts) -> Vec<String> {
    if !recorded(f) {
        return Vec::new();
    }
    let want = expected(f);
    let mut dbs: Vec<u64> = want.keys().chain(s.dbs.keys()).copied().collect();
    dbs.sort_unstable();
    dbs.dedup();
    let mut out = Vec::new();
    for db in dbs {
        let (keys, expires) = s
            .dbs
            .get(&db)
            .map(|c| (c.keys, c.expires))
            .unwrap_or((0, 0));
        let (wk, we) = want.get(&db).copied().unwrap_or((0, Some(0)));
        if keys != wk {
            out.push(format!(
                "db{db} has {keys} keys in the RDB, the manifest says {wk}"
            ));
        }
        if let Some(we) = we.filter(|we| *we != expires) {
            out.push(format!(
                "db{db} has {expires} keys with an expiry in the RDB, the manifest says {we}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::TableFact;

    fn facts(keys: &[(u64, u64)], exp: &[(u64, u64)]) -> DatabaseFacts {
        let mut f = DatabaseFacts::default();
        for (db, n) in keys {
            f.tables.push(TableFact {
                schema: format!("db{db}"),
                name: "keys".into(),
                rows: Some(*n),
            });
        }
        let e: BTreeMap<String, u64> = exp.iter().map(|(d, n)| (format!("db{d}"), *n)).collect();
        f.extra
            .insert("keys".into(), keys.iter().map(|k| k.1).sum::<u64>().into());
        f.extra
            .insert("keys_with_expiry".into(), serde_json::json!(e));
        f
    }

    fn summary(dbs: &[(u64, u64, u64)]) -> Summary {
        let mut s = Summary::default();
        for (db, k, e) in dbs {
            let c = s.dbs.entry(*db).or_default();
            c.keys = *k;
            c.expires = *e;
        }
        s
    }

    #[test]
    fn counts_are_compared_per_db_naming_both() {
        let s = summary(&[(0, 10, 2), (3, 1, 0)]);
        assert!(differences(&s, &facts(&[(0, 10), (3, 1)], &[(0, 2), (3, 0)])).is_empty());
        let d = differences(&s, &facts(&[(0, 11), (3, 1)], &[(0, 2), (3, 0)]));
        assert_eq!(d, vec!["db0 has 10 keys in the RDB, the manifest says 11"]);
        let d = differences(&s, &facts(&[(0, 10)], &[(0, 1)]));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(differences(&s, &DatabaseFacts::default()).is_empty());
    }
}
