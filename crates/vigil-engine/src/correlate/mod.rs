//! Windowed correlation: rules over events retained across micro-batches.
//!
//! A correlation rule (`-- mode: correlation`) is one SQL query over the
//! events of its source tables that are still *retained*: every event
//! whose time is within the rule's `window` of the watermark. Its output
//! rows carry a `window_end` timestamp (the event time at which the
//! detection is complete: a window's end, the last event of a sequence).
//!
//! Emission: when the watermark advances from `w0` to `w1`, each rule runs
//! once and emits exactly the rows with `w0 < window_end <= w1`. Events
//! later than the watermark are not retained (they go to the late-events
//! output instead), so the rows of a window are final once the watermark
//! has passed its end: every row is emitted once.
//!
//! Strategies, chosen per rule at compile time ([`Strategy`]):
//!
//! - **incremental** (aggregation rules, `incremental.rs`): the rule's plan
//!   is split at its GROUP BY; the partial aggregation runs on each batch's
//!   new events and its state rows, kept by window end, are the rule's
//!   state; the final aggregation runs over the closing windows' state
//!   rows only.
//! - **re-scan** (every other shape: joins, window functions, …): the rule
//!   runs over all retained events each time the watermark advances.
//!
//! State: retained events (only for sources a re-scan rule reads),
//! pre-filtered by the predicates the rules' scans push down (only rows
//! some rule could use are kept), evicted by watermark (`event_time <
//! watermark - window`), and bounded by `max_retained_events`; state rows
//! of incremental rules, bounded by `max_state_rows`. Beyond a bound the
//! oldest are evicted early and counted. The engine records the identity
//! of each event still named by the state so alerts name their triggering
//! events (at most `max_alert_events` per alert).

mod compile;
mod delta;
mod error;
mod incremental;
pub mod watermark;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, TimestampNanosecondType, UInt32Type, UInt64Type};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

pub use compile::retained_schema;
use error::Context;
pub use error::CorrelationError;
pub(crate) use incremental::{merge_offsets, Offsets};
use incremental::{AggregateSplit, AggregateState};
use watermark::WatermarkTracker;

use crate::alert::{alert_id, content_event_id, format_time_ns, Alert, EventIdentity};
use crate::decode::DecodedBatch;
use crate::rules::budget::{with_deadline, EvalDeadline};
use crate::rules::conjunction::SharedConditions;
use crate::rules::slot::{next_batch_id, BatchSlot};
use crate::rules::{Rule, RuleError};
use crate::schema::ROW_COLUMN;
use crate::source::{Origin, RawMessage, SourceKind};

/// Settings of event time and state (`[correlation]` in the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationSettings {
    /// How far out of order events may arrive and still count.
    #[serde(default = "default_lateness_ms")]
    pub allowed_lateness_ms: u64,
    /// A partition silent this long (wall clock) stops holding the
    /// watermark back.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Upper bound on retained events over all sources.
    #[serde(default = "default_max_retained")]
    pub max_retained_events: usize,
    /// Upper bound on the state rows (one per group and window, roughly)
    /// of incremental rules, over all rules.
    #[serde(default = "default_max_state_rows")]
    pub max_state_rows: usize,
    /// Most events an alert names (the earliest by event time, then id).
    #[serde(default = "default_max_alert_events")]
    pub max_alert_events: usize,
    /// Evaluate aggregation rules incrementally (partial aggregation per
    /// batch); `false` re-scans retained events for every rule.
    #[serde(default = "default_incremental")]
    pub incremental: bool,
    /// Re-scan rules whose `window_end` is one scan's `event_time`, plus
    /// or minus a constant (the trigger of a sequence), read from that scan
    /// only the events due in the range being emitted (`delta.rs`);
    /// `false` re-scans every retained event.
    #[serde(default = "default_delta_rescan")]
    pub delta_rescan: bool,
    /// Which instances of a consumer group run the correlation rules.
    #[serde(default)]
    pub placement: Placement,
    /// With `placement = "leader"`: the leader is replaced when it has not
    /// renewed its lease for this long (see `leader`).
    #[serde(default = "default_lease_timeout_ms")]
    pub lease_timeout_ms: u64,
}

/// Where correlation runs when several instances share a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Every instance correlates the events of the partitions it owns.
    /// Complete with one instance, or when every event a rule correlates
    /// by one key is in one partition (the keying contract: see
    /// docs/operations.md#scaling).
    #[default]
    PerInstance,
    /// One instance of the group, elected through a one-partition lease
    /// topic (`topics.correlation_lease`), runs every correlation rule over
    /// every partition of the source topics; all instances run the
    /// per-event rules on the partitions they own. When the leader dies,
    /// another instance takes the lease and rebuilds the state from the
    /// leader's checkpoint.
    Leader,
}

fn default_lateness_ms() -> u64 {
    5_000
}
fn default_idle_ms() -> u64 {
    30_000
}
fn default_max_retained() -> usize {
    2_000_000
}
fn default_max_state_rows() -> usize {
    2_000_000
}
fn default_max_alert_events() -> usize {
    100
}
fn default_incremental() -> bool {
    true
}
fn default_delta_rescan() -> bool {
    true
}
fn default_lease_timeout_ms() -> u64 {
    10_000
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            allowed_lateness_ms: default_lateness_ms(),
            idle_timeout_ms: default_idle_ms(),
            max_retained_events: default_max_retained(),
            max_state_rows: default_max_state_rows(),
            max_alert_events: default_max_alert_events(),
            incremental: default_incremental(),
            delta_rescan: default_delta_rescan(),
            placement: Placement::default(),
            lease_timeout_ms: default_lease_timeout_ms(),
        }
    }
}

/// An event that arrived behind the watermark.
#[derive(Debug, Clone)]
pub struct LateEvent {
    pub source: SourceKind,
    /// Index of its message in the batch's messages.
    pub message: u32,
    pub event_time_ns: i64,
    pub watermark_ns: i64,
}

