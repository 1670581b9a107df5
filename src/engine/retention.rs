//! The retention policy engine: which backups a policy keeps, and why. Pure: no
//! storage, no clock (the caller passes `now`), no local time zone.
//!
//! Semantics follow restic's `forget`:
//! - Periods are calendar periods in UTC: hour, day, ISO week (Monday to Sunday, named
//!   by ISO year: 2027-01-01 is in `2026-W53`), month, year.
//! - `keep_daily = N` keeps one backup from each of the N newest days that *have* a
//!   backup; days without backups do not count (a gap costs nothing).
//! - The newest backup of a period represents it; `period_representative = "first"`
//!   (for every period or per period) picks the oldest instead, e.g. the backup of the
//!   first day of a month.
//! - `keep_within*` windows are measured back from the newest backup (not from now),
//!   so a schedule that stopped never lets time alone expire the last backups.
//!   Durations: a month is 30 days, a year 365 days.
//! - Rules are ORed: any rule that keeps a backup keeps it, and every rule that keeps
//!   it is listed as a reason.
//! - An empty policy (no keep rule at all) keeps every backup.
//!
//! Safety rules no policy overrides: the newest good backup (newest complete backup
//! not dated after `now`, preferring verification results when known), backups
//! younger than `min_age`, future-dated backups (clock skew; they also take no part in
//! the rules, so they cannot push real backups out), and every backup a kept backup
//! depends on (`depends_on` in manifests: physical base backups, incrementals).

use crate::config::{PeriodRepresentative, Retention};
use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Manifest present and readable. `verified`: the last verification's verdict when
    /// one is recorded (None today: verify results are not stored yet).
    Complete { verified: Option<bool> },
    /// No manifest (interrupted or failed run). `last_write`: its newest object's time.
    Incomplete {
        last_write: Option<DateTime<Utc>>,
        why: String,
    },
    /// A manifest is there but this version cannot use it (newer format, damaged,
    /// misplaced): never removed automatically.
    Unreadable { why: String },
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub id: String,
    /// When the backup started (manifest `started_at`, else the time in its id).
    pub time: DateTime<Utc>,
    pub tag: Option<String>,
    pub state: State,
    /// Ids this backup needs to be restorable.
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Remove,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub action: Action,
    pub reasons: Vec<String>,
    pub incomplete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The UTC calendar period a time falls in, as shown in reasons.
    pub fn key(self, t: DateTime<Utc>) -> String {
        match self {
            Period::Hourly => t.format("%Y-%m-%dT%H").to_string(),
            Period::Daily => t.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => t.format("%Y-%m").to_string(),
            Period::Yearly => t.format("%Y").to_string(),
        }
    }
}

/// A duration with the text the operator wrote (reasons quote it back).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub d: Duration,
    pub text: String,
}

impl Span {
    fn parse(text: &str, key: &str) -> Result<Span, String> {
        Ok(Span {
            d: crate::duration::chrono(text).map_err(|e| format!("{key}: {e}"))?,
            text: text.trim().to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub keep_last: u32,
    /// Per period (index = position in `Period::ALL`).
    pub keep: [u32; 5],
    pub within: Option<Span>,
    pub within_period: [Option<Span>; 5],
    pub tagged: Option<Span>,
    /// `true`: the oldest backup represents its period, else the newest.
    pub first: [bool; 5],
    pub min_age: Span,
    pub incomplete_grace: Span,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_last: 0,
            keep: [0; 5],
            within: None,
            within_period: Default::default(),
            tagged: None,
            first: [false; 5],
            min_age: Span::parse("1h", "").unwrap(),
            incomplete_grace: Span::parse("24h", "").unwrap(),
        }
    }
}

impl Policy {
    pub fn from_config(r: Option<&Retention>) -> Result<Policy, String> {
        let mut p = Policy::default();
        let Some(r) = r else { return Ok(p) };
        let span = |v: &Option<String>, key: &str| -> Result<Option<Span>, String> {
            v.as_deref().map(|t| Span::parse(t, key)).transpose()
        };
        p.keep_last = r.keep_last.unwrap_or(0);
        p.keep = [
            r.keep_hourly.unwrap_or(0),
            r.keep_daily.unwrap_or(0),
            r.keep_weekly.unwrap_or(0),
            r.keep_monthly.unwrap_or(0),
            r.keep_yearly.unwrap_or(0),
        ];
        p.within = span(&r.keep_within, "keep_within")?;
        p.within_period = [
            span(&r.keep_within_hourly, "keep_within_hourly")?,
            span(&r.keep_within_daily, "keep_within_daily")?,
            span(&r.keep_within_weekly, "keep_within_weekly")?,
            span(&r.keep_within_monthly, "keep_within_monthly")?,
            span(&r.keep_within_yearly, "keep_within_yearly")?,
        ];
        p.tagged = span(&r.keep_tagged, "keep_tagged")?;
        if let Some(s) = span(&r.min_age, "min_age")? {
            p.min_age = s;
        }
        if let Some(s) = span(&r.incomplete_grace, "incomplete_grace")? {
            p.incomplete_grace = s;
        }
        match &r.period_representative {
            None => {}
            Some(PeriodRepresentative::All(w)) => p.first = [w == "first"; 5],
            Some(PeriodRepresentative::PerPeriod(m)) => {
                for (i, period) in Period::ALL.iter().enumerate() {
                    p.first[i] = m.get(period.name()).is_some_and(|w| w == "first");
                }
            }
        }
        Ok(p)
    }

