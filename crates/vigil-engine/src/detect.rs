//! Decode + evaluate for one micro-batch of raw messages, independent of
//! where the messages came from (Kafka or a replayed file).

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, max};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use tracing::Instrument;

use crate::alert::Alert;
use crate::dead_letter::DeadLetter;
use crate::decode::envelope::{self, AuditFormat};
use crate::decode::{decode, DecodeLimits, DecodedBatch};
use crate::observe::DetectionMetrics;
use crate::rules::exceptions::Excepted;
use crate::rules::first_seen::StateChange;
use crate::rules::RuleEngine;
use crate::schema::ROW_COLUMN;
use crate::source::{RawMessage, SourceKind};

/// What one micro-batch produced.
#[derive(Debug, Default)]
pub struct Detections {
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<DeadLetter>,
    /// Decoded events the rules evaluated.
    pub events: usize,
    /// Decoded events skipped because their event time is outside the
    /// detector's [`EventTimeBounds`] (never evaluated, never retained).
    pub out_of_range: usize,
    /// Earliest and latest event time among the decoded events (in range or
    /// not), nanoseconds since the epoch.
    pub event_time_range: Option<(i64, i64)>,
    /// Alerts an exception suppressed (counted, not raised).
    pub excepted: Vec<Excepted>,
    /// The first-seen rules' state changes, by rule id (and repartition
    /// partition, for a second stage's), to persist with (at-least-once:
    /// after) the batch's alerts and before its offsets.
    pub state_changes: Vec<crate::rules::engine::FirstSeenChanges>,
    /// First stage of the repartitioned placement: the events to forward
    /// for correlation rules (see [`crate::forward`]), to deliver with
    /// (at-least-once: before) the batch's offsets.
    pub routed: Vec<crate::forward::RoutedEvent>,
    /// With them: the batch's highest event time per source partition
    /// (`"topic/partition"`), the marks to send to every repartition
    /// partition after the events.
    pub marks: std::collections::BTreeMap<String, i64>,
}

/// Event-time bounds for backtesting (`vigil replay --from/--to`): only
/// events with `from <= event_time < to` are evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTimeBounds {
    /// Inclusive lower bound, nanoseconds since the epoch.
    pub from_ns: Option<i64>,
    /// Exclusive upper bound, nanoseconds since the epoch.
    pub to_ns: Option<i64>,
}

impl EventTimeBounds {
    pub fn contains(&self, t_ns: i64) -> bool {
        self.from_ns.is_none_or(|f| t_ns >= f) && self.to_ns.is_none_or(|t| t_ns < t)
    }

    fn is_unbounded(&self) -> bool {
        self.from_ns.is_none() && self.to_ns.is_none()
    }
}

/// The decode → evaluate stages.
pub struct Detector {
    pub(crate) engine: RuleEngine,
    decoder: Decoder,
    pub(crate) metrics: Arc<dyn DetectionMetrics>,
    /// New rule sets from a hot reload (see [`crate::reload`]).
    reloads: Option<tokio::sync::mpsc::UnboundedReceiver<RuleEngine>>,
    /// First stage of `placement = "repartition"`: every source partition,
    /// announced to the lanes with the next marks (see
    /// [`Detector::register_partitions`]).
    pub(crate) upstream: Vec<String>,
    pub(crate) announce_upstream: bool,
}

/// The decode stage: raw messages to Arrow batches, dead letters for what
/// does not decode, and the input metrics. It holds no rule state, so it
/// runs on any thread and ahead of the evaluation.
#[derive(Clone)]
pub struct Decoder {
    pub(crate) limits: DecodeLimits,
    pub(crate) metrics: Arc<dyn DetectionMetrics>,
    bounds: EventTimeBounds,
    /// Whether this decoder reports its input: consumed and decoded
    /// counts, decode failures. `false` for the correlation leader, which
    /// re-reads input the per-event stage of some instance reports.
    reports_input: bool,
    /// How the audit messages are wrapped.
    audit_format: AuditFormat,
    /// Whether the messages are repartition records (the second stage of
    /// `correlation.placement = "repartition"`, see [`crate::forward`]).
    forwarded: bool,
}

