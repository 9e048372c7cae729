//! Incremental evaluation of aggregation rules.
//!
//! A correlation rule of the shape "row-local operators → one GROUP BY
//! whose keys include `window_end` → filters/projections/sorts" is split,
//! at compile time, at its aggregation (the way a distributed engine splits
//! it across workers, or Arroyo splits windowed aggregates):
//!
//! - **partial**: DataFusion's `AggregateExec` in `Partial` mode over the
//!   rule's input operators. It runs at ingest on the *new* events only and
//!   outputs one row per (group, window) with the accumulators' intermediate
//!   state (a count, a set of distinct values, the list of event sequence
//!   numbers of `array_agg(__row)`, …). These state rows are the rule's
//!   state; the raw events are not kept for it.
//! - **reduce**: the same aggregation in `PartialReduce` mode: merges
//!   several state batches of one window into one (compaction).
//! - **finish**: the aggregation in `Final` mode plus every operator that
//!   was above it (HAVING filter, projection, …), over the state rows of the
//!   windows that close when the watermark passes their end.
//!
//! Invariants: state rows are kept by window end, so emission reads only
//! the closing windows and eviction drops whole windows; every state row
//! of a window holds at most `max_alert_events` event sequence numbers per
//! event column (the earliest by event time, then event id), which is
//! exactly the set of events the alert names; the offsets of every event
//! folded into a window are remembered until the window is emitted, so a
//! restart can rebuild the window by re-reading them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, RecordBatch, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, TimestampNanosecondType, UInt64Type};
use datafusion::catalog::TableProvider;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use super::error::{Context, CorrelationError, SplitError};
use super::identities::Identities;
use crate::rules::slot::{BatchSlot, SlotTable};

/// Lowest offset per Kafka (topic, partition) of the events a piece of
/// state was built from.
pub(crate) type Offsets = BTreeMap<(String, i32), i64>;

/// Merge `other` into `into`, keeping the lower offset per partition.
pub(crate) fn merge_offsets(into: &mut Offsets, other: &Offsets) {
    for (k, v) in other {
        into.entry(k.clone())
            .and_modify(|o| *o = (*o).min(*v))
            .or_insert(*v);
    }
}

/// Operators that may sit above the aggregation: they only see the final
/// rows of the closing windows, exactly as in a full evaluation.
const ABOVE: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "SortExec",
];
/// Operators that may sit below it: each output row depends on one input
/// row only, so running them on the new events alone is the same as on all.
const BELOW: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "UnnestExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "SlotExec",
];

/// A rule's plan split at its aggregation (see the module documentation).
pub(super) struct AggregateSplit {
    /// Partial aggregation; its leaf reads the source's retained slot,
    /// which holds the new events when it runs.
    pub partial: Arc<dyn ExecutionPlan>,
    /// `PartialReduce` aggregation over `state_input`.
    pub reduce: Arc<dyn ExecutionPlan>,
    /// `Final` aggregation and the operators above it, over `state_input`.
    pub finish: Arc<dyn ExecutionPlan>,
    pub state_input: Arc<BatchSlot>,
    /// Index, in the state rows, of the group column `window_end` comes from.
    pub window_column: usize,
    /// Indexes, in the state rows, of the `array_agg(__row)` states (lists
    /// of event sequence numbers).
    pub event_columns: Vec<usize>,
}

