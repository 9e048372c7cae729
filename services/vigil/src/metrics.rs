//! Service counters. Cheap atomics, shared by the pipeline stages, read by
//! the run summary (and by the metrics endpoint).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters since start.
#[derive(Debug, Default)]
pub struct Metrics {
    pub messages_consumed: AtomicU64,
    pub events_decoded: AtomicU64,
    pub decode_failures: AtomicU64,
    pub alerts_produced: AtomicU64,
    pub rule_failures: AtomicU64,
    pub dead_letters_produced: AtomicU64,
    pub batches: AtomicU64,
    pub commits: AtomicU64,
    pub delivery_retries: AtomicU64,
    pub late_events: AtomicU64,
    /// Events currently retained for correlation (a gauge).
    pub retained_events: AtomicU64,
    /// Messages that decoded to no event (audit `EventList`s with no items):
    /// valid, nothing to evaluate, not dead-lettered.
    pub empty_messages: AtomicU64,
    /// Rule evaluations cancelled for exceeding `rules.max_eval_ms` (each
    /// is also a `rule_error` dead letter, counted in `rule_failures`).
    pub rule_timeouts: AtomicU64,
    /// 1 while the pipeline holds a batch whose output the broker has not
    /// acknowledged (consumption paused, offsets not committed), else 0.
    pub output_blocked: AtomicU64,
    alerts_by_rule: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn count_alert(&self, rule_id: &str) {
        *self.alerts_by_rule.lock().expect("metrics lock").entry(rule_id.to_string()).or_default() += 1;
    }

    pub fn alerts_by_rule(&self) -> BTreeMap<String, u64> {
        self.alerts_by_rule.lock().expect("metrics lock").clone()
    }

    /// One-line summary for logs.
    pub fn summary(&self) -> String {
        format!(
            "messages={} events={} decode_failures={} alerts={} rule_failures={} dead_letters={} batches={}",
            Self::get(&self.messages_consumed),
            Self::get(&self.events_decoded),
            Self::get(&self.decode_failures),
            Self::get(&self.alerts_produced),
            Self::get(&self.rule_failures),
            Self::get(&self.dead_letters_produced),
            Self::get(&self.batches),
        )
    }
}
