//! The schedule: every job the configuration asks for (a target's backups, verify,
//! test-restore, prune, copy), and when each fires next in its target's time zone.

use crate::config::{parse_cron, Config};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Verify,
    TestRestore,
    Prune,
    Copy,
}

impl JobKind {
    /// The name metrics use for the same operation.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Verify => "verify",
            JobKind::TestRestore => "test_restore",
            JobKind::Prune => "prune",
            JobKind::Copy => "copy",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    /// Stable across restarts while the config keeps the job: `pg/backup`, `pg/backup#2`.
    pub id: String,
    pub target: String,
    pub kind: JobKind,
    /// The backup type (`full`) for backup jobs.
    pub backup_type: Option<String>,
    pub cron: String,
    pub tz: Tz,
    parsed: Cron,
}

impl Job {
    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` fire times after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The `backup` subcommand and arguments that do this job.
    pub fn command(&self) -> Vec<String> {
        let t = self.target.clone();
        match self.kind {
            JobKind::Backup => match self.backup_type.as_deref() {
                Some(ty) if ty != "full" => vec!["run".into(), t, "--type".into(), ty.into()],
                _ => vec!["run".into(), t],
            },
            JobKind::Verify => vec!["verify".into(), t, "latest".into()],
            JobKind::TestRestore => vec!["test-restore".into(), t],
            JobKind::Prune => vec!["prune".into(), t, "--yes".into()],
            // To the target's `copy_to` storages; complete copies are skipped.
            JobKind::Copy => vec!["copy".into(), t, "--all".into()],
        }
    }
}

/// Every scheduled job of a (validated) configuration, in target order.
pub fn jobs(cfg: &Config) -> Vec<Job> {
    let mut out = Vec::new();
    for (name, t) in &cfg.targets {
        let tz: Tz = t
            .timezone
            .as_deref()
            .and_then(|z| z.parse().ok())
            .unwrap_or(Tz::UTC);
        let mut backups: Vec<(String, String)> = Vec::new();
        if let Some(c) = &t.schedule {
            backups.push((c.clone(), "full".into()));
        }
        for s in &t.schedules {
            backups.push((s.cron.clone(), s.kind.clone()));
        }
        let mut push = |id: String, kind: JobKind, cron: &str, backup_type: Option<String>| {
            // Validation already refused what does not parse.
            if let Ok(parsed) = parse_cron(cron) {
                out.push(Job {
                    id,
                    target: name.clone(),
                    kind,
                    backup_type,
                    cron: cron.to_string(),
                    tz,
                    parsed,
                });
            }
        };
        for (i, (cron, ty)) in backups.iter().enumerate() {
            let id = if i == 0 {
                format!("{name}/backup")
            } else {
                format!("{name}/backup#{}", i + 1)
            };
            push(id, JobKind::Backup, cron, Some(ty.clone()));
        }
        for (kind, v) in [
            (JobKind::Verify, &t.verify_schedule),
            (JobKind::TestRestore, &t.test_restore_schedule),
            (JobKind::Prune, &t.prune_schedule),
            (JobKind::Copy, &t.copy_schedule),
        ] {
            if let Some(c) = v {
                push(format!("{name}/{}", kind.as_str()), kind, c, None);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(targets: &str) -> Config {
        let text = format!("[storages.l]\ntype = \"local\"\npath = \"/x\"\n{targets}");
        Config::parse(&text, "b.toml").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn times(j: &Job, from: &str, n: usize) -> Vec<String> {
        j.upcoming(at(from), n)
            .iter()
            .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
            .collect()
    }

    #[test]
    fn first_sunday_of_the_month() {
        let c = cfg("[targets.pg]\nengine = \"postgres\"\nstorages = [\"l\"]\ntest_restore_schedule = \"0 10 * * SUN#1\"\n");
        let j = &jobs(&c)[0];
        assert_eq!(j.kind, JobKind::TestRestore);
        assert_eq!(
            times(j, "2026-11-30T00:00:00Z", 3),
            [
                "2026-12-06T10:00Z",
                "2027-01-03T10:00Z",
                "2027-02-07T10:00Z"
            ]
        );
    }

    #[test]
    fn named_time_zone_across_dst() {
        // Europe/Berlin leaves summer time on 2026-10-25 at 03:00 CEST: 02:00 local is
        // 00:00Z before; that night 02:00 happens twice (00:00Z and 01:00Z) and the job
        // runs once, at the first; from then on 02:00 CET is 01:00Z.
        let c = cfg("[targets.pg]\nengine = \"postgres\"\nstorages = [\"l\"]\nschedule = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n");
        let j = &jobs(&c)[0];
        assert_eq!(
            times(j, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:00Z",
                "2026-10-25T00:00Z",
                "2026-10-26T01:00Z"
            ]
        );
        // Spring forward (2026-03-29): 02:00 does not exist, the job runs right after the gap.
        assert_eq!(
            times(j, "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00Z", "2026-03-30T00:00Z"]
        );
    }
}
