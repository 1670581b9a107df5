//! Schedules in the configuration: a target's cron expressions (parsed with `croner`),
//! their time zone, and the `[daemon]` section that runs them.
//!
//! Day-of-month and day-of-week follow classic (Vixie) cron: when both are restricted
//! the expression fires when EITHER matches, so `0 10 1-7 * SUN` fires on days 1-7 and
//! on every Sunday. [`warnings`] names such expressions; `SUN#1` (first Sunday) or a `+`
//! before the day-of-week (`+SUN`: both must match) say what is usually meant.

use super::Config;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Deserialize;

/// One entry of `schedules = [{ cron = "0 2 * * *", type = "full" }, ...]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    pub cron: String,
    /// The backup type: `full`, or `diff`/`incr` for `method = "files"` targets.
    #[serde(rename = "type", default = "full")]
    pub kind: String,
}

fn full() -> String {
    "full".into()
}

/// `[daemon]`: how `backup daemon` runs the schedules.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// `host:port` for `/metrics` and `/healthz` (default: no HTTP listener).
    #[serde(default)]
    pub listen: Option<String>,
    /// Most jobs running at once, all targets together (default 2).
    #[serde(default)]
    pub max_concurrent_jobs: Option<usize>,
    /// Each fire time is delayed by a random duration up to this (default none).
    #[serde(default)]
    pub jitter: Option<String>,
    /// On SIGTERM, how long running jobs may finish before they are cancelled (default `5m`).
    #[serde(default)]
    pub grace_period: Option<String>,
    /// `/healthz` fails when a scheduled target's newest backup is older (default `26h`).
    #[serde(default)]
    pub max_age: Option<String>,
    /// Run a job missed while the daemon was down once at start (default true).
    #[serde(default)]
    pub catch_up: Option<bool>,
}

impl DaemonConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        for (k, v) in [
            ("jitter", &self.jitter),
            ("grace_period", &self.grace_period),
            ("max_age", &self.max_age),
        ] {
            if let Some(v) = v {
                crate::duration::parse(v).map_err(|e| (k, e.to_string()))?;
            }
        }
        if let Some(l) = &self.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err((
                    "listen",
                    format!("`{l}` is not an address:port, e.g. \"127.0.0.1:9187\""),
                ));
            }
        }
        if self.max_concurrent_jobs == Some(0) {
            return Err(("max_concurrent_jobs", "must be at least 1".into()));
        }
        Ok(())
    }
}

const FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses five-field cron (or six with leading seconds); the error names the field.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(format!(
            "`{expr}` has {} fields; write five (minute hour day-of-month month day-of-week), or six with a leading seconds field",
            fields.len()
        ));
    }
    let names = &FIELDS[6 - fields.len()..];
    let p = parser();
    let cron = p.parse(expr).map_err(|e| {
        // Find the culprit: the first field that fails with every other field `*`.
        for (i, f) in fields.iter().enumerate() {
            let probe: Vec<&str> = (0..fields.len())
                .map(|j| if j == i { *f } else { "*" })
                .collect();
            if p.parse(&probe.join(" ")).is_err() {
                return format!(
                    "`{expr}`: field {} ({}) `{f}` is not valid ({e})",
                    i + 1,
                    names[i]
                );
            }
        }
        format!("`{expr}`: {e}")
    })?;
    if cron
        .find_next_occurrence(&chrono::Utc::now(), false)
        .is_err()
    {
        return Err(format!("`{expr}` never fires (no such date)"));
    }
    Ok(cron)
}

/// A warning for an expression restricting both day-of-month and day-of-week.
pub fn dom_dow_warning(expr: &str) -> Option<String> {
    let f: Vec<&str> = expr.split_whitespace().collect();
    if f.len() < 5 {
        return None;
    }
    let (dom, dow) = (f[f.len() - 3], f[f.len() - 1]);
    let open = |s: &str| s == "*" || s == "?";
    if open(dom) || open(dow) || dow.starts_with('+') {
        return None;
    }
    Some(format!(
        "`{expr}` restricts both day-of-month and day-of-week: as in classic cron it fires when EITHER matches \
         (day-of-month {dom}, and also every {dow}); for the first Sunday of a month write `0 10 * * SUN#1`, \
         or put `+` before the day-of-week (`+{dow}`) to require both"
    ))
}

