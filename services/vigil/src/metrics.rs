//! Service metrics, kept in a Prometheus registry (prometheus-client) and
//! served as Prometheus text on `/metrics` by [`crate::http`].
//!
//! Every metric is an atomic (or a small map of atomics per label set), so
//! updating one is cheap enough for the per-batch path: callers update
//! metrics once per batch or per rule, never per event.
//!
//! Names: every metric starts with `vigil_`; counters get the `_total` suffix
//! from the encoder (`vigil_alerts` is exposed as `vigil_alerts_total`).
//! docs/operations.md lists them all; `tests/deployment.rs` checks that the
//! Grafana dashboard and that list use only names this module registers.
//!
//! Compatibility: the fields of the earlier counter struct keep their names,
//! and [`Metrics::add`], [`Metrics::set`] and [`Metrics::get`] accept them as
//! well as plain `AtomicU64`s (which are then not exported until they are
//! registered in [`Metrics::new`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use vigil_engine::observe::RuleRun;
use vigil_engine::rules::first_seen::FirstSeenStats;

use crate::dead_letter::DeadLetterKind;
use crate::kafka::PartitionOffsets;
use crate::rules::Severity;
use crate::source::SourceKind;

/// `source` label: `k8s_audit`, `falco` or `tetragon`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// `rule` label: a rule id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

/// Labels of produced alerts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub rule: String,
    pub severity: String,
}

/// `kind` label of dead letters: `decode_error`, `rule_error`, `late_event`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// `record` label of records cut to fit the record limit: `alert`,
/// `dead_letter`, `late_event`, or `alert_replaced` (an alert that could
/// not fit even cut, sent as a dead letter instead).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabel {
    pub record: String,
}

/// A Kafka topic-partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

/// `output` label: an output's configured name (`[[outputs]]`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabel {
    pub output: String,
}

/// `version` label: the Vigil version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

/// `result` label: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A counter per source. Reads (for summaries) sum over the sources.
#[derive(Debug, Default, Clone)]
pub struct BySource(Family<SourceLabel, Counter>);

impl BySource {
    pub fn inc_by(&self, source: SourceKind, n: u64) {
        self.0.get_or_create(&source_label(source)).inc_by(n);
    }

    pub fn get(&self, source: SourceKind) -> u64 {
        self.0
            .get(&source_label(source))
            .map(|c| c.get())
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        vigil_sources::registry::kinds().map(|s| self.get(s)).sum()
    }

    /// The total over sources, like the `AtomicU64` this replaced.
    pub fn load(&self, _ordering: Ordering) -> u64 {
        self.total()
    }
}

fn output_label(output: &str) -> OutputLabel {
    OutputLabel {
        output: output.to_string(),
    }
}

fn source_label(source: SourceKind) -> SourceLabel {
    SourceLabel {
        source: source.table_name().to_string(),
    }
}

/// Something [`Metrics::add`] can count into.
pub trait CounterCell {
    fn add_n(&self, n: u64);
}
/// Something [`Metrics::set`] can set.
pub trait GaugeCell {
    fn set_to(&self, v: u64);
}
/// Something [`Metrics::get`] can read.
pub trait ReadCell {
    fn read(&self) -> u64;
}

