//! The WAL archive as a whole: what it holds per timeline, whether it is continuous,
//! and its part in `list` (how far each base backup recovers), `verify` and `prune`
//! (segments older than every kept base backup), as the engine's [`LogArchive`].

use super::wal::{archived_name, parse_segment, segment_name, wal_prefix, DEFAULT_SEGMENT_SIZE};
use super::walname::{segment_of_key, valid_segment_size};
use crate::db::{LogArchive, LogPrune, Window};
use crate::manifest::Manifest;
use crate::storage::Storage;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The WAL segment size a backup recorded (16 MiB when absent, or when the manifest
/// claims a size PostgreSQL cannot have).
pub fn seg_size_of(m: &Manifest) -> u64 {
    m.database
        .extra
        .get("wal_segment_size")
        .and_then(serde_json::Value::as_u64)
        .filter(|v| valid_segment_size(*v))
        .unwrap_or(DEFAULT_SEGMENT_SIZE)
}

/// What the archive holds for a target.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    /// timeline -> segment numbers present.
    pub segments: BTreeMap<u32, BTreeSet<u64>>,
    /// timeline -> upload time of each segment (for the recoverable window).
    pub modified: BTreeMap<(u32, u64), chrono::DateTime<chrono::Utc>>,
    pub histories: BTreeSet<u32>,
}

impl Archive {
    pub fn merge(&mut self, other: Archive) {
        for (t, s) in other.segments {
            self.segments.entry(t).or_default().extend(s);
        }
        self.modified.extend(other.modified);
        self.histories.extend(other.histories);
    }

    /// The first missing segment on `tli` in `from..=to`.
    pub fn first_gap(&self, tli: u32, from: u64, to: u64) -> Option<u64> {
        let have = self.segments.get(&tli);
        (from..=to).find(|n| !have.is_some_and(|h| h.contains(n)))
    }

    /// The last segment of the unbroken run starting at `from` on `tli`.
    pub fn contiguous_end(&self, tli: u32, from: u64) -> Option<u64> {
        let have = self.segments.get(&tli)?;
        if !have.contains(&from) {
            return None;
        }
        let mut n = from;
        while have.contains(&(n + 1)) {
            n += 1;
        }
        Some(n)
    }
}

pub fn scan(s: &dyn Storage, target: &str, seg_size: u64) -> Result<Archive> {
    let mut a = Archive::default();
    let prefix = wal_prefix(target);
    for o in s.list(&prefix)? {
        let Some(file) = o.key.rsplit('/').next() else {
            continue;
        };
        // .gz, .zst or bare: an archive may mix them after a change of `compression`.
        let Some((name, _)) = archived_name(file) else {
            continue;
        };
        if let Some((tli, segno)) = parse_segment(name, seg_size) {
            a.segments.entry(tli).or_default().insert(segno);
            if let Some(m) = o.modified {
                a.modified.insert((tli, segno), m);
            }
        } else if let Some(t) = name.strip_suffix(".history") {
            if let Ok(t) = u32::from_str_radix(t, 16) {
                a.histories.insert(t);
            }
        }
    }
    Ok(a)
}

/// `verify` of the WAL archive on one storage: per timeline, every segment from the
/// oldest base backup's start (or the timeline's first segment) to the newest one.
fn verify_archive(
    s: &dyn Storage,
    target: &str,
    backups: &[Manifest],
) -> (Vec<String>, Vec<String>) {
    let physical: Vec<_> = backups.iter().filter(|m| m.wal.is_some()).collect();
    let seg = physical
        .last()
        .map(|m| seg_size_of(m))
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    match scan(s, target, seg) {
        Err(e) => problems.push(format!("listing the WAL archive: {e:#}")),
        Ok(a) => {
            if a.segments.is_empty() && !physical.is_empty() {
                problems.push(
                    "the WAL archive is empty: is archive_command calling `backup wal-push`?"
                        .into(),
                );
            }
            for (tli, have) in &a.segments {
                let (Some(&first), Some(&last)) = (have.iter().next(), have.iter().next_back())
                else {
                    continue;
                };
                // Start where the oldest base backup on this timeline needs WAL from.
                let from = physical
                    .iter()
                    .filter_map(|m| {
                        let w = m.wal.as_ref()?;
                        (w.timeline == *tli)
                            .then(|| parse_segment(&w.start_segment, seg).map(|x| x.1))?
                    })
                    .min()
                    .unwrap_or(first);
                match a.first_gap(*tli, from, last) {
                    Some(g) => problems.push(format!(
                        "WAL timeline {tli}: first missing segment {} (the archive holds {}..{}); \
                         recovery cannot pass it",
                        segment_name(*tli, g, seg),
                        segment_name(*tli, first, seg),
                        segment_name(*tli, last, seg)
                    )),
                    None => checks.push(format!(
                        "WAL timeline {tli}: continuous {}..{} ({} segments)",
                        segment_name(*tli, from, seg),
                        segment_name(*tli, last, seg),
                        last + 1 - from
                    )),
                }
            }
            let (read, damaged) = check_contents(s, target);
            if damaged.is_empty() {
                checks.extend(read);
            } else {
                problems.extend(damaged);
            }
            for m in &physical {
                let w = m.wal.as_ref().expect("filtered");
                let (Some(st), Some(sp)) = (
                    parse_segment(&w.start_segment, seg),
                    parse_segment(&w.stop_segment, seg),
                ) else {
                    continue;
                };
                if let Some(g) = a.first_gap(w.timeline, st.1, sp.1) {
                    problems.push(format!(
                        "base backup {} cannot be restored: its WAL segment {} is missing",
                        m.id,
                        segment_name(w.timeline, g, seg)
                    ));
                }
            }
        }
    }
    (checks, problems)
}

