//! What a partial restore takes (`--db N`, `--match GLOB`) and whether the destination
//! is empty where it will write. The glob is Redis's own (`KEYS`/`SCAN MATCH`):
//! `*`, `?`, `[abc]`, `[^a-z]`, `\x`.

use super::{keyspace, one_line};
use crate::db::RestoreOptions;
use crate::error::Fail;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

/// The keys a restore writes.
pub struct Selection<'a> {
    pub dbs: &'a [u64],
    pub pattern: Option<&'a [u8]>,
}

impl<'a> Selection<'a> {
    pub fn of(opts: &'a RestoreOptions) -> Selection<'a> {
        Selection {
            dbs: &opts.dbs,
            pattern: opts.key_match.as_deref().map(str::as_bytes),
        }
    }

    pub fn whole(&self) -> bool {
        self.dbs.is_empty() && self.pattern.is_none()
    }

    pub fn db(&self, db: u64) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    pub fn key(&self, db: u64, key: &[u8]) -> bool {
        self.db(db) && self.pattern.map_or(true, |p| glob(p, key))
    }

    /// `keys matching `a:*` in db0, db3`, for the plan and messages.
    pub fn describe(&self) -> String {
        let dbs = if self.dbs.is_empty() {
            "every database".to_string()
        } else {
            let d: Vec<String> = self.dbs.iter().map(|d| format!("db{d}")).collect();
            d.join(", ")
        };
        match self.pattern {
            Some(p) => format!(
                "the keys matching `{}` in {dbs}",
                String::from_utf8_lossy(p)
            ),
            None => dbs,
        }
    }
}

/// The flags that do not go together, before any connection.
pub fn check_flags(opts: &RestoreOptions) -> Result<()> {
    if opts.key_match.is_some() && (opts.flush || opts.clean) {
        return Err(Fail::Usage(
            "--match restores some keys and never flushes; drop --flush/--clean, or drop --match to restore everything".into(),
        )
        .into());
    }
    if opts.key_match.as_deref() == Some("") {
        return Err(
            Fail::Usage("--match needs a glob, e.g. --match 'customer:42:*'".into()).into(),
        );
    }
    Ok(())
}

/// Where the destination already holds keys the restore would write: `db0 (12 keys)`,
/// or for `--match`, `db0 (a matching key: customer:42:x)`. Only the databases restored.
pub fn occupied(
    con: &mut redis::Connection,
    info: &BTreeMap<String, String>,
    sel: &Selection,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (db, (keys, _)) in keyspace(info) {
        if keys == 0 || !sel.db(db) {
            continue;
        }
        let Some(p) = sel.pattern else {
            out.push(format!("db{db} ({keys} keys)"));
            continue;
        };
        redis::cmd("SELECT")
            .arg(db)
            .query::<()>(con)
            .map_err(|e| anyhow!("SELECT {db} failed: {}", one_line(&e)))?;
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(p)
                .arg("COUNT")
                .arg(1000)
                .query(con)
                .map_err(|e| anyhow!("SCAN failed: {}", one_line(&e)))?;
            if let Some(k) = found.first() {
                out.push(format!(
                    "db{db} (a matching key: {})",
                    String::from_utf8_lossy(k)
                ));
                break;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    redis::cmd("SELECT").arg(0).query::<()>(con).ok();
    Ok(out)
}

/// Redis's `stringmatchlen`, case-sensitive.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi + 1, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, end)) = class(p, pi, s[si]) {
                        if matched {
                            pi = end;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == b'[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `p[start]`: (whether `c` is in it, index after `]`); None when
/// it is not closed.
fn class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let not = p.get(i) == Some(&b'^');
    if not {
        i += 1;
    }
    let mut hit = false;
    while i < p.len() && p[i] != b']' {
        if p[i] == b'\\' && i + 1 < p.len() {
            hit |= p[i + 1] == c;
            i += 2;
        } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            let (a, b) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
            hit |= (a..=b).contains(&c);
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((hit != not, i + 1))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_as_redis_does() {
        let yes = |p: &str, s: &str| assert!(glob(p.as_bytes(), s.as_bytes()), "{p} {s}");
        let no = |p: &str, s: &str| assert!(!glob(p.as_bytes(), s.as_bytes()), "{p} {s}");
        yes("customer:42:*", "customer:42:orders");
        yes("customer:42:*", "customer:42:");
        no("customer:42:*", "customer:421:x");
        yes("*", "");
        yes("h?llo", "hello");
        no("h?llo", "hllo");
        yes("h[ae]llo", "hallo");
        no("h[ae]llo", "hillo");
        yes("h[^e]llo", "hallo");
        no("h[^e]llo", "hello");
        yes("h[a-b]llo", "hbllo");
        yes("a\\*b", "a*b");
        no("a\\*b", "axb");
        yes("*:*:x", "a:b:c:x");
        no("*:*:x", "a:b:c:y");
        yes("a*b*c", "aXbYbZc");
    }
}