    /// No keep rule at all: every backup is kept.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep.iter().all(|n| *n == 0)
            && self.within.is_none()
            && self.within_period.iter().all(Option::is_none)
            && self.tagged.is_none()
    }

    /// The policy in config words, for the plan's header.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.keep_last > 0 {
            parts.push(format!("keep_last {}", self.keep_last));
        }
        for (i, p) in Period::ALL.iter().enumerate() {
            let rep = if self.first[i] { " (first)" } else { "" };
            if self.keep[i] > 0 {
                parts.push(format!("keep_{} {}{rep}", p.name(), self.keep[i]));
            }
            if let Some(s) = &self.within_period[i] {
                parts.push(format!("keep_within_{} {}{rep}", p.name(), s.text));
            }
        }
        if let Some(s) = &self.within {
            parts.push(format!("keep_within {}", s.text));
        }
        if let Some(s) = &self.tagged {
            parts.push(format!("keep_tagged {}", s.text));
        }
        if parts.is_empty() {
            parts.push("no keep rules: every backup is kept".into());
        }
        format!(
            "{}; min_age {}; incomplete_grace {}",
            parts.join(", "),
            self.min_age.text,
            self.incomplete_grace.text
        )
    }
}

pub const REASON_EMPTY_POLICY: &str = "no retention policy: keeps everything";
pub const REASON_NO_RULE: &str = "matches no keep rule";
pub const REASON_NEWEST_GOOD: &str = "newest good backup";
pub const REASON_NEWEST_VERIFIED: &str = "newest verified backup";
pub const REASON_FUTURE: &str = "future-dated (clock skew?)";

