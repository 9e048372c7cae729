//! Windowed correlation: rules over events retained across micro-batches.
//!
//! A correlation rule (`-- mode: correlation`) is one SQL query over the
//! events of its source tables that are still *retained*: every event
//! whose time is within the rule's `window` of the watermark. Its output
//! rows carry a `window_end` timestamp (the event time at which the
//! detection is complete: a window's end, the last event of a sequence).
//!
//! Emission: when the watermark advances from `w0` to `w1`, each rule runs
//! once and emits exactly the rows with `w0 <= window_end < w1`. Events
//! behind the watermark are not retained (they go to the late-events
//! output instead), so the rows of a window are final once the watermark
//! has passed its end: every row is emitted once.
//!
//! Files: `settings.rs` (`[correlation]`), `compile.rs` (planning and the
//! strategy of each rule), `ingest.rs` (a batch into state), `emit.rs`
//! (the due range of each rule into alerts, eviction), `due.rs` (a run's
//! due rows, their alerts built only when raised), `suppress.rs`,
//! `incremental.rs` and `delta.rs` (the two optimised strategies),
//! `watermark.rs`; this file holds the state (`Correlator` and what it
//! retains) and its lifecycle (reset, hot reload, restart offsets).
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

mod alert_fields;
mod compile;
mod delta;
mod due;
mod emit;
mod empty_input;
mod error;
mod fold_filters;
pub(crate) mod fold_lane;
mod identities;
mod incremental;
mod ingest;
mod json_cut;
pub mod key;
mod lanes;
mod settings;
mod suppress;
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
use serde_json::Value;
use tracing::Instrument;

pub use compile::retained_schema;
use due::DueRows;
use emit::execute;
pub(crate) use emit::EvalBudget;
use error::Context;
pub use error::CorrelationError;
pub(crate) use incremental::merge_offsets;
pub(crate) use incremental::Offsets;
use incremental::{AggregateSplit, AggregateState};
pub use lanes::{RoutedRow, RuleLanes};
pub use settings::{ms, CorrelationSettings, Placement};
use suppress::summary_alert;
use watermark::WatermarkTracker;

use crate::alert::{alert_id, content_event_id, format_time_ns, Alert, EventIdentity};
use crate::decode::DecodedBatch;
use crate::observe::RuleRun;
use crate::rules::budget::{with_deadline, EvalDeadline};
use crate::rules::conjunction::SharedConditions;
use crate::rules::cpu_time::CpuTimed;
use crate::rules::slot::{next_batch_id, BatchSlot, Lineage};
use crate::rules::{Rule, RuleError};
use crate::schema::ROW_COLUMN;
use crate::source::{Origin, RawMessage, SourceKind};
use identities::Identities;

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
    Kafka { topic: Arc<str>, partition: i32 },
    File { path: Arc<str> },
}

/// Where an event some state names was read, and when it happened; its
/// id is kept by the table of identities (`identities.rs`). Kept compact:
/// a million of them are the bulk of the state with a million distinct
/// keys (docs/rules.md "State size").
#[derive(Debug, Clone)]
struct RetainedIdentity {
    stream: Arc<Stream>,
    /// Kafka offset, or line of the file.
    position: i64,
    event_time: i64,
    /// Where the event was first consumed, when it came forwarded through
    /// the repartition topic (`stream` and `position` are then the
    /// repartition record's: where a restart re-reads it). Alerts name
    /// this origin.
    upstream: Option<(Arc<Stream>, i64)>,
}

impl Stream {
    /// Whether `origin` was read from this stream.
    fn holds(&self, origin: &Origin) -> bool {
        let key = match self {
            Stream::Kafka { topic, partition } => (&**topic, Some(*partition)),
            Stream::File { path } => (&**path, None),
        };
        key == partition_key(origin)
    }
}

impl RetainedIdentity {
    fn origin(&self) -> Origin {
        let (stream, position) = match &self.upstream {
            Some((stream, position)) => (stream, *position),
            None => (&self.stream, self.position),
        };
        match &**stream {
            Stream::Kafka { topic, partition } => Origin::Kafka {
                topic: topic.clone(),
                partition: *partition,
                offset: position,
            },
            Stream::File { path } => Origin::File {
                path: path.clone(),
                line: position as u64,
            },
        }
    }