/// Where events were read from: a Kafka partition or a replayed file,
/// shared by all the identities of its events.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
enum Stream {
    Kafka { topic: String, partition: i32 },
    File { path: String },
}

/// Identity of an event some state names (kept compact: a million of them
/// are the bulk of the state with a million distinct keys, see
/// docs/rules.md "State size").
#[derive(Debug, Clone)]
struct RetainedIdentity {
    event_id: Box<str>,
    stream: Arc<Stream>,
    /// Kafka offset, or line of the file.
    position: i64,
    event_time: i64,
}

impl RetainedIdentity {
    fn origin(&self) -> Origin {
        match &*self.stream {
            Stream::Kafka { topic, partition } => Origin::Kafka {
                topic: topic.clone(),
                partition: *partition,
                offset: self.position,
            },
            Stream::File { path } => Origin::File {
                path: path.clone(),
                line: self.position as u64,
            },
        }
    }

    /// ((topic, partition), offset) of a Kafka event.
    fn kafka_offset(&self) -> Option<((String, i32), i64)> {
        match &*self.stream {
            Stream::Kafka { topic, partition } => {
                Some(((topic.clone(), *partition), self.position))
            }
            Stream::File { .. } => None,
        }
    }
}

/// A batch of retained events and the lowest offset, per partition, of
/// the events in it.
struct RetainedBatch {
    /// Its identity ([`next_batch_id`]): re-scans keep their filters'
    /// results per batch, so a batch never changes (eviction that cuts one
    /// makes a new batch).
    id: u64,
    batch: RecordBatch,
    offsets: Offsets,
}

impl RetainedBatch {
    fn new(batch: RecordBatch, offsets: Offsets) -> Self {
        RetainedBatch {
            id: next_batch_id(),
            batch,
            offsets,
        }
    }
}

/// Events of one source: the pre-filter every new event goes through, and
/// the events retained for the re-scan rules reading it.
struct Retained {
    /// The table correlation rules read (schema: [`retained_schema`]):
    /// the new events while incremental rules aggregate them, every
    /// retained event while re-scan rules run.
    slot: Arc<BatchSlot>,
    batches: Vec<RetainedBatch>,
    /// Whether a re-scan rule reads this source (else nothing is retained).
    keep_raw: bool,
    /// The longest `window` among the re-scan rules reading this source.
    horizon_ns: i64,
    /// Pre-filter: plan over `input` keeping the rows some rule can use.
    ingest: Arc<dyn ExecutionPlan>,
    input: Arc<BatchSlot>,
    /// Of the pre-filtered rows, those a re-scan rule can use (the union
    /// of the re-scan rules' scan filters, over [`retained_schema`]): only
    /// they are retained. `None`: every pre-filtered row is.
    retain: Option<Arc<dyn PhysicalExpr>>,
}

impl Retained {
    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.batch.num_rows()).sum()
    }
}

/// How a rule is evaluated (decided at compile time from its plan's shape).
enum Strategy {
    /// Run the whole plan over all retained events of its sources.
    Rescan {
        /// The last run's output rows not emitted yet (`window_end` beyond
        /// the watermark it ran at). Valid as long as no event was retained
        /// or evicted early for the rule's sources: then the next emission
        /// takes its rows from here instead of running the plan again.
        /// `None`: the plan must run.
        pending: Option<Vec<RecordBatch>>,
    },
    /// Partial aggregation per batch, final aggregation per closing window.
    Incremental {
        split: AggregateSplit,
        state: AggregateState,
    },
}

/// One compiled correlation rule and its emission state.
struct CompiledCorrelation {
    rule: Arc<Rule>,
    plan: Arc<dyn ExecutionPlan>,
    window_end: usize,
    /// Columns naming triggering events (`__row...`: UInt64 or lists of it).
    event_columns: Vec<usize>,
    /// The sources the rule reads.
    sources: BTreeSet<SourceKind>,
    strategy: Strategy,
    /// Why an aggregation rule is re-scanned (for `rules validate`).
    rescan_reason: Option<String>,
    /// For a delta re-scan (`delta.rs`): the bounds of its trigger scans,
    /// set to the emission range before each run.
    delta: Option<delta::DeltaBounds>,
    last_emitted: Option<i64>,
    /// suppression key -> (suppressed until, alerts folded since)
    suppressed: HashMap<String, (i64, u64, Option<Alert>)>,
    /// The rule's query with its lists and macros expanded: a reload keeps
    /// the state of a rule whose query is unchanged.
    query: String,
}

impl CompiledCorrelation {
    fn state_rows(&self) -> usize {
        match &self.strategy {
            Strategy::Incremental { state, .. } => state.rows(),
            Strategy::Rescan { .. } => 0,
        }
    }
}

/// Counters of the correlation state (exported as metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct CorrelationStats {
    /// Events retained for re-scan rules.
    pub retained_events: usize,
    /// State rows of incremental rules.
    pub state_rows: usize,
    /// Event identities kept so alerts can name their events.
    pub event_identities: usize,
    pub late_events: u64,
    /// Retained events dropped before their windows closed (bound).
    pub evicted_early: u64,
    /// State rows dropped before their windows closed (bound).
    pub evicted_state_rows: u64,
    pub suppressed_alerts: u64,
    /// Rows fed to DataFusion plans since start (new events to pre-filters
    /// are not counted; retained events to re-scans, new events to partial
    /// aggregations, state rows to merges and final aggregations are): the
    /// evaluation work.
    pub rows_evaluated: u64,
    pub watermark: Option<i64>,
}

/// How a rule is evaluated, for `rules validate` and the docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleStrategy {
    Incremental,
    /// Re-scan, with the reason an aggregation could not be split (`None`
    /// for shapes that have no aggregation to split).
    Rescan(Option<String>),
    /// Re-scan whose trigger scan reads only the events due in the range
    /// being emitted (`window_end` is that scan's `event_time` ± a constant).
    DeltaRescan,
}