/// One micro-batch after the decode stage, ready for
/// [`Detector::evaluate`].
pub struct DecodedInput {
    /// Wall-clock time of the decode: the batch's processing time
    /// (dead letters, alerts, idle-partition watermarks).
    pub(crate) now: i64,
    /// One part per source, in the order the sources first appear.
    pub(crate) parts: Vec<DecodedPart>,
    /// What the decode stage already produced: decode-error dead letters,
    /// event counts and the event-time range.
    pub(crate) out: Detections,
    /// Marks read from repartition records: (repartition partition,
    /// source partition, event time).
    pub(crate) marks: Vec<(String, String, i64)>,
    /// Alerts forwarded to be folded or judged first-seen (see
    /// `correlate::fold_lane`).
    pub(crate) to_fold: Vec<crate::forward::ForwardedAlert>,
}

/// The messages of one source in a batch, decoded.
pub(crate) struct DecodedPart {
    pub(crate) source: SourceKind,
    /// Messages re-read after a restart, which only rebuild correlation
    /// state.
    pub(crate) replayed: Option<(Vec<RawMessage>, DecodedBatch)>,
    /// Messages to evaluate, and their rows (events outside the bounds
    /// already dropped).
    pub(crate) live: Option<(Vec<RawMessage>, DecodedBatch)>,
    /// For repartition records: for which rule and from where each
    /// message's event was forwarded.
    pub(crate) forwarded: Option<crate::forward::PartForwards>,
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Detector {
    pub fn new(
        engine: RuleEngine,
        limits: DecodeLimits,
        metrics: Arc<dyn DetectionMetrics>,
    ) -> Self {
        Detector {
            engine,
            decoder: Decoder {
                limits,
                metrics: metrics.clone(),
                bounds: EventTimeBounds::default(),
                reports_input: true,
                audit_format: AuditFormat::Native,
                forwarded: false,
            },
            metrics,
            reloads: None,
            upstream: Vec::new(),
            announce_upstream: false,
        }
    }

    /// Do not report the input (counts, decode failures): another detector
    /// over the same messages does (see `correlate::Placement::Leader`).
    pub fn without_input_reports(mut self) -> Self {
        self.decoder.reports_input = false;
        self
    }

    /// Read repartition records instead of source messages (the second
    /// stage of `correlation.placement = "repartition"`): their input was
    /// reported by the first stage.
    pub fn reading_forwarded(mut self) -> Self {
        self.decoder.forwarded = true;
        self.decoder.reports_input = false;
        self
    }

    /// Evaluate only events inside `bounds` from now on; the others are
    /// counted in [`Detections::out_of_range`].
    pub fn with_event_time_bounds(mut self, bounds: EventTimeBounds) -> Self {
        self.decoder.bounds = bounds;
        self
    }

    /// Read audit messages as `format` (the envelope of a managed
    /// Kubernetes service, see [`crate::decode::envelope`]).
    pub fn with_audit_format(mut self, format: AuditFormat) -> Self {
        self.decoder.audit_format = format;
        self
    }

    /// Swap in rule sets received on `reloads`, at the start of the next
    /// batch after they arrive (see [`Detector::swap_engine`]).
    pub fn with_reloads(
        mut self,
        reloads: tokio::sync::mpsc::UnboundedReceiver<RuleEngine>,
    ) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// Replace the rule set by `engine`, carrying the state of unchanged
    /// correlation rules. Called between batches only.
    pub fn swap_engine(&mut self, mut engine: RuleEngine) {
        engine.set_time_budget(self.engine.time_budget());
        let old = std::mem::replace(&mut self.engine, engine);
        let old_ids: std::collections::BTreeSet<String> =
            old.rules().map(|r| r.meta.id.clone()).collect();
        let carried = self.engine.carry_state_from(old);
        let new_ids: std::collections::BTreeSet<String> =
            self.engine.rules().map(|r| r.meta.id.clone()).collect();
        self.metrics.rules_reloaded(new_ids.len());
        tracing::info!(
            rules = new_ids.len(),
            added = ?new_ids.difference(&old_ids).collect::<Vec<_>>(),
            removed = ?old_ids.difference(&new_ids).collect::<Vec<_>>(),
            correlation_state_kept = ?carried,
            "rules reloaded"
        );
    }

    /// Take the newest pending reload, if any.
    fn apply_pending_reload(&mut self) {
        let Some(rx) = &mut self.reloads else { return };
        let mut latest = None;
        while let Ok(engine) = rx.try_recv() {
            latest = Some(engine);
        }
        if let Some(engine) = latest {
            self.swap_engine(engine);
        }
    }

    pub fn engine(&self) -> &RuleEngine {
        &self.engine
    }

    #[cfg(test)]
    pub(crate) fn engine_mut(&mut self) -> &mut RuleEngine {
        &mut self.engine
    }

    /// Whether this detector keeps correlation state: not the first stage
    /// of `placement = "repartition"`, whose lanes only route events.
    fn correlates(&self) -> bool {
        match self.engine.lanes() {
            Some(_) => self.decoder.forwarded,
            None => self.engine.correlation_rule_count() > 0,
        }
    }

    /// Decode and evaluate `messages` (of any mix of sources): the
    /// [`Decoder`]'s stage, then [`Detector::evaluate`].
    ///
    /// Every message ends up either as rows the rules saw or as a dead
    /// letter; every rule failure becomes a dead letter too.
    pub async fn process(&mut self, messages: Vec<RawMessage>) -> Detections {
        let input = self.decoder.decode(messages);
        self.evaluate(input).await
    }

    /// The decode stage of this detector (same limits, bounds and
    /// reporting), to run on another thread than the evaluation: decoding
    /// batch N+1 while batch N is evaluated (see `pipeline::run`).
    pub fn decoder(&self) -> Decoder {
        self.decoder.clone()
    }

    /// Evaluate a batch the [`Decoder`] decoded: per-event rules, then
    /// correlation ingest and advance. Batches must be evaluated in the
    /// order they were consumed (correlation state and watermarks depend
    /// on it).
    pub async fn evaluate(&mut self, input: DecodedInput) -> Detections {
        self.apply_pending_reload();
        let DecodedInput {
            now,
            parts,
            mut out,
            marks,
            to_fold,
        } = input;
        if let Some(lanes) = self.engine.lanes_mut() {
            for (record, upstream, t) in &marks {
                lanes.observe_mark(record, upstream, *t, now);
            }
        }
        self.hold_forwarded_alerts(&mut out, to_fold, now);
        for part in parts {
            let source = part.source;
            if let Some(forwarded) = &part.forwarded {
                if let Some((m, d)) = &part.replayed {
                    self.ingest_forwarded_part(&mut out, (m, d, &forwarded.replayed), true, now)
                        .await;
                }
                if let Some((m, d)) = &part.live {
                    self.ingest_forwarded_part(&mut out, (m, d, &forwarded.live), false, now)
                        .await;
                }
                continue;
            }
            // Messages re-read after a restart only rebuild correlation and
            // suppression state; they come first (lower offsets), so they
            // are taken first.
            if let Some((replayed, decoded)) = &part.replayed {
                self.engine.rebuild_folds(decoded, replayed).await;
                if let Err(e) = self
                    .engine
                    .correlator_mut()
                    .ingest(decoded, replayed, now)
                    .await
                {
                    let origins = replayed.iter().map(|m| m.origin.clone()).collect();
                    self.rule_failed(
                        &mut out,
                        source,
                        "correlation-ingest".into(),
                        e.to_string(),
                        origins,
                        now,
                    );
                }
            }
            let Some((messages, decoded)) = &part.live else {
                continue;
            };
            let (alerts, failures) = self
                .engine
                .evaluate_observed(decoded, messages, now, Some(self.metrics.as_ref()))
                .await;
            for f in failures {
                if f.timed_out {
                    self.metrics.rule_timed_out();
                }
                self.rule_failed(
                    &mut out,
                    source,
                    f.rule_id,
                    f.error,
                    messages.iter().map(|m| m.origin.clone()).collect(),
                    now,
                );
            }
            out.alerts.extend(alerts);
            self.count_excepted(&mut out);
            self.route_part(&mut out, messages, decoded, now).await;
            match self
                .engine
                .correlator_mut()
                .ingest(decoded, messages, now)
                .await
            {
                Ok(late) => {
                    self.metrics.late_events(source, late.len() as u64);
                    for l in late {
                        let m = &messages[l.message as usize];
                        out.dead_letters.push(DeadLetter::late_event(
                            source,
                            m.origin.clone(),
                            &m.payload,
                            l.event_time_ns,
                            l.watermark_ns,
                            now,
                        ));
                    }
                }
                Err(e) => {
                    let origins = messages.iter().map(|m| m.origin.clone()).collect();
                    self.rule_failed(
                        &mut out,
                        source,
                        "correlation-ingest".into(),
                        e.to_string(),
                        origins,
                        now,
                    );
                }
            }
        }
        // Only an engine with first-seen rules reports them: the other
        // stage of the same process would otherwise reset the gauge.
        if let Some(first_seen) = self.engine.first_seen_stats() {
            self.metrics.first_seen_state(first_seen);
        }
        out.state_changes = self.engine.take_first_seen_changes();
        if self.correlates() {
            let span = tracing::info_span!("correlate", alerts = tracing::field::Empty);
            let (alerts, failures) = self
                .engine
                .correlation_advance(now, now)
                .instrument(span.clone())
                .await;
            span.record("alerts", alerts.len() as i64);
            for (rule, run) in self.engine.take_correlation_evaluations() {
                self.metrics.rule_evaluated(&rule, run);
            }
            self.correlation_done(&mut out, alerts, failures, now);
        }
        self.engine.end_batch();
        out
    }

    /// No input arrived: advance correlation by wall-clock time only (idle
    /// partitions stop holding the watermark back, and a stream that went
    /// quiet closes its last windows).
    pub async fn tick(&mut self) -> Detections {
        // A reload waiting for the next batch must not wait for input.
        self.apply_pending_reload();
        let now = now_ns();
        let mut out = Detections::default();
        if !self.correlates() {
            return out;
        }
        let (alerts, failures) = self.engine.correlation_advance(now, now).await;
        self.correlation_done(&mut out, alerts, failures, now);
        // A second stage's fold lanes judge first-seen rows as the
        // watermark passes them, on ticks too.
        out.state_changes = self.engine.take_first_seen_changes();
        out
    }

    /// End of input (replay): close every correlation window and every
    /// suppression period.
    pub async fn finish(&mut self) -> Detections {
        let now = now_ns();
        let mut out = Detections::default();
        out.alerts.extend(self.engine.finish_folds());
        let (alerts, failures) = self.engine.correlation_finish(now).await;
        for (rule, run) in self.engine.take_correlation_evaluations() {
            self.metrics.rule_evaluated(&rule, run);
        }
        self.correlation_done(&mut out, alerts, failures, now);
        out
    }

    /// Input partitions (`"topic/partition"`) known before they deliver:
    /// each holds the correlation watermark back until it delivers or goes
    /// idle.
    ///
    /// In the first stage of `placement = "repartition"`, the partitions
    /// are every source partition of the group: the next marks announce
    /// them to the lanes as not read yet (a mark at `i64::MIN`), so that a
    /// partition whose backlog is read after another's holds the lanes'
    /// watermark back as it would in one instance, until it delivers or
    /// goes idle. [`Detector::announce_partitions`] announces them again.
    pub fn register_partitions(&mut self, partitions: &[String]) {
        if self.engine.lanes().is_some() && !self.decoder.forwarded {
            self.upstream = partitions.to_vec();
            self.announce_upstream = true;
            return;
        }
        self.engine
            .correlator_mut()
            .register_partitions(partitions, now_ns());
    }

    /// Announce the registered source partitions with the next marks again
    /// (first stage, after an assignment change: a lane made since then
    /// has not heard of the partitions not read yet).
    pub fn announce_partitions(&mut self) {
        self.announce_upstream = !self.upstream.is_empty();
    }

    /// Restore a first-seen rule's persisted state; `false` when no loaded
    /// rule of that id keeps any.
    pub fn restore_first_seen(
        &mut self,
        rule_id: &str,
        changes: impl IntoIterator<Item = StateChange>,
    ) -> bool {
        self.engine.restore_first_seen(rule_id, changes)
    }

    /// The repartition partitions assigned to this detector's input, each
    /// with how far each rule emitted for it (see
    /// [`crate::correlate::RuleLanes::assign`]). Returns the partitions new
    /// here: restore their changelogged state
    /// ([`Detector::restore_lane_emitted`],
    /// [`Detector::restore_lane_first_seen`]) before the next batch.
    pub fn assigned(
        &mut self,
        assigned: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
    ) -> Vec<String> {
        self.engine
            .lanes_mut()
            .map(|lanes| lanes.assign(assigned))
            .unwrap_or_default()
    }

    /// Second stage: the repartition partitions `partitions`, new here,
    /// hear of every source partition `upstream` (see
    /// [`crate::correlate::RuleLanes::announce_upstream`]).
    pub fn announce_upstream_to(&mut self, partitions: &[String], upstream: &[String]) {
        let now = now_ns();
        if let Some(lanes) = self.engine.lanes_mut() {
            for p in partitions {
                lanes.announce_upstream(p, upstream, now);
            }
        }
    }

    /// Second stage: restore the changelogged emission watermarks of
    /// repartition partition `(topic, partition)` (see
    /// [`crate::correlate::RuleLanes::restore_emitted`]).
    pub fn restore_lane_emitted(
        &mut self,
        partition: (&str, i32),
        emitted: &std::collections::BTreeMap<String, i64>,
    ) {
        if let Some(lanes) = self.engine.lanes_mut() {
            lanes.restore_emitted(partition, emitted);
        }
    }

    /// Second stage: restore the changelogged first-seen state of `rule` in
    /// repartition partition `(topic, partition)`; `false` when no lane
    /// here keeps first-seen state for that rule.
    pub fn restore_lane_first_seen(
        &mut self,
        partition: (&str, i32),
        rule: &str,
        changes: Vec<StateChange>,
    ) -> bool {
        self.engine
            .lanes_mut()
            .is_some_and(|lanes| lanes.restore_first_seen(partition, rule, changes))
    }

    /// Restore correlation emission watermarks from a checkpoint.
    pub fn restore_emitted(&mut self, emitted: &std::collections::BTreeMap<String, i64>) {
        self.engine.restore_emitted(emitted);
    }

    /// Forget all correlation and suppression state (between independent
    /// inputs).
    pub fn reset(&mut self) {
        self.engine.reset_correlation();
        self.engine.reset_folds();
    }

    fn count_excepted(&mut self, out: &mut Detections) {
        let excepted = self.engine.take_excepted();
        self.metrics.alerts_excepted(excepted.len() as u64);
        out.excepted.extend(excepted);
    }

    fn correlation_done(
        &mut self,
        out: &mut Detections,
        mut alerts: Vec<Alert>,
        failures: Vec<(String, String)>,
        now: i64,
    ) {
        for (rule, error) in failures {
            let source = self
                .engine
                .rules()
                .find(|r| r.meta.id == rule)
                .map(|r| r.meta.source)
                .unwrap_or(SourceKind::K8sAudit);
            self.rule_failed(out, source, rule, error, Vec::new(), now);
        }
        let stats = self.engine.correlation_stats();
        self.metrics.correlation_state(
            stats.retained_events,
            stats.watermark,
            stats.evicted_early,
            stats.suppressed_alerts,
        );
        self.metrics.correlation_work(
            stats.state_rows,
            stats.evicted_state_rows,
            stats.rows_evaluated,
        );
        self.engine.apply_exceptions(&mut alerts, now);
        self.count_excepted(out);
        out.alerts.extend(alerts);
        // The per-event rules' suppression periods close with the stream's
        // watermark too, so a quiet stream reports what it folded.
        if let Some(watermark) = self.engine.correlation_stats().watermark {
            out.alerts.extend(self.engine.expire_folds(watermark));
        }
    }

    pub(crate) fn rule_failed(
        &self,
        out: &mut Detections,
        source: SourceKind,
        rule_id: String,
        error: String,
        origins: Vec<crate::source::Origin>,
        now: i64,
    ) {
        tracing::error!(rule = %rule_id, source = %source, error = %error, "rule evaluation failed");
        self.metrics.rule_failed(&rule_id);
        out.dead_letters
            .push(DeadLetter::rule_error(source, rule_id, origins, error, now));
    }
}

/// `messages` grouped by source, each group in input order. A batch is
/// usually of one source: then it is the group, not copied message by
/// message into a new one.
fn by_source(messages: Vec<RawMessage>) -> Vec<(SourceKind, Vec<RawMessage>)> {
    let Some(first) = messages.first().map(|m| m.source) else {
        return Vec::new();
    };
    if messages.iter().all(|m| m.source == first) {
        return vec![(first, messages)];
    }
    let mut by_source: Vec<(SourceKind, Vec<RawMessage>)> = Vec::new();
    for m in messages {
        match by_source.iter_mut().find(|(s, _)| *s == m.source) {
            Some((_, v)) => v.push(m),
            None => by_source.push((m.source, vec![m])),
        }
    }
    by_source
}

/// The messages re-read only to rebuild state, and the others, each in
/// input order. Usually there are none of the first kind: then nothing is
/// copied.
fn replayed_and_live(messages: Vec<RawMessage>) -> (Vec<RawMessage>, Vec<RawMessage>) {
    if !messages.iter().any(|m| m.state_only) {
        return (Vec::new(), messages);
    }
    messages.into_iter().partition(|m| m.state_only)
}

impl Decoder {
    /// Decode `messages` (of any mix of sources). Every message ends up in
    /// exactly one of: the rows of a part, a decode-error dead letter, the
    /// empty-message count.
    pub fn decode(&self, messages: Vec<RawMessage>) -> DecodedInput {
        if self.forwarded {
            return self.decode_forwarded(messages);
        }
        let now = now_ns();
        let mut out = Detections::default();
        let by_source = by_source(messages);
        let mut parts = Vec::with_capacity(by_source.len());
        for (source, messages) in by_source {
            if self.reports_input {
                self.metrics
                    .messages_consumed(source, messages.len() as u64);
            }
            let messages = match source {
                SourceKind::K8sAudit => self.unwrap_envelopes(messages, now, &mut out),
                _ => messages,
            };
            let (replayed, live) = replayed_and_live(messages);
            let replayed = (!replayed.is_empty()).then(|| {
                let decoded = decode(source, &replayed, self.limits, now);
                (replayed, decoded)
            });
            let live = (!live.is_empty()).then(|| {
                let decoded = self.decode_live(source, &live, now, &mut out);
                (live, decoded)
            });
            parts.push(DecodedPart {
                source,
                replayed,
                live,
                forwarded: None,
            });
        }
        DecodedInput {
            now,
            parts,
            out,
            marks: Vec::new(),
            to_fold: Vec::new(),
        }
    }

