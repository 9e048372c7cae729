//! Folding of a per-event rule's alerts (`-- suppress`), and first-seen
//! state (`-- first_seen`), in the second stage of `placement =
//! "repartition"` (docs/architecture.md#repartitioned-correlation).
//!
//! With several instances, each raises the alerts of the events it reads;
//! folded per instance, a suppression key read by two instances would raise
//! two first alerts, and a combination first seen by two instances would be
//! new twice. So the first stage forwards such alerts, by rule and
//! suppression key or combination, and one *fold lane* per rule and
//! repartition partition decides for every alert of its keys, as one
//! detector does: a first-seen rule's alert is raised only if its
//! combination is new to the lane's state ([`FirstSeen`]), then folded
//! ([`Folds`]) if the rule suppresses.
//!
//! Invariants:
//! - Alerts are folded in event-time order (then alert id), not in arrival
//!   order: an alert is held until the lane's watermark (the partition's
//!   marks, as for a correlation lane) passes its event time, so the result
//!   does not depend on which instance read which event first. One
//!   detector over a stream in event-time order folds the same way.
//! - The lane's emission watermark is how far it has released alerts. A
//!   lane made again for a partition that moved (or after a restart)
//!   re-reads the partition's held records and folds the alerts below the
//!   restored emission watermark again only to rebuild its periods: what
//!   they raised was delivered by the partition's previous holder.
//! - The repartition offset of an alert is retained while it is held or
//!   while a period it may belong to is open (event time plus the period
//!   is after the watermark), so the partition's committed offset never
//!   passes what a re-read needs.
//! - First-seen state is not rebuilt by re-reading: it outlives any
//!   retention, so it is changelogged per partition to the state topic and
//!   restored when the lane is made ([`FoldLane::restore_first_seen`]). A
//!   re-read alert the restored state has seen is not raised again.

use std::time::Duration;

use super::watermark::WatermarkTracker;

/// Entries of [`FoldLane::open`], at most: past it neighbours merge.
const MAX_OPEN_ENTRIES: usize = 4096;
use super::Offsets;
use crate::alert::Alert;
use crate::rules::first_seen::{FirstSeen, FirstSeenStats, FirstSeenStorage, StateChange};
use crate::rules::fold::Folds;
use crate::rules::RuleMeta;

/// What a fold lane needs of a first-seen rule's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenRow {
    pub combination: crate::rules::first_seen::Combination,
    /// When the forwarding instance began observing the source (seconds).
    pub observed_since: u32,
    /// `false`: an exception matched; seen, never raised.
    pub raise: bool,
}

/// An alert forwarded to a fold lane, not released yet.
#[derive(Debug)]
struct Held {
    event_time_ns: i64,
    alert: Alert,
    seen: Option<SeenRow>,
    /// Offset of its repartition record.
    record_offset: i64,
}

/// The folding of one rule's alerts in one repartition partition.
#[derive(Debug)]
pub(crate) struct FoldLane {
    meta: RuleMeta,
    period_ns: i64,
    folds: Folds,
    /// A first-seen rule's state of the lane's combinations.
    first_seen: Option<FirstSeen>,
    watermark: WatermarkTracker,
    /// Alerts at or above the watermark, waiting for it.
    held: Vec<Held>,
    /// Released alerts that may be in an open period: (event time plus the
    /// period, repartition offset).
    open: Vec<(i64, i64)>,
    /// The repartition topic and partition of the lane's records.
    record_partition: (String, i32),
    /// Alerts below this were released before (the emission watermark).
    released: Option<i64>,
    /// Alerts below this were released by the partition's previous holder:
    /// folded again only to rebuild the periods, their results discarded.
    rebuild_below: Option<i64>,
}

