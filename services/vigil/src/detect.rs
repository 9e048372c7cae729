//! Decode + evaluate for one micro-batch of raw messages, independent of
//! where the messages came from (Kafka or a replayed file).

use std::sync::Arc;

use crate::alert::Alert;
use crate::dead_letter::DeadLetter;
use crate::decode::{decode, DecodeLimits};
use crate::metrics::Metrics;
use crate::rules::RuleEngine;
use crate::source::{RawMessage, SourceKind};

/// What one micro-batch produced.
#[derive(Debug, Default)]
pub struct Detections {
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<DeadLetter>,
    pub events: usize,
}

/// The decode → evaluate stages.
pub struct Detector {
    engine: RuleEngine,
    limits: DecodeLimits,
    metrics: Arc<Metrics>,
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Detector {
    pub fn new(engine: RuleEngine, limits: DecodeLimits, metrics: Arc<Metrics>) -> Self {
        Detector { engine, limits, metrics }
    }

    pub fn engine(&self) -> &RuleEngine {
        &self.engine
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decode and evaluate `messages` (of any mix of sources).
    ///
    /// Every message ends up either as rows the rules saw or as a dead
    /// letter; every rule failure becomes a dead letter too.
    pub async fn process(&mut self, messages: Vec<RawMessage>) -> Detections {
        let now = now_ns();
        let mut out = Detections::default();
        Metrics::add(&self.metrics.messages_consumed, messages.len() as u64);
        let mut by_source: Vec<(SourceKind, Vec<RawMessage>)> = Vec::new();
        for m in messages {
            match by_source.iter_mut().find(|(s, _)| *s == m.source) {
                Some((_, v)) => v.push(m),
                None => by_source.push((m.source, vec![m])),
            }
        }
        for (source, messages) in by_source {
            // Messages re-read after a restart only rebuild correlation state;
            // they come first (lower offsets), so ingest them first.
            let (replayed, live): (Vec<RawMessage>, Vec<RawMessage>) = messages.into_iter().partition(|m| m.state_only);
            if !replayed.is_empty() {
                let decoded = decode(source, &replayed, self.limits, now);
                if let Err(e) = self.engine.correlator_mut().ingest(&decoded, &replayed, now).await {
                    let origins = replayed.iter().map(|m| m.origin.clone()).collect();
                    self.rule_failed(&mut out, source, "correlation-ingest".into(), e, origins, now);
                }
            }
            let messages = live;
            if messages.is_empty() {
                continue;
            }
            let decoded = decode(source, &messages, self.limits, now);
            for failure in &decoded.failures {
                let m = &messages[failure.message as usize];
                out.dead_letters.push(DeadLetter::decode_error(
                    source,
                    m.origin.clone(),
                    &m.payload,
                    failure.reason.clone(),
                    now,
                ));
            }
            Metrics::add(&self.metrics.decode_failures, decoded.failures.len() as u64);
            if !decoded.empty.is_empty() {
                // Valid input with nothing to evaluate: counted, not dead-lettered.
                Metrics::add(&self.metrics.empty_messages, decoded.empty.len() as u64);
                for &i in &decoded.empty {
                    tracing::debug!(origin = %messages[i as usize].origin, "message holds no events (empty EventList)");
                }
            }
            Metrics::add(&self.metrics.events_decoded, decoded.events.len() as u64);
            out.events += decoded.events.len();
            let (alerts, failures) = self.engine.evaluate(&decoded, &messages, now).await;
            for f in failures {
                if f.timed_out {
                    Metrics::add(&self.metrics.rule_timeouts, 1);
                }
                self.rule_failed(&mut out, source, f.rule_id, f.error, messages.iter().map(|m| m.origin.clone()).collect(), now);
            }
            out.alerts.extend(alerts);
            match self.engine.correlator_mut().ingest(&decoded, &messages, now).await {
                Ok(late) => {
                    Metrics::add(&self.metrics.late_events, late.len() as u64);
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
                    self.rule_failed(&mut out, source, "correlation-ingest".into(), e, origins, now);
                }
            }
        }
        let (alerts, failures) = self.engine.correlator_mut().advance(now, now).await;
        self.correlation_done(&mut out, alerts, failures, now);
        out
    }

    /// End of input (replay): close every correlation window.
    pub async fn finish(&mut self) -> Detections {
        let now = now_ns();
        let mut out = Detections::default();
        let (alerts, failures) = self.engine.correlator_mut().finish(now).await;
        self.correlation_done(&mut out, alerts, failures, now);
        out
    }

    /// Restore correlation emission watermarks from a checkpoint.
    pub fn restore_emitted(&mut self, emitted: &std::collections::BTreeMap<String, i64>) {
        self.engine.correlator_mut().restore_emitted(emitted);
    }

    /// Forget all correlation state (between independent inputs).
    pub fn reset(&mut self) {
        self.engine.correlator_mut().reset();
    }

    fn correlation_done(&self, out: &mut Detections, alerts: Vec<Alert>, failures: Vec<(String, String)>, now: i64) {
        for (rule, error) in failures {
            let source = self
                .engine
                .rules()
                .find(|r| r.meta.id == rule)
                .map(|r| r.meta.source)
                .unwrap_or(SourceKind::K8sAudit);
            self.rule_failed(out, source, rule, error, Vec::new(), now);
        }
        let stats = self.engine.correlator().stats();
        Metrics::set(&self.metrics.retained_events, stats.retained_events as u64);
        out.alerts.extend(alerts);
    }

    fn rule_failed(
        &self,
        out: &mut Detections,
        source: SourceKind,
        rule_id: String,
        error: String,
        origins: Vec<crate::source::Origin>,
        now: i64,
    ) {
        tracing::error!(rule = %rule_id, source = %source, error = %error, "rule evaluation failed");
        Metrics::add(&self.metrics.rule_failures, 1);
        out.dead_letters.push(DeadLetter::rule_error(source, rule_id, origins, error, now));
    }
}
