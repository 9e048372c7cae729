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
            Metrics::add(&self.metrics.events_decoded, decoded.events.len() as u64);
            out.events += decoded.events.len();
            let (alerts, failures) = self.engine.evaluate(&decoded, &messages, now).await;
            for f in failures {
                tracing::error!(rule = %f.rule_id, source = %source, error = %f.error, "rule evaluation failed");
                Metrics::add(&self.metrics.rule_failures, 1);
                let origins = messages.iter().map(|m| m.origin.clone()).collect();
                out.dead_letters.push(DeadLetter::rule_error(source, f.rule_id, origins, f.error, now));
            }
            out.alerts.extend(alerts);
        }
        out
    }
}
