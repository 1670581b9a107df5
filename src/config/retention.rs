//! Retention policies (`retention = {...}` on a storage, or per target and storage).

use serde::Deserialize;
use std::collections::BTreeMap;

/// A retention policy (restic-style forget rules over calendar periods in UTC).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    #[serde(default)]
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_within_hourly: Option<String>,
    #[serde(default)]
    pub keep_within_daily: Option<String>,
    #[serde(default)]
    pub keep_within_weekly: Option<String>,
    #[serde(default)]
    pub keep_within_monthly: Option<String>,
    #[serde(default)]
    pub keep_within_yearly: Option<String>,
    /// Keep tagged backups for this long (e.g. `90d`), whatever the other rules say.
    #[serde(default)]
    pub keep_tagged: Option<String>,
    /// Which backup represents a calendar period: `newest` (default, as restic) or `first`,
    /// for every period, or per period: `{ monthly = "first", yearly = "first" }`.
    #[serde(default)]
    pub period_representative: Option<PeriodRepresentative>,
    /// Never delete backups younger than this (default `1h`).
    #[serde(default)]
    pub min_age: Option<String>,
    /// Incomplete backups (no manifest) older than this are garbage (default `24h`).
    #[serde(default)]
    pub incomplete_grace: Option<String>,
}

/// `period_representative`: one word for every period, or a table per period.
#[derive(Debug, Clone, PartialEq)]
pub enum PeriodRepresentative {
    All(String),
    PerPeriod(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for PeriodRepresentative {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PeriodRepresentative;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""newest", "first" or a table such as { monthly = "first" }"#)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(PeriodRepresentative::All(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(PeriodRepresentative::PerPeriod(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Retention {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("keep_within", &self.keep_within),
            ("keep_within_hourly", &self.keep_within_hourly),
            ("keep_within_daily", &self.keep_within_daily),
            ("keep_within_weekly", &self.keep_within_weekly),
            ("keep_within_monthly", &self.keep_within_monthly),
            ("keep_within_yearly", &self.keep_within_yearly),
            ("keep_tagged", &self.keep_tagged),
            ("min_age", &self.min_age),
            ("incomplete_grace", &self.incomplete_grace),
        ] {
            if let Some(v) = v {
                crate::duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            }
        }
        let word = |w: &str, key: &str| {
            if w != "newest" && w != "first" {
                return Err(format!("{key}: `{w}` is not newest or first"));
            }
            Ok(())
        };
        match &self.period_representative {
            None => {}
            Some(PeriodRepresentative::All(w)) => word(w, "period_representative")?,
            Some(PeriodRepresentative::PerPeriod(m)) => {
                for (period, w) in m {
                    if !["hourly", "daily", "weekly", "monthly", "yearly"]
                        .contains(&period.as_str())
                    {
                        return Err(format!(
                            "period_representative: `{period}` is not hourly, daily, weekly, monthly or yearly"
                        ));
                    }
                    word(w, &format!("period_representative.{period}"))?;
                }
            }
        }
        Ok(())
    }

    /// The longest time any rule of this policy could keep a backup, for Object Lock's
    /// `until = "retention"`: a count of calendar periods keeps at most one more period
    /// than it counts (the current one), a duration keeps that long. `keep_last` has no
    /// time bound (it depends on how often backups run) and does not count; None when
    /// no rule has a time bound.
    pub fn horizon(&self) -> Option<std::time::Duration> {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        let mut secs: Vec<u64> = Vec::new();
        for (n, period) in [
            (self.keep_hourly, HOUR),
            (self.keep_daily, DAY),
            (self.keep_weekly, 7 * DAY),
            (self.keep_monthly, 31 * DAY),
            (self.keep_yearly, 366 * DAY),
        ] {
            if let Some(n) = n.filter(|n| *n > 0) {
                secs.push((n as u64 + 1) * period);
            }
        }
        for d in [
            &self.keep_within,
            &self.keep_within_hourly,
            &self.keep_within_daily,
            &self.keep_within_weekly,
            &self.keep_within_monthly,
            &self.keep_within_yearly,
            &self.keep_tagged,
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(d) = crate::duration::parse(d) {
                secs.push(d.as_secs());
            }
        }
        secs.into_iter().max().map(std::time::Duration::from_secs)
    }
}
