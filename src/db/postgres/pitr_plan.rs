//! Choosing the base backup for a point-in-time recovery, and proving before anything
//! is written that the WAL archive carries recovery from it to the goal.
//!
//! The backup is the newest one whose *stop* time (or stop LSN) is before the target:
//! a target inside or before a base backup's own span is silently ignored by
//! PostgreSQL, which would replay to the end of the WAL instead.

use super::archive::{seg_size_of, Archive};
use super::wal;
use crate::db::recovery::fmt_time;
use crate::db::{Goal, PitrRequest};
use crate::engine::catalog;
use crate::error::Fail;
use crate::manifest::{Kind, Manifest};
use crate::storage::Storage;
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};

/// The LSN of an `Lsn` goal (checked when the request came in).
pub(super) fn goal_lsn(l: &str) -> u64 {
    wal::parse_lsn(l).unwrap_or(u64::MAX)
}

/// recovery.conf settings for a goal.
pub(super) fn goal_settings(goal: &Goal) -> Vec<(String, String)> {
    match goal {
        Goal::Time(t) => vec![("recovery_target_time".into(), fmt_time(*t))],
        Goal::Name(n) => vec![("recovery_target_name".into(), n.clone())],
        Goal::Xid(x) => vec![("recovery_target_xid".into(), x.clone())],
        Goal::Lsn(l) => vec![("recovery_target_lsn".into(), wal::format_lsn(goal_lsn(l)))],
        Goal::Immediate => vec![("recovery_target".into(), "immediate".into())],
        // No target: replay to the end of the archive, then promote.
        Goal::Latest => vec![],
    }
}

/// A backup found on some storage.
pub(super) struct Found {
    pub m: Manifest,
    pub storage: usize,
}

pub(super) fn physical_catalog(storages: &[Box<dyn Storage>], target: &str) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    let mut errors = Vec::new();
    for (i, s) in storages.iter().enumerate() {
        match catalog::scan(s.as_ref(), target) {
            Ok(cat) => {
                for m in cat.backups {
                    if m.kind == Kind::Physical
                        && m.wal.is_some()
                        && !out.iter().any(|f| f.m.id == m.id)
                    {
                        out.push(Found { m, storage: i });
                    }
                }
            }
            Err(e) => errors.push(format!("storage `{}`: {e:#}", s.name())),
        }
    }
    if out.is_empty() && !errors.is_empty() {
        bail!(
            "cannot read the backups of `{target}`: {}",
            errors.join("; ")
        );
    }
    out.sort_by(|a, b| a.m.id.cmp(&b.m.id));
    Ok(out)
}

fn stop_lsn(m: &Manifest) -> u64 {
    m.wal
        .as_ref()
        .and_then(|w| wal::parse_lsn(&w.stop_lsn).ok())
        .unwrap_or(u64::MAX)
}

/// Can this backup reach the goal at all?
fn eligible(m: &Manifest, goal: &Goal) -> std::result::Result<(), String> {
    match goal {
        Goal::Time(t) if m.finished_at >= *t => Err(format!(
            "base backup {} finished at {}, not before the target {}: PostgreSQL cannot stop before the end of a base backup",
            m.id,
            m.finished_at.to_rfc3339(),
            fmt_time(*t)
        )),
        Goal::Lsn(l) if stop_lsn(m) > goal_lsn(l) => Err(format!(
            "base backup {} ends at LSN {}, after the target LSN {}",
            m.id,
            m.wal.as_ref().map(|w| w.stop_lsn.as_str()).unwrap_or("?"),
            wal::format_lsn(goal_lsn(l))
        )),
        _ => Ok(()),
    }
}

pub(super) fn choose<'a>(found: &'a [Found], req: &PitrRequest) -> Result<&'a Found> {
    if found.is_empty() {
        bail!(
            "target `{}` has no physical base backup; run `backup run {}` first (with WAL archiving set up)",
            req.target,
            req.target
        );
    }
    if let Some(which) = &req.backup {
        let f = if which == "latest" {
            found.last()
        } else {
            found.iter().find(|f| f.m.id == *which).or_else(|| {
                let m: Vec<_> = found
                    .iter()
                    .filter(|f| f.m.id.starts_with(which.as_str()))
                    .collect();
                (m.len() == 1).then(|| m[0])
            })
        }
        .ok_or_else(|| {
            Fail::Usage(format!(
                "no physical backup `{which}` of `{}`; `backup list {}` shows them",
                req.target, req.target
            ))
        })?;
        eligible(&f.m, &req.goal)
            .map_err(|e| anyhow!("refusing: {e}; pick an older backup or drop --backup"))?;
        return Ok(f);
    }
    match found
        .iter()
        .rev()
        .find(|f| eligible(&f.m, &req.goal).is_ok())
    {
        Some(f) => Ok(f),
        None => {
            let oldest = &found[0].m;
            bail!(
                "refusing: no base backup of `{}` ends before the target {} (the oldest, {}, finished at {}); \
                 PostgreSQL would ignore the target and replay to the end of the WAL. Choose a later target",
                req.target,
                req.goal.describe(),
                oldest.id,
                oldest.finished_at.to_rfc3339()
            )
        }
    }
}