/// Split `plan` (whose output column `window_end` is at `window_end`) at
/// its aggregation, or say why the rule's shape does not allow it.
pub(super) async fn split(
    plan: &Arc<dyn ExecutionPlan>,
    window_end: usize,
    state: &SessionState,
) -> Result<AggregateSplit, SplitError> {
    // Walk down to the aggregation, following where window_end comes from.
    let mut node = plan.clone();
    let mut column = window_end;
    let aggregate = loop {
        if let Some(agg) = node.downcast_ref::<AggregateExec>() {
            break agg;
        }
        let name = node.name().to_string();
        if node.fetch().is_some() {
            return Err(SplitError::LimitAbove { node: name });
        }
        if !ABOVE.contains(&name.as_str()) {
            return Err(SplitError::Above { node: name });
        }
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            let Some(c) = p.expr()[column].expr.downcast_ref::<Column>() else {
                return Err(SplitError::WindowEndComputedAfter);
            };
            column = c.index();
        } else if let Some(f) = node.downcast_ref::<FilterExec>() {
            if let Some(projection) = f.projection() {
                column = projection[column];
            }
        }
        let child = node.children()[0].clone();
        node = child;
    };
    if !matches!(
        aggregate.mode(),
        AggregateMode::Single | AggregateMode::SinglePartitioned
    ) {
        return Err(SplitError::Mode(*aggregate.mode()));
    }
    let group = aggregate.group_expr();
    if !group.is_single() {
        return Err(SplitError::GroupingSets);
    }
    if column >= group.expr().len() {
        return Err(SplitError::WindowEndNotGrouped);
    }
    // Everything below must be row-local and read one table.
    let mut leaves = 0;
    let mut bad = None;
    let mut stack = vec![aggregate.input().clone()];
    while let Some(n) = stack.pop() {
        if !BELOW.contains(&n.name()) {
            bad = Some(n.name().to_string());
        }
        if n.name() == "SlotExec" {
            leaves += 1;
        }
        stack.extend(n.children().into_iter().cloned());
    }
    if let Some(node) = bad {
        return Err(SplitError::Below { node });
    }
    if leaves != 1 {
        return Err(SplitError::SeveralScans);
    }

    let aggr = aggregate.aggr_expr().to_vec();
    let filters = aggregate.filter_expr().to_vec();
    let input_schema = aggregate.input_schema();
    let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        Arc::new(group.clone()),
        aggr.clone(),
        filters.clone(),
        aggregate.input().clone(),
        input_schema.clone(),
    )?);
    let state_schema = partial.schema();
    let state_input = Arc::new(BatchSlot::default());
    let state_leaf = SlotTable::new(state_schema.clone(), state_input.clone())
        .scan(state, None, &[], None)
        .await?;
    let reduce: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::PartialReduce,
        Arc::new(group.as_final()),
        aggr.clone(),
        filters.clone(),
        state_leaf.clone(),
        input_schema.clone(),
    )?);
    let same_types = |a: &datafusion::arrow::datatypes::Schema,
                      b: &datafusion::arrow::datatypes::Schema| {
        a.fields().len() == b.fields().len()
            && a.fields()
                .iter()
                .zip(b.fields())
                .all(|(x, y)| x.data_type() == y.data_type())
    };
    if !same_types(&reduce.schema(), &state_schema) {
        return Err(SplitError::MergedState);
    }
    let final_agg: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Final,
        Arc::new(group.as_final()),
        aggr.clone(),
        filters,
        state_leaf,
        input_schema,
    )?);
    if !same_types(&final_agg.schema(), &aggregate.schema()) {
        return Err(SplitError::FinalOutput);
    }
    let target: *const AggregateExec = aggregate;
    let finish = replace_aggregate(plan.clone(), target, &final_agg)?;

    // State columns: the group columns, then each accumulator's state fields.
    let mut event_columns = Vec::new();
    let mut offset = group.expr().len();
    for a in &aggr {
        let fields = a.state_fields()?;
        let is_events = a.name().starts_with("array_agg(")
            && a.name()
                .ends_with(&format!("{})", crate::schema::ROW_COLUMN))
            && !a.is_distinct()
            && fields.len() == 1
            && matches!(fields[0].data_type(), DataType::List(f) if f.data_type() == &DataType::UInt64);
        if is_events {
            event_columns.push(offset);
        }
        offset += fields.len();
    }
    if !matches!(
        state_schema.field(column).data_type(),
        DataType::Timestamp(_, _)
    ) {
        return Err(SplitError::WindowEndNotTimestamp);
    }
    Ok(AggregateSplit {
        partial,
        reduce,
        finish,
        state_input,
        window_column: column,
        event_columns,
    })
}