    /// Replace each audit message's payload by the native audit JSON its
    /// envelope carries; a message whose envelope cannot be unwrapped is a
    /// decode failure (a dead letter with the original payload, unless it
    /// is re-read state that was reported when first read).
    fn unwrap_envelopes(
        &self,
        messages: Vec<RawMessage>,
        now: i64,
        out: &mut Detections,
    ) -> Vec<RawMessage> {
        if self.audit_format == AuditFormat::Native {
            return messages;
        }
        let mut kept = Vec::with_capacity(messages.len());
        for mut m in messages {
            if m.payload.len() > self.limits.max_message_bytes {
                // Not parsed at all: the decoder refuses it with the limit.
                kept.push(m);
                continue;
            }
            match envelope::unwrap(self.audit_format, &m.payload, self.limits.max_message_bytes) {
                None => kept.push(m),
                Some(Ok(native)) => {
                    m.payload = native;
                    kept.push(m);
                }
                Some(Err(e)) => {
                    if m.state_only || !self.reports_input {
                        continue;
                    }
                    self.metrics.decode_failures(SourceKind::K8sAudit, 1);
                    out.dead_letters.push(DeadLetter::decode_error(
                        SourceKind::K8sAudit,
                        m.origin,
                        &m.payload,
                        e.to_string(),
                        now,
                    ));
                }
            }
        }
        kept
    }