/// Was an object stored at `when` surely before `t`? S3 keeps upload times to the
/// second (a time with no fraction may be truncated), local files to the nanosecond.
fn surely_before(when: DateTime<Utc>, t: DateTime<Utc>) -> bool {
    use chrono::Timelike;
    if when.nanosecond() == 0 {
        when + chrono::Duration::seconds(1) <= t
    } else {
        when <= t
    }
}

/// Refuses when the archive cannot carry recovery from the backup to the goal.
pub(super) fn check_archive(archive: &Archive, m: &Manifest, goal: &Goal) -> Result<Vec<String>> {
    let w = m.wal.as_ref().expect("physical backup has a WAL range");
    let seg = seg_size_of(m);
    let tli = w.timeline;
    let start = wal::parse_segment(&w.start_segment, seg)
        .map(|x| x.1)
        .unwrap_or(0);
    let stop = wal::parse_segment(&w.stop_segment, seg)
        .map(|x| x.1)
        .unwrap_or(start);
    let name = |n: u64| wal::segment_name(tli, n, seg);
    if let Some(g) = archive.first_gap(tli, start, stop) {
        bail!(
            "refusing: base backup {} needs WAL segment {} (its own WAL, {}..{}), which is missing from the archive; \
             this backup cannot be restored consistently: pick another with --backup",
            m.id,
            name(g),
            w.start_segment,
            w.stop_segment
        );
    }
    let end = archive.contiguous_end(tli, start).unwrap_or(stop);
    let max_on_tli = archive
        .segments
        .get(&tli)
        .and_then(|s| s.iter().next_back().copied())
        .unwrap_or(end);
    let mut notes = vec![format!(
        "WAL archive: timeline {tli} continuous from {} to {}",
        name(start),
        name(end)
    )];
    let has_gap = max_on_tli > end;
    let gap_msg = || {
        format!(
            "the WAL archive has a gap on timeline {tli}: segment {} is missing (segments up to {} exist), \
             so recovery from base backup {} cannot get past {}",
            name(end + 1),
            name(max_on_tli),
            m.id,
            name(end)
        )
    };
    match goal {
        Goal::Immediate => {}
        Goal::Latest => notes.push(format!(
            "recovery replays to the end of the archive: {} on timeline {tli}{}",
            name(max_on_tli.max(end)),
            if has_gap {
                format!(", unless the gap after {} stops it there", name(end))
            } else {
                String::new()
            }
        )),
        Goal::Lsn(l) => {
            let need = wal::segno_of(goal_lsn(l), seg);
            if need > end && archive.segments.values().all(|s| !s.contains(&need)) {
                if has_gap {
                    bail!(
                        "refusing: {}; the target LSN is in segment {}",
                        gap_msg(),
                        name(need)
                    );
                }
                bail!(
                    "refusing: the WAL archive ends at {} but the target LSN {} is in {}; archive more WAL \
                     (SELECT pg_switch_wal() on the server) and retry",
                    name(end),
                    wal::format_lsn(goal_lsn(l)),
                    name(need)
                );
            }
        }
        Goal::Time(t) => {
            // A segment archived before the target holds only WAL from before it, so
            // recovery must read past it: it must not end at a gap.
            let end_time = archive.modified.get(&(tli, end)).copied();
            let later_timeline_reaches = archive
                .modified
                .iter()
                .any(|((tl, _), when)| *tl > tli && !surely_before(*when, *t));
            if let Some(et) = end_time {
                if surely_before(et, *t) && !later_timeline_reaches {
                    if has_gap {
                        bail!(
                            "refusing: {} (archived at {}, before the target)",
                            gap_msg(),
                            et.to_rfc3339()
                        );
                    }
                    bail!(
                        "refusing: the WAL archive ends at {} (archived {}), before the target {}: the WAL \
                         written after that is not archived yet (run SELECT pg_switch_wal() on the server, \
                         or wait for archive_timeout) and PostgreSQL would stop with \"recovery ended before \
                         configured recovery target was reached\"",
                        name(end),
                        et.to_rfc3339(),
                        fmt_time(*t)
                    );
                }
            }
        }
        Goal::Name(_) | Goal::Xid(_) => {
            if has_gap {
                bail!(
                    "refusing: {}; where the target lies is unknown until replay, so the gap may hide it \
                     (use --target-time or --target-lsn before {} if that is enough)",
                    gap_msg(),
                    name(end + 1)
                );
            }
        }
    }
    if has_gap {
        notes.push(format!("warning: {}", gap_msg()));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::recovery::parse_time;

    #[test]
    fn second_precision_times_are_not_taken_as_before() {
        let t = parse_time("2026-11-24T23:21:25.367Z").unwrap();
        // S3's LastModified for an upload at 23:21:25.9 reads 23:21:25.
        assert!(!surely_before(
            parse_time("2026-11-24T23:21:25Z").unwrap(),
            t
        ));
        assert!(surely_before(
            parse_time("2026-11-24T23:21:24Z").unwrap(),
            t
        ));
        assert!(surely_before(
            parse_time("2026-11-24T23:21:25.2Z").unwrap(),
            t
        ));
        assert!(!surely_before(
            parse_time("2026-11-24T23:21:25.4Z").unwrap(),
            t
        ));
    }
}