/// `node` with the aggregation `target` replaced by `with`.
fn replace_aggregate(
    node: Arc<dyn ExecutionPlan>,
    target: *const AggregateExec,
    with: &Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    if node
        .downcast_ref::<AggregateExec>()
        .is_some_and(|a| std::ptr::eq(a, target))
    {
        return Ok(with.clone());
    }
    let children = node
        .children()
        .into_iter()
        .map(|c| replace_aggregate(c.clone(), target, with))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    node.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// The state rows of one window.
#[derive(Default)]
struct WindowState {
    batches: Vec<RecordBatch>,
    /// Lowest offsets of the events folded into this window.
    offsets: Offsets,
}

impl WindowState {
    fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Merge a window's state batches once there are this many.
const COMPACT_AT: usize = 16;

/// The partial-aggregation state of one rule, by window end.
#[derive(Default)]
pub(super) struct AggregateState {
    windows: BTreeMap<i64, WindowState>,
    rows: usize,
}

/// What storing or emitting cost, in rows fed to DataFusion plans.
pub(super) type RowsEvaluated = u64;

impl AggregateState {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn clear(&mut self) {
        self.windows.clear();
        self.rows = 0;
    }

    /// Fold the partial aggregation of new events (`partial_rows`, built
    /// from events at `offsets`) into the state. Windows ending at or
    /// before `emitted` are already emitted: their rows are dropped. An
    /// alert names at most `max_events` events, found in `identities`;
    /// merging runs in `task_ctx` within `budget`.
    pub async fn store(
        &mut self,
        split: &AggregateSplit,
        partial_rows: Vec<RecordBatch>,
        (offsets, emitted): (&Offsets, Option<i64>),
        (max_events, identities): (usize, &Identities),
        task_ctx: &Arc<TaskContext>,
        budget: &super::EvalBudget,
    ) -> Result<RowsEvaluated, CorrelationError> {
        let mut evaluated = 0;
        for batch in partial_rows.into_iter().filter(|b| b.num_rows() > 0) {
            let batch = cap_events(&batch, &split.event_columns, max_events, identities)?;
            let ends = batch
                .column(split.window_column)
                .as_primitive::<TimestampNanosecondType>()
                .clone();
            let distinct: BTreeSet<i64> = ends.iter().flatten().collect();
            for end in distinct {
                if emitted.is_some_and(|e| end <= e) {
                    continue;
                }
                let mask: BooleanArray = ends.iter().map(|t| Some(t == Some(end))).collect();
                let rows =
                    filter_record_batch(&batch, &mask).context("splitting state by window")?;
                self.rows += rows.num_rows();
                let window = self.windows.entry(end).or_default();
                window.batches.push(rows);
                merge_offsets(&mut window.offsets, offsets);
                if window.batches.len() >= COMPACT_AT {
                    evaluated += compact(
                        split,
                        window,
                        max_events,
                        identities,
                        task_ctx,
                        budget,
                        &mut self.rows,
                    )
                    .await?;
                }
            }
        }
        Ok(evaluated)
    }

    /// The state rows of the windows ending in `(from, to]`.
    pub fn closing(&self, from: i64, to: i64) -> Vec<RecordBatch> {
        if from >= to {
            return Vec::new();
        }
        self.windows
            .range((Bound::Excluded(from), Bound::Included(to)))
            .flat_map(|(_, w)| w.batches.iter().cloned())
            .collect()
    }

    /// Drop the windows ending at or before `emitted`.
    pub fn evict_through(&mut self, emitted: i64) {
        let open = match emitted.checked_add(1) {
            Some(next) => self.windows.split_off(&next),
            None => BTreeMap::new(),
        };
        let closed = std::mem::replace(&mut self.windows, open);
        self.rows -= closed.values().map(WindowState::rows).sum::<usize>();
    }

    /// Drop the window that ends first (state over its bound); returns its
    /// end and row count.
    pub fn evict_oldest(&mut self) -> Option<(i64, usize)> {
        let (end, window) = self.windows.pop_first()?;
        let rows = window.rows();
        self.rows -= rows;
        Some((end, rows))
    }

    /// Lowest offset per partition over every open window.
    pub fn offsets(&self, into: &mut Offsets) {
        for w in self.windows.values() {
            merge_offsets(into, &w.offsets);
        }
    }

    /// Every event sequence number the state still names.
    pub fn live_events(&self, split: &AggregateSplit, into: &mut Vec<u64>) {
        for batch in self.windows.values().flat_map(|w| &w.batches) {
            for &c in &split.event_columns {
                let lists = batch.column(c).as_list::<i32>();
                into.extend(
                    lists
                        .values()
                        .as_primitive::<UInt64Type>()
                        .values()
                        .iter()
                        .copied(),
                );
            }
        }
    }
}

/// Merge the state batches of one window into one (`PartialReduce`).
async fn compact(
    split: &AggregateSplit,
    window: &mut WindowState,
    max_events: usize,
    identities: &Identities,
    task_ctx: &Arc<TaskContext>,
    budget: &super::EvalBudget,
    total_rows: &mut usize,
) -> Result<RowsEvaluated, CorrelationError> {
    // Size-tiered: leave a large first batch alone until the newer ones
    // add up to as many rows, so each row is merged O(log n) times.
    let rows: Vec<usize> = window.batches.iter().map(RecordBatch::num_rows).collect();
    let start = usize::from(rows[1..].iter().sum::<usize>() < rows[0]);
    let merging: Vec<RecordBatch> = window.batches.drain(start..).collect();
    let before: usize = merging.iter().map(RecordBatch::num_rows).sum();
    split.state_input.set_all(merging);
    let merged = super::execute(&split.reduce, task_ctx, budget).await;
    split.state_input.clear();
    let merged = merged.context("merging aggregation state")?;
    let mut after = 0;
    for batch in merged.into_iter().filter(|b| b.num_rows() > 0) {
        let batch = cap_events(&batch, &split.event_columns, max_events, identities)?;
        after += batch.num_rows();
        window.batches.push(batch);
    }
    *total_rows = *total_rows - before + after;
    Ok(before as u64)
}

/// Keep, in each list of event sequence numbers, the `max` earliest events
/// (by event time, then event id): the ones an alert names.
fn cap_events(
    batch: &RecordBatch,
    columns: &[usize],
    max: usize,
    identities: &Identities,
) -> Result<RecordBatch, CorrelationError> {
    let mut out: Vec<ArrayRef> = batch.columns().to_vec();
    for &c in columns {
        let lists = batch.column(c).as_list::<i32>();
        if lists.iter().all(|l| l.is_none_or(|l| l.len() <= max)) {
            continue;
        }
        let DataType::List(field) = lists.data_type() else {
            unreachable!("event columns are lists")
        };
        let mut values = Vec::new();
        let mut lengths = Vec::with_capacity(lists.len());
        for row in 0..lists.len() {
            if lists.is_null(row) {
                lengths.push(0);
                continue;
            }
            let list = lists.value(row);
            let keys = list
                .as_primitive::<UInt64Type>()
                .iter()
                .flatten()
                .map(|seq| order_key(seq, identities))
                .collect();
            let earliest = earliest_distinct(keys, max);
            lengths.push(earliest.len());
            values.extend(earliest.iter().map(|key| key.3));
        }
        let list = ListArray::try_new(
            field.clone(),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(UInt64Array::from(values)),
            lists.nulls().cloned(),
        )
        .context("capping the events a window names")?;
        out[c] = Arc::new(list);
    }
    RecordBatch::try_new(batch.schema(), out).context("capping the events a window names")
}

/// The `max` earliest of `keys` ([`order_key`]), in order, an event
/// delivered twice (its id twice) named once, as in alerts.
///
/// Keys end with their sequence number, so no two are equal. When the
/// smallest few keys already hold `max` distinct events, only they are
/// sorted: a window's list can be far longer than what an alert names.
fn earliest_distinct(mut keys: Vec<OrderKey<'_>>, max: usize) -> Vec<OrderKey<'_>> {
    let same_event = |a: &mut OrderKey, b: &mut OrderKey| match (a.0, b.0) {
        (false, false) => a.2 == b.2,
        _ => a.3 == b.3,
    };
    let prefix = max.saturating_mul(2).max(1);
    if keys.len() > prefix {
        keys.select_nth_unstable(prefix - 1);
        let mut head = keys[..prefix].to_vec();
        head.sort_unstable();
        head.dedup_by(same_event);
        if head.len() >= max {
            head.truncate(max);
            return head;
        }
    }
    keys.sort_unstable();
    keys.dedup_by(same_event);
    keys.truncate(max);
    keys
}

/// (no identity, event time, event id, sequence number).
type OrderKey<'a> = (bool, i64, &'a str, u64);

/// Order of the events an alert names: event time, then event id; events
/// whose identity is gone sort last.
fn order_key(seq: u64, identities: &Identities) -> OrderKey<'_> {
    match identities.get(&seq) {
        Some(i) => (false, i.event_time, i.event_id, seq),
        None => (true, 0, "", seq),
    }
}

#[cfg(test)]
mod earliest_tests {
    use proptest::prelude::*;

    use super::{earliest_distinct, OrderKey};

    /// Every key sorted, an event named twice named once, cut to `max`.
    fn sorted_whole(mut keys: Vec<OrderKey<'_>>, max: usize) -> Vec<OrderKey<'_>> {
        keys.sort();
        keys.dedup_by(|a, b| if !a.0 && !b.0 { a.2 == b.2 } else { a.3 == b.3 });
        keys.truncate(max);
        keys
    }

    proptest! {
        #[test]
        fn the_earliest_distinct_events_are_those_of_a_whole_sort(
            events in proptest::collection::vec((any::<bool>(), 0i64..6, 0usize..5), 0..60),
            max in 0usize..12,
        ) {
            const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];
            // Few ids and times: events named twice, at one time or at two.
            let keys: Vec<OrderKey> = events
                .iter()
                .enumerate()
                .map(|(seq, &(missing, time, id))| match missing {
                    true => (true, 0, "", seq as u64),
                    false => (false, time, IDS[id], seq as u64),
                })
                .collect();
            prop_assert_eq!(earliest_distinct(keys.clone(), max), sorted_whole(keys, max));
        }
    }
}