    /// Decode messages to evaluate: drop rows outside the bounds, turn
    /// failures into dead letters, report the input.
    fn decode_live(
        &self,
        source: SourceKind,
        messages: &[RawMessage],
        now: i64,
        out: &mut Detections,
    ) -> DecodedBatch {
        let decode_span = tracing::info_span!(
            "decode",
            source = %source,
            messages = messages.len() as i64,
            events = tracing::field::Empty,
            failures = tracing::field::Empty
        );
        let mut decoded = decode_span.in_scope(|| decode(source, messages, self.limits, now));
        decode_span
            .record("events", decoded.events.len() as i64)
            .record("failures", decoded.failures.len() as i64);
        drop(decode_span);
        out.event_time_range = merge_range(out.event_time_range, time_range(&decoded));
        out.out_of_range += self.keep_in_bounds(&mut decoded);
        for failure in decoded.failures.iter().filter(|_| self.reports_input) {
            let m = &messages[failure.message as usize];
            out.dead_letters.push(DeadLetter::decode_error(
                source,
                m.origin.clone(),
                &m.payload,
                failure.reason.clone(),
                now,
            ));
        }
        if self.reports_input {
            self.metrics
                .decode_failures(source, decoded.failures.len() as u64);
            self.metrics
                .events_decoded(source, decoded.events.len() as u64);
        }
        if !decoded.empty.is_empty() && self.reports_input {
            // Valid input with nothing to evaluate: counted, not dead-lettered.
            self.metrics.empty_messages(decoded.empty.len() as u64);
            for &i in &decoded.empty {
                tracing::debug!(origin = %messages[i as usize].origin, "message holds no events (empty EventList)");
            }
        }
        // Column 0 of every source table is `event_time` (the engine relies
        // on it too); `max` is `None` for an empty batch.
        if let Some(latest) = max(decoded
            .batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>())
        {
            self.metrics.event_time(source, latest);
        }
        out.events += decoded.events.len();
        decoded
    }

