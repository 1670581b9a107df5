//! Properties of the retention planner over random backup sets and policies
//! (proptest): what must hold whatever the calendar, the tags and the leftovers.

use super::retention::{plan, Action, Backup, Policy, Span, State};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

fn span(hours: i64) -> Span {
    Span {
        d: Duration::hours(hours),
        text: format!("{hours}h"),
    }
}

/// Up to 60 backups over the last 120 days: some tagged, some leftovers of killed runs.
fn backups() -> impl Strategy<Value = Vec<Backup>> {
    prop::collection::vec((0i64..120 * 24 * 3600, 0u8..10, 0u8..10), 0..60).prop_map(|v| {
        let mut seen = BTreeSet::new();
        v.into_iter()
            .filter_map(|(ago, tag, kind)| {
                let time = now() - Duration::seconds(ago);
                let id = crate::manifest::backup_id(time);
                seen.insert(id.clone()).then(|| Backup {
                    id,
                    time,
                    tag: (tag == 0).then(|| "pre-deployment-v1".to_string()),
                    state: if kind == 0 {
                        State::Incomplete {
                            last_write: Some(time),
                            why: "killed".into(),
                        }
                    } else {
                        State::Complete { verified: None }
                    },
                    depends_on: vec![],
                })
            })
            .collect()
    })
}

fn policies() -> impl Strategy<Value = Policy> {
    (
        0u32..5,
        prop::array::uniform5(0u32..6),
        prop::option::of(1i64..24 * 40),
        prop::option::of(1i64..24 * 100),
        prop::array::uniform5(any::<bool>()),
        0i64..48,
    )
        .prop_map(|(last, keep, within, tagged, first, min_age)| Policy {
            keep_last: last,
            keep,
            within: within.map(span),
            within_period: Default::default(),
            tagged: tagged.map(span),
            first,
            min_age: span(min_age),
            incomplete_grace: span(24),
        })
}

fn actions(b: &[Backup], p: &Policy) -> BTreeMap<String, Action> {
    plan(b, p, now())
        .into_iter()
        .map(|d| (d.id, d.action))
        .collect()
}

fn removed(b: &[Backup], p: &Policy) -> BTreeSet<String> {
    actions(b, p)
        .into_iter()
        .filter(|(_, a)| *a == Action::Remove)
        .map(|(id, _)| id)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the policy, the newest complete backup stays.
    #[test]
    fn never_removes_the_newest_good_backup(b in backups(), p in policies()) {
        let newest = b
            .iter()
            .filter(|x| matches!(x.state, State::Complete { .. }))
            .max_by_key(|x| (x.time, x.id.clone()));
        if let Some(n) = newest {
            prop_assert_eq!(actions(&b, &p)[&n.id], Action::Keep);
        }
    }

    /// Pruning what the plan keeps removes nothing more.
    #[test]
    fn applying_the_plan_twice_removes_nothing_more(b in backups(), p in policies()) {
        let gone = removed(&b, &p);
        let kept: Vec<Backup> = b.iter().filter(|x| !gone.contains(&x.id)).cloned().collect();
        prop_assert!(removed(&kept, &p).is_empty());
    }

    /// The order the storage lists backups in changes nothing.
    #[test]
    fn the_result_does_not_depend_on_input_order(b in backups(), p in policies(), seed in any::<u64>()) {
        let mut shuffled = b.clone();
        // A deterministic shuffle from the seed (Fisher-Yates with an LCG).
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(actions(&b, &p), actions(&shuffled, &p));
    }

    /// A policy with one more keep rule (or a longer window) never removes more.
    #[test]
    fn adding_a_keep_rule_never_removes_more(b in backups(), p in policies(), which in 0usize..8) {
        let mut more = p.clone();
        match which {
            0 => more.keep_last += 1,
            1..=5 => more.keep[which - 1] += 1,
            6 => more.within = Some(span(p.within.as_ref().map_or(0, |s| s.d.num_hours()) + 24)),
            _ => more.tagged = Some(span(p.tagged.as_ref().map_or(0, |s| s.d.num_hours()) + 24)),
        }
        let (before, after) = (removed(&b, &p), removed(&b, &more));
        prop_assert!(after.is_subset(&before), "removed {:?} not removed before", after.difference(&before).collect::<Vec<_>>());
    }
}
