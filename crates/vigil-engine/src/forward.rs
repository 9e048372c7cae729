//! The detector's part in `correlation.placement = "repartition"`
//! (docs/architecture.md#repartitioned-correlation).
//!
//! - First stage ([`Detector::route_part`]): after the per-event rules,
//!   each event a correlation rule can use becomes a repartition record for
//!   that rule, with the rule's key ([`RoutedEvent`]), and the batch's
//!   highest event time per source partition becomes a mark.
//!   The alerts of per-event rules with `-- suppress` are forwarded too, by
//!   rule and suppression key, instead of being folded here, and the rows
//!   of first-seen rules by rule and combination, instead of being judged
//!   new here.
//! - Second stage ([`Decoder::decode_forwarded`], then
//!   [`Detector::ingest_forwarded_part`]): repartition records are decoded
//!   back into the events they carry and go into their rule's lane
//!   ([`crate::correlate::RuleLanes`]); forwarded alerts go into their
//!   rule's fold lane; marks move the lanes' watermarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use vigil_model::forward::{FirstSeenRow, Forward};

use crate::alert::Alert;
use crate::correlate::fold_lane::SeenRow;
use crate::correlate::partition_of;
use crate::dead_letter::DeadLetter;
use crate::decode::{decode, DecodedBatch};
use crate::detect::{
    now_ns, retain_rows, DecodedInput, DecodedPart, Decoder, Detections, Detector,
};
use crate::rules::first_seen::parse_combination;
use crate::source::{Origin, RawMessage, SourceKind};

/// An event the first stage forwards for one correlation rule.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    pub rule: Arc<str>,
    /// The event's source and where it was consumed.
    pub source: SourceKind,
    pub origin: Origin,
    /// The rule's correlation key of the event: its repartition partition
    /// is [`vigil_model::forward::partition_of_key`] of it.
    pub key: Vec<u8>,
    /// The record ([`Forward::encode`]); text, because forwarded messages
    /// decoded, and a message decodes only as UTF-8.
    pub record: String,
    /// For a forwarded alert ([`Forward::Alert`]): the alert, raised
    /// unfolded by the first stage if its record is too large to forward.
    pub alert: Option<Box<Alert>>,
}

/// An alert forwarded to be folded, as the second stage read it.
#[derive(Debug)]
pub(crate) struct ForwardedAlert {
    /// Where its repartition record was read.
    record: Origin,
    rule: String,
    /// Where its event was first consumed.
    from: Origin,
    event_time_ns: i64,
    alert: Alert,
    /// A first-seen rule's row: its combination.
    seen: Option<SeenRow>,
    /// Re-read after a restart (below the checkpoint's processed offset).
    state_only: bool,
}

/// The [`Forwarded`] of each message of a forwarded part (by index).
#[derive(Debug, Default)]
pub(crate) struct PartForwards {
    pub replayed: Vec<Forwarded>,
    pub live: Vec<Forwarded>,
}

/// How an event of a repartition record came: for which rule, from where.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    rule: String,
    from: Origin,
    item: u32,
}

impl Decoder {
    /// Decode repartition records: the events they forward (grouped by
    /// source, each with its [`Forwarded`]), and their marks. A record that
    /// cannot be read is a dead letter (unless re-read state).
    pub fn decode_forwarded(&self, records: Vec<RawMessage>) -> DecodedInput {
        let now = now_ns();
        let mut out = Detections::default();
        let mut marks = Vec::new();
        let mut to_fold = Vec::new();
        let mut by_source: BTreeMap<SourceKind, (Vec<RawMessage>, Vec<Forwarded>)> =
            BTreeMap::new();
        for record in records {
            match read_record(record) {
                Read::Mark(record, upstream, t) => marks.push((record, upstream, t)),
                Read::Alert(alert) => to_fold.push(*alert),
                Read::Row(message, forwarded) => {
                    let group = by_source.entry(message.source).or_default();
                    group.0.push(message);
                    group.1.push(forwarded);
                }
                Read::Unreadable(record, reason) if !record.state_only => {
                    out.dead_letters.push(DeadLetter::decode_error(
                        record.source,
                        record.origin,
                        &record.payload,
                        reason,
                        now,
                    ))
                }
                Read::Unreadable(..) => {}
            }
        }
        let rows: u64 = by_source.values().map(|(m, _)| m.len() as u64).sum();
        self.metrics
            .repartition_received(rows + to_fold.len() as u64);
        let mut parts = Vec::with_capacity(by_source.len());
        for (source, (messages, forwards)) in by_source {
            let (replayed, live) = split_state_only(messages, forwards);
            let mut forwarded = PartForwards::default();
            let replayed = replayed.map(|(m, f)| {
                let decoded = self.decode_part(source, &m, &f, now, None);
                forwarded.replayed = f;
                (m, decoded)
            });
            let live = live.map(|(m, f)| {
                let decoded = self.decode_part(source, &m, &f, now, Some(&mut out));
                forwarded.live = f;
                (m, decoded)
            });
            parts.push(DecodedPart {
                source,
                replayed,
                live,
                forwarded: Some(forwarded),
            });
        }
        DecodedInput {
            now,
            parts,
            out,
            marks,
            to_fold,
        }
    }