    /// Drop the rows of `decoded` outside the bounds; returns how many.
    fn keep_in_bounds(&self, decoded: &mut DecodedBatch) -> usize {
        if self.bounds.is_unbounded() || decoded.events.is_empty() {
            return 0;
        }
        let times = decoded
            .batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>();
        let keep: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| self.bounds.contains(t))))
            .collect();
        let kept = keep.true_count();
        let skipped = decoded.events.len() - kept;
        if skipped == 0 {
            return 0;
        }
        retain_rows(decoded, &keep);
        skipped
    }
}

/// Keep the rows of `decoded` where `keep` is true (a mask of its length),
/// renumbering the row column, which indexes `events`.
pub(crate) fn retain_rows(decoded: &mut DecodedBatch, keep: &BooleanArray) {
    let kept = keep.true_count();
    let filtered =
        filter_record_batch(&decoded.batch, keep).expect("a mask of the batch's length filters it");
    let row_index = filtered
        .schema()
        .index_of(ROW_COLUMN)
        .expect("every source schema has the row column");
    let mut columns = filtered.columns().to_vec();
    columns[row_index] = Arc::new(UInt32Array::from_iter_values(0..kept as u32));
    decoded.batch =
        RecordBatch::try_new(filtered.schema(), columns).expect("same schema, same row count");
    let mut mask = keep.values().iter();
    decoded.events.retain(|_| mask.next().unwrap_or(false));
}

