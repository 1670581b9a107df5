//! The house rules of docs/architecture.md, checked on the source itself:
//! - `src/engine/` and `src/watch/` name no database and use no `db::<engine>` module;
//! - no two modules import each other, directly or around a longer circle;
//! - no source file is over about 600 lines before its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ENGINES: &[&str] = &["postgres", "redis", "clickhouse", "mongodb"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/db/postgres/wal.rs` -> `db::postgres::wal`; `src/db/mod.rs` -> `db`.
fn module_of(src: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "main") {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".into()
    } else {
        parts.join("::")
    }
}

/// The code before `#[cfg(test)]`, without comments.
fn code(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Modules a file uses: `crate::a::b` (the longest prefix that is a module) and
/// `super::x` (resolved against the file's own module).
fn imports(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent = |m: &str| m.rsplit_once("::").map(|x| x.0.to_string());
    let own_parent = if module == "crate" {
        None
    } else {
        parent(module)
    };
    let is_mod_rs = modules
        .iter()
        .any(|m| m.starts_with(&format!("{module}::")));
    let mut resolve = |base: String, path: &str| {
        let mut cur = base;
        let mut best = None;
        for seg in path.split("::") {
            let seg: String = seg
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if seg.is_empty() {
                break;
            }
            cur = if cur == "crate" {
                seg
            } else {
                format!("{cur}::{seg}")
            };
            if modules.contains(&cur) {
                best = Some(cur.clone());
            }
        }
        if let Some(b) = best {
            out.insert(b);
        }
    };
    for (i, _) in text.match_indices("crate::") {
        resolve("crate".into(), &text[i + 7..]);
    }
    for (i, _) in text.match_indices("super::") {
        // `super` of a mod.rs is its parent; of a leaf file, its folder's module.
        let base = if is_mod_rs {
            parent(module)
        } else {
            own_parent.clone()
        };
        resolve(base.unwrap_or_else(|| "crate".into()), &text[i + 7..]);
    }
    out.remove(module);
    out
}

#[test]
fn engine_and_watch_name_no_database_and_no_module_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for f in &files {
        let m = module_of(&src, f);
        let text = code(&std::fs::read_to_string(f).unwrap());
        let lines = text.lines().count();
        if lines > 650 {
            problems.push(format!("{} has {lines} lines of code", f.display()));
        }
        if m.starts_with("engine") || m.starts_with("watch") {
            for e in ENGINES {
                if text.to_lowercase().contains(e) {
                    problems.push(format!("{} names the database `{e}`", f.display()));
                }
            }
        }
        graph.insert(m.clone(), imports(&m, &text, &modules));
    }
    // A cycle: some module reaches itself through its imports.
    for start in graph.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if n == start {
                    problems.push(format!("import cycle: {} -> {start}", path.join(" -> ")));
                } else if seen.insert(n.clone()) {
                    let mut p = path.clone();
                    p.push(n.clone());
                    stack.push((n.clone(), p));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