    /// Decode forwarded messages and keep only the forwarded event of each
    /// (an audit `EventList` message holds several). Failures become dead
    /// letters when `out` is given.
    fn decode_part(
        &self,
        source: SourceKind,
        messages: &[RawMessage],
        forwards: &[Forwarded],
        now: i64,
        out: Option<&mut Detections>,
    ) -> DecodedBatch {
        let mut decoded = decode(source, messages, self.limits, now);
        let keep: BooleanArray = decoded
            .events
            .iter()
            .map(|e| Some(forwards[e.message as usize].item == e.item))
            .collect();
        if keep.true_count() < decoded.events.len() {
            retain_rows(&mut decoded, &keep);
        }
        if let Some(out) = out {
            for failure in &decoded.failures {
                let m = &messages[failure.message as usize];
                out.dead_letters.push(DeadLetter::decode_error(
                    source,
                    forwards[failure.message as usize].from.clone(),
                    &m.payload,
                    format!("a forwarded event does not decode: {}", failure.reason),
                    now,
                ));
            }
        }
        decoded
    }
}

enum Read {
    Row(RawMessage, Forwarded),
    /// (repartition partition of the record, upstream partition, event time)
    Mark(String, String, i64),
    Alert(Box<ForwardedAlert>),
    /// A record that cannot be read, and why.
    Unreadable(RawMessage, String),
}

/// A repartition record's event (as the message it came in) or mark, or
/// why it cannot be read.
fn read_record(record: RawMessage) -> Read {
    let (header, body) = match Forward::decode(&record.payload) {
        Ok(decoded) => decoded,
        Err(e) => {
            let reason = e.to_string();
            return Read::Unreadable(record, reason);
        }
    };
    match header {
        Forward::Mark {
            partition,
            event_time_ns,
        } => Read::Mark(partition_of(&record.origin), partition, event_time_ns),
        Forward::Alert {
            rule,
            from,
            event_time_ns,
            first_seen,
        } => {
            let seen = match first_seen.map(|row| seen_row(&row)).transpose() {
                Ok(seen) => seen,
                Err(reason) => return Read::Unreadable(record, reason),
            };
            match serde_json::from_slice::<Alert>(body) {
                Ok(alert) => Read::Alert(Box::new(ForwardedAlert {
                    record: record.origin,
                    rule,
                    from,
                    event_time_ns,
                    alert,
                    seen,
                    state_only: record.state_only,
                })),
                Err(e) => Read::Unreadable(record, format!("a forwarded alert does not read: {e}")),
            }
        }
        Forward::Row {
            rule,
            source,
            from,
            item,
            timestamp_ms,
        } => {
            let source = match source.parse::<SourceKind>() {
                Ok(source) => source,
                Err(e) => {
                    return Read::Unreadable(record, format!("a repartition record's source: {e}"))
                }
            };
            let message = RawMessage {
                source,
                payload: body.to_vec(),
                origin: record.origin,
                timestamp_ms,
                state_only: record.state_only,
            };
            Read::Row(message, Forwarded { rule, from, item })
        }
    }
}

fn seen_row(row: &FirstSeenRow) -> Result<SeenRow, String> {
    let combination = parse_combination(&row.combination).ok_or_else(|| {
        format!(
            "a forwarded first-seen combination is not 32 hex digits: {:?}",
            row.combination
        )
    })?;
    Ok(SeenRow {
        combination,
        observed_since: row.observed_since,
        raise: row.raise,
    })
}

type Group = (Vec<RawMessage>, Vec<Forwarded>);

/// The re-read (state-only) messages and the others, each with their
/// forwards.
fn split_state_only(
    messages: Vec<RawMessage>,
    forwards: Vec<Forwarded>,
) -> (Option<Group>, Option<Group>) {
    let mut replayed: Group = (Vec::new(), Vec::new());
    let mut live: Group = (Vec::new(), Vec::new());
    for (m, f) in messages.into_iter().zip(forwards) {
        let to = if m.state_only {
            &mut replayed
        } else {
            &mut live
        };
        to.0.push(m);
        to.1.push(f);
    }
    let some = |g: Group| (!g.0.is_empty()).then_some(g);
    (some(replayed), some(live))
}

