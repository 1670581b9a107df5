//! The SQL of `kind = "native"`: ClickHouse's own `BACKUP ... TO S3(...)` and
//! `RESTORE ... FROM S3(...)` (22.8 and later), and the version gate that refuses
//! older servers. No server new enough runs where this tool is tested: the SQL and
//! the gate are unit-tested, the refusal against a real 18.16 server; the statements
//! have not been run against a real 22.x server.
//!
//! The S3 credentials end up in the SQL text, which goes in the POST body (never the
//! URL's query string, which servers log); every text meant for people or manifests
//! comes from [`Statement::shown`], with the secret replaced.

use super::http::{ident, literal};
use crate::error::Fail;

/// The first version whose `BACKUP`/`RESTORE` write to and read from S3.
pub const NEEDED: (u32, u32) = (22, 8);

/// Refuses a server older than [`NEEDED`] with one line (exit 2).
pub fn gate(version: &str, server: &str) -> Result<(), Fail> {
    let mut it = version.trim().split('.').map(|x| x.parse::<u32>().ok());
    let (major, minor) = (it.next().flatten(), it.next().flatten());
    match (major, minor) {
        (Some(a), Some(b)) if (a, b) >= NEEDED => Ok(()),
        _ => Err(Fail::Usage(format!(
            "ClickHouse {} at {server} has no BACKUP ... TO S3: kind = \"native\" needs ClickHouse {}.{} or later; use kind = \"logical\" (any version, from any host) or kind = \"physical\" (part-level, on the ClickHouse host)",
            version.trim(),
            NEEDED.0,
            NEEDED.1
        ))),
    }
}

/// Where the server writes (and reads) a native backup.
#[derive(Clone)]
pub struct S3Dest {
    /// `https://host/bucket/prefix/` (path style, ends with `/`).
    pub url: String,
    pub key_id: Option<String>,
    pub secret: Option<String>,
}

impl std::fmt::Debug for S3Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Dest({})", self.url)
    }
}

/// What a statement covers.
pub enum What<'a> {
    Database(&'a str),
    Table(&'a str, &'a str),
}

/// A statement with a secret in it: `sql` goes to the server, `shown` to people.
pub struct Statement {
    pub sql: String,
    pub shown: String,
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

fn s3(dest: &S3Dest, secret: Option<&str>) -> String {
    match (&dest.key_id, secret) {
        (Some(k), Some(s)) => format!("S3({}, {}, {})", literal(&dest.url), literal(k), literal(s)),
        // No keys: the server's own S3 configuration (or environment) applies.
        _ => format!("S3({})", literal(&dest.url)),
    }
}

fn both(make: impl Fn(&str) -> String, dest: &S3Dest) -> Statement {
    Statement {
        sql: make(&s3(dest, dest.secret.as_deref())),
        shown: make(&s3(dest, dest.secret.as_ref().map(|_| "[redacted]"))),
    }
}

fn object(w: &What) -> String {
    match w {
        What::Database(d) => format!("DATABASE {}", ident(d)),
        What::Table(d, t) => format!("TABLE {}.{}", ident(d), ident(t)),
    }
}

/// `BACKUP DATABASE|TABLE ... TO S3(...)`.
pub fn backup(w: &What, dest: &S3Dest) -> Statement {
    let o = object(w);
    both(|s3| format!("BACKUP {o} TO {s3}"), dest)
}

/// `RESTORE DATABASE|TABLE ... [AS ...] FROM S3(...)`; `into` renames the database.
pub fn restore(w: &What, into: Option<&str>, dest: &S3Dest) -> Statement {
    let o = object(w);
    let rename = match (w, into) {
        (_, None) => String::new(),
        (What::Database(_), Some(n)) => format!(" AS {}", ident(n)),
        (What::Table(_, t), Some(n)) => format!(" AS {}.{}", ident(n), ident(t)),
    };
    both(|s3| format!("RESTORE {o}{rename} FROM {s3}"), dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> S3Dest {
        S3Dest {
            url: "https://s3.example.com/bkt/ch/analytics/20261130T040000Z/native/it's/".into(),
            key_id: Some("AKIDEXAMPLE".into()),
            secret: Some("wJal'r\\XUtnFEMI".into()),
        }
    }

    #[test]
    fn backup_and_restore_sql_quote_names_and_keep_the_secret_out_of_what_is_shown() {
        let d = dest();
        let b = backup(&What::Database("my`db"), &d);
        assert_eq!(
            b.sql,
            "BACKUP DATABASE `my\\`db` TO S3('https://s3.example.com/bkt/ch/analytics/20261130T040000Z/native/it\\'s/', 'AKIDEXAMPLE', 'wJal\\'r\\\\XUtnFEMI')"
        );
        assert!(!b.shown.contains("wJal") && b.shown.contains("'[redacted]'"));
        assert!(!format!("{b:?} {d:?}").contains("wJal"));
        let r = restore(&What::Table("db", "t"), Some("scratch"), &d);
        assert!(
            r.sql
                .starts_with("RESTORE TABLE `db`.`t` AS `scratch`.`t` FROM S3('https://"),
            "{}",
            r.sql
        );
        let r = restore(&What::Database("db"), None, &d);
        assert!(r.shown.starts_with("RESTORE DATABASE `db` FROM S3("));
        let anon = S3Dest {
            key_id: None,
            secret: None,
            ..d
        };
        assert_eq!(
            backup(&What::Table("a", "b"), &anon).sql,
            "BACKUP TABLE `a`.`b` TO S3('https://s3.example.com/bkt/ch/analytics/20261130T040000Z/native/it\\'s/')"
        );
    }

    #[test]
    fn the_version_gate() {
        assert!(gate("22.8.5.29", "x").is_ok());
        assert!(gate("24.3.1", "x").is_ok());
        let e = gate("18.16.1", "http://ch:8123/").unwrap_err().to_string();
        assert!(
            e.contains("ClickHouse 18.16.1 at http://ch:8123/")
                && e.contains("needs ClickHouse 22.8 or later")
                && e.contains("kind = \"logical\"")
                && e.contains("kind = \"physical\""),
            "{e}"
        );
        assert!(gate("22.3.1", "x").is_err());
        assert!(gate("garbage", "x").is_err());
    }
}