/// The backup types `backup run --type` takes (diff and incr: `method = "files"`).
pub const BACKUP_TYPES: &[&str] = &["full", "diff", "incr"];

impl Config {
    /// Cron expressions, time zones and `[daemon]`: one line naming the key, exit 2.
    pub(super) fn validate_schedules(&self) -> anyhow::Result<()> {
        if let Some(d) = &self.daemon {
            d.validate()
                .map_err(|(k, m)| self.key_error(&format!("daemon.{k}"), m))?;
        }
        for (name, t) in &self.targets {
            let key = |k: &str| format!("targets.{name}.{k}");
            if let Some(tz) = &t.timezone {
                if tz.parse::<chrono_tz::Tz>().is_err() {
                    return Err(self.key_error(
                        &key("timezone"),
                        format!("`{tz}` is not an IANA time zone name, e.g. \"Europe/Berlin\" or \"UTC\""),
                    ));
                }
            }
            for (k, v) in [
                ("schedule", &t.schedule),
                ("verify_schedule", &t.verify_schedule),
                ("test_restore_schedule", &t.test_restore_schedule),
                ("prune_schedule", &t.prune_schedule),
                ("copy_schedule", &t.copy_schedule),
            ] {
                if let Some(expr) = v {
                    parse_cron(expr).map_err(|m| self.key_error(&key(k), m))?;
                }
            }
            for (i, s) in t.schedules.iter().enumerate() {
                let at =
                    |m: String| self.key_error(&key("schedules"), format!("entry {}: {m}", i + 1));
                parse_cron(&s.cron).map_err(|m| at(format!("cron {m}")))?;
                if !BACKUP_TYPES.contains(&s.kind.as_str()) {
                    return Err(at(format!(
                        "type `{}` is not a backup type; use \"full\", \"diff\" or \"incr\"",
                        s.kind
                    )));
                }
                let files = t.kind == "physical"
                    && t.options.get("method").and_then(|m| m.as_str()) == Some("files");
                if s.kind != "full" && !files {
                    return Err(at(format!(
                        "type `{}` needs file-level physical backups (kind = \"physical\", method = \"files\"); \
                         other backups are always full: use type = \"full\"",
                        s.kind
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Warnings about valid but probably unintended expressions, as `(key, message)`.
pub fn warnings(cfg: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, t) in &cfg.targets {
        let mut exprs: Vec<(String, &String)> = [
            ("schedule", &t.schedule),
            ("verify_schedule", &t.verify_schedule),
            ("test_restore_schedule", &t.test_restore_schedule),
            ("prune_schedule", &t.prune_schedule),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (format!("targets.{name}.{k}"), v)))
        .collect();
        for (i, s) in t.schedules.iter().enumerate() {
            exprs.push((format!("targets.{name}.schedules[{}]", i + 1), &s.cron));
        }
        for (k, e) in exprs {
            if let Some(w) = dom_dow_warning(e) {
                out.push((k, w));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let e = parse_cron("0 25 * * *").unwrap_err();
        assert!(e.contains("field 2 (hour) `25`"), "{e}");
        let e = parse_cron("*/5 0 2 * * MOO").unwrap_err();
        assert!(e.contains("field 6 (day-of-week) `MOO`"), "{e}");
        let e = parse_cron("0 2 * *").unwrap_err();
        assert!(e.contains("has 4 fields"), "{e}");
        let e = parse_cron("0 0 30 2 *").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
    }

    #[test]
    fn warns_on_both_day_fields() {
        assert!(dom_dow_warning("0 10 1-7 * SUN").is_some());
        assert!(dom_dow_warning("0 10 * * SUN#1").is_none());
        assert!(dom_dow_warning("0 10 1-7 * +SUN").is_none());
        assert!(dom_dow_warning("0 2 * * *").is_none());
    }
}