impl Detector {
    /// First stage: the events of a decoded part each correlation rule can
    /// use become [`RoutedEvent`]s, and the part's highest event time per
    /// source partition a mark ([`Detections::marks`]).
    pub(crate) async fn route_part(
        &mut self,
        out: &mut Detections,
        messages: &[RawMessage],
        decoded: &DecodedBatch,
        now: i64,
    ) {
        if self.engine.lanes().is_none() {
            return;
        }
        self.route_alerts_to_fold(out, decoded.source);
        let lanes = self.engine.lanes_mut().expect("checked above");
        // Marks go with every source something is forwarded from.
        if !lanes.reads(decoded.source) && !lanes.folds_from(decoded.source) {
            return;
        }
        let (routed, failures) = lanes.route(decoded).await;
        for row in routed {
            let event = &decoded.events[row.row as usize];
            let m = &messages[event.message as usize];
            let header = Forward::Row {
                rule: row.rule.to_string(),
                source: decoded.source.table_name().to_string(),
                from: m.origin.clone(),
                item: event.item,
                timestamp_ms: m.timestamp_ms,
            };
            let record = header.encode(&m.payload);
            out.routed.push(RoutedEvent {
                rule: row.rule,
                source: decoded.source,
                origin: m.origin.clone(),
                key: row.key,
                record: String::from_utf8(record)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                alert: None,
            });
        }
        note_marks(&mut out.marks, messages, decoded);
        if std::mem::take(&mut self.announce_upstream) {
            for partition in &self.upstream {
                out.marks.entry(partition.clone()).or_insert(i64::MIN);
            }
        }
        let origins: Vec<Origin> = messages.iter().map(|m| m.origin.clone()).collect();
        for (rule, error) in failures {
            self.rule_failed(out, decoded.source, rule, error, origins.clone(), now);
        }
    }

    /// First stage: the alerts of rules with `-- suppress` become records
    /// keyed by rule and suppression key, so that one fold lane folds all
    /// alerts of a key, and the rows of first-seen rules records keyed by
    /// rule and combination (see `correlate::fold_lane`).
    fn route_alerts_to_fold(&mut self, out: &mut Detections, source: SourceKind) {
        for forward in self.engine.take_alerts_to_forward() {
            let (event_time_ns, alert) = (forward.event_time_ns, forward.alert);
            let rules = self.engine.rules();
            let Some(meta) = rules.map(|r| &r.meta).find(|m| m.id == alert.rule_id) else {
                out.alerts.push(alert); // unreachable: raised by a loaded rule
                continue;
            };
            let mut key = alert.rule_id.as_bytes().to_vec();
            key.push(0);
            match &forward.first_seen {
                Some(row) => key.extend_from_slice(row.combination.as_bytes()),
                None => key.extend_from_slice(
                    crate::rules::fold::suppression_key(meta, &alert).as_bytes(),
                ),
            }
            let Some(from) = alert.events.first().map(|e| e.origin.clone()) else {
                out.alerts.push(alert); // unreachable: a per-event alert names its event
                continue;
            };
            // Too large to forward, an alert is raised by this stage, as it
            // is (a first-seen row that may not be new: raised rather than
            // lost), except an excepted first-seen row.
            let raise = forward.first_seen.as_ref().is_none_or(|row| row.raise);
            let header = Forward::Alert {
                rule: alert.rule_id.clone(),
                from: from.clone(),
                event_time_ns,
                first_seen: forward.first_seen,
            };
            let record = header.encode(alert.to_json().as_bytes());
            out.routed.push(RoutedEvent {
                rule: alert.rule_id.as_str().into(),
                source,
                origin: from,
                key,
                record: String::from_utf8(record).expect("a header and an alert are JSON"),
                alert: raise.then(|| Box::new(alert)),
            });
        }
    }

    /// Second stage: forwarded alerts into their rules' fold lanes. An
    /// alert of a rule this instance has not loaded is a dead letter.
    pub(crate) fn hold_forwarded_alerts(
        &mut self,
        out: &mut Detections,
        alerts: Vec<ForwardedAlert>,
        now: i64,
    ) {
        let Some(lanes) = self.engine.lanes_mut() else {
            return;
        };
        let mut unknown = Vec::new();
        let mut redelivered = 0;
        for f in alerts {
            let Some(lane) = lanes.fold_lane_of(&f.rule) else {
                if !f.state_only {
                    unknown.push((f.alert.source, f.rule, f.from));
                }
                continue;
            };
            if !lanes.admit(lane, &f.record, &f.from) {
                redelivered += 1;
                continue;
            }
            lanes.hold(
                lane,
                (&f.record, &f.from),
                f.alert,
                f.seen,
                f.event_time_ns,
                now,
            );
        }
        self.metrics.repartition_redelivered(redelivered);
        for (source, rule, from) in unknown {
            self.rule_failed(
                out,
                source,
                rule,
                "an alert was forwarded to be folded for this rule, which does not fold here"
                    .into(),
                vec![from],
                now,
            );
        }
    }