impl CounterCell for AtomicU64 {
    fn add_n(&self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
}
impl GaugeCell for AtomicU64 {
    fn set_to(&self, v: u64) {
        self.store(v, Ordering::Relaxed);
    }
}
impl ReadCell for AtomicU64 {
    fn read(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
}
impl CounterCell for Counter {
    fn add_n(&self, n: u64) {
        self.inc_by(n);
    }
}
impl ReadCell for Counter {
    fn read(&self) -> u64 {
        self.get()
    }
}
impl GaugeCell for Gauge {
    fn set_to(&self, v: u64) {
        self.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}
impl ReadCell for Gauge {
    fn read(&self) -> u64 {
        self.get().max(0) as u64
    }
}
impl ReadCell for BySource {
    fn read(&self) -> u64 {
        self.total()
    }
}

/// Every metric of the service. Shared as `Arc<Metrics>` by the pipeline
/// stages, the Kafka consumer's callbacks and the HTTP server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages taken from the source topics (`vigil_messages_consumed_total{source}`).
    pub messages_consumed: BySource,
    /// Events decoded into rows (`vigil_events_decoded_total{source}`).
    pub events_decoded: BySource,
    /// Messages that could not be decoded (dead-lettered) (`vigil_decode_failures_total{source}`).
    pub decode_failures: BySource,
    /// Events behind the correlation watermark (`vigil_late_events_total{source}`).
    pub late_events: BySource,
    /// Alerts acknowledged by the broker (`vigil_alerts_produced_total`).
    pub alerts_produced: Counter,
    /// Rule failures on a batch (`vigil_rule_failures_total`; per rule: `vigil_rule_failures_by_rule_total`).
    pub rule_failures: Counter,
    /// Dead letters and late-event reports acknowledged (`vigil_dead_letters_produced_total`).
    pub dead_letters_produced: Counter,
    /// Batches whose output was delivered (`vigil_batches_total`).
    pub batches: Counter,
    /// Messages of those batches (`vigil_messages_delivered_total`): every
    /// message counted here has had its alerts acknowledged and its batch
    /// checkpointed.
    pub messages_delivered: Counter,
    /// Successful offset commits (`vigil_commits_total`).
    pub commits: Counter,
    /// Failed offset commits (`vigil_commit_failures_total`).
    pub commit_failures: Counter,
    /// Delivery rounds that failed and were retried (`vigil_delivery_retries_total`).
    pub delivery_retries: Counter,
    /// Events retained for correlation (gauge `vigil_correlation_retained_events`).
    pub retained_events: Gauge,
    /// Alerts not raised because an exception (allow-list entry) matched
    /// (`vigil_alerts_excepted_total`).
    pub alerts_excepted: Counter,
    /// Messages that decoded to no event (audit `EventList`s with no items):
    /// valid, nothing to evaluate, not dead-lettered (`vigil_empty_messages_total`).
    pub empty_messages: Counter,
    /// Rule evaluations cancelled for exceeding `rules.max_eval_ms`; each is
    /// also a `rule_error` dead letter and a rule failure (`vigil_rule_timeouts_total`).
    pub rule_timeouts: Counter,
    alerts_by_rule_severity: Family<AlertLabels, Counter>,
    rule_matches: Family<RuleLabel, Counter>,
    rule_failures_by_rule: Family<RuleLabel, Counter>,
    rule_seconds: HistogramFamily<RuleLabel>,
    rule_cpu_seconds: Family<RuleLabel, Counter<f64, AtomicU64>>,
    dead_letters_by_kind: Family<KindLabel, Counter>,
    records_cut: Family<RecordLabel, Counter>,
    batch_messages: Histogram,
    batch_seconds: Histogram,
    consumer_fetch_lag: Family<PartitionLabels, Gauge>,
    consumer_committed_lag: Family<PartitionLabels, Gauge>,
    /// Per partition, the offset this process last committed for the
    /// group (the consumer's statistics miss transactional commits).
    committed_offsets: Mutex<BTreeMap<(String, i32), i64>>,
    /// Wall time (Unix s) of the last batch whose offsets were committed
    /// (process start until then).
    last_progress: Gauge<f64, AtomicU64>,
    /// Batches read and not yet delivered and committed, oldest first.
    pending_reads: Mutex<VecDeque<PendingBatch>>,
    next_read: AtomicU64,
    /// Seconds since the oldest of `pending_reads` was read (set when
    /// encoding).
    uncommitted_read_age: Gauge<f64, AtomicU64>,
    /// Seconds from the earliest event time of `pending_reads` to now (set
    /// when encoding).
    uncommitted_event_age: Gauge<f64, AtomicU64>,
    source_event_time: Family<SourceLabel, Gauge>,
    correlation_watermark: Gauge,
    correlation_evicted_early: Counter,
    correlation_state_rows: Gauge,
    correlation_evicted_state_rows: Counter,
    correlation_rows_evaluated: Counter,
    correlation_suppressed: Counter,
    first_seen_entries: Gauge,
    first_seen_forgotten_early: Counter,
    first_seen_spilled: Gauge,
    first_seen_spill_failures: Counter,
    repartition_forwarded: Family<RuleLabel, Counter>,
    repartition_marks: Counter,
    repartition_redelivered: Counter,
    repartition_received: Counter,
    rule_reloads: Family<ResultLabel, Counter>,
    rules_loaded: Gauge,
    delivery_paused: Gauge,
    output_sent: Family<OutputLabel, Counter>,
    output_retries: Family<OutputLabel, Counter>,
    output_failed: Family<OutputLabel, Counter>,
    output_lag: Family<OutputLabel, Gauge<f64, AtomicU64>>,
    output_unreadable: Counter,
    assigned_partitions: Gauge,
    build_info: Family<VersionLabel, Gauge>,
    /// Per-rule alert counts for the run summary (not exported: the
    /// labelled counter above carries the same numbers).
    alerts_by_rule: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Batch sizes in messages: 1 to 1M by factors of 4.
fn batch_size_buckets() -> Histogram {
    Histogram::new([
        1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
    ])
}
/// Batch latency: 1 ms to 60 s.
fn batch_latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}
/// One rule on one batch: 50 µs to 5 s.
fn rule_latency_buckets() -> Histogram {
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        5.0,
    ])
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("vigil"),
            messages_consumed: BySource::default(),
            events_decoded: BySource::default(),
            decode_failures: BySource::default(),
            late_events: BySource::default(),
            alerts_produced: Counter::default(),
            rule_failures: Counter::default(),
            dead_letters_produced: Counter::default(),
            batches: Counter::default(),
            messages_delivered: Counter::default(),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            delivery_retries: Counter::default(),
            retained_events: Gauge::default(),
            alerts_by_rule_severity: Family::default(),
            rule_matches: Family::default(),
            rule_failures_by_rule: Family::default(),
            rule_seconds: Family::new_with_constructor(rule_latency_buckets),
            rule_cpu_seconds: Family::default(),
            dead_letters_by_kind: Family::default(),
            records_cut: Family::default(),
            batch_messages: batch_size_buckets(),
            batch_seconds: batch_latency_buckets(),
            consumer_fetch_lag: Family::default(),
            consumer_committed_lag: Family::default(),
            committed_offsets: Mutex::new(BTreeMap::new()),
            last_progress: Gauge::default(),
            pending_reads: Mutex::new(VecDeque::new()),
            next_read: AtomicU64::new(0),
            uncommitted_read_age: Gauge::default(),
            uncommitted_event_age: Gauge::default(),
            source_event_time: Family::default(),
            correlation_watermark: Gauge::default(),
            correlation_evicted_early: Counter::default(),
            correlation_state_rows: Gauge::default(),
            correlation_evicted_state_rows: Counter::default(),
            correlation_rows_evaluated: Counter::default(),
            correlation_suppressed: Counter::default(),
            first_seen_entries: Gauge::default(),
            first_seen_forgotten_early: Counter::default(),
            first_seen_spilled: Gauge::default(),
            first_seen_spill_failures: Counter::default(),
            repartition_forwarded: Family::default(),
            repartition_marks: Counter::default(),
            repartition_redelivered: Counter::default(),
            repartition_received: Counter::default(),
            alerts_excepted: Counter::default(),
            empty_messages: Counter::default(),
            rule_timeouts: Counter::default(),
            rule_reloads: Family::default(),
            rules_loaded: Gauge::default(),
            delivery_paused: Gauge::default(),
            output_sent: Family::default(),
            output_retries: Family::default(),
            output_failed: Family::default(),
            output_lag: Family::default(),
            output_unreadable: Counter::default(),
            assigned_partitions: Gauge::default(),
            build_info: Family::default(),
            alerts_by_rule: Mutex::new(BTreeMap::new()),
        };
        m.build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        m.last_progress.set(now_ms() as f64 / 1000.0);
        m.register_all();
        m
    }

    /// Register clones (they share their atomics) of every exported metric.
    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "messages_consumed",
            "Messages taken from the source topics",
            self.messages_consumed.0.clone(),
        );
        r.register(
            "events_decoded",
            "Events decoded into rows the rules see",
            self.events_decoded.0.clone(),
        );
        r.register(
            "decode_failures",
            "Messages that could not be decoded (sent to the dead-letter topic)",
            self.decode_failures.0.clone(),
        );
        r.register(
            "late_events",
            "Events behind the correlation watermark (reported to the late-events topic)",
            self.late_events.0.clone(),
        );
        r.register(
            "alerts_produced",
            "Alerts acknowledged by the broker, all rules",
            self.alerts_produced.clone(),
        );
        r.register(
            "alerts",
            "Alerts acknowledged by the broker, per rule and severity",
            self.alerts_by_rule_severity.clone(),
        );
        r.register(
            "rule_matches",
            "Rows a rule matched (alerts before suppression and delivery)",
            self.rule_matches.clone(),
        );
        r.register(
            "rule_failures",
            "Rule evaluations that failed on a batch, all rules",
            self.rule_failures.clone(),
        );
        r.register(
            "rule_failures_by_rule",
            "Rule evaluations that failed on a batch, per rule",
            self.rule_failures_by_rule.clone(),
        );
        r.register_with_unit(
            "rule_evaluation",
            "Time to evaluate one rule over one batch",
            Unit::Seconds,
            self.rule_seconds.clone(),
        );
        r.register_with_unit(
            "rule_cpu",
            "CPU time the rule's evaluations used, over the threads that ran them",
            Unit::Seconds,
            self.rule_cpu_seconds.clone(),
        );
        r.register(
            "dead_letters_produced",
            "Dead letters and late-event reports acknowledged by the broker",
            self.dead_letters_produced.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters and late-event reports acknowledged, per kind",
            self.dead_letters_by_kind.clone(),
        );
        r.register(
            "records_cut",
            "Output records cut to fit limits.max_record_bytes, per record kind",
            self.records_cut.clone(),
        );
        r.register(
            "batches",
            "Micro-batches whose output was delivered",
            self.batches.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages of micro-batches whose output was delivered",
            self.messages_delivered.clone(),
        );
        r.register(
            "batch_messages",
            "Messages per micro-batch",
            self.batch_messages.clone(),
        );
        r.register_with_unit("batch_duration", "From the end of a batch's collection to its offset commit: decode, rules, delivery, checkpoint", Unit::Seconds, self.batch_seconds.clone());
        r.register("commits", "Successful offset commits", self.commits.clone());
        r.register(
            "commit_failures",
            "Failed offset commits (the next commit covers them)",
            self.commit_failures.clone(),
        );
        r.register(
            "delivery_retries",
            "Delivery rounds that failed; the batch is retried while consumption is paused",
            self.delivery_retries.clone(),
        );
        r.register(
            "delivery_paused",
            "1 while output is not being acknowledged and consumption is paused (back-pressure)",
            self.delivery_paused.clone(),
        );
        r.register(
            "output_sent",
            "Alerts an output delivered (acknowledged by its endpoint), per output",
            self.output_sent.clone(),
        );
        r.register(
            "output_retries",
            "Delivery attempts of an output that failed and were retried, per output",
            self.output_retries.clone(),
        );
        r.register(
            "output_failed",
            "Alerts an output could not deliver after its retries (sent to the dead-letter topic), per output",
            self.output_failed.clone(),
        );
        r.register_with_unit(
            "output_lag",
            "Per output, the time from the detection of the last alert it delivered to its delivery",
            Unit::Seconds,
            self.output_lag.clone(),
        );
        r.register(
            "output_unreadable_records",
            "Records of the alerts topic the outputs' consumer could not read as alerts (skipped)",
            self.output_unreadable.clone(),
        );
        r.register("consumer_fetch_lag", "Messages in the partition not yet fetched and handed to Vigil (end - fetch position), from librdkafka statistics; 0 while Vigil holds read messages it cannot deliver", self.consumer_fetch_lag.clone());
        r.register("consumer_committed_lag", "Messages in the partition after the group's committed offset (end - committed), as Kafka tooling measures consumer-group lag; includes events retained for open correlation windows", self.consumer_committed_lag.clone());
        r.register_with_unit(
            "last_progress_timestamp",
            "Wall time of the last batch whose offsets were committed (Unix time; process start before the first)",
            Unit::Seconds,
            self.last_progress.clone(),
        );
        r.register_with_unit(
            "uncommitted_read_age",
            "Wall-clock age of the oldest message read whose batch is not yet delivered and committed; 0 when none",
            Unit::Seconds,
            self.uncommitted_read_age.clone(),
        );
        r.register_with_unit(
            "uncommitted_event_age",
            "Now minus the earliest event time of the messages read whose batch is not yet delivered and committed (once decoded); 0 when none",
            Unit::Seconds,
            self.uncommitted_event_age.clone(),
        );
        r.register(
            "assigned_partitions",
            "Source partitions assigned to this instance",
            self.assigned_partitions.clone(),
        );
        r.register_with_unit(
            "source_event_time",
            "Highest event time decoded per source (Unix time)",
            Unit::Seconds,
            self.source_event_time.clone(),
        );
        r.register_with_unit(
            "correlation_watermark",
            "Event-time watermark of correlation rules (Unix time; 0 before the first event)",
            Unit::Seconds,
            self.correlation_watermark.clone(),
        );
        r.register(
            "correlation_retained_events",
            "Events retained for correlation rules",
            self.retained_events.clone(),
        );
        r.register(
            "correlation_evicted_early",
            "Retained events evicted before their window closed (max_retained_events reached)",
            self.correlation_evicted_early.clone(),
        );
        r.register(
            "correlation_state_rows",
            "Aggregation state rows of incremental correlation rules (bounded by max_state_rows)",
            self.correlation_state_rows.clone(),
        );
        r.register(
            "correlation_evicted_state_rows",
            "Aggregation state rows dropped before their window closed (max_state_rows reached)",
            self.correlation_evicted_state_rows.clone(),
        );
        r.register("correlation_rows_evaluated", "Rows fed to correlation plans (re-scans, partial and final aggregations): the evaluation work", self.correlation_rows_evaluated.clone());
        r.register(
            "correlation_suppressed_alerts",
            "Correlation alerts folded by suppression",
            self.correlation_suppressed.clone(),
        );
        r.register(
            "first_seen_entries",
            "Combinations the first-seen rules hold (24 bytes each)",
            self.first_seen_entries.clone(),
        );
        r.register(
            "first_seen_forgotten_early",
            "Combinations first-seen rules forgot before their history ended (a rule's bound reached): they can alert again",
            self.first_seen_forgotten_early.clone(),
        );
        r.register(
            "first_seen_spilled",
            "Of the first-seen combinations, those spilled to the local store (rules.first_seen.spill_dir)",
            self.first_seen_spilled.clone(),
        );
        r.register(
            "first_seen_spill_failures",
            "Failed reads or writes of the first-seen spill store: the entries concerned were lost here (the state topic still holds them) and can alert again",
            self.first_seen_spill_failures.clone(),
        );
        r.register(
            "repartition_forwarded",
            "Events the first stage of correlation.placement = repartition forwarded to the repartition topic, per correlation rule",
            self.repartition_forwarded.clone(),
        );
        r.register(
            "repartition_marks",
            "Watermark marks the first stage wrote to the repartition topic (one per source partition read, per repartition partition, per batch)",
            self.repartition_marks.clone(),
        );
        r.register(
            "repartition_redelivered",
            "Forwarded events the second stage dropped because it had taken them already (a source batch forwarded again after a restart or rebalance)",
            self.repartition_redelivered.clone(),
        );
        r.register(
            "repartition_received",
            "Forwarded events the second stage read from the repartition topic, re-deliveries included: an instance's share of the group's total is the share of correlated events it read",
            self.repartition_received.clone(),
        );
        r.register(
            "alerts_excepted",
            "Alerts not raised because a rule exception (allow-list entry) matched",
            self.alerts_excepted.clone(),
        );
        r.register(
            "empty_messages",
            "Messages that decoded to no event (audit EventLists with no items)",
            self.empty_messages.clone(),
        );
        r.register(
            "rule_timeouts",
            "Rule evaluations cancelled for exceeding rules.max_eval_ms",
            self.rule_timeouts.clone(),
        );
        r.register(
            "rule_reloads",
            "Rule reloads, by result (ok, failed)",
            self.rule_reloads.clone(),
        );
        r.register(
            "rules_loaded",
            "Rules currently loaded",
            self.rules_loaded.clone(),
        );
        r.register(
            "build_info",
            "Always 1; the version label is the running Vigil version",
            self.build_info.clone(),
        );
    }

    /// The metrics in Prometheus text format (exposition format 0.0.4 with
    /// the `# EOF` line of OpenMetrics, which Prometheus accepts).
    pub fn encode(&self) -> String {
        let (read_age, event_age) = self.uncommitted_ages_at(now_ms());
        self.uncommitted_read_age.set(read_age);
        self.uncommitted_event_age.set(event_age);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Every metric as `(name, type)` from its `# TYPE` line (`counter`,
    /// `gauge`, `histogram`), the base name without `_total` and bucket
    /// suffixes. Labelled families appear only once they have a series, so
    /// this creates one in each of a fresh registry; a family added to
    /// [`Metrics::register_all`] must be added here too (the deployment
    /// tests check dashboards and docs against this list).
    pub fn descriptors() -> Vec<(String, String)> {
        let m = Metrics::new();
        for s in vigil_sources::registry::kinds() {
            for f in [
                &m.messages_consumed,
                &m.events_decoded,
                &m.decode_failures,
                &m.late_events,
            ] {
                f.inc_by(s, 0);
            }
            m.observe_event_time(s, 0);
        }
        m.alert_delivered("r", Severity::Info);
        m.rule_evaluated("r", RuleRun::default());
        m.rule_failed("r");
        m.dead_letter_delivered(DeadLetterKind::DecodeError);
        m.record_cut("alert");
        m.set_consumer_lag([offsets("t", 0, 0, 0)]);
        m.rule_reload_ok();
        m.output_delivered("o", 0, 0.0);
        m.output_retried("o");
        m.output_failed("o");
        m.repartitioned("r", 0);
        m.encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect()
    }

    /// `n` alerts delivered by `output`, the newest detected `lag_s`
    /// seconds before its delivery.
    pub fn output_delivered(&self, output: &str, n: u64, lag_s: f64) {
        let label = output_label(output);
        self.output_sent.get_or_create(&label).inc_by(n);
        self.output_lag.get_or_create(&label).set(lag_s);
    }

    /// A failed delivery attempt of `output` that is retried.
    pub fn output_retried(&self, output: &str) {
        self.output_retries
            .get_or_create(&output_label(output))
            .inc();
    }

    /// An alert `output` gave up on (dead-lettered).
    pub fn output_failed(&self, output: &str) {
        self.output_failed
            .get_or_create(&output_label(output))
            .inc();
    }

    /// A record of the alerts topic that is not an alert.
    pub fn output_unreadable(&self) {
        self.output_unreadable.inc();
    }

    /// What `output` has delivered, retried and given up (for tests and
    /// summaries).
    pub fn output_counts(&self, output: &str) -> (u64, u64, u64) {
        let label = output_label(output);
        let get = |f: &Family<OutputLabel, Counter>| f.get(&label).map_or(0, |c| c.get());
        (
            get(&self.output_sent),
            get(&self.output_retries),
            get(&self.output_failed),
        )
    }

    // --- compatible helpers of the earlier counter struct -------------------

    pub fn add(counter: &impl CounterCell, n: u64) {
        counter.add_n(n);
    }

    pub fn set(gauge: &impl GaugeCell, v: u64) {
        gauge.set_to(v);
    }

    pub fn get(cell: &impl ReadCell) -> u64 {
        cell.read()
    }

    /// One alert of `rule_id` delivered (summary only; prefer
    /// [`Metrics::alert_delivered`], which also exports it).
    pub fn count_alert(&self, rule_id: &str) {
        *self
            .alerts_by_rule
            .lock()
            .expect("metrics lock")
            .entry(rule_id.to_string())
            .or_default() += 1;
    }

    pub fn alerts_by_rule(&self) -> BTreeMap<String, u64> {
        self.alerts_by_rule.lock().expect("metrics lock").clone()
    }

    // --- pipeline ------------------------------------------------------------

    /// One alert acknowledged by the broker.
    pub fn alert_delivered(&self, rule_id: &str, severity: Severity) {
        self.count_alert(rule_id);
        self.alerts_produced.inc();
        self.alerts_by_rule_severity
            .get_or_create(&AlertLabels {
                rule: rule_id.to_string(),
                severity: severity.as_str().to_string(),
            })
            .inc();
    }

    /// An output record cut to fit the record limit (`record`: see
    /// [`RecordLabel`]).
    pub fn record_cut(&self, record: &str) {
        self.records_cut
            .get_or_create(&RecordLabel {
                record: record.to_string(),
            })
            .inc();
    }

    /// One dead letter (or late-event report) acknowledged by the broker.
    pub fn dead_letter_delivered(&self, kind: DeadLetterKind) {
        self.dead_letters_produced.inc();
        let kind = match kind {
            DeadLetterKind::DecodeError => "decode_error",
            DeadLetterKind::RuleError => "rule_error",
            DeadLetterKind::LateEvent => "late_event",
            DeadLetterKind::OutputError => "output_error",
        };
        self.dead_letters_by_kind
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// A batch of `messages` went from collected to committed in `elapsed`.
    pub fn batch_done(&self, messages: usize, elapsed: Duration) {
        self.batches.inc();
        self.messages_delivered.inc_by(messages as u64);
        self.batch_messages.observe(messages as f64);
        self.batch_seconds.observe(elapsed.as_secs_f64());
    }

    /// A batch was read from the source (group members only): it is
    /// pending until [`Metrics::batch_finished`] with the returned number.
    pub fn batch_read(&self) -> u64 {
        let seq = self.next_read.fetch_add(1, Ordering::Relaxed);
        self.pending_reads
            .lock()
            .expect("metrics lock")
            .push_back(PendingBatch {
                seq,
                read_ms: now_ms(),
                earliest_event_ns: None,
            });
        seq
    }

    /// The earliest event time of pending batch `seq`, once decoded.
    pub fn batch_event_time(&self, seq: u64, earliest_ns: i64) {
        let mut pending = self.pending_reads.lock().expect("metrics lock");
        if let Some(batch) = pending.iter_mut().find(|b| b.seq == seq) {
            batch.earliest_event_ns = Some(earliest_ns);
        }
    }

    /// Batch `seq` (and every batch read before it) was delivered and
    /// committed, or will be re-read.
    pub fn batch_finished(&self, seq: u64) {
        let mut pending = self.pending_reads.lock().expect("metrics lock");
        while pending.front().is_some_and(|b| b.seq <= seq) {
            pending.pop_front();
        }
    }

    /// (read age, event-time age) of the pending batches at `now_ms`.
    fn uncommitted_ages_at(&self, now_ms: i64) -> (f64, f64) {
        let pending = self.pending_reads.lock().expect("metrics lock");
        let read = pending
            .front()
            .map_or(0.0, |b| (now_ms - b.read_ms).max(0) as f64 / 1000.0);
        let event = pending
            .iter()
            .filter_map(|b| b.earliest_event_ns)
            .min()
            .map_or(0.0, |e| {
                now_ms.saturating_mul(1_000_000).saturating_sub(e).max(0) as f64 / 1e9
            });
        (read, event)
    }

    /// A batch's offsets were committed to the group: progress, now. The
    /// offsets are remembered for the committed lag (the consumer's
    /// statistics do not see a commit made in a transaction).
    pub fn committed(&self, offsets: impl IntoIterator<Item = (String, i32, i64)>) {
        let mut known = self.committed_offsets.lock().expect("metrics lock");
        for (topic, partition, offset) in offsets {
            let entry = known.entry((topic, partition)).or_insert(offset);
            *entry = (*entry).max(offset);
        }
        drop(known);
        self.last_progress.set(now_ms() as f64 / 1000.0);
    }

    /// Whether consumption is paused because output is not acknowledged.
    pub fn set_delivery_paused(&self, paused: bool) {
        self.delivery_paused.set(i64::from(paused));
    }

    // --- rules ---------------------------------------------------------------

    /// One evaluation of `rule_id` over a batch: its time and matched rows.
    pub fn rule_evaluated(&self, rule_id: &str, run: RuleRun) {
        let label = RuleLabel {
            rule: rule_id.to_string(),
        };
        self.rule_seconds
            .get_or_create(&label)
            .observe(run.elapsed.as_secs_f64());
        self.rule_cpu_seconds
            .get_or_create(&label)
            .inc_by(run.cpu.as_secs_f64());
        // Create the series at 0 too, so a rule that never fires is visible.
        self.rule_matches
            .get_or_create(&label)
            .inc_by(run.matches as u64);
    }

    /// One failure of `rule_id` on a batch.
    pub fn rule_failed(&self, rule_id: &str) {
        self.rule_failures.inc();
        self.rule_failures_by_rule
            .get_or_create(&RuleLabel {
                rule: rule_id.to_string(),
            })
            .inc();
    }

    /// Rules loaded (at start and after every reload).
    pub fn set_rules_loaded(&self, n: usize) {
        self.rules_loaded.set(n as i64);
    }

    /// A rule reload that replaced the rules.
    pub fn rule_reload_ok(&self) {
        self.rule_reloads
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .inc();
    }

    /// A rule reload that failed (the previous rules stay in force).
    pub fn rule_reload_failed(&self) {
        self.rule_reloads
            .get_or_create(&ResultLabel {
                result: "failed".into(),
            })
            .inc();
    }

    /// Rule reloads so far that succeeded (`ok`) or failed.
    pub fn rule_reloads(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "failed" };
        self.rule_reloads
            .get(&ResultLabel {
                result: result.into(),
            })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    // --- event time and correlation ------------------------------------------

    /// The highest event time decoded so far for `source` (only moves forward).
    pub fn observe_event_time(&self, source: SourceKind, event_time_ns: i64) {
        let gauge = self.source_event_time.get_or_create(&source_label(source));
        let secs = event_time_ns.div_euclid(1_000_000_000);
        if secs > gauge.get() {
            gauge.set(secs);
        }
    }

    /// Correlation state after a batch. `evicted_early` and `suppressed` are
    /// the correlator's running totals (the counters catch up to them).
    pub fn correlation_state(
        &self,
        retained: usize,
        watermark_ns: Option<i64>,
        evicted_early: u64,
        suppressed: u64,
    ) {
        self.retained_events.set(retained as i64);
        // i64::MAX is the end of a replayed input (every window closed),
        // not a time.
        if let Some(w) = watermark_ns.filter(|w| *w != i64::MAX) {
            self.correlation_watermark.set(w.div_euclid(1_000_000_000));
        }
        catch_up(&self.correlation_evicted_early, evicted_early);
        catch_up(&self.correlation_suppressed, suppressed);
    }

    /// Incremental correlation state and evaluation work (totals since start).
    pub fn correlation_work(
        &self,
        state_rows: usize,
        evicted_state_rows: u64,
        rows_evaluated: u64,
    ) {
        self.correlation_state_rows.set(state_rows as i64);
        catch_up(&self.correlation_evicted_state_rows, evicted_state_rows);
        catch_up(&self.correlation_rows_evaluated, rows_evaluated);
    }

    /// First-seen state after a batch (the counts: running totals).
    pub fn first_seen_state(&self, stats: FirstSeenStats) {
        self.first_seen_entries.set(stats.entries as i64);
        self.first_seen_spilled.set(stats.spilled as i64);
        catch_up(&self.first_seen_forgotten_early, stats.forgotten_early);
        catch_up(&self.first_seen_spill_failures, stats.spill_failures);
    }

    /// The first stage handed `events` forwarded for `rule` and `marks`
    /// marks to the producer.
    pub fn repartitioned(&self, rule: &str, events: u64) {
        self.repartition_forwarded
            .get_or_create(&RuleLabel {
                rule: rule.to_string(),
            })
            .inc_by(events);
    }

    pub fn repartition_marks(&self, marks: u64) {
        self.repartition_marks.inc_by(marks);
    }

    // --- Kafka consumer ------------------------------------------------------

    /// Replace the fetch and committed lag of every assigned partition
    /// (from a statistics report).
    pub fn set_consumer_lag(&self, partitions: impl IntoIterator<Item = PartitionOffsets>) {
        self.consumer_fetch_lag.clear();
        self.consumer_committed_lag.clear();
        let known = self.committed_offsets.lock().expect("metrics lock");
        for p in partitions {
            let label = PartitionLabels {
                topic: p.topic.clone(),
                partition: p.partition.to_string(),
            };
            if let Some(lag) = p.fetch_lag {
                self.consumer_fetch_lag.get_or_create(&label).set(lag);
            }
            let mine = known.get(&(p.topic.clone(), p.partition)).copied();
            if let Some(lag) = p.committed_lag(mine) {
                self.consumer_committed_lag.get_or_create(&label).set(lag);
            }
        }
    }

    /// The consumer's assignment changed. What this process committed is
    /// forgotten: a partition assigned again may have been committed
    /// further (or reset) by others meanwhile; the statistics carry the
    /// group's offset fetched at assignment.
    pub fn set_assigned_partitions(&self, n: usize) {
        self.assigned_partitions.set(n as i64);
        self.committed_offsets.lock().expect("metrics lock").clear();
        if n == 0 {
            self.consumer_fetch_lag.clear();
            self.consumer_committed_lag.clear();
        }
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Raise a counter to a running total kept elsewhere (never lowers it: a
/// reset of the source, e.g. a rule reload, just stops the catch-up until
/// the total passes the counter again).
fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

impl crate::observe::DetectionMetrics for Metrics {
    fn messages_consumed(&self, source: SourceKind, n: u64) {
        self.messages_consumed.inc_by(source, n);
    }
    fn decode_failures(&self, source: SourceKind, n: u64) {
        self.decode_failures.inc_by(source, n);
    }
    fn events_decoded(&self, source: SourceKind, n: u64) {
        self.events_decoded.inc_by(source, n);
    }
    fn empty_messages(&self, n: u64) {
        Metrics::add(&self.empty_messages, n);
    }
    fn event_time(&self, source: SourceKind, latest_ns: i64) {
        self.observe_event_time(source, latest_ns);
    }
    fn late_events(&self, source: SourceKind, n: u64) {
        self.late_events.inc_by(source, n);
    }
    fn alerts_excepted(&self, n: u64) {
        Metrics::add(&self.alerts_excepted, n);
    }
    fn rule_evaluated(&self, rule_id: &str, run: RuleRun) {
        Metrics::rule_evaluated(self, rule_id, run);
    }
    fn rule_timed_out(&self) {
        Metrics::add(&self.rule_timeouts, 1);
    }
    fn rule_failed(&self, rule_id: &str) {
        Metrics::rule_failed(self, rule_id);
    }
    fn rules_reloaded(&self, rules_loaded: usize) {
        self.rule_reload_ok();
        self.set_rules_loaded(rules_loaded);
    }
    fn correlation_state(
        &self,
        retained_events: usize,
        watermark_ns: Option<i64>,
        evicted_early: u64,
        suppressed: u64,
    ) {
        Metrics::correlation_state(
            self,
            retained_events,
            watermark_ns,
            evicted_early,
            suppressed,
        );
    }
    fn correlation_work(&self, state_rows: usize, evicted_state_rows: u64, rows_evaluated: u64) {
        Metrics::correlation_work(self, state_rows, evicted_state_rows, rows_evaluated);
    }
    fn first_seen_state(&self, stats: FirstSeenStats) {
        Metrics::first_seen_state(self, stats);
    }
    fn repartition_redelivered(&self, n: u64) {
        self.repartition_redelivered.inc_by(n);
    }
    fn repartition_received(&self, n: u64) {
        self.repartition_received.inc_by(n);
    }
}

/// A batch read and not yet delivered and committed.
#[derive(Debug)]
struct PendingBatch {
    seq: u64,
    /// Wall-clock ms when it was read.
    read_ms: i64,
    /// Its earliest event time (ns), once decoded and evaluated.
    earliest_event_ns: Option<i64>,
}

/// A partition's offsets as a statistics report gives them, at the end
/// 1000 (for [`Metrics::descriptors`] and tests).
fn offsets(topic: &str, partition: i32, fetch_lag: i64, committed_lag: i64) -> PartitionOffsets {
    PartitionOffsets {
        topic: topic.to_string(),
        partition,
        end: Some(1000),
        fetch_lag: Some(fetch_lag),
        committed: Some(1000 - committed_lag),
        log_start: Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }

    #[test]
    fn encodes_labelled_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.messages_consumed.inc_by(SourceKind::Falco, 3);
        Metrics::add(&m.delivery_retries, 2);
        m.alert_delivered("k8s.pod_exec", Severity::High);
        m.alert_delivered("k8s.pod_exec", Severity::High);
        m.dead_letter_delivered(DeadLetterKind::DecodeError);
        m.rule_evaluated(
            "k8s.pod_exec",
            RuleRun {
                elapsed: Duration::from_millis(2),
                cpu: Duration::from_millis(1),
                matches: 1,
            },
        );
        m.batch_done(10, Duration::from_millis(30));
        m.set_consumer_lag([offsets("k8s-audit", 2, 17, 40)]);
        m.observe_event_time(SourceKind::K8sAudit, 1_700_000_000_500_000_000);
        m.observe_event_time(SourceKind::K8sAudit, 1_600_000_000_000_000_000);
        m.rule_reload_failed();
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"vigil_messages_consumed_total{source="falco"}"#),
            Some(3.0),
            "{text}"
        );
        assert_eq!(sample(&text, "vigil_delivery_retries_total"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                r#"vigil_alerts_total{rule="k8s.pod_exec",severity="high"}"#
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "vigil_alerts_produced_total"), Some(2.0));
        assert_eq!(
            sample(&text, r#"vigil_dead_letters_total{kind="decode_error"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"vigil_rule_matches_total{rule="k8s.pod_exec"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"vigil_rule_evaluation_seconds_count{rule="k8s.pod_exec"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"vigil_rule_cpu_seconds_total{rule="k8s.pod_exec"}"#
            ),
            Some(0.001)
        );
        assert_eq!(sample(&text, "vigil_batch_messages_sum"), Some(10.0));
        assert_eq!(
            sample(&text, r#"vigil_batch_messages_bucket{le="16.0"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"vigil_batch_messages_bucket{le="4.0"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"vigil_consumer_fetch_lag{topic="k8s-audit",partition="2"}"#
            ),
            Some(17.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"vigil_consumer_committed_lag{topic="k8s-audit",partition="2"}"#
            ),
            Some(40.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"vigil_source_event_time_seconds{source="k8s_audit"}"#
            ),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            sample(&text, r#"vigil_rule_reloads_total{result="failed"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!(
                    "vigil_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            Some(1.0)
        );
        assert_eq!(Metrics::get(&m.messages_consumed), 3);
        assert_eq!(m.alerts_by_rule()["k8s.pod_exec"], 2);
    }

    #[test]
    fn descriptors_cover_every_registered_metric() {
        let d = Metrics::descriptors();
        // prometheus-client cannot list a registry: count the registrations
        // in this file (the patterns are split so they do not match here).
        let source = include_str!("metrics.rs");
        let registered = source.matches(concat!("r.", "register(")).count()
            + source.matches(concat!("r.", "register_with_unit(")).count();
        assert_eq!(d.len(), registered, "{d:?}");
        assert!(d.contains(&("vigil_alerts".to_string(), "counter".to_string())));
        assert!(d.contains(&(
            "vigil_rule_evaluation_seconds".to_string(),
            "histogram".to_string()
        )));
    }

    #[test]
    fn lag_is_replaced_not_accumulated_and_cleared_on_revocation() {
        let m = Metrics::new();
        m.set_consumer_lag([offsets("t", 0, 5, 7), offsets("t", 1, 6, 8)]);
        m.set_consumer_lag([offsets("t", 1, 2, 3)]);
        let text = m.encode();
        for name in ["vigil_consumer_fetch_lag", "vigil_consumer_committed_lag"] {
            assert_eq!(
                sample(&text, &format!(r#"{name}{{topic="t",partition="0"}}"#)),
                None,
                "{text}"
            );
        }
        assert_eq!(
            sample(
                &text,
                r#"vigil_consumer_fetch_lag{topic="t",partition="1"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"vigil_consumer_committed_lag{topic="t",partition="1"}"#
            ),
            Some(3.0)
        );
        m.set_assigned_partitions(0);
        let text = m.encode();
        assert!(!text.contains("vigil_consumer_fetch_lag{"), "{text}");
        assert!(!text.contains("vigil_consumer_committed_lag{"), "{text}");
    }

    #[test]
    fn own_commits_count_for_the_committed_lag_until_the_next_assignment() {
        let m = Metrics::new();
        // The statistics say committed at 900 of 1000 (a transactional
        // commit to 990 is not in them).
        m.committed([("t".to_string(), 0, 990)]);
        m.set_consumer_lag([offsets("t", 0, 0, 100)]);
        let lag = r#"vigil_consumer_committed_lag{topic="t",partition="0"}"#;
        assert_eq!(sample(&m.encode(), lag), Some(10.0));
        m.set_assigned_partitions(1);
        m.set_consumer_lag([offsets("t", 0, 0, 100)]);
        assert_eq!(sample(&m.encode(), lag), Some(100.0));
    }

    #[test]
    fn progress_and_the_age_of_what_is_read_but_not_committed() {
        let m = Metrics::new();
        let started = sample(&m.encode(), "vigil_last_progress_timestamp_seconds").unwrap();
        assert!(started > 1.7e9, "process start before the first commit");
        assert_eq!(
            sample(&m.encode(), "vigil_uncommitted_read_age_seconds"),
            Some(0.0)
        );
        let first = m.batch_read();
        let second = m.batch_read();
        let read_at = m.pending_reads.lock().unwrap()[0].read_ms;
        // Event times not known yet (decoding): 0.
        assert_eq!(m.uncommitted_ages_at(read_at + 2500), (2.5, 0.0));
        // The second batch holds the earlier events (a partition behind).
        m.batch_event_time(first, (read_at - 60_000) * 1_000_000);
        m.batch_event_time(second, (read_at - 90_000) * 1_000_000);
        assert_eq!(m.uncommitted_ages_at(read_at + 2500), (2.5, 92.5));
        m.batch_finished(first);
        assert_eq!(m.pending_reads.lock().unwrap().len(), 1);
        assert_eq!(m.uncommitted_ages_at(read_at + 2500), (2.5, 92.5));
        m.batch_finished(second);
        assert_eq!(m.uncommitted_ages_at(read_at + 9000), (0.0, 0.0));
        std::thread::sleep(Duration::from_millis(20));
        m.committed([("t".to_string(), 0, 5)]);
        let progressed = sample(&m.encode(), "vigil_last_progress_timestamp_seconds").unwrap();
        assert!(progressed > started, "{progressed} > {started}");
    }

    #[test]
    fn running_totals_only_move_counters_forward() {
        let m = Metrics::new();
        m.correlation_state(10, Some(5_000_000_000), 4, 1);
        m.correlation_state(3, None, 2, 1);
        m.correlation_state(3, Some(i64::MAX), 2, 1);
        let text = m.encode();
        assert_eq!(
            sample(&text, "vigil_correlation_retained_events"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "vigil_correlation_watermark_seconds"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "vigil_correlation_evicted_early_total"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "vigil_correlation_suppressed_alerts_total"),
            Some(1.0)
        );
    }
}