/// All correlation rules, their retained events and the watermark.
pub struct Correlator {
    retained: BTreeMap<SourceKind, Retained>,
    rules: Vec<CompiledCorrelation>,
    watermark: WatermarkTracker,
    identities: BTreeMap<u64, RetainedIdentity>,
    /// The streams identities point to (one per partition or file).
    streams: HashMap<Stream, Arc<Stream>>,
    /// Collect unreferenced identities when there are more than this.
    identities_gc_at: usize,
    next_seq: u64,
    settings: CorrelationSettings,
    task_ctx: Arc<TaskContext>,
    stats: CorrelationStats,
    /// Rule runs since the last [`Correlator::take_evaluations`]: (rule id,
    /// time, rows emitted in range), for metrics.
    evaluations: Vec<(String, Duration, usize)>,
    /// Rule failures at ingest (partial aggregation), reported by the next
    /// `advance`/`finish`.
    pending_failures: Vec<(String, String)>,
    /// Time budget of each plan execution (`rules.max_eval_ms`).
    budget: EvalBudget,
    _ctx: SessionContext,
}

impl Correlator {
    /// Compile the correlation rules (all of `rules` must be correlation
    /// rules). The pre-filter shares the values of conditions it has in
    /// common with the per-event rules through `shared` (the batch is the
    /// same, so are its arrays).
    pub async fn compile(
        rules: Vec<Rule>,
        settings: CorrelationSettings,
        shared: &Arc<SharedConditions>,
        definitions: &crate::rules::definitions::Definitions,
    ) -> Result<Correlator, Vec<RuleError>> {
        compile::compile(rules, settings, shared, definitions).await
    }