impl FoldLane {
    pub(crate) fn new(
        meta: RuleMeta,
        record_partition: (String, i32),
        allowed_lateness: Duration,
        idle_timeout: Duration,
    ) -> FoldLane {
        let period_ns = meta
            .suppress
            .map_or(0, |p| i64::try_from(p.as_nanos()).unwrap_or(i64::MAX));
        FoldLane {
            first_seen: meta.first_seen.as_ref().map(FirstSeen::new),
            meta,
            period_ns,
            folds: Folds::default(),
            watermark: WatermarkTracker::new(allowed_lateness, idle_timeout),
            held: Vec::new(),
            open: Vec::new(),
            record_partition,
            released: None,
            rebuild_below: None,
        }
    }

    /// Keep the first-seen combinations as `storage` says (before any
    /// row); `partition` names the lane's spill table with its rule.
    pub(crate) fn store_first_seen(&mut self, storage: &FirstSeenStorage, partition: &str) {
        let label = format!("lane/{partition}/{}", self.meta.id);
        self.first_seen = self
            .first_seen
            .take()
            .map(|state| state.with_storage(storage, &label));
    }

    pub(crate) fn rule_id(&self) -> &str {
        &self.meta.id
    }

    /// What the partition's previous holder released (its emission
    /// watermark for this rule).
    pub(crate) fn restore_released(&mut self, below: i64) {
        self.released = Some(self.released.map_or(below, |r| r.max(below)));
        self.rebuild_below = Some(below);
    }

    /// A watermark mark of an upstream partition (`i64::MIN`: announced,
    /// not read yet).
    pub(crate) fn observe_mark(&mut self, upstream: &str, event_time_ns: i64, now_ns: i64) {
        if event_time_ns == i64::MIN {
            self.watermark.register(upstream, now_ns);
        } else {
            self.watermark.observe(upstream, event_time_ns, now_ns);
        }
    }

    /// Take an alert forwarded through the record at `record_offset`, whose
    /// event came from `upstream`.
    pub(crate) fn hold(
        &mut self,
        alert: Alert,
        seen: Option<SeenRow>,
        at: (i64, &str),
        record_offset: i64,
        now_ns: i64,
    ) {
        let (event_time_ns, upstream) = at;
        self.watermark.observe(upstream, event_time_ns, now_ns);
        self.held.push(Held {
            event_time_ns,
            alert,
            seen,
            record_offset,
        });
    }

    /// Release the alerts the watermark passed, in event-time order: the
    /// alerts to raise (first alerts and summaries).
    pub(crate) fn advance(&mut self, now_ns: i64) -> Vec<Alert> {
        match self.watermark.advance(now_ns) {
            Some(w) => self.release_below(w),
            None => Vec::new(),
        }
    }

    /// End of input: every alert released, every period closed.
    pub(crate) fn finish(&mut self) -> Vec<Alert> {
        self.watermark.finish();
        self.release_below(i64::MAX)
    }

    fn release_below(&mut self, watermark: i64) -> Vec<Alert> {
        let (mut ready, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.event_time_ns < watermark);
        self.held = waiting;
        ready.sort_by(|a, b| {
            (a.event_time_ns, &a.alert.alert_id).cmp(&(b.event_time_ns, &b.alert.alert_id))
        });
        let mut out = Vec::new();
        for h in ready {
            self.end_rebuild_before(h.event_time_ns);
            if !self.is_new(&h) {
                continue;
            }
            let raised = self.folds.admit(&self.meta, h.alert, h.event_time_ns);
            if self.rebuild_below.is_none() {
                out.extend(raised);
            }
            self.open.push((
                h.event_time_ns.saturating_add(self.period_ns),
                h.record_offset,
            ));
        }
        self.bound_open();
        self.end_rebuild_before(watermark);
        if self.rebuild_below.is_none() {
            out.extend(self.folds.expire(watermark));
            self.open.retain(|(end, _)| *end > watermark);
        }
        self.released = Some(self.released.map_or(watermark, |r| r.max(watermark)));
        out
    }