    /// Second stage: the events of a forwarded part into their rules'
    /// lanes. An event forwarded for a rule this instance has not loaded
    /// (rule sets differ during a rolling update) is a dead letter.
    pub(crate) async fn ingest_forwarded_part(
        &mut self,
        out: &mut Detections,
        part: (&[RawMessage], &DecodedBatch, &[Forwarded]),
        state_only: bool,
        now: i64,
    ) {
        let (messages, decoded, forwards) = part;
        let source = decoded.source;
        let Some(lanes) = self.engine.lanes_mut() else {
            return;
        };
        let mut lane_of_message = Vec::with_capacity(messages.len());
        let mut unknown = Vec::new();
        let mut redelivered = 0;
        for (m, f) in messages.iter().zip(forwards) {
            let lane = lanes.lane_of(&f.rule);
            if lane.is_none() && !state_only {
                unknown.push((f.rule.clone(), f.from.clone()));
            }
            let admitted = lane.filter(|&l| lanes.admit(l, &m.origin, &f.from));
            redelivered += u64::from(lane.is_some() && admitted.is_none());
            lane_of_message.push(admitted);
        }
        self.metrics.repartition_redelivered(redelivered);
        let upstream: Vec<Origin> = forwards.iter().map(|f| f.from.clone()).collect();
        let partitions: Vec<String> = messages.iter().map(|m| partition_of(&m.origin)).collect();
        let mut lanes_here: Vec<(usize, &str)> = lane_of_message
            .iter()
            .zip(&partitions)
            .filter_map(|(l, p)| l.map(|l| (l, p.as_str())))
            .collect();
        lanes_here.sort_unstable();
        lanes_here.dedup();
        for (lane, partition) in lanes_here {
            let mut rows = decoded.clone();
            let keep: BooleanArray = decoded
                .events
                .iter()
                .map(|e| {
                    let m = e.message as usize;
                    Some(lane_of_message[m] == Some(lane) && partitions[m] == partition)
                })
                .collect();
            retain_rows(&mut rows, &keep);
            let lanes = self.engine.lanes_mut().expect("checked above");
            match lanes
                .ingest(lane, partition, &rows, messages, &upstream, now)
                .await
            {
                Ok(late) if !state_only => {
                    self.metrics.late_events(source, late.len() as u64);
                    for l in late {
                        let m = &messages[l.message as usize];
                        out.dead_letters.push(DeadLetter::late_event(
                            source,
                            upstream[l.message as usize].clone(),
                            &m.payload,
                            l.event_time_ns,
                            l.watermark_ns,
                            now,
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) => self.rule_failed(
                    out,
                    source,
                    "correlation-ingest".into(),
                    e.to_string(),
                    upstream.clone(),
                    now,
                ),
            }
        }
        for (rule, from) in unknown {
            self.rule_failed(
                out,
                source,
                rule,
                "an event was forwarded for this correlation rule, which is not loaded here".into(),
                vec![from],
                now,
            );
        }
    }
}

/// The highest event time per source partition among `decoded`'s events.
fn note_marks(marks: &mut BTreeMap<String, i64>, messages: &[RawMessage], decoded: &DecodedBatch) {
    let times = decoded
        .batch
        .column(0)
        .as_primitive::<TimestampNanosecondType>();
    // Per partition by reference first (no text per event), named once.
    let mut highest: HashMap<(&str, Option<i32>), i64> = HashMap::new();
    for (row, event) in decoded.events.iter().enumerate() {
        let key = match &messages[event.message as usize].origin {
            Origin::Kafka {
                topic, partition, ..
            } => (&**topic, Some(*partition)),
            Origin::File { path, .. } => (&**path, None),
        };
        let t = times.value(row);
        highest
            .entry(key)
            .and_modify(|m| *m = (*m).max(t))
            .or_insert(t);
    }
    for ((name, partition), t) in highest {
        // The same naming as `partition_of`: "topic/partition", or the path.
        let key = match partition {
            Some(p) => format!("{name}/{p}"),
            None => name.to_string(),
        };
        marks
            .entry(key)
            .and_modify(|m| *m = (*m).max(t))
            .or_insert(t);
    }
}

#[cfg(test)]
mod tests;