    /// The query of a correlation rule as planned (lists and macros
    /// expanded), or `None` if no correlation rule has this id.
    pub fn query(&self, rule_id: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.rule.meta.id == rule_id)
            .map(|r| r.query.as_str())
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Set how long one execution of a correlation plan may run before it
    /// is cancelled and reported as failed (`rules.max_eval_ms`).
    pub fn set_time_budget(&mut self, limit: Duration) {
        self.budget.limit = limit;
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|r| r.rule.as_ref())
    }

    /// The visible output columns of a correlation rule (without internal
    /// `__` columns), or `None` if no correlation rule has this id.
    pub fn output_columns(&self, rule_id: &str) -> Option<Vec<String>> {
        let r = self.rules.iter().find(|r| r.rule.meta.id == rule_id)?;
        Some(
            r.plan
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| !n.starts_with("__"))
                .collect(),
        )
    }

    /// The event-time watermark (`None` before any event).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark.watermark()
    }

    pub fn stats(&self) -> CorrelationStats {
        CorrelationStats {
            retained_events: self.retained.values().map(Retained::rows).sum(),
            state_rows: self.rules.iter().map(CompiledCorrelation::state_rows).sum(),
            event_identities: self.identities.len(),
            watermark: self.watermark.watermark(),
            ..self.stats
        }
    }

    /// The rule runs since the last call: (rule id, time, rows emitted).
    pub fn take_evaluations(&mut self) -> Vec<(String, Duration, usize)> {
        std::mem::take(&mut self.evaluations)
    }

    /// How each rule is evaluated (rule id, strategy).
    pub fn strategies(&self) -> Vec<(String, RuleStrategy)> {
        self.rules
            .iter()
            .map(|r| {
                let s = match &r.strategy {
                    Strategy::Incremental { .. } => RuleStrategy::Incremental,
                    Strategy::Rescan { .. } if r.delta.is_some() => RuleStrategy::DeltaRescan,
                    Strategy::Rescan { .. } => RuleStrategy::Rescan(r.rescan_reason.clone()),
                };
                (r.rule.meta.id.clone(), s)
            })
            .collect()
    }

    /// Whether any correlation rule reads `source`.
    pub fn reads(&self, source: SourceKind) -> bool {
        self.retained.contains_key(&source)
    }

    /// Take in a decoded batch: track event time, retain the rows rules can
    /// use, and return the events that arrived late (not retained).
    pub async fn ingest(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        now_ns: i64,
    ) -> Result<Vec<LateEvent>, CorrelationError> {
        if !self.retained.contains_key(&decoded.source) || decoded.batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let is_late = self.observe_event_times(decoded, messages, now_ns);
        let kept = self.pre_filter(decoded).await?;
        let (late, on_time) = self.split_late(kept, &is_late, decoded)?;
        self.stats.late_events += late.len() as u64;
        let (new_events, new_offsets) = self.number_events(on_time, decoded, messages)?;
        if new_events.is_empty() {
            return Ok(late);
        }
        self.retain_raw(&new_events, decoded.source)?;
        self.fold_into_state(new_events, &new_offsets, decoded.source)
            .await;
        self.enforce_bound();
        self.enforce_state_bound();
        self.collect_identities_if_due();
        Ok(late)
    }

    /// Which rows are late, judged against the watermark before this batch;
    /// every on-time event moves its partition's event time.
    fn observe_event_times(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        now_ns: i64,
    ) -> Vec<bool> {
        let times = decoded
            .batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>();
        let n = decoded.batch.num_rows();
        let mut is_late = Vec::with_capacity(n);
        for row in 0..n {
            let t = times.value(row);
            let late = self.watermark.is_late(t);
            is_late.push(late);
            if !late {
                let partition =
                    partition_of(&messages[decoded.events[row].message as usize].origin);
                self.watermark.observe(&partition, t, now_ns);
            }
        }
        is_late
    }

    /// The rows some rule would retain (the source's pre-filter). Only such
    /// an event can be late for correlation: the others were evaluated by
    /// the per-event rules and are of no use to any window, late or not.
    async fn pre_filter(
        &mut self,
        decoded: &DecodedBatch,
    ) -> Result<Vec<RecordBatch>, CorrelationError> {
        let retained = self
            .retained
            .get_mut(&decoded.source)
            .expect("checked by ingest");
        retained.input.set(decoded.batch.clone());
        let kept = execute(&retained.ingest, &self.task_ctx, &self.budget).await;
        retained.input.clear();
        kept.context("pre-filtering events for correlation")
    }

    /// Split the pre-filtered rows into the late events (reported) and the
    /// on-time rows.
    fn split_late(
        &self,
        kept: Vec<RecordBatch>,
        is_late: &[bool],
        decoded: &DecodedBatch,
    ) -> Result<(Vec<LateEvent>, Vec<RecordBatch>), CorrelationError> {
        let times = decoded
            .batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>();
        let mut late = Vec::new();
        let mut on_time = Vec::with_capacity(kept.len());
        for batch in kept.into_iter().filter(|b| b.num_rows() > 0) {
            let row_idx = batch
                .schema()
                .index_of(ROW_COLUMN)
                .context("finding the row column")?;
            let rows = batch.column(row_idx).as_primitive::<UInt32Type>().clone();
            let mut keep = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let row = rows.value(i) as usize;
                if is_late[row] {
                    late.push(LateEvent {
                        source: decoded.source,
                        message: decoded.events[row].message,
                        event_time_ns: times.value(row),
                        watermark_ns: self.watermark.watermark().unwrap_or(i64::MIN),
                    });
                }
                keep.push(!is_late[row]);
            }
            on_time.push(
                filter_record_batch(&batch, &BooleanArray::from(keep))
                    .context("dropping late events")?,
            );
        }
        Ok((late, on_time))
    }

    /// Give each on-time row a sequence number (in place of its row index)
    /// and register its identity; also the Kafka offsets of the rows.
    fn number_events(
        &mut self,
        on_time: Vec<RecordBatch>,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
    ) -> Result<(Vec<RecordBatch>, Offsets), CorrelationError> {
        let mut new_events = Vec::new();
        let mut new_offsets = Offsets::new();
        for batch in on_time.into_iter().filter(|b| b.num_rows() > 0) {
            let row_idx = batch
                .schema()
                .index_of(ROW_COLUMN)
                .context("finding the row column")?;
            let rows = batch.column(row_idx).as_primitive::<UInt32Type>().clone();
            let batch_times = batch
                .column(0)
                .as_primitive::<TimestampNanosecondType>()
                .clone();
            let mut seqs = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let event = &decoded.events[rows.value(i) as usize];
                let message = &messages[event.message as usize];
                let event_id = match &event.native_id {
                    Some(id) => id.clone(),
                    None => content_event_id(&message.payload, event.item),
                };
                let (stream, position) = self.stream_of(&message.origin, &mut new_offsets);
                let seq = self.next_seq;
                self.next_seq += 1;
                self.identities.insert(
                    seq,
                    RetainedIdentity {
                        event_id: event_id.into_boxed_str(),
                        stream,
                        position,
                        event_time: batch_times.value(i),
                    },
                );
                seqs.push(seq);
            }
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns[row_idx] = Arc::new(UInt64Array::from(seqs));
            let schema = retained_schema(decoded.source);
            let rebuilt =
                RecordBatch::try_new(schema, columns).context("numbering the retained events")?;
            new_events.push(rebuilt);
        }
        Ok((new_events, new_offsets))
    }

    /// The shared stream of an origin and the event's position in it;
    /// a Kafka origin's offset is noted in `offsets`.
    fn stream_of(&mut self, origin: &Origin, offsets: &mut Offsets) -> (Arc<Stream>, i64) {
        let (stream, position) = match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                note_offset(offsets, topic, *partition, *offset);
                (
                    Stream::Kafka {
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    *offset,
                )
            }
            Origin::File { path, line } => (Stream::File { path: path.clone() }, *line as i64),
        };
        let stream = match self.streams.get(&stream) {
            Some(s) => s.clone(),
            None => self
                .streams
                .entry(stream.clone())
                .or_insert_with(|| Arc::new(stream))
                .clone(),
        };
        (stream, position)
    }

    /// Keep the new rows re-scan rules read (those only incremental rules
    /// use are folded into their state instead), and mark the re-scan
    /// rules of the source to run again.
    fn retain_raw(
        &mut self,
        new_events: &[RecordBatch],
        source: SourceKind,
    ) -> Result<(), CorrelationError> {
        let retained = self.retained.get_mut(&source).expect("checked by ingest");
        if !retained.keep_raw {
            return Ok(());
        }
        for batch in new_events {
            let batch = match &retained.retain {
                None => batch.clone(),
                Some(predicate) => {
                    let keep = predicate
                        .evaluate(batch)
                        .and_then(|v| v.into_array(batch.num_rows()))
                        .context("selecting the events to retain")?;
                    let keep = keep.as_boolean_opt().ok_or(CorrelationError::Unexpected(
                        "the retention filter is not boolean",
                    ))?;
                    filter_record_batch(batch, keep).context("retaining events")?
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let offsets = batch_offsets(&batch, &self.identities);
            retained.batches.push(RetainedBatch::new(batch, offsets));
        }
        for rule in self
            .rules
            .iter_mut()
            .filter(|r| r.sources.contains(&source))
        {
            if let Strategy::Rescan { pending } = &mut rule.strategy {
                *pending = None;
            }
        }
        Ok(())
    }

    /// Incremental rules of the source fold the new events into their
    /// state. A rule that fails loses the new events' contribution to its
    /// open windows; the failure is reported at the next emission.
    async fn fold_into_state(
        &mut self,
        new_events: Vec<RecordBatch>,
        new_offsets: &Offsets,
        source: SourceKind,
    ) {
        let new_rows: usize = new_events.iter().map(RecordBatch::num_rows).sum();
        let retained = self.retained.get_mut(&source).expect("checked by ingest");
        retained.slot.set_all(new_events);
        for rule in &mut self.rules {
            let Strategy::Incremental { split, state } = &mut rule.strategy else {
                continue;
            };
            if !rule.sources.contains(&source) {
                continue;
            }
            self.stats.rows_evaluated += new_rows as u64;
            let result = match execute(&split.partial, &self.task_ctx, &self.budget).await {
                Ok(partial) => {
                    state
                        .store(
                            split,
                            partial,
                            new_offsets,
                            rule.last_emitted,
                            self.settings.max_alert_events,
                            &self.identities,
                            &self.task_ctx,
                            &self.budget,
                        )
                        .await
                }
                Err(e) => Err(e).context("the partial aggregation of new events"),
            };
            match result {
                Ok(merged) => self.stats.rows_evaluated += merged,
                Err(e) => self.pending_failures.push((
                    rule.rule.meta.id.clone(),
                    format!(
                        "aggregating new events (their contribution to open windows is lost): {e}"
                    ),
                )),
            }
        }
        retained.slot.clear();
    }

    /// Advance the watermark to wall-clock `now_ns`; run every rule whose
    /// emission range grew; evict what no rule can use any more.
    ///
    /// Emits the rows whose `window_end` is strictly before the watermark:
    /// an event at the watermark is on time, and a row it completes can end
    /// exactly there (a sequence's `window_end` is its trigger's time), so
    /// rows ending at the watermark are not complete yet.
    pub async fn advance(
        &mut self,
        now_ns: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let Some(watermark) = self.watermark.advance(now_ns) else {
            return (Vec::new(), std::mem::take(&mut self.pending_failures));
        };
        self.emit_until(watermark.saturating_sub(1), detected_at_ns)
            .await
    }

    /// End of input (replay): close every window and emit what remains.
    pub async fn finish(&mut self, detected_at_ns: i64) -> (Vec<Alert>, Vec<(String, String)>) {
        if self.watermark.watermark().is_none() {
            return (Vec::new(), std::mem::take(&mut self.pending_failures));
        }
        let watermark = self.watermark.finish();
        let (mut alerts, failures) = self.emit_until(watermark, detected_at_ns).await;
        // Close every suppression period: report what was folded.
        for rule in &mut self.rules {
            for (_, (_, folded, last)) in rule.suppressed.drain() {
                if let (n @ 1.., Some(a)) = (folded, last) {
                    alerts.push(summary_alert(a, n));
                }
            }
        }
        (alerts, failures)
    }

    /// Run the rules for `(last_emitted, watermark]`; returns alerts and
    /// rule failures (rule id, error).
    async fn emit_until(
        &mut self,
        watermark: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let mut alerts = Vec::new();
        let mut failures = std::mem::take(&mut self.pending_failures);
        if self
            .rules
            .iter()
            .all(|r| r.last_emitted.is_some_and(|l| l >= watermark))
        {
            return (alerts, failures);
        }
        for retained in self.retained.values().filter(|r| r.keep_raw) {
            retained.slot.set_identified(
                retained
                    .batches
                    .iter()
                    .map(|b| (b.id, b.batch.clone()))
                    .collect(),
            );
        }
        let max_events = self.settings.max_alert_events;
        for rule in &mut self.rules {
            let from = rule.last_emitted.unwrap_or(i64::MIN);
            if from >= watermark {
                continue;
            }
            // Compute every row first: a rule that fails emits nothing for
            // this range and keeps it, so the range is retried next time.
            let span = tracing::info_span!("rule", rule = %rule.rule.meta.id, matches = tracing::field::Empty);
            let started = std::time::Instant::now();
            let output = match &mut rule.strategy {
                // Nothing new since the last run: its rows still stand.
                Strategy::Rescan {
                    pending: Some(rows),
                } => Ok(std::mem::take(rows)),
                Strategy::Rescan { pending: None } => {
                    let rows: usize = rule.sources.iter().map(|s| self.retained[s].rows()).sum();
                    self.stats.rows_evaluated += rows as u64;
                    if let Some(delta) = &rule.delta {
                        // Only the triggers of the rows due now: earlier
                        // ones were emitted, later ones are read when due.
                        delta.set_range(from, watermark);
                    }
                    execute(&rule.plan, &self.task_ctx, &self.budget)
                        .instrument(span.clone())
                        .await
                }
                Strategy::Incremental { split, state } => {
                    let closing = state.closing(from, watermark);
                    if closing.is_empty() {
                        Ok(Vec::new())
                    } else {
                        self.stats.rows_evaluated +=
                            closing.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                        split.state_input.set_all(closing);
                        let output = execute(&split.finish, &self.task_ctx, &self.budget)
                            .instrument(span.clone())
                            .await;
                        split.state_input.clear();
                        output
                    }
                }
            };
            let elapsed = started.elapsed();
            let found = output.map_err(|e| e.to_string()).and_then(|batches| {
                let found = batches
                    .iter()
                    .filter(|b| b.num_rows() > 0)
                    .map(|b| {
                        rows_in_range(
                            rule,
                            b,
                            from,
                            watermark,
                            &self.identities,
                            max_events,
                            detected_at_ns,
                        )
                    })
                    .collect::<Result<Vec<Vec<Alert>>, CorrelationError>>()
                    .map_err(|e| e.to_string())?;
                Ok((batches, found))
            });
            match found {
                Ok((batches, found)) => {
                    let matches: usize = found.iter().map(Vec::len).sum();
                    span.record("matches", matches as i64);
                    self.evaluations
                        .push((rule.rule.meta.id.clone(), elapsed, matches));
                    for alert in found.into_iter().flatten() {
                        alerts.extend(suppress(rule, alert, &mut self.stats));
                    }
                    rule.last_emitted = Some(watermark);
                    match &mut rule.strategy {
                        Strategy::Incremental { state, .. } => state.evict_through(watermark),
                        // A delta run reads no trigger beyond the watermark,
                        // so it leaves no undue rows to reuse.
                        Strategy::Rescan { pending } if rule.delta.is_some() => *pending = None,
                        Strategy::Rescan { pending } => {
                            *pending = Some(rows_after(&batches, rule.window_end, watermark))
                        }
                    }
                }
                Err(e) => {
                    if let Strategy::Rescan { pending } = &mut rule.strategy {
                        *pending = None;
                    }
                    failures.push((rule.rule.meta.id.clone(), e));
                    continue;
                }
            }
            // Suppression periods the watermark has passed: report folded alerts.
            let expired: Vec<String> = rule
                .suppressed
                .iter()
                .filter(|(_, (until, _, _))| *until <= watermark)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some((_, folded, Some(last))) = rule.suppressed.remove(&key) {
                    if folded > 0 {
                        alerts.push(summary_alert(last, folded));
                    }
                }
            }
        }
        for retained in self.retained.values() {
            retained.slot.clear();
        }
        self.evict(watermark);
        self.collect_identities_if_due();
        (alerts, failures)
    }

    /// Drop retained events no rule can use: older than watermark − window,
    /// where a rule whose last run failed holds the watermark at what it
    /// last emitted (so its retried range still has its events).
    fn evict(&mut self, watermark: i64) {
        for (source, retained) in self.retained.iter_mut() {
            let held = self
                .rules
                .iter()
                .filter(|r| {
                    matches!(r.strategy, Strategy::Rescan { .. }) && r.sources.contains(source)
                })
                .map(|r| r.last_emitted.unwrap_or(i64::MIN))
                .min()
                .unwrap_or(watermark);
            let cutoff = watermark.min(held).saturating_sub(retained.horizon_ns);
            evict_before(&mut retained.batches, cutoff, &self.identities);
        }
    }

    /// Keep retained events under `max_retained_events`, oldest first out.
    /// (Identities of evicted events are collected by
    /// [`Self::collect_identities_if_due`]: incremental state may share them.)
    fn enforce_bound(&mut self) {
        let max = self.settings.max_retained_events;
        let mut total: usize = self.retained.values().map(Retained::rows).sum();
        while total > max {
            // Evict the oldest batch of the largest source.
            let Some(retained) = self.retained.values_mut().max_by_key(|r| r.rows()) else {
                break;
            };
            if retained.batches.is_empty() {
                break;
            }
            for rule in &mut self.rules {
                if let Strategy::Rescan { pending } = &mut rule.strategy {
                    *pending = None;
                }
            }
            let batch = retained.batches.remove(0).batch;
            total -= batch.num_rows();
            self.stats.evicted_early += batch.num_rows() as u64;
            tracing::warn!(
                evicted = batch.num_rows(),
                max_retained_events = max,
                "correlation state at its bound: oldest events evicted before their window closed"
            );
        }
    }

    /// Keep the state rows of incremental rules under `max_state_rows`:
    /// drop the window that ends first of the rule with the most rows.
    fn enforce_state_bound(&mut self) {
        let max = self.settings.max_state_rows;
        let mut total: usize = self.rules.iter().map(CompiledCorrelation::state_rows).sum();
        while total > max {
            let Some(rule) = self.rules.iter_mut().max_by_key(|r| r.state_rows()) else {
                break;
            };
            let Strategy::Incremental { state, .. } = &mut rule.strategy else {
                break;
            };
            let Some((window_end, rows)) = state.evict_oldest() else {
                break;
            };
            total -= rows;
            self.stats.evicted_state_rows += rows as u64;
            tracing::warn!(
                rule = %rule.rule.meta.id,
                window_end = %format_time_ns(window_end),
                evicted_rows = rows,
                max_state_rows = max,
                "correlation state at its bound: a window's aggregation state evicted before it closed (its alerts are lost)"
            );
        }
    }

    /// Drop the identities of events nothing names any more (evicted,
    /// emitted, or beyond `max_alert_events` of their group). Runs when
    /// their number has doubled since the last collection, so its cost is
    /// amortised over the events that made it due.
    fn collect_identities_if_due(&mut self) {
        if self.identities.len() <= self.identities_gc_at {
            return;
        }
        let mut live = BTreeSet::new();
        for retained in self.retained.values() {
            for b in &retained.batches {
                if let Some(seqs) = b.batch.column_by_name(ROW_COLUMN) {
                    live.extend(seqs.as_primitive::<UInt64Type>().values().iter().copied());
                }
            }
        }
        for rule in &self.rules {
            match &rule.strategy {
                Strategy::Incremental { split, state } => state.live_events(split, &mut live),
                Strategy::Rescan {
                    pending: Some(rows),
                } => {
                    for batch in rows {
                        for row in 0..batch.num_rows() {
                            for &c in &rule.event_columns {
                                collect_seqs(batch.column(c), row, &mut live);
                            }
                        }
                    }
                }
                Strategy::Rescan { pending: None } => {}
            }
        }
        self.identities.retain(|seq, _| live.contains(seq));
        self.identities_gc_at = (2 * self.identities.len()).max(IDENTITIES_GC_MIN);
    }

    /// Forget all state: retained events, watermark, emission and
    /// suppression state (between independent rule test cases).
    pub fn reset(&mut self) {
        for retained in self.retained.values_mut() {
            retained.batches.clear();
        }
        for rule in &mut self.rules {
            rule.last_emitted = None;
            rule.suppressed.clear();
            match &mut rule.strategy {
                Strategy::Incremental { state, .. } => state.clear(),
                Strategy::Rescan { pending } => *pending = None,
            }
        }
        self.pending_failures.clear();
        self.identities.clear();
        self.identities_gc_at = IDENTITIES_GC_MIN;
        self.watermark = WatermarkTracker::new(
            ms(self.settings.allowed_lateness_ms),
            ms(self.settings.idle_timeout_ms),
        );
    }

    /// Take over the state of `old`, the correlator a rule reload replaces
    /// (both compiled with the same settings).
    ///
    /// Carried: the watermark; the retained events (with their identities)
    /// of every source this correlator still reads; and, for each rule id
    /// in `unchanged` (same id and same file text in both sets), its
    /// emission watermark and suppression state. Every other rule here (new
    /// or changed) starts at the reload point: it emits only windows ending
    /// after the carried watermark. It sees the carried events, but only
    /// those the old rules' pre-filters kept.
    pub fn carry_state_from(&mut self, mut old: Correlator, unchanged: &BTreeSet<String>) {
        let watermark = old.watermark.watermark();
        self.watermark = old.watermark.clone();
        for (source, retained) in old.retained.iter_mut() {
            // Events of a source no rule reads any more are dropped; their
            // identities go at the next identity collection.
            if let Some(new) = self.retained.get_mut(source) {
                new.batches = std::mem::take(&mut retained.batches);
            }
        }
        self.identities = std::mem::take(&mut old.identities);
        self.identities_gc_at = old.identities_gc_at;
        self.next_seq = old.next_seq;
        self.stats = CorrelationStats {
            retained_events: 0,
            watermark: None,
            ..old.stats
        };
        for rule in &mut self.rules {
            let id = &rule.rule.meta.id;
            match old
                .rules
                .iter_mut()
                .find(|o| &o.rule.meta.id == id)
                .filter(|_| unchanged.contains(id))
            {
                Some(o) => {
                    rule.last_emitted = o.last_emitted;
                    rule.suppressed = std::mem::take(&mut o.suppressed);
                    // Incremental state is data; the plans that read and
                    // write it are the new compilation's (same SQL, same
                    // schema). A re-scan rule runs again at the next emission.
                    if let (
                        Strategy::Incremental { state, .. },
                        Strategy::Incremental {
                            state: old_state, ..
                        },
                    ) = (&mut rule.strategy, &mut o.strategy)
                    {
                        std::mem::swap(state, old_state);
                    }
                }
                None => rule.last_emitted = watermark,
            }
        }
        self.enforce_bound();
    }

    /// Partitions known before they deliver (see
    /// [`WatermarkTracker::register`]).
    pub fn register_partitions(&mut self, partitions: &[String], now_ns: i64) {
        for p in partitions {
            self.watermark.register(p, now_ns);
        }
    }

    /// Lowest retained offset per Kafka partition: a restart must re-read
    /// from there to rebuild the state.
    ///
    /// For incremental rules this covers every event folded into a window
    /// not yet emitted (also those beyond `max_alert_events`: they count).
    pub fn retained_offsets(&self) -> BTreeMap<(String, i32), i64> {
        let mut out = Offsets::new();
        for retained in self.retained.values() {
            for b in &retained.batches {
                merge_offsets(&mut out, &b.offsets);
            }
        }
        for rule in &self.rules {
            if let Strategy::Incremental { state, .. } = &rule.strategy {
                state.offsets(&mut out);
            }
        }
        out
    }

    /// The last watermark each rule emitted up to (for checkpoints).
    pub fn emitted_watermarks(&self) -> BTreeMap<String, i64> {
        self.rules
            .iter()
            .filter_map(|r| r.last_emitted.map(|w| (r.rule.meta.id.clone(), w)))
            .collect()
    }

    /// Restore emission watermarks (after a restart): rows at or before them
    /// were already emitted and are not emitted again.
    pub fn restore_emitted(&mut self, emitted: &BTreeMap<String, i64>) {
        for rule in &mut self.rules {
            if let Some(w) = emitted.get(&rule.rule.meta.id) {
                rule.last_emitted = Some(rule.last_emitted.map_or(*w, |l| l.max(*w)));
            }
        }
    }
}