    /// Whether a released alert goes on to be raised (or folded): for a
    /// first-seen rule, when its combination is new to the group; every
    /// row is remembered.
    fn is_new(&mut self, h: &Held) -> bool {
        let (Some(state), Some(seen)) = (&mut self.first_seen, &h.seen) else {
            return true;
        };
        if seen.observed_since > 0 {
            state.observed_from(seen.observed_since);
        }
        let verdict = state.admit(seen.combination, h.event_time_ns);
        verdict == crate::rules::first_seen::Verdict::New && seen.raise
    }

    /// A first-seen rule's changes since the last call, to changelog.
    pub(crate) fn take_first_seen_changes(&mut self) -> Vec<StateChange> {
        self.first_seen
            .as_mut()
            .map(FirstSeen::take_changes)
            .unwrap_or_default()
    }

    /// Restore the changelogged state of the lane's partition, before it
    /// takes an alert.
    pub(crate) fn restore_first_seen(&mut self, changes: Vec<StateChange>) {
        if let Some(state) = &mut self.first_seen {
            state.restore(changes);
        }
    }

    pub(crate) fn first_seen_stats(&self) -> Option<FirstSeenStats> {
        self.first_seen.as_ref().map(FirstSeen::stats)
    }

    /// A flood of alerts must not grow the lane without bound: neighbouring
    /// entries merge into one that ends at the later end and holds the
    /// lower offset, which retains at least what both did.
    fn bound_open(&mut self) {
        while self.open.len() > MAX_OPEN_ENTRIES {
            self.open = self
                .open
                .chunks(2)
                .map(|pair| {
                    pair.iter()
                        .fold((i64::MIN, i64::MAX), |(end, offset), (e, o)| {
                            (end.max(*e), offset.min(*o))
                        })
                })
                .collect();
        }
    }

    /// Past the rebuild (at event time `t` or later): the periods the
    /// previous holder closed are closed here too, without raising again.
    fn end_rebuild_before(&mut self, t: i64) {
        if let Some(below) = self.rebuild_below {
            if t >= below {
                self.folds.expire(below);
                self.open.retain(|(end, _)| *end > below);
                self.rebuild_below = None;
            }
        }
    }

    /// The lowest repartition offset a re-read must start from.
    pub(crate) fn retained_offsets(&self, into: &mut Offsets) {
        let lowest = self
            .held
            .iter()
            .map(|h| h.record_offset)
            .chain(self.open.iter().map(|(_, o)| *o))
            .min();
        if let Some(offset) = lowest {
            super::note_offset(
                into,
                &self.record_partition.0,
                self.record_partition.1,
                offset,
            );
        }
    }

    /// How far alerts were released: stored with the partition's offset.
    pub(crate) fn released(&self) -> Option<i64> {
        self.released
    }

    pub(crate) fn watermark(&self) -> Option<i64> {
        self.watermark.watermark()
    }

