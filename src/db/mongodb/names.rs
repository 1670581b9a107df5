//! Namespace patterns as mongorestore reads them: `--nsInclude` patterns where `*`
//! matches any run of characters, and `--nsFrom`/`--nsTo` pairs where `$name$` is a
//! variable carried from one to the other (`$db$.$coll$` -> `scratch.$db$.$coll$`).
//! A backslash escapes the next character. Used to know which manifest entries a
//! partial or renamed restore should be compared with, and under which name.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*` (no name) or `$name$`.
    Any(Option<String>),
}

fn tokens(p: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = p.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => out.push(Tok::Lit(it.next().unwrap_or('\\'))),
            '*' => out.push(Tok::Any(None)),
            '$' => {
                let name: String = it.by_ref().take_while(|&x| x != '$').collect();
                out.push(Tok::Any(Some(name)));
            }
            c => out.push(Tok::Lit(c)),
        }
    }
    out
}

fn matches(toks: &[Tok], s: &[char], vars: &mut BTreeMap<String, String>) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::Lit(c), rest)) => s.first() == Some(c) && matches(rest, &s[1..], vars),
        Some((Tok::Any(name), rest)) => (0..=s.len()).any(|n| {
            let mut v = vars.clone();
            if let Some(name) = name {
                let val: String = s[..n].iter().collect();
                if v.get(name).is_some_and(|old| *old != val) {
                    return false;
                }
                v.insert(name.clone(), val);
            }
            if matches(rest, &s[n..], &mut v) {
                *vars = v;
                true
            } else {
                false
            }
        }),
    }
}

/// Does `--nsInclude PATTERN` pick namespace `ns` (`db.collection`)?
pub fn included(pattern: &str, ns: &str) -> bool {
    let s: Vec<char> = ns.chars().collect();
    matches(&tokens(pattern), &s, &mut BTreeMap::new())
}

/// Where `--nsFrom FROM --nsTo TO` puts `ns`; None when FROM does not match it.
pub fn renamed(from: &str, to: &str, ns: &str) -> Option<String> {
    let s: Vec<char> = ns.chars().collect();
    let mut vars = BTreeMap::new();
    if !matches(&tokens(from), &s, &mut vars) {
        return None;
    }
    let mut out = String::new();
    for t in tokens(to) {
        match t {
            Tok::Lit(c) => out.push(c),
            Tok::Any(Some(name)) => out.push_str(vars.get(&name).map(String::as_str).unwrap_or("")),
            Tok::Any(None) => out.push('*'),
        }
    }
    Some(out)
}

/// Variables used in a pattern, to check that `--ns-to` uses only those `--ns-from` sets.
pub fn variables(p: &str) -> Vec<String> {
    tokens(p)
        .into_iter()
        .filter_map(|t| match t {
            Tok::Any(Some(n)) => Some(n),
            _ => None,
        })
        .collect()
}

/// `db.collection` split at the first dot (collection names may contain dots).
pub fn split(ns: &str) -> (String, String) {
    match ns.split_once('.') {
        Some((d, c)) => (d.to_string(), c.to_string()),
        None => (ns.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_patterns() {
        assert!(included("app.users", "app.users"));
        assert!(!included("app.users", "app.users2"));
        assert!(included("app.*", "app.users"));
        assert!(included("*.users", "billing.users"));
        assert!(!included("app.*", "apps.users"));
        assert!(included("app.a\\*b", "app.a*b"));
        assert!(!included("app.a\\*b", "app.axb"));
    }

    #[test]
    fn renames_carry_variables() {
        assert_eq!(
            renamed("app.users", "app.users_restored", "app.users").as_deref(),
            Some("app.users_restored")
        );
        assert_eq!(renamed("app.users", "x.y", "app.orders"), None);
        assert_eq!(
            renamed("$db$.$coll$", "scratch.$db$.$coll$", "app.sys.things").as_deref(),
            Some("scratch.app.sys.things")
        );
        assert_eq!(
            renamed("app.$c$", "app_copy.$c$", "app.orders").as_deref(),
            Some("app_copy.orders")
        );
        assert_eq!(variables("$db$.x_$coll$"), vec!["db", "coll"]);
        assert_eq!(
            split("scratch.app.users"),
            ("scratch".into(), "app.users".into())
        );
    }
}