/// Lower `offsets` of (topic, partition) to `offset`.
pub(crate) fn note_offset(offsets: &mut Offsets, topic: &str, partition: i32, offset: i64) {
    match offsets
        .iter_mut()
        .find(|((t, p), _)| t == topic && *p == partition)
    {
        Some((_, o)) => *o = (*o).min(offset),
        None => {
            offsets.insert((topic.to_string(), partition), offset);
        }
    }
}

/// Partition key of an origin for watermark tracking.
fn partition_of(origin: &Origin) -> String {
    match origin {
        Origin::Kafka {
            topic, partition, ..
        } => format!("{topic}/{partition}"),
        Origin::File { path, .. } => path.clone(),
    }
}

/// Lowest offset per Kafka partition of the events of a retained batch.
fn batch_offsets(batch: &RecordBatch, identities: &BTreeMap<u64, RetainedIdentity>) -> Offsets {
    let mut out = Offsets::new();
    if let Some(seqs) = batch.column_by_name(ROW_COLUMN) {
        for seq in seqs.as_primitive::<UInt64Type>().values().iter() {
            if let Some((key, offset)) =
                identities.get(seq).and_then(RetainedIdentity::kafka_offset)
            {
                merge_offsets(&mut out, &Offsets::from([(key, offset)]));
            }
        }
    }
    out
}