    /// ((topic, partition), offset) of a Kafka event.
    fn kafka_offset(&self) -> Option<((String, i32), i64)> {
        match &*self.stream {
            Stream::Kafka { topic, partition } => {
                Some(((topic.to_string(), *partition), self.position))
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
    /// Its earliest event time, when no event of it lacks one: eviction
    /// keeps such a batch whole without reading its times again.
    earliest: Option<i64>,
}

impl RetainedBatch {
    fn new(batch: RecordBatch, offsets: Offsets) -> Self {
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        let earliest = match times.null_count() {
            0 => Some(datafusion::arrow::compute::min(times).unwrap_or(i64::MAX)),
            _ => None,
        };
        RetainedBatch {
            id: next_batch_id(),
            batch,
            offsets,
            earliest,
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
    /// How many of the last `batches` were retained since they were last
    /// merged (`ingest::compact`).
    uncompacted: usize,
    /// The merges of `batches` since the rules last ran, for their scans.
    lineage: Arc<Lineage>,
    /// Whether a re-scan rule reads this source (else nothing is retained).
    keep_raw: bool,
    /// The longest `window` among the re-scan rules reading this source.
    horizon_ns: i64,
    /// Pre-filter: of each new batch, the rows some rule can use.
    pre_filter: ingest::PreFilter,
    /// Of the pre-filtered rows, those a re-scan rule can use (the union
    /// of the re-scan rules' scan filters, over [`retained_schema`]): only
    /// they are retained. `None`: every pre-filtered row is.
    retain: Option<RetentionFilter>,
    /// Columns no correlation rule reads (see `compile::unread_columns`):
    /// nulled before the pre-filter.
    unread: Vec<usize>,
    /// JSON columns rules read only at some paths: retained cut to them
    /// (`json_cut.rs`).
    cuts: Vec<(usize, json_cut::Keep)>,
}

/// The retention filter, evaluated rule by rule on the pre-filtered rows
/// only. Its conditions are shared with the pre-filter's, which has
/// evaluated most of them on the same arrays: the batch is not copied
/// before it (`ingest::retain_raw`).
pub(super) struct RetentionFilter {
    pub(super) predicate: Arc<dyn PhysicalExpr>,
}

impl RetentionFilter {
    /// Of the rows of `batch` in `kept`, those to retain.
    fn keep(
        &self,
        batch: &RecordBatch,
        kept: &BooleanArray,
    ) -> datafusion::error::Result<BooleanArray> {
        crate::rules::conjunction::evaluate_within(&self.predicate, batch, kept)
    }
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
    /// What a run executes: the rule's plan, without its top projection
    /// when that is `fields`.
    plan: Arc<dyn ExecutionPlan>,
    /// The schema of the rule's output (alerts' fields and internal columns).
    output_schema: datafusion::arrow::datatypes::SchemaRef,
    /// The plan's top projection, left out of runs and applied to the rows
    /// that become alerts (`alert_fields.rs`).
    fields: Option<Arc<alert_fields::AlertFields>>,
    /// The columns below are those of a run's output (`plan`'s schema).
    window_end: usize,
    /// Columns naming triggering events (`__row...`: UInt64 or lists of it).
    event_columns: Vec<usize>,
    /// The `suppress_key` columns, with their names in the rule's output.
    key_columns: Vec<(usize, String)>,
    /// The sources the rule reads.
    sources: BTreeSet<SourceKind>,
    /// Its plan yields nothing while one of `sources` has no retained
    /// event ([`empty_input`]): a re-scan is then not run.
    empty_without_a_source: bool,
    strategy: Strategy,
    /// Why an aggregation rule is re-scanned (for `rules validate`).
    rescan_reason: Option<String>,
    /// For a delta re-scan (`delta.rs`): the bounds of its trigger scans,
    /// set to the emission range before each run.
    delta: Option<delta::DeltaBounds>,
    /// What correlated events share, per table (see [`key`]).
    key: key::CorrelationKey,
    last_emitted: Option<i64>,
    /// In a lane made again for a partition that moved (or after a
    /// restart): the rows of windows ending up to this were raised by the
    /// partition's previous holder, and are emitted again only to rebuild
    /// the suppression periods (see [`Correlator::restore_emitted_rebuilding`]).
    rebuild_through: Option<i64>,
    /// suppression key -> (suppressed until, alerts folded since, the
    /// last row folded)
    suppressed: HashMap<String, (i64, u64, Option<due::FoldedRow>)>,
    /// Where the last folded rows of `suppressed` are kept between runs.
    folded: suppress::FoldedRows,
    /// With [`Correlator::hold_for_suppression`]: per open suppression
    /// period, the lowest offsets retained when it opened, from which a
    /// re-read raises its first alert again.
    suppress_holds: HashMap<String, Offsets>,
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
    identities: Identities,
    /// The streams identities point to (one per partition or file).
    streams: HashMap<Stream, Arc<Stream>>,
    /// The stream of the last event numbered (the next one's, mostly).
    last_stream: Option<Arc<Stream>>,
    /// Collect unreferenced identities when there are more than this.
    identities_gc_at: usize,
    next_seq: u64,
    settings: CorrelationSettings,
    task_ctx: Arc<TaskContext>,
    stats: CorrelationStats,
    /// Rule runs since the last [`Correlator::take_evaluations`]: (rule id,
    /// its time and rows emitted in range), for metrics.
    evaluations: Vec<(String, RuleRun)>,
    /// Rule failures at ingest (partial aggregation), reported by the next
    /// `advance`/`finish`.
    pending_failures: Vec<(String, String)>,
    /// Time budget of each plan execution (`rules.max_eval_ms`).
    budget: EvalBudget,
    /// See [`Correlator::hold_for_suppression`].
    holds_suppression: bool,
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

    /// The settings it was compiled with.
    pub fn settings(&self) -> &CorrelationSettings {
        &self.settings
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
            r.output_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| !n.starts_with("__"))
                .collect(),
        )
    }

    /// Last folded rows (of every rule) that still share a run's output.
    #[cfg(test)]
    pub(crate) fn folded_rows_sharing_a_run_output(&self) -> usize {
        self.rules
            .iter()
            .flat_map(|r| r.suppressed.values())
            .filter(|(_, _, last)| last.as_ref().is_some_and(|l| l.is_shared()))
            .count()
    }

    /// The batches that hold the last folded rows of every rule.
    #[cfg(test)]
    pub(crate) fn batches_holding_folded_rows(&self) -> usize {
        let mut batches: Vec<*const RecordBatch> = self
            .rules
            .iter()
            .flat_map(|r| r.suppressed.values())
            .filter_map(|(_, _, last)| last.as_ref())
            .map(|last| Arc::as_ptr(last.source().0))
            .collect();
        batches.sort();
        batches.dedup();
        batches.len()
    }

    /// Folded rows copied out of a run's output, by every rule.
    #[cfg(test)]
    pub(crate) fn folded_rows_copied(&self) -> u64 {
        self.rules.iter().map(|r| r.folded.copied).sum()
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

    /// The rule runs since the last call: (rule id, its time and rows emitted).
    pub fn take_evaluations(&mut self) -> Vec<(String, RuleRun)> {
        std::mem::take(&mut self.evaluations)
    }

    /// How each rule is evaluated (rule id, strategy).
    /// Each rule's correlation key (see [`key`]).
    pub fn keys(&self) -> Vec<(String, key::CorrelationKey)> {
        self.rules
            .iter()
            .map(|r| (r.rule.meta.id.clone(), r.key.clone()))
            .collect()
    }

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

    /// Forget all state: retained events, watermark, emission and
    /// suppression state (between independent rule test cases).
    pub fn reset(&mut self) {
        for retained in self.retained.values_mut() {
            retained.batches.clear();
        }
        for rule in &mut self.rules {
            rule.last_emitted = None;
            rule.rebuild_through = None;
            rule.suppressed.clear();
            rule.folded = Default::default();
            rule.suppress_holds.clear();
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
    /// those the old rules' pre-filters kept, and of them only the columns
    /// and JSON members the old rules read (others are null, or cut).
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
                    rule.folded = std::mem::take(&mut o.folded);
                    rule.suppress_holds = std::mem::take(&mut o.suppress_holds);
                    rule.rebuild_through = o.rebuild_through;
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
        let mut out = self.state_offsets();
        for rule in &self.rules {
            for hold in rule.suppress_holds.values() {
                merge_offsets(&mut out, hold);
            }
        }
        out
    }

    /// The lowest offsets of the retained events and incremental state
    /// (suppression holds aside: a hold taken from them must not keep an
    /// older hold alive).
    fn state_offsets(&self) -> Offsets {
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
            .filter_map(|r| {
                let w = r.last_emitted.max(r.rebuild_through)?;
                Some((r.rule.meta.id.clone(), w))
            })
            .collect()
    }

    /// Keep the offsets of the events of every open suppression period
    /// retained (a lane of the repartitioned placement), so that a lane
    /// made again from a re-read can rebuild the periods; or no longer,
    /// dropping what is held.
    pub(crate) fn hold_for_suppression(&mut self, hold: bool) {
        self.holds_suppression = hold && self.rules.iter().any(|r| r.rule.meta.suppress.is_some());
        if !hold {
            for rule in &mut self.rules {
                rule.suppress_holds.clear();
            }
        }
    }

    /// Like [`Correlator::restore_emitted`], except that a rule with
    /// `-- suppress` emits the windows up to its restored watermark again
    /// from the re-read events, only to rebuild its suppression periods:
    /// their alerts and summaries were raised before.
    pub(crate) fn restore_emitted_rebuilding(&mut self, emitted: &BTreeMap<String, i64>) {
        for rule in &mut self.rules {
            let Some(w) = emitted.get(&rule.rule.meta.id) else {
                continue;
            };
            if rule.rule.meta.suppress.is_some() && rule.last_emitted.is_none() {
                rule.rebuild_through = Some(*w);
            } else {
                rule.last_emitted = Some(rule.last_emitted.map_or(*w, |l| l.max(*w)));
            }
        }
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

/// Whether two origins are of one partition (or file): the same
/// [`partition_of`].
pub(crate) fn same_partition(a: &Origin, b: &Origin) -> bool {
    partition_key(a) == partition_key(b)
}

/// What names an origin's partition: its topic and partition, or its path.
fn partition_key(origin: &Origin) -> (&str, Option<i32>) {
    match origin {
        Origin::Kafka {
            topic, partition, ..
        } => (topic, Some(*partition)),
        Origin::File { path, .. } => (path, None),
    }
}

/// Partition key of an origin for watermark tracking (`"topic/partition"`,
/// or a file's path); repartition marks name partitions the same way.
pub(crate) fn partition_of(origin: &Origin) -> String {
    match origin {
        Origin::Kafka {
            topic, partition, ..
        } => format!("{topic}/{partition}"),
        Origin::File { path, .. } => path.to_string(),
    }
}

/// Lowest offset per Kafka partition of the events of a retained batch.
fn batch_offsets(batch: &RecordBatch, identities: &Identities) -> Offsets {
    let mut out = Offsets::new();
    if let Some(seqs) = batch.column_by_name(ROW_COLUMN) {
        for seq in seqs.as_primitive::<UInt64Type>().values().iter() {
            if let Some((key, offset)) = identities.get(seq).and_then(|i| i.kafka_offset()) {
                merge_offsets(&mut out, &Offsets::from([(key, offset)]));
            }
        }
    }
    out
}

fn evict_before(batches: &mut Vec<RetainedBatch>, cutoff: i64, identities: &Identities) {
    let mut kept = Vec::with_capacity(batches.len());
    for retained in batches.drain(..) {
        // Most batches are wholly kept: decided without building a mask.
        if retained.earliest.is_some_and(|t| t >= cutoff) {
            kept.push(retained);
            continue;
        }
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

/// Identities are first collected once there are this many.
const IDENTITIES_GC_MIN: usize = 65_536;

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod key_tests;
#[cfg(test)]
mod tests;