/// Reads every archived WAL file back: it must decompress whole (gzip's CRC-32 too)
/// and hash to
/// the SHA-256 wal-push recorded. Listing and continuity alone pass a segment flipped
/// or cut short on disk, which recovery would then stop at. Returns (checks, problems).
fn check_contents(s: &dyn Storage, target: &str) -> (Vec<String>, Vec<String>) {
    let objects = match s.list(&wal_prefix(target)) {
        Ok(o) => o,
        Err(e) => return (vec![], vec![format!("listing the WAL archive: {e:#}")]),
    };
    let (mut read, mut problems) = (0, Vec::new());
    for o in objects {
        let file = o.key.rsplit('/').next().unwrap_or("");
        let Some((name, c)) = archived_name(file) else {
            continue;
        };
        match check_one(s, &o.key, c) {
            Ok(()) => read += 1,
            // No age identity here: the operator's to fix, not damage (backups say so).
            Err(e) if crate::error::exit_code(&e) == 2 => {
                return (vec![format!("WAL contents not read: {e:#}")], vec![])
            }
            Err(e) => problems.push(format!("WAL file {name} is damaged: {e:#}")),
        }
    }
    let checks = vec![format!(
        "{read} WAL file(s) read back: each decompresses whole with the SHA-256 wal-push recorded"
    )];
    (checks, problems)
}

fn check_one(s: &dyn Storage, key: &str, c: crate::compress::Compression) -> Result<()> {
    let want = s.metadata(key)?.get("sha256").cloned();
    let (got, embedded) = super::wal_codec::unpack(s.open(key)?, c, &mut std::io::sink())
        .context("reading it back")?;
    if let Some(w) = want.or(embedded).filter(|w| *w != got) {
        anyhow::bail!("its content hashes to {got}, wal-push recorded {w}");
    }
    Ok(())
}

/// PostgreSQL's WAL archive, as the engine library sees it. It needs no connection:
/// `list`, `verify` and `prune` read only the storages.
pub struct WalArchive;

impl LogArchive for WalArchive {
    fn folder(&self) -> &'static str {
        "wal"
    }

    fn windows(
        &self,
        s: &dyn Storage,
        target: &str,
        backups: &[Manifest],
    ) -> Result<Vec<Option<Window>>> {
        let seg = backups
            .last()
            .map(seg_size_of)
            .unwrap_or(DEFAULT_SEGMENT_SIZE);
        let a = scan(s, target, seg)?;
        Ok(backups
            .iter()
            .map(|m| {
                let w = m.wal.as_ref()?;
                let (tli, start) = parse_segment(&w.start_segment, seg)?;
                let end = a.contiguous_end(tli, start)?;
                let stop = parse_segment(&w.stop_segment, seg)?.1;
                (end >= stop).then(|| Window {
                    until: a.modified.get(&(tli, end)).copied(),
                    until_file: segment_name(tli, end, seg),
                })
            })
            .collect())
    }

    fn verify(
        &self,
        s: &dyn Storage,
        target: &str,
        backups: &[Manifest],
    ) -> (Vec<String>, Vec<String>) {
        verify_archive(s, target, backups)
    }

    /// Segments before the start of the oldest kept base backup; history files stay.
    fn prune(
        &self,
        s: &dyn Storage,
        target: &str,
        kept: &[&Manifest],
        keys: Vec<String>,
    ) -> Result<LogPrune> {
        let Some((min_segno, seg_size, m)) = kept
            .iter()
            .filter_map(|m| {
                let w = m.wal.as_ref()?;
                let seg = seg_size_of(m);
                let (_, segno) = parse_segment(&w.start_segment, seg)?;
                Some((segno, seg, *m))
            })
            .min_by_key(|(segno, _, _)| *segno)
        else {
            return Ok(LogPrune {
                oldest_kept: None,
                remove: vec![],
                remove_bytes: 0,
                reason: "no kept physical base backup: the WAL archive is left alone".into(),
            });
        };
        let sizes: HashMap<String, u64> = s
            .list(&wal_prefix(target))?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let mut remove = Vec::new();
        let mut bytes = 0;
        for k in keys {
            if let Some(segno) = segment_of_key(&k, seg_size) {
                if segno < min_segno {
                    bytes += sizes.get(&k).copied().unwrap_or(0);
                    remove.push(k);
                }
            }
        }
        let start = &m.wal.as_ref().expect("physical").start_segment;
        Ok(LogPrune {
            oldest_kept: Some((m.id.clone(), m.started_at)),
            reason: format!(
                "{} WAL file(s) before {start}, the start of the oldest kept base backup {}",
                remove.len(),
                m.id
            ),
            remove,
            remove_bytes: bytes,
        })
    }
}