fn evict_before(
    batches: &mut Vec<RetainedBatch>,
    cutoff: i64,
    identities: &BTreeMap<u64, RetainedIdentity>,
) {
    let mut kept = Vec::with_capacity(batches.len());
    for retained in batches.drain(..) {
        let batch = &retained.batch;
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        let keep: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| t >= cutoff)))
            .collect();
        if keep.true_count() == batch.num_rows() {
            kept.push(retained);
            continue;
        }
        if keep.true_count() > 0 {
            let batch = filter_record_batch(batch, &keep)
                .expect("filter with a mask of the batch's length");
            let offsets = batch_offsets(&batch, identities);
            kept.push(RetainedBatch::new(batch, offsets));
        }
    }
    *batches = kept;
}

/// The rows of `batches` with `window_end` after `watermark` (not emitted yet).
fn rows_after(batches: &[RecordBatch], window_end: usize, watermark: i64) -> Vec<RecordBatch> {
    batches
        .iter()
        .filter_map(|b| {
            let ends = b
                .column(window_end)
                .as_primitive::<TimestampNanosecondType>();
            let mask: BooleanArray = ends
                .iter()
                .map(|t| Some(t.is_some_and(|t| t > watermark)))
                .collect();
            (mask.true_count() > 0).then(|| {
                filter_record_batch(b, &mask).expect("filter with a mask of the batch's length")
            })
        })
        .collect()
}

