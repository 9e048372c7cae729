//! What detection reports as it works: input counts, rule runs and
//! failures, correlation state. The engine calls a [`DetectionMetrics`];
//! the service implements it with its Prometheus registry
//! (`vigil::metrics::Metrics`), tools and tests that need no metrics pass
//! [`NoMetrics`]. Every call is cheap and made at most once per batch and
//! rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::source::SourceKind;

pub trait DetectionMetrics: Send + Sync {
    /// Messages read from a source (before decoding).
    fn messages_consumed(&self, source: SourceKind, n: u64);
    /// Messages of a source that could not be decoded (dead letters).
    fn decode_failures(&self, source: SourceKind, n: u64);
    /// Events decoded from a source.
    fn events_decoded(&self, source: SourceKind, n: u64);
    /// Valid messages that held no event (an empty `EventList`).
    fn empty_messages(&self, n: u64);
    /// The latest event time decoded from a source.
    fn event_time(&self, source: SourceKind, latest_ns: i64);
    /// Events behind the correlation watermark.
    fn late_events(&self, source: SourceKind, n: u64);
    /// Alerts an exception suppressed.
    fn alerts_excepted(&self, n: u64);
    /// One run of a rule: its time and the rows it matched.
    fn rule_evaluated(&self, rule_id: &str, run: RuleRun);
    /// A rule run stopped by its time budget.
    fn rule_timed_out(&self);
    /// A rule run that failed (a `rule_error` dead letter).
    fn rule_failed(&self, rule_id: &str);
    /// A new rule set was swapped in, with this many rules.
    fn rules_reloaded(&self, rules_loaded: usize);
    /// Correlation state after a batch (`evicted_early` and `suppressed`
    /// are running totals).
    fn correlation_state(
        &self,
        retained_events: usize,
        watermark_ns: Option<i64>,
        evicted_early: u64,
        suppressed: u64,
    );
    /// Incremental correlation state and work (totals since start).
    fn correlation_work(&self, state_rows: usize, evicted_state_rows: u64, rows_evaluated: u64);
    /// First-seen state after a batch, summed over every rule: see
    /// [`crate::rules::first_seen::FirstSeenStats`] (the counts of
    /// forgotten entries and store failures are running totals).
    fn first_seen_state(&self, _stats: crate::rules::first_seen::FirstSeenStats) {}
    /// Forwarded events the second stage of `placement = "repartition"`
    /// dropped as already taken (re-deliveries).
    fn repartition_redelivered(&self, _n: u64) {}
    /// Forwarded events the second stage read (its share of the
    /// correlated events), re-deliveries included.
    fn repartition_received(&self, _n: u64) {}
}

/// One run of a rule (a per-event rule over a batch, a correlation rule
/// over its retained events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleRun {
    /// From the start of the run to its end, by the wall clock: what the
    /// run added to the batch's latency, including time others used the
    /// core meanwhile.
    pub elapsed: Duration,
    /// CPU time the run itself used ([`crate::rules::cpu_time`]).
    pub cpu: Duration,
    /// Rows it matched.
    pub matches: usize,
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl DetectionMetrics for NoMetrics {
    fn messages_consumed(&self, _: SourceKind, _: u64) {}
    fn decode_failures(&self, _: SourceKind, _: u64) {}
    fn events_decoded(&self, _: SourceKind, _: u64) {}
    fn empty_messages(&self, _: u64) {}
    fn event_time(&self, _: SourceKind, _: i64) {}
    fn late_events(&self, _: SourceKind, _: u64) {}
    fn alerts_excepted(&self, _: u64) {}
    fn rule_evaluated(&self, _: &str, _: RuleRun) {}
    fn rule_timed_out(&self) {}
    fn rule_failed(&self, _: &str) {}
    fn rules_reloaded(&self, _: usize) {}
    fn correlation_state(&self, _: usize, _: Option<i64>, _: u64, _: u64) {}
    fn correlation_work(&self, _: usize, _: u64, _: u64) {}
}

/// Keeps the counts in memory: for tools and tests that look at what
/// detection reported without a metrics registry.
#[derive(Debug, Default)]
pub struct CountingMetrics {
    pub messages_consumed: AtomicU64,
    pub decode_failures: AtomicU64,
    pub events_decoded: AtomicU64,
    pub late_events: AtomicU64,
    pub alerts_excepted: AtomicU64,
    pub rule_timeouts: AtomicU64,
    /// The last correlation watermark reported (ns; `i64::MIN` before any).
    pub watermark_ns: AtomicI64,
    /// Rule id -> (runs, rows matched).
    pub rule_runs: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Rule id -> CPU time of its runs.
    pub rule_cpu: Mutex<BTreeMap<String, Duration>>,
}

impl CountingMetrics {
    /// (runs, rows matched) of a rule.
    pub fn rule(&self, rule_id: &str) -> (u64, u64) {
        let runs = self.rule_runs.lock().expect("not poisoned");
        runs.get(rule_id).copied().unwrap_or_default()
    }

    /// CPU time of a rule's runs.
    pub fn cpu(&self, rule_id: &str) -> Duration {
        let cpu = self.rule_cpu.lock().expect("not poisoned");
        cpu.get(rule_id).copied().unwrap_or_default()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl DetectionMetrics for CountingMetrics {
    fn messages_consumed(&self, _: SourceKind, n: u64) {
        self.messages_consumed.fetch_add(n, Ordering::Relaxed);
    }
    fn decode_failures(&self, _: SourceKind, n: u64) {
        self.decode_failures.fetch_add(n, Ordering::Relaxed);
    }
    fn events_decoded(&self, _: SourceKind, n: u64) {
        self.events_decoded.fetch_add(n, Ordering::Relaxed);
    }
    fn empty_messages(&self, _: u64) {}
    fn event_time(&self, _: SourceKind, _: i64) {}
    fn late_events(&self, _: SourceKind, n: u64) {
        self.late_events.fetch_add(n, Ordering::Relaxed);
    }
    fn alerts_excepted(&self, n: u64) {
        self.alerts_excepted.fetch_add(n, Ordering::Relaxed);
    }
    fn rule_evaluated(&self, rule_id: &str, run: RuleRun) {
        let mut runs = self.rule_runs.lock().expect("not poisoned");
        let entry = runs.entry(rule_id.to_string()).or_default();
        entry.0 += 1;
        entry.1 += run.matches as u64;
        let mut cpu = self.rule_cpu.lock().expect("not poisoned");
        *cpu.entry(rule_id.to_string()).or_default() += run.cpu;
    }
    fn rule_timed_out(&self) {
        self.rule_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    fn rule_failed(&self, _: &str) {}
    fn rules_reloaded(&self, _: usize) {}
    fn correlation_state(&self, _: usize, watermark_ns: Option<i64>, _: u64, _: u64) {
        if let Some(w) = watermark_ns {
            self.watermark_ns.store(w, Ordering::Relaxed);
        }
    }
    fn correlation_work(&self, _: usize, _: u64, _: u64) {}
}
