//! Folding of repeated per-event alerts: a per-event rule with `-- suppress`
//! raises its first alert for a `suppress_key` at once, and folds the
//! alerts with the same key values in the following period (event time)
//! into one summary alert, emitted when the period is over: the last folded
//! alert, with `suppressed_count` and the folded events (at most
//! [`MAX_SUMMARY_EVENTS`]) as its `events`.
//!
//! This is how a workload and the pods its controller creates raise one
//! alert instead of one per pod, without excluding the controller: the
//! pod-spec rules key on the workload that owns the object (the
//! `workload_root` macro), so a Deployment's change and its ReplicaSet's
//! pods share a key.
//!
//! Alerts are admitted in arrival order, so the result does not depend on
//! how the input is batched. With `correlation.placement = "repartition"`
//! the first stage does not fold: it forwards these alerts by suppression
//! key, and the second stage folds them in event-time order
//! (`correlate::fold_lane`), so that several instances fold as one; for
//! input in event-time order both orders are the same.
//!
//! A period ends when an alert of the same key arrives after it, when a
//! later batch of the rule's source carries an event past it, or at the
//! end of input ([`Folds::finish`]), or when the stream's watermark
//! passes it (a quiet stream, see [`Folds::expire`]).
//!
//! The state is in memory, and a restart rebuilds it the way it rebuilds
//! correlation state: the committed offsets never pass the lowest offset,
//! per partition, of an event in an open period ([`Folds::offsets`]), and
//! the messages re-read below the checkpoint's `processed` offsets run the
//! folding rules again with their alerts discarded (they were delivered),
//! so no summary is lost.

use std::collections::HashMap;

use serde_json::Value;

use crate::alert::{alert_id, Alert, EventIdentity};
use crate::correlate::{merge_offsets, note_offset, Offsets};
use crate::rules::RuleMeta;
use crate::source::Origin;

/// Events a summary names, at most (its `suppressed_count` counts all).
pub const MAX_SUMMARY_EVENTS: usize = 100;

/// Keys with an open period, at most, per rule; past it the period that
/// ends first is closed early (its summary emitted).
const MAX_OPEN_PERIODS: usize = 100_000;

#[derive(Debug)]
struct Period {
    /// Event time (ns) the period ends at.
    until: i64,
    folded: u64,
    last: Option<Alert>,
    events: Vec<EventIdentity>,
    /// Lowest Kafka offset per partition of the period's events, the first
    /// alert's and every folded one (also those past the summary's list).
    offsets: Offsets,
}

/// The open suppression periods of one rule.
#[derive(Debug, Default)]
pub struct Folds {
    periods: HashMap<String, Period>,
    /// No open period ends before this (it may be lower than the true
    /// earliest end, never higher): [`Folds::expire`] scans only past it,
    /// so the per-batch call costs nothing while every period is open.
    earliest_until: i64,
}

impl Folds {
    /// The alerts to emit for `alert`, raised by `meta` at `event_time_ns`:
    /// the alert itself, preceded by the summary of the key's previous
    /// period if it folded any; or nothing, when it is folded.
    pub fn admit(&mut self, meta: &RuleMeta, alert: Alert, event_time_ns: i64) -> Vec<Alert> {
        let Some(period) = meta.suppress else {
            return vec![alert];
        };
        let key = suppression_key(meta, &alert);
        match self.periods.get_mut(&key) {
            Some(p) if event_time_ns < p.until => {
                p.folded += 1;
                hold_offsets(&mut p.offsets, &alert.events);
                let room = MAX_SUMMARY_EVENTS.saturating_sub(p.events.len());
                p.events.extend(alert.events.iter().take(room).cloned());
                p.last = Some(alert);
                Vec::new()
            }
            _ => {
                let mut out = Vec::with_capacity(2);
                if self.periods.len() >= MAX_OPEN_PERIODS && !self.periods.contains_key(&key) {
                    out.extend(self.close_earliest());
                }
                let mut open = Period {
                    until: event_time_ns.saturating_add(period.as_nanos() as i64),
                    folded: 0,
                    last: None,
                    events: Vec::new(),
                    offsets: Offsets::new(),
                };
                hold_offsets(&mut open.offsets, &alert.events);
                self.earliest_until = self.earliest_until.min(open.until);
                out.extend(self.periods.insert(key, open).and_then(summary));
                out.push(alert);
                out
            }
        }
    }

    /// Summaries of the periods over by `event_time_ns`: the latest event
    /// time of a batch of the rule's source, or the stream's watermark.
    pub fn expire(&mut self, event_time_ns: i64) -> Vec<Alert> {
        if event_time_ns < self.earliest_until {
            return Vec::new();
        }
        let over: Vec<String> = self
            .periods
            .iter()
            .filter(|(_, p)| p.until <= event_time_ns)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Alert> = over
            .into_iter()
            .filter_map(|k| self.periods.remove(&k).and_then(summary))
            .collect();
        self.earliest_until = self
            .periods
            .values()
            .map(|p| p.until)
            .min()
            .unwrap_or(i64::MAX);
        out.sort_by(|a, b| {
            a.event_time
                .cmp(&b.event_time)
                .then(a.alert_id.cmp(&b.alert_id))
        });
        out
    }