    /// Alerts waiting for the watermark.
    pub(crate) fn held_alerts(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::alert::EventIdentity;
    use crate::rules::parse_rule;
    use crate::source::Origin;

    const MIN: i64 = 60_000_000_000;

    /// Folds by workload for ten minutes.
    fn meta() -> RuleMeta {
        let text = "-- id: t.fold\n-- title: t\n-- severity: high\n-- description: t\n-- mitre: T1610\n-- source: k8s_audit\n-- author: t\n-- based_on: vigil:test\n-- suppress: 10m\n-- suppress_key: workload\nSELECT verb FROM k8s_audit\n";
        parse_rule(std::path::Path::new("t.sql"), text)
            .unwrap()
            .meta
    }

    fn alert(id: usize, minute: i64, workload: &str) -> (Alert, i64) {
        let t = minute * MIN;
        let fields = json!({ "workload": workload }).as_object().unwrap().clone();
        let event = EventIdentity {
            event_id: format!("e{id}"),
            origin: Origin::Kafka {
                topic: "audit".into(),
                partition: 0,
                offset: id as i64,
            },
        };
        (Alert::new(&meta(), 0, t, fields, vec![event]), t)
    }

    fn lane() -> FoldLane {
        FoldLane::new(
            meta(),
            ("vigil-correlate".into(), 0),
            Duration::ZERO,
            Duration::from_secs(3600),
        )
    }

    fn ids(alerts: &[Alert]) -> Vec<(String, Option<u64>)> {
        alerts
            .iter()
            .map(|a| (a.events[0].event_id.clone(), a.suppressed_count))
            .collect()
    }

    #[test]
    fn alerts_fold_in_event_time_order_whatever_their_arrival() {
        let mut lane = lane();
        for (offset, (id, minute)) in [(3, 3), (1, 1), (2, 2), (4, 20)].into_iter().enumerate() {
            let (a, t) = alert(id, minute, "w");
            lane.hold(a, None, (t, "audit/0"), offset as i64, 0);
        }
        // The watermark is the latest event (no lateness): e4 waits.
        let mut out = lane.advance(0);
        assert_eq!(lane.held_alerts(), 1);
        out.extend(lane.finish());
        assert_eq!(
            ids(&out),
            vec![
                ("e1".into(), None),
                ("e2".into(), Some(2)),
                ("e4".into(), None)
            ],
            "the earliest alert is raised, the next two fold into a summary (naming e2 and e3)"
        );
    }

    #[test]
    fn a_flood_of_alerts_keeps_the_lane_bounded_and_its_lowest_offset() {
        let mut lane = lane();
        for i in 0..3 * MAX_OPEN_ENTRIES {
            let (a, t) = alert(i, 1, "w");
            lane.hold(a, None, (t, "audit/0"), 100 + i as i64, 0);
        }
        lane.observe_mark("audit/0", 5 * MIN, 0);
        let raised = lane.advance(0);
        assert_eq!(raised.len(), 1, "one first alert, the rest folded");
        assert!(lane.open.len() <= MAX_OPEN_ENTRIES, "{}", lane.open.len());
        let mut offsets = Offsets::new();
        lane.retained_offsets(&mut offsets);
        assert_eq!(offsets.values().copied().collect::<Vec<_>>(), vec![100]);
    }

    /// A first-seen rule by user (history 1 day, learning 1 minute).
    fn seen_lane() -> FoldLane {
        let text = "-- id: t.first\n-- title: t\n-- severity: high\n-- description: t\n-- mitre: T1609\n-- source: k8s_audit\n-- author: t\n-- based_on: vigil:test\n-- first_seen: user\n-- history: 1d\n-- learning: 1m\nSELECT user FROM k8s_audit\n";
        let meta = parse_rule(std::path::Path::new("t.sql"), text)
            .unwrap()
            .meta;
        FoldLane::new(
            meta,
            ("vigil-correlate".into(), 0),
            Duration::ZERO,
            Duration::from_secs(3600),
        )
    }

    fn seen(combination: u64, raise: bool) -> Option<SeenRow> {
        Some(SeenRow {
            combination: [combination, 0],
            observed_since: 1,
            raise,
        })
    }

    #[test]
    fn a_combination_forwarded_by_two_instances_is_new_once_at_its_earliest_event() {
        let mut lane = seen_lane();
        // Minute 5 from one instance arrives before minute 3 from another.
        let (a5, t5) = alert(5, 5, "w");
        lane.hold(a5, seen(7, true), (t5, "audit/1"), 0, 0);
        let (a3, t3) = alert(3, 3, "w");
        lane.hold(a3, seen(7, true), (t3, "audit/0"), 1, 0);
        // An excepted row is seen, never raised: minute 4 makes 8 known.
        let (a4, t4) = alert(4, 4, "w");
        lane.hold(a4, seen(8, false), (t4, "audit/0"), 2, 0);
        let (a6, t6) = alert(6, 6, "w");
        lane.hold(a6, seen(8, true), (t6, "audit/1"), 3, 0);
        let raised = lane.finish();
        assert_eq!(ids(&raised), vec![("e3".into(), None)]);
    }

    #[test]
    fn a_lane_made_again_restores_what_its_partition_has_seen() {
        let mut first = seen_lane();
        let (a3, t3) = alert(3, 3, "w");
        first.hold(a3, seen(7, true), (t3, "audit/0"), 0, 0);
        assert_eq!(ids(&first.finish()), vec![("e3".into(), None)]);
        let changes = first.take_first_seen_changes();
        assert!(!changes.is_empty());

        // The partition moves; its next holder re-reads e3 and reads e9.
        let mut next = seen_lane();
        next.restore_first_seen(changes);
        let (a3, t3) = alert(3, 3, "w");
        next.hold(a3, seen(7, true), (t3, "audit/0"), 0, 0);
        let (a9, t9) = alert(9, 9, "w");
        next.hold(a9, seen(9, true), (t9, "audit/0"), 1, 0);
        assert_eq!(
            ids(&next.finish()),
            vec![("e9".into(), None)],
            "e3's combination was restored as seen; e9's is new"
        );
        assert_eq!(next.first_seen_stats().unwrap().entries, 2);
    }

    #[test]
    fn a_lane_with_a_spill_store_restores_past_memory_and_keeps_it_seen() {
        let mut first = seen_lane();
        for i in 0..40u64 {
            let (a, t) = alert(3, 3, "w");
            first.hold(a, seen(100 + i, true), (t, "audit/0"), i as i64, 0);
        }
        first.finish();
        let changes = first.take_first_seen_changes();

        let dir = tempfile::tempdir().unwrap();
        let storage = FirstSeenStorage {
            max_entries: 1000,
            spill: Some(crate::rules::first_seen::SpillStorage {
                store: vigil_state::SpillStore::create(dir.path(), 1 << 20).unwrap(),
                memory_entries: 10,
            }),
        };
        let mut next = seen_lane();
        next.store_first_seen(&storage, "vigil-correlate/0");
        next.restore_first_seen(changes);
        let stats = next.first_seen_stats().unwrap();
        assert_eq!(stats.entries, 40, "{stats:?}");
        assert!(stats.spilled >= 30, "{stats:?}");
        let (a, t) = alert(9, 9, "w");
        next.hold(a, seen(100, true), (t, "audit/0"), 40, 0);
        let (a, t) = alert(9, 9, "w");
        next.hold(a, seen(7, true), (t, "audit/0"), 41, 0);
        assert_eq!(
            next.finish().len(),
            1,
            "the spilled combination is seen, the new one raised"
        );
    }

    #[test]
    fn a_lane_made_again_rebuilds_its_periods_without_raising_twice() {
        let mut first = lane();
        let (a1, t1) = alert(1, 1, "w");
        first.hold(a1, None, (t1, "audit/0"), 0, 0);
        first.observe_mark("audit/0", 5 * MIN, 0);
        let raised = first.advance(0);
        assert_eq!(ids(&raised), vec![("e1".into(), None)]);
        let released = first.released().unwrap();
        let mut offsets = Offsets::new();
        first.retained_offsets(&mut offsets);
        assert_eq!(offsets.values().copied().collect::<Vec<_>>(), vec![0]);

        // The partition moves: its next holder re-reads from offset 0.
        let mut next = lane();
        next.restore_released(released);
        let (a1, t1) = alert(1, 1, "w");
        next.hold(a1, None, (t1, "audit/0"), 0, 0);
        let (a2, t2) = alert(2, 6, "w");
        next.hold(a2, None, (t2, "audit/0"), 1, 0);
        next.observe_mark("audit/0", 30 * MIN, 0);
        let raised = next.advance(0);
        assert_eq!(
            ids(&raised),
            vec![("e2".into(), Some(1))],
            "e1 was raised before the move; e2 folds into its period"
        );
    }
}