/// Alerts for the output rows of `batch` with `from < window_end <= to`.
fn rows_in_range(
    rule: &CompiledCorrelation,
    batch: &RecordBatch,
    from: i64,
    to: i64,
    identities: &BTreeMap<u64, RetainedIdentity>,
    max_events: usize,
    detected_at_ns: i64,
) -> Result<Vec<Alert>, CorrelationError> {
    let ends = batch
        .column(rule.window_end)
        .as_primitive::<TimestampNanosecondType>();
    let mask: BooleanArray = ends
        .iter()
        .map(|t| Some(t.is_some_and(|t| t > from && t <= to)))
        .collect();
    if mask.true_count() == 0 {
        return Ok(Vec::new());
    }
    let selected = filter_record_batch(batch, &mask).context("selecting the windows to emit")?;
    let ends = selected
        .column(rule.window_end)
        .as_primitive::<TimestampNanosecondType>()
        .clone();
    let fields =
        crate::rules::engine::rows_to_json(&selected).context("encoding the rule's output")?;
    let mut alerts = Vec::with_capacity(selected.num_rows());
    for (i, fields) in fields.into_iter().enumerate() {
        let mut seqs = BTreeSet::new();
        for &c in &rule.event_columns {
            collect_seqs(selected.column(c), i, &mut seqs);
        }
        let mut events: Vec<&RetainedIdentity> =
            seqs.iter().filter_map(|s| identities.get(s)).collect();
        events.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
        events.dedup_by(|a, b| a.event_id == b.event_id);
        events.truncate(max_events);
        let window_end = ends.value(i);
        let identities: Vec<EventIdentity> = events
            .iter()
            .map(|e| EventIdentity {
                event_id: e.event_id.to_string(),
                origin: e.origin(),
            })
            .collect();
        let meta = &rule.rule.meta;
        let mut alert = Alert::new(meta, detected_at_ns, window_end, fields, identities);
        // The id must not depend on arrival order or on which events were
        // still retained: rule, window end, the sorted event ids (or, for
        // rules that name no events, the output row).
        let mut ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        ids.sort();
        let window = format_time_ns(window_end);
        alert.alert_id = if ids.is_empty() {
            let row = Value::Object(alert.fields.clone()).to_string();
            alert_id(&meta.id, [window.as_str(), row.as_str()])
        } else {
            alert_id(
                &meta.id,
                std::iter::once(window.as_str()).chain(ids.iter().map(String::as_str)),
            )
        };
        alerts.push(alert);
    }
    Ok(alerts)
}