/// Earliest and latest event time of a decoded batch (column 0 is the
/// event time in every source schema).
fn time_range(decoded: &DecodedBatch) -> Option<(i64, i64)> {
    let times = decoded
        .batch
        .column(0)
        .as_primitive::<TimestampNanosecondType>();
    let min = datafusion::arrow::compute::min(times)?;
    let max = datafusion::arrow::compute::max(times)?;
    Some((min, max))
}

fn merge_range(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use vigil_gen::{GenConfig, GeneratedEvent, Generator};

    fn raw_message(e: &GeneratedEvent) -> RawMessage {
        e.raw_message()
    }

    /// Messages grouped by source keep their order within each source; a
    /// batch of one source is its only group, and re-read state is set
    /// apart from live messages, each in order.
    #[test]
    fn messages_are_grouped_by_source_and_kind_in_input_order() {
        let message = |source: SourceKind, n: u8, state_only: bool| RawMessage {
            source,
            payload: vec![n],
            origin: crate::source::Origin::File {
                path: "x".into(),
                line: n as u64,
            },
            timestamp_ms: None,
            state_only,
        };
        let payloads = |messages: &[RawMessage]| -> Vec<u8> {
            messages.iter().map(|m| m.payload[0]).collect()
        };
        let (audit, falco) = (SourceKind::K8sAudit, SourceKind::Falco);
        let mixed = vec![
            message(audit, 1, false),
            message(falco, 2, false),
            message(audit, 3, true),
            message(audit, 4, false),
        ];
        let groups: Vec<(SourceKind, Vec<u8>)> = by_source(mixed)
            .iter()
            .map(|(s, m)| (*s, payloads(m)))
            .collect();
        assert_eq!(groups, [(audit, vec![1, 3, 4]), (falco, vec![2])]);
        let one: Vec<RawMessage> = (1..4).map(|n| message(falco, n, false)).collect();
        let groups = by_source(one);
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].0, payloads(&groups[0].1)),
            (falco, vec![1, 2, 3])
        );
        assert!(by_source(Vec::new()).is_empty());

        let (replayed, live) = replayed_and_live(vec![
            message(audit, 1, false),
            message(audit, 2, true),
            message(audit, 3, false),
            message(audit, 4, true),
        ]);
        assert_eq!(
            (payloads(&replayed), payloads(&live)),
            (vec![2, 4], vec![1, 3])
        );
        let (replayed, live) = replayed_and_live(vec![message(audit, 1, false)]);
        assert_eq!((payloads(&replayed), payloads(&live)), (vec![], vec![1]));
    }

    async fn shipped_pack() -> Detector {
        let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
        let engine =
            RuleEngine::compile(crate::rules::RulePack::load_dir(&rules).unwrap().rule_set())
                .await
                .unwrap();
        Detector::new(
            engine,
            DecodeLimits::default(),
            Arc::new(crate::observe::NoMetrics),
        )
    }

    /// Generated events of every source with attacks (per-event and
    /// correlation), and a malformed message in every chunk.
    fn chunks() -> Vec<Vec<RawMessage>> {
        let config = GenConfig {
            attack_every: 30,
            ..Default::default()
        };
        let mut messages: Vec<RawMessage> = Generator::new(config)
            .take(3000)
            .map(|e| raw_message(&e))
            .collect();
        for (i, at) in (0..messages.len()).step_by(400).enumerate() {
            let mut bad = messages[at].clone();
            bad.payload = format!("{{\"kind\": \"Event\", \"broken\": {i}").into_bytes();
            messages.insert(at, bad);
        }
        messages.chunks(400).map(<[RawMessage]>::to_vec).collect()
    }

    fn outcome(all: &[Detections]) -> (Vec<(String, String)>, Vec<String>, usize) {
        let mut alerts: Vec<(String, String)> = all
            .iter()
            .flat_map(|d| &d.alerts)
            .map(|a| (a.rule_id.clone(), a.alert_id.clone()))
            .collect();
        alerts.sort();
        let mut dead: Vec<String> = all
            .iter()
            .flat_map(|d| &d.dead_letters)
            .map(|d| d.key())
            .collect();
        dead.sort();
        (alerts, dead, all.iter().map(|d| d.events).sum())
    }

    /// The pipeline decodes batch N+1 on another thread before batch N is
    /// evaluated: decoding reads no rule state, so decoding every batch
    /// ahead gives the alerts and dead letters of decoding each just
    /// before its evaluation.
    #[tokio::test]
    async fn decoding_ahead_on_other_threads_changes_no_detection() {
        let mut in_turn = shipped_pack().await;
        let mut sequential = Vec::new();
        for chunk in chunks() {
            sequential.push(in_turn.process(chunk).await);
        }
        sequential.push(in_turn.finish().await);

        let mut ahead = shipped_pack().await;
        let decoder = ahead.decoder();
        let decoded: Vec<DecodedInput> = chunks()
            .into_iter()
            .map(|chunk| {
                let decoder = decoder.clone();
                std::thread::spawn(move || decoder.decode(chunk))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mut pipelined = Vec::new();
        for input in decoded {
            pipelined.push(ahead.evaluate(input).await);
        }
        pipelined.push(ahead.finish().await);

        let (alerts, dead, events) = outcome(&sequential);
        assert!(
            alerts.iter().any(|(rule, _)| ahead
                .engine()
                .correlator()
                .rules()
                .any(|r| &r.meta.id == rule)),
            "the stream raises correlation alerts too"
        );
        assert!(
            dead.len() >= 8,
            "every malformed message is dead-lettered: {dead:?}"
        );
        assert_eq!((alerts, dead, events), outcome(&pipelined));
    }
}