    /// End of input: the summaries of every open period.
    pub fn finish(&mut self) -> Vec<Alert> {
        self.expire(i64::MAX)
    }

    /// Lowest offset per partition of an event in an open period: where a
    /// restart must re-read from to rebuild the periods.
    pub fn offsets(&self, into: &mut Offsets) {
        for p in self.periods.values() {
            merge_offsets(into, &p.offsets);
        }
    }

    pub fn clear(&mut self) {
        self.periods.clear();
    }

    fn close_earliest(&mut self) -> Option<Alert> {
        let key = self
            .periods
            .iter()
            .min_by_key(|(_, p)| p.until)
            .map(|(k, _)| k.clone())?;
        self.periods.remove(&key).and_then(summary)
    }
}

fn hold_offsets(offsets: &mut Offsets, events: &[EventIdentity]) {
    for e in events {
        if let Origin::Kafka {
            topic,
            partition,
            offset,
        } = &e.origin
        {
            note_offset(offsets, topic, *partition, *offset);
        }
    }
}

/// The values of the rule's `suppress_key` columns in the alert.
pub(crate) fn suppression_key(meta: &RuleMeta, alert: &Alert) -> String {
    let values: Vec<&Value> = meta
        .suppress_key
        .iter()
        .map(|k| alert.fields.get(k).unwrap_or(&Value::Null))
        .collect();
    serde_json::to_string(&values).expect("json values serialize")
}

/// The summary of a period that folded alerts; none for one that did not.
fn summary(p: Period) -> Option<Alert> {
    let mut last = p.last?;
    last.suppressed_count = Some(p.folded);
    last.alert_id = alert_id(
        &last.rule_id,
        [last.alert_id.as_str(), "suppression-summary"],
    );
    last.events = p.events;
    Some(last)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::rules::parse_rule;

    fn meta() -> RuleMeta {
        let text = "-- id: t.fold\n-- title: t\n-- severity: high\n-- description: t\n-- mitre: T1610\n-- source: k8s_audit\n-- author: t\n-- based_on: vigil:test\n-- suppress: 1m\n-- suppress_key: workload\nSELECT verb FROM k8s_audit\n";
        parse_rule(std::path::Path::new("t.sql"), text)
            .unwrap()
            .meta
    }

    fn alert(meta: &RuleMeta, workload: &str, event: &str, at_s: i64) -> (Alert, i64) {
        let fields = json!({ "workload": workload }).as_object().unwrap().clone();
        let identity = EventIdentity {
            event_id: event.into(),
            origin: Origin::File {
                path: "f".into(),
                line: 1,
            },
        };
        let at = at_s * 1_000_000_000;
        (Alert::new(meta, 0, at, fields, vec![identity]), at)
    }

    #[test]
    fn the_first_alert_of_a_key_is_raised_and_the_rest_folded_into_a_summary() {
        let meta = meta();
        assert_eq!(meta.suppress, Some(Duration::from_secs(60)));
        let mut folds = Folds::default();
        let (a, t) = alert(&meta, "default/Deployment/web", "deploy", 0);
        assert_eq!(folds.admit(&meta, a, t).len(), 1);
        for (i, pod) in ["pod-1", "pod-2", "pod-3"].iter().enumerate() {
            let (a, t) = alert(&meta, "default/Deployment/web", pod, 1 + i as i64);
            assert!(folds.admit(&meta, a, t).is_empty(), "{pod} is folded");
        }
        // another workload is not folded with it
        let (a, t) = alert(&meta, "default/Deployment/api", "other", 2);
        assert_eq!(folds.admit(&meta, a, t).len(), 1);
        assert!(
            folds.expire(59 * 1_000_000_000).is_empty(),
            "the period is still open"
        );
        let summaries = folds.expire(60 * 1_000_000_000);
        assert_eq!(summaries.len(), 1);
        let s = &summaries[0];
        assert_eq!(s.suppressed_count, Some(3));
        let named: Vec<&str> = s.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(named, ["pod-1", "pod-2", "pod-3"]);
        assert!(folds.finish().is_empty(), "the api period folded nothing");
    }

    #[test]
    fn an_alert_after_the_period_is_raised_after_the_summary() {
        let meta = meta();
        let mut folds = Folds::default();
        let (a, t) = alert(&meta, "w", "e1", 0);
        folds.admit(&meta, a, t);
        let (a, t) = alert(&meta, "w", "e2", 30);
        assert!(folds.admit(&meta, a, t).is_empty());
        let (a, t) = alert(&meta, "w", "e3", 61);
        let out = folds.admit(&meta, a, t);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].suppressed_count, Some(1));
        assert_eq!(out[1].suppressed_count, None);
        assert_eq!(out[1].events[0].event_id, "e3");
    }
}