fn collect_seqs(column: &ArrayRef, row: usize, out: &mut BTreeSet<u64>) {
    if column.is_null(row) {
        return;
    }
    match column.data_type() {
        DataType::UInt64 => {
            out.insert(column.as_primitive::<UInt64Type>().value(row));
        }
        DataType::List(_) => {
            let values = column.as_list::<i32>().value(row);
            if let Some(v) = values.as_primitive_opt::<UInt64Type>() {
                out.extend(v.iter().flatten());
            }
        }
        DataType::LargeList(_) => {
            let values = column.as_list::<i64>().value(row);
            if let Some(v) = values.as_primitive_opt::<UInt64Type>() {
                out.extend(v.iter().flatten());
            }
        }
        _ => {}
    }
}

/// Apply the rule's suppression: the alerts to emit (none if folded; the
/// alert, preceded by the summary of a previous period that folded some).
fn suppress(
    rule: &mut CompiledCorrelation,
    alert: Alert,
    stats: &mut CorrelationStats,
) -> Vec<Alert> {
    let Some(period) = rule.rule.meta.suppress else {
        return vec![alert];
    };
    let key: String = if rule.rule.meta.suppress_key.is_empty() {
        String::new()
    } else {
        let values: Vec<&Value> = rule
            .rule
            .meta
            .suppress_key
            .iter()
            .map(|k| alert.fields.get(k).unwrap_or(&Value::Null))
            .collect();
        serde_json::to_string(&values).expect("json values serialize")
    };
    let at = chrono::DateTime::parse_from_rfc3339(&alert.event_time)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MIN);
    match rule.suppressed.get_mut(&key) {
        Some((until, folded, last)) if at < *until => {
            *folded += 1;
            *last = Some(alert);
            stats.suppressed_alerts += 1;
            Vec::new()
        }
        _ => {
            let until = at.saturating_add(period.as_nanos() as i64);
            let mut out = Vec::with_capacity(2);
            if let Some((_, folded @ 1.., Some(last))) =
                rule.suppressed.insert(key, (until, 0, None))
            {
                out.push(summary_alert(last, folded));
            }
            out.push(alert);
            out
        }
    }
}

/// The alert reporting how many alerts a suppression period folded: the
/// last folded alert, with `suppressed_count` set.
fn summary_alert(mut last: Alert, folded: u64) -> Alert {
    last.suppressed_count = Some(folded);
    last.alert_id = alert_id(
        &last.rule_id,
        [last.alert_id.as_str(), "suppression-summary"],
    );
    last
}

/// Execute a stored plan afresh. Some operators keep state from one
/// execution to the next (a hash join builds its hash table once and
/// reuses it): without the reset, a re-execution would join new events
/// against the first execution's build side.
///
/// The execution runs within `budget` (`rules.max_eval_ms`, as for
/// per-event rules): past it, the plan is cancelled between record batches
/// and the execution fails like any rule error (a `rule_error` dead letter,
/// the range retried at the next evaluation), so a pathological correlation
/// rule costs at most its budget per evaluation and cannot stall the
/// pipeline.
async fn execute(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
    budget: &EvalBudget,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let plan = with_deadline(reset_plan_states(plan.clone())?, &budget.deadline)?;
    budget.deadline.arm(budget.limit);
    let output = collect(plan, task_ctx.clone()).await;
    budget.deadline.disarm();
    output
}

/// The time budget of one correlation plan execution (see [`execute`]).
#[derive(Debug)]
pub(crate) struct EvalBudget {
    deadline: Arc<EvalDeadline>,
    limit: Duration,
}

impl Default for EvalBudget {
    fn default() -> Self {
        EvalBudget {
            deadline: Arc::default(),
            limit: crate::rules::engine::DEFAULT_TIME_BUDGET,
        }
    }
}

/// Identities are first collected once there are this many.
const IDENTITIES_GC_MIN: usize = 65_536;

/// Milliseconds as a [`Duration`].
pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