/// Decides keep or remove for every backup of one target on one storage, newest first.
pub fn plan(backups: &[Backup], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|&a, &b| {
        (backups[b].time, &backups[b].id).cmp(&(backups[a].time, &backups[a].id))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); backups.len()];
    let mut remove = vec![false; backups.len()];

    // Complete backups not dated in the future take part in the rules, newest first.
    let cands: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| matches!(backups[i].state, State::Complete { .. }) && backups[i].time <= now)
        .collect();

    for &i in &order {
        let b = &backups[i];
        match &b.state {
            State::Complete { .. } if b.time > now => reasons[i].push(REASON_FUTURE.into()),
            State::Complete { .. } => {}
            State::Unreadable { why } => reasons[i].push(format!(
                "manifest present but unreadable, never removed automatically: {why}"
            )),
            State::Incomplete { last_write, why } => {
                let last = last_write.map_or(b.time, |w| w.max(b.time));
                if last > now {
                    reasons[i].push(REASON_FUTURE.into());
                } else if now - last < policy.incomplete_grace.d {
                    reasons[i].push(format!(
                        "incomplete, younger than {} (grace)",
                        policy.incomplete_grace.text
                    ));
                } else {
                    remove[i] = true;
                    reasons[i].push(format!(
                        "incomplete, older than {}",
                        policy.incomplete_grace.text
                    ));
                }
                reasons[i].push(why.clone());
            }
        }
    }

    if policy.is_empty() {
        for &i in &cands {
            reasons[i].push(REASON_EMPTY_POLICY.into());
        }
    } else {
        apply_rules(backups, &cands, policy, &mut reasons);
    }

    // Safety rules.
    let verdict = |i: usize| match backups[i].state {
        State::Complete { verified } => verified,
        _ => None,
    };
    if let Some(&i) = cands.iter().find(|&&i| verdict(i) != Some(false)) {
        reasons[i].push(REASON_NEWEST_GOOD.into());
    }
    if let Some(&i) = cands.iter().find(|&&i| verdict(i) == Some(true)) {
        if !reasons[i].iter().any(|r| r == REASON_NEWEST_GOOD) {
            reasons[i].push(REASON_NEWEST_VERIFIED.into());
        }
    }
    for &i in &cands {
        if now - backups[i].time < policy.min_age.d {
            reasons[i].push(format!("younger than min_age {}", policy.min_age.text));
        }
        if reasons[i].is_empty() {
            remove[i] = true;
            reasons[i].push(REASON_NO_RULE.into());
        }
    }

    // Whatever a kept backup depends on is kept too (to a fixed point: chains of
    // incrementals). A dependency that is missing from the storage is reported.
    let by_id: HashMap<&str, usize> = backups
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i))
        .collect();
    loop {
        let mut changed = false;
        for &i in &order {
            if remove[i] {
                continue;
            }
            for dep in &backups[i].depends_on {
                match by_id.get(dep.as_str()) {
                    Some(&d) if remove[d] => {
                        remove[d] = false;
                        reasons[d]
                            .retain(|r| r != REASON_NO_RULE && !r.starts_with("incomplete, older"));
                        reasons[d].push(format!("needed by {}", backups[i].id));
                        changed = true;
                    }
                    Some(&d) => {
                        let r = format!("needed by {}", backups[i].id);
                        if !reasons[d].contains(&r) {
                            reasons[d].push(r);
                        }
                    }
                    None => {
                        let r = format!("depends on {dep}, which is missing");
                        if !reasons[i].contains(&r) {
                            reasons[i].push(r);
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }

    order
        .into_iter()
        .map(|i| Decision {
            id: backups[i].id.clone(),
            time: backups[i].time,
            action: if remove[i] {
                Action::Remove
            } else {
                Action::Keep
            },
            reasons: std::mem::take(&mut reasons[i]),
            incomplete: !matches!(backups[i].state, State::Complete { .. }),
        })
        .collect()
}

/// The keep rules proper (restic's forget), over candidates sorted newest first.
fn apply_rules(backups: &[Backup], cands: &[usize], p: &Policy, reasons: &mut [Vec<String>]) {
    let Some(&newest) = cands.first() else { return };
    let reference = backups[newest].time;
    let inside = |i: usize, s: &Span| backups[i].time > reference - s.d;

    for &i in cands.iter().take(p.keep_last as usize) {
        reasons[i].push(format!("last {}", p.keep_last));
    }
    for (pi, period) in Period::ALL.iter().enumerate() {
        if p.keep[pi] == 0 && p.within_period[pi].is_none() {
            continue;
        }
        // Periods newest first, each with its representative.
        let mut groups: Vec<(String, usize)> = Vec::new();
        for &i in cands {
            let key = period.key(backups[i].time);
            match groups.last_mut() {
                Some((k, rep)) if *k == key => {
                    if p.first[pi] {
                        *rep = i; // later in newest-first order = older
                    }
                }
                _ => groups.push((key, i)),
            }
        }
        for (n, (key, rep)) in groups.iter().enumerate() {
            if n < p.keep[pi] as usize {
                reasons[*rep].push(format!("{} {key}", period.name()));
            }
            if let Some(s) = &p.within_period[pi] {
                if inside(*rep, s) {
                    reasons[*rep].push(format!("{} {key} (within {})", period.name(), s.text));
                }
            }
        }
    }
    if let Some(s) = &p.within {
        for &i in cands {
            if inside(i, s) {
                reasons[i].push(format!("within {}", s.text));
            }
        }
    }
    if let Some(s) = &p.tagged {
        for &i in cands {
            if let Some(tag) = &backups[i].tag {
                if inside(i, s) {
                    reasons[i].push(format!("tagged {tag}"));
                }
            }
        }
    }
}

/// `--now`: RFC 3339 (`2026-12-01T00:00:00Z`), a backup id (`20261201T000000Z`) or a
/// date (`2026-12-01`, midnight). A time without an offset is UTC, never local time.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Some(d) = crate::manifest::parse_backup_id(t).filter(|_| t.len() == 16) {
        return Some(d);
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Some(n.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::BTreeSet;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn good(t: DateTime<Utc>) -> Backup {
        Backup {
            id: crate::manifest::backup_id(t),
            time: t,
            tag: None,
            state: State::Complete { verified: None },
            depends_on: vec![],
        }
    }

    /// Daily backups at 02:00 UTC from `from` to `to` inclusive.
    fn daily(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Backup> {
        let mut v = Vec::new();
        let mut t = from;
        while t <= to {
            v.push(good(t));
            t += Duration::days(1);
        }
        v
    }

    fn policy(toml_text: &str) -> Policy {
        let r: Retention = toml::from_str(toml_text).unwrap();
        r.validate().unwrap();
        Policy::from_config(Some(&r)).unwrap()
    }

    /// The example configuration (the strategy document's retention section).
    fn example(target: &str, storage: &str) -> Policy {
        let cfg = crate::config::Config::parse(
            include_str!("../../examples/backup.toml"),
            "examples/backup.toml",
        )
        .unwrap();
        Policy::from_config(cfg.retention_for(target, storage).as_ref()).unwrap()
    }

    /// The strategy document's S3 policy, from examples/backup.toml.
    fn strategy_s3() -> Policy {
        let p = example("postgres", "s3");
        assert_eq!(
            p,
            policy(
                r#"
keep_within_daily = "30d"
keep_within_weekly = "90d"
keep_within_monthly = "1y"
keep_within_yearly = "5y"
keep_tagged = "90d"
period_representative = { monthly = "first", yearly = "first" }
"#
            )
        );
        p
    }

    fn kept_days(d: &[Decision]) -> BTreeSet<String> {
        d.iter()
            .filter(|d| d.action == Action::Keep)
            .map(|d| d.time.format("%Y-%m-%d").to_string())
            .collect()
    }

    fn reasons_of<'a>(d: &'a [Decision], id: &str) -> &'a [String] {
        &d.iter().find(|d| d.id == id).unwrap().reasons
    }

    fn set(days: &[&str]) -> BTreeSet<String> {
        days.iter().map(|s| s.to_string()).collect()
    }

    fn range(from: &str, to: &str) -> Vec<String> {
        let mut v = Vec::new();
        let mut d = chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d").unwrap();
        let end = chrono::NaiveDate::parse_from_str(to, "%Y-%m-%d").unwrap();
        while d <= end {
            v.push(d.format("%Y-%m-%d").to_string());
            d += Duration::days(1);
        }
        v
    }

    #[test]
    fn a_year_of_dailies_under_the_strategy_policy_at_year_end() {
        let backups = daily(at(2026, 1, 1, 2), at(2026, 12, 31, 2));
        assert_eq!(backups.len(), 365);
        let d = plan(&backups, &strategy_s3(), at(2026, 12, 31, 12));
        // daily: the 30 days after 2026-12-01 02:00 (window is measured from the newest).
        let mut want: BTreeSet<String> = range("2026-12-02", "2026-12-31").into_iter().collect();
        // weekly: the Sunday (newest of its ISO week) within 90 days.
        want.extend(set(&[
            "2026-10-04",
            "2026-10-11",
            "2026-10-18",
            "2026-10-25",
            "2026-11-01",
            "2026-11-08",
            "2026-11-15",
            "2026-11-22",
            "2026-11-29",
            "2026-12-06",
            "2026-12-13",
            "2026-12-20",
            "2026-12-27",
        ]));
        // monthly (first of month) within a year; yearly (January 1st).
        for m in 1..=12 {
            want.insert(format!("2026-{m:02}-01"));
        }
        assert_eq!(want.len(), 50);
        assert_eq!(kept_days(&d), want);
        let r = reasons_of(&d, "20261231T020000Z");
        assert!(
            r.contains(&"daily 2026-12-31 (within 30d)".to_string()),
            "{r:?}"
        );
        assert!(
            r.contains(&"weekly 2026-W53 (within 90d)".to_string()),
            "{r:?}"
        );
        assert!(r.contains(&REASON_NEWEST_GOOD.to_string()), "{r:?}");
        let r = reasons_of(&d, "20261101T020000Z");
        assert_eq!(
            r,
            [
                "weekly 2026-W44 (within 90d)",
                "monthly 2026-11 (within 1y)"
            ]
        );
        assert_eq!(
            reasons_of(&d, "20260101T020000Z"),
            ["monthly 2026-01 (within 1y)", "yearly 2026 (within 5y)"]
        );
        assert_eq!(reasons_of(&d, "20261130T020000Z"), [REASON_NO_RULE]);
    }

    #[test]
    fn the_local_volume_keeps_seven_days() {
        let backups = daily(at(2026, 1, 1, 2), at(2026, 12, 31, 2));
        let d = plan(
            &backups,
            &example("postgres", "local"),
            at(2026, 12, 31, 12),
        );
        let want: BTreeSet<String> = range("2026-12-25", "2026-12-31").into_iter().collect();
        assert_eq!(kept_days(&d), want);
        assert_eq!(reasons_of(&d, "20261225T020000Z"), ["within 7d"]);
    }

    #[test]
    fn a_year_of_dailies_across_a_year_boundary() {
        let backups = daily(at(2026, 3, 1, 2), at(2027, 2, 28, 2));
        let d = plan(&backups, &strategy_s3(), at(2027, 2, 28, 12));
        let mut want: BTreeSet<String> = range("2027-01-30", "2027-02-28").into_iter().collect();
        want.extend(set(&[
            "2026-12-06",
            "2026-12-13",
            "2026-12-20",
            "2026-12-27",
            "2027-01-03",
            "2027-01-10",
            "2027-01-17",
            "2027-01-24",
        ]));
        for m in 3..=12 {
            want.insert(format!("2026-{m:02}-01"));
        }
        want.insert("2027-01-01".into());
        assert_eq!(want.len(), 49);
        assert_eq!(kept_days(&d), want);
        // The yearly representative of 2026 is its first backup (March 1st here).
        assert!(reasons_of(&d, "20260301T020000Z").contains(&"yearly 2026 (within 5y)".into()));
    }

    #[test]
    fn when_backups_stop_time_alone_expires_nothing() {
        let backups = daily(at(2026, 1, 1, 2), at(2026, 12, 31, 2));
        let p = strategy_s3();
        let at_end = kept_days(&plan(&backups, &p, at(2026, 12, 31, 12)));
        let months_later = kept_days(&plan(&backups, &p, at(2027, 5, 1, 0)));
        assert_eq!(at_end, months_later);
    }

    #[test]
    fn now_in_the_middle_treats_later_backups_as_future_dated() {
        let backups = daily(at(2026, 1, 1, 2), at(2026, 12, 31, 2));
        let d = plan(&backups, &strategy_s3(), at(2026, 6, 15, 12));
        let mut want: BTreeSet<String> = range("2026-05-17", "2026-12-31").into_iter().collect();
        // Sundays from 90 days back (2026-03-17 02:00) and first of each month.
        want.extend(set(&[
            "2026-03-22",
            "2026-03-29",
            "2026-04-05",
            "2026-04-12",
            "2026-04-19",
            "2026-04-26",
            "2026-05-03",
            "2026-05-10",
            "2026-01-01",
            "2026-02-01",
            "2026-03-01",
            "2026-04-01",
            "2026-05-01",
        ]));
        assert_eq!(kept_days(&d), want);
        assert_eq!(reasons_of(&d, "20260616T020000Z"), [REASON_FUTURE]);
    }

    #[test]
    fn iso_weeks_across_a_year_boundary() {
        // 2026 has 53 ISO weeks: 2026-12-28 (Mon) .. 2027-01-03 (Sun) is 2026-W53.
        assert_eq!(Period::Weekly.key(at(2026, 12, 28, 0)), "2026-W53");
        assert_eq!(Period::Weekly.key(at(2027, 1, 3, 23)), "2026-W53");
        assert_eq!(Period::Weekly.key(at(2027, 1, 4, 0)), "2027-W01");
        assert_eq!(Period::Weekly.key(at(2026, 1, 1, 0)), "2026-W01");
        assert_eq!(Period::Weekly.key(at(2025, 12, 29, 0)), "2026-W01");
        let backups: Vec<Backup> = [
            at(2026, 12, 27, 2),
            at(2026, 12, 28, 2),
            at(2027, 1, 1, 2),
            at(2027, 1, 3, 2),
            at(2027, 1, 4, 2),
        ]
        .into_iter()
        .map(good)
        .collect();
        let d = plan(&backups, &policy("keep_weekly = 3"), at(2027, 1, 10, 0));
        assert_eq!(
            kept_days(&d),
            set(&["2026-12-27", "2027-01-03", "2027-01-04"])
        );
        assert_eq!(reasons_of(&d, "20270103T020000Z"), ["weekly 2026-W53"]);
        assert_eq!(reasons_of(&d, "20261227T020000Z"), ["weekly 2026-W52"]);
        // With `first`, Monday's backup represents the week instead.
        let d = plan(
            &backups,
            &policy("keep_weekly = 3\nperiod_representative = \"first\""),
            at(2027, 1, 10, 0),
        );
        assert_eq!(
            kept_days(&d),
            set(&["2026-12-27", "2026-12-28", "2027-01-04"])
        );
    }

    #[test]
    fn periods_are_utc_whatever_the_machine_time_zone() {
        // 23:30 UTC is already the next day east of UTC; the period must stay UTC.
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 23, 30, 0).unwrap();
        assert_eq!(Period::Daily.key(t), "2026-11-23");
        assert_eq!(Period::Hourly.key(t), "2026-11-23T23");
        // The engine never consults the machine's zone or clock: no local-zone type, no
        // clock call anywhere in this file (the caller passes `now`).
        let src = include_str!("retention.rs");
        let needle = ["Local", "::now"];
        for n in needle {
            let hits = src
                .lines()
                .filter(|l| l.contains(n) && !l.contains("needle"))
                .count();
            assert_eq!(hits, 0, "retention.rs mentions {n}");
        }
    }

    #[test]
    fn a_gap_of_missing_days_costs_nothing() {
        let mut backups = daily(at(2026, 11, 1, 2), at(2026, 11, 10, 2));
        backups.extend(daily(at(2026, 11, 21, 2), at(2026, 11, 23, 2)));
        let d = plan(&backups, &policy("keep_daily = 7"), at(2026, 11, 23, 12));
        assert_eq!(
            kept_days(&d),
            set(&[
                "2026-11-07",
                "2026-11-08",
                "2026-11-09",
                "2026-11-10",
                "2026-11-21",
                "2026-11-22",
                "2026-11-23"
            ])
        );
        assert_eq!(reasons_of(&d, "20261107T020000Z"), ["daily 2026-11-07"]);
    }

    #[test]
    fn rules_are_ored_and_newest_of_the_day_represents_it() {
        let mut backups = vec![
            good(at(2026, 11, 22, 2)),
            good(at(2026, 11, 22, 14)),
            good(at(2026, 11, 23, 2)),
            good(at(2026, 11, 23, 14)),
        ];
        backups[0].tag = Some("pre-deployment-v1.2.3".into());
        let d = plan(
            &backups,
            &policy("keep_last = 1\nkeep_daily = 2\nkeep_tagged = \"90d\""),
            at(2026, 11, 24, 0),
        );
        assert_eq!(
            reasons_of(&d, "20261123T140000Z"),
            ["last 1", "daily 2026-11-23", REASON_NEWEST_GOOD]
        );
        assert_eq!(reasons_of(&d, "20261122T140000Z"), ["daily 2026-11-22"]);
        assert_eq!(
            reasons_of(&d, "20261122T020000Z"),
            ["tagged pre-deployment-v1.2.3"]
        );
        assert_eq!(reasons_of(&d, "20261123T020000Z"), [REASON_NO_RULE]);
        // The decisions come newest first.
        assert_eq!(d[0].id, "20261123T140000Z");
    }

    #[test]
    fn tagged_backups_outlive_the_rotation_for_their_window_only() {
        let mut backups = daily(at(2026, 1, 1, 2), at(2026, 6, 30, 2));
        for b in backups.iter_mut() {
            if b.id == "20260415T020000Z" || b.id == "20260110T020000Z" {
                b.tag = Some("pre-deployment-v1".into());
            }
        }
        let d = plan(&backups, &strategy_s3(), at(2026, 6, 30, 12));
        assert_eq!(
            reasons_of(&d, "20260415T020000Z"),
            ["tagged pre-deployment-v1"]
        );
        assert_eq!(reasons_of(&d, "20260110T020000Z"), [REASON_NO_RULE]);
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        let backups = daily(at(2020, 1, 1, 2), at(2020, 3, 1, 2));
        let p = Policy::from_config(None).unwrap();
        assert!(p.is_empty());
        let d = plan(&backups, &p, at(2026, 1, 1, 0));
        assert!(d.iter().all(|d| d.action == Action::Keep));
        assert!(d
            .iter()
            .all(|d| d.reasons.contains(&REASON_EMPTY_POLICY.to_string())));
        assert!(p.describe().contains("every backup is kept"));
    }

    #[test]
    fn the_newest_good_backup_survives_any_policy() {
        // keep_tagged alone keeps nothing untagged, yet the newest backup stays.
        let backups = daily(at(2026, 1, 1, 2), at(2026, 1, 5, 2));
        let d = plan(&backups, &policy("keep_tagged = \"1d\""), at(2026, 2, 1, 0));
        assert_eq!(kept_days(&d), set(&["2026-01-05"]));
        assert_eq!(reasons_of(&d, "20260105T020000Z"), [REASON_NEWEST_GOOD]);
        // A known-bad newest backup does not count as good; the newest verified one is kept.
        let mut backups = backups;
        backups[4].state = State::Complete {
            verified: Some(false),
        };
        backups[2].state = State::Complete {
            verified: Some(true),
        };
        let d = plan(&backups, &policy("keep_tagged = \"1d\""), at(2026, 2, 1, 0));
        assert_eq!(kept_days(&d), set(&["2026-01-03", "2026-01-04"]));
        assert_eq!(reasons_of(&d, "20260104T020000Z"), [REASON_NEWEST_GOOD]);
        assert_eq!(reasons_of(&d, "20260103T020000Z"), [REASON_NEWEST_VERIFIED]);
    }

    #[test]
    fn min_age_protects_recent_backups_from_a_clock_jump() {
        let backups = vec![
            good(at(2026, 11, 24, 1)),
            good(Utc.with_ymd_and_hms(2026, 11, 24, 1, 40, 0).unwrap()),
            good(Utc.with_ymd_and_hms(2026, 11, 24, 1, 50, 0).unwrap()),
        ];
        let d = plan(&backups, &policy("keep_last = 1"), at(2026, 11, 24, 2));
        assert_eq!(
            reasons_of(&d, "20261124T014000Z"),
            ["younger than min_age 1h"]
        );
        assert_eq!(reasons_of(&d, "20261124T010000Z"), [REASON_NO_RULE]);
        let d = plan(
            &backups,
            &policy("keep_last = 1\nmin_age = \"2h\""),
            at(2026, 11, 24, 2),
        );
        assert!(d.iter().all(|d| d.action == Action::Keep));
    }

    #[test]
    fn future_dated_backups_are_kept_and_push_nothing_out() {
        let mut backups = daily(at(2026, 11, 20, 2), at(2026, 11, 23, 2));
        backups.push(good(at(2031, 1, 1, 0)));
        let d = plan(&backups, &policy("keep_last = 2"), at(2026, 11, 23, 12));
        assert_eq!(reasons_of(&d, "20310101T000000Z"), [REASON_FUTURE]);
        assert_eq!(
            kept_days(&d),
            set(&["2026-11-22", "2026-11-23", "2031-01-01"])
        );
        assert_eq!(
            reasons_of(&d, "20261123T020000Z"),
            ["last 2", REASON_NEWEST_GOOD]
        );
    }

    #[test]
    fn dependencies_of_kept_backups_are_kept_transitively() {
        let mut backups = daily(at(2026, 11, 20, 2), at(2026, 11, 23, 2));
        // 23 -> 22 -> 20 (an incremental chain); 21 stands alone.
        backups[3].depends_on = vec!["20261122T020000Z".into()];
        backups[2].depends_on = vec!["20261120T020000Z".into()];
        backups[1].depends_on = vec!["19990101T000000Z".into()];
        let d = plan(&backups, &policy("keep_last = 1"), at(2026, 12, 1, 0));
        assert_eq!(
            kept_days(&d),
            set(&["2026-11-20", "2026-11-22", "2026-11-23"])
        );
        assert_eq!(
            reasons_of(&d, "20261122T020000Z"),
            ["needed by 20261123T020000Z"]
        );
        assert_eq!(
            reasons_of(&d, "20261120T020000Z"),
            ["needed by 20261122T020000Z"]
        );
        // A removed backup's missing dependency is not worth a reason; only kept ones say so.
        assert_eq!(reasons_of(&d, "20261121T020000Z"), [REASON_NO_RULE]);
    }

    #[test]
    fn incomplete_folders_are_garbage_after_the_grace_period() {
        let mut backups = daily(at(2026, 11, 20, 2), at(2026, 11, 21, 2));
        let inc = |t: DateTime<Utc>, last: Option<DateTime<Utc>>| Backup {
            id: crate::manifest::backup_id(t),
            time: t,
            tag: None,
            state: State::Incomplete {
                last_write: last,
                why: "no manifest (interrupted or failed run)".into(),
            },
            depends_on: vec![],
        };
        backups.push(inc(at(2026, 11, 22, 2), None));
        // Started long ago but still written to recently: inside the grace period.
        backups.push(inc(at(2026, 11, 20, 3), Some(at(2026, 11, 23, 1))));
        backups.push(Backup {
            id: "20261119T020000Z".into(),
            time: at(2026, 11, 19, 2),
            tag: None,
            state: State::Unreadable {
                why: "manifest version 9".into(),
            },
            depends_on: vec![],
        });
        let d = plan(
            &backups,
            &Policy::from_config(None).unwrap(),
            at(2026, 11, 23, 12),
        );
        let dec = |id: &str| d.iter().find(|x| x.id == id).unwrap();
        assert_eq!(dec("20261122T020000Z").action, Action::Remove);
        assert!(dec("20261122T020000Z").incomplete);
        assert_eq!(
            dec("20261122T020000Z").reasons,
            [
                "incomplete, older than 24h",
                "no manifest (interrupted or failed run)"
            ]
        );
        assert_eq!(dec("20261120T030000Z").action, Action::Keep);
        assert_eq!(
            dec("20261120T030000Z").reasons[0],
            "incomplete, younger than 24h (grace)"
        );
        assert_eq!(dec("20261119T020000Z").action, Action::Keep);
        // Incomplete folders never count as the newest good backup.
        assert!(dec("20261121T020000Z")
            .reasons
            .contains(&REASON_NEWEST_GOOD.into()));
    }

    #[test]
    fn hourly_monthly_yearly_counts() {
        let mut backups = Vec::new();
        for h in [1, 2, 2, 5] {
            backups.push(good(at(2026, 11, 24, h)));
        }
        backups[2].time += Duration::minutes(30);
        backups[2].id = crate::manifest::backup_id(backups[2].time);
        backups.push(good(at(2025, 6, 1, 0)));
        backups.push(good(at(2024, 6, 1, 0)));
        let d = plan(
            &backups,
            &policy("keep_hourly = 2\nkeep_monthly = 2\nkeep_yearly = 2"),
            at(2026, 11, 25, 0),
        );
        assert_eq!(
            reasons_of(&d, "20261124T050000Z"),
            [
                "hourly 2026-11-24T05",
                "monthly 2026-11",
                "yearly 2026",
                REASON_NEWEST_GOOD
            ]
        );
        assert_eq!(reasons_of(&d, "20261124T023000Z"), ["hourly 2026-11-24T02"]);
        assert_eq!(
            reasons_of(&d, "20250601T000000Z"),
            ["monthly 2025-06", "yearly 2025"]
        );
        assert_eq!(reasons_of(&d, "20240601T000000Z"), [REASON_NO_RULE]);
    }

    #[test]
    fn now_accepts_rfc3339_ids_and_dates_as_utc() {
        let want = at(2026, 12, 1, 0);
        assert_eq!(parse_instant("2026-12-01T00:00:00Z"), Some(want));
        assert_eq!(parse_instant("2026-12-01T01:00:00+01:00"), Some(want));
        assert_eq!(parse_instant("20261201T000000Z"), Some(want));
        assert_eq!(parse_instant("2026-12-01"), Some(want));
        assert_eq!(parse_instant("2026-12-01T00:00:00"), Some(want));
        assert_eq!(parse_instant("next tuesday"), None);
    }

    #[test]
    fn per_period_representative_is_validated() {
        let r: Retention =
            toml::from_str("period_representative = { fortnightly = \"first\" }").unwrap();
        assert!(r.validate().unwrap_err().contains("fortnightly"));
        let r: Retention = toml::from_str("period_representative = \"oldest\"").unwrap();
        assert!(r.validate().unwrap_err().contains("oldest"));
    }
}
