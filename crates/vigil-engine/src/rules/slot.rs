//! A table whose contents are the micro-batch being evaluated.
//!
//! Rules are planned once, at load time, against a [`SlotTable`]. Its scan is
//! a [`SlotExec`] leaf that reads whatever batch is in the shared
//! [`BatchSlot`] when the plan is *executed*. The engine puts each new batch
//! in the slot and re-executes the same physical plans: no SQL parsing,
//! logical optimisation or physical planning happens per batch.
//!
//! Correlation re-scans run the same plan over the same retained batches
//! at every emission. Their batches carry an identity ([`next_batch_id`]),
//! and a scan that took over its filter ([`cache_scan_filters`]) evaluates
//! that filter once per batch, keeping which rows passed: a retained
//! batch is filtered when it is first scanned, not at every run. It keeps
//! the rows that passed as well, gathered into runs of batches (`kept`),
//! so an emission does not copy them again. Retained batches merged into
//! one ([`Lineage`]) keep what their scans knew of them.

mod kept;
mod lineage;

pub use lineage::Lineage;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, BooleanBufferBuilder, Scalar, TimestampNanosecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::kernels::boolean::and;
use datafusion::arrow::compute::kernels::cmp::{gt, lt_eq};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};

/// The batches a table currently holds: the micro-batch being evaluated
/// (per-event rules) or the retained window state (correlation rules).
#[derive(Debug, Default)]
pub struct BatchSlot {
    /// Shared with the executions reading it: a scan takes the contents
    /// without copying the list of batches.
    current: Mutex<Arc<Contents>>,
}

#[derive(Debug, Default)]
pub(super) struct Contents {
    batches: Vec<RecordBatch>,
    /// One identity per batch ([`next_batch_id`]) when the batches are
    /// retained ones, whose filter results a filtered scan may keep.
    ids: Option<Vec<u64>>,
    /// How batches it holds were merged from batches it held before.
    lineage: Arc<Lineage>,
}

/// A new batch identity, unique in the process. The batch it names must
/// never change: a retained batch cut by eviction is a new batch with a
/// new identity.
pub fn next_batch_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl BatchSlot {
    pub fn set(&self, batch: RecordBatch) {
        self.set_all(vec![batch]);
    }

    pub fn set_all(&self, batches: Vec<RecordBatch>) {
        *self.current.lock().expect("slot lock") = Arc::new(Contents {
            batches,
            ids: None,
            lineage: Arc::default(),
        });
    }

    /// Hold batches with their identities (from [`next_batch_id`]).
    #[cfg(test)]
    pub fn set_identified(&self, batches: Vec<(u64, RecordBatch)>) {
        self.set_retained(batches, Arc::default());
    }

    /// Hold batches with their identities, and how some of them were
    /// merged from batches held before.
    pub fn set_retained(&self, batches: Vec<(u64, RecordBatch)>, lineage: Arc<Lineage>) {
        let (ids, batches) = batches.into_iter().unzip();
        *self.current.lock().expect("slot lock") = Arc::new(Contents {
            batches,
            ids: Some(ids),
            lineage,
        });
    }

    pub fn clear(&self) {
        self.set_all(Vec::new());
    }

    fn get(&self) -> Arc<Contents> {
        Arc::clone(&self.current.lock().expect("slot lock"))
    }
}

/// A source table backed by a [`BatchSlot`].
#[derive(Debug)]
pub struct SlotTable {
    schema: SchemaRef,
    slot: Arc<BatchSlot>,
    /// Accept filters as `Inexact`: the optimizer then copies them into the
    /// `TableScan` (keeping its own `Filter`), where the correlation
    /// compiler reads them to pre-filter what it retains.
    expose_filters: bool,
}

impl SlotTable {
    pub fn new(schema: SchemaRef, slot: Arc<BatchSlot>) -> Self {
        SlotTable {
            schema,
            slot,
            expose_filters: false,
        }
    }

    pub fn exposing_filters(schema: SchemaRef, slot: Arc<BatchSlot>) -> Self {
        SlotTable {
            schema,
            slot,
            expose_filters: true,
        }
    }
}

#[async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let support = if self.expose_filters {
            TableProviderFilterPushDown::Inexact
        } else {
            TableProviderFilterPushDown::Unsupported
        };
        Ok(vec![support; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection = projection.cloned();
        let schema = match &projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(SlotExec::new(
            schema,
            projection,
            self.slot.clone(),
        )))
    }
}

/// Leaf operator that emits the slot's current batches (projected, and
/// filtered or cut to time bounds where the plan asked for it).
#[derive(Debug, Clone)]
pub struct SlotExec {
    projection: Option<Vec<usize>>,
    slot: Arc<BatchSlot>,
    properties: Arc<PlanProperties>,
    /// Emit only rows whose timestamp column (index in the output) is
    /// within the bounds, read at each execution (delta re-scans of
    /// correlation rules, `correlate::delta`).
    time_bounds: Option<(usize, Arc<TimeBounds>)>,
    /// Emit only the rows this filter (over the output) keeps; applied
    /// before the time bounds.
    filter: Option<Arc<CachedFilter>>,
    /// Projections moved into a filtered scan without time bounds (see
    /// [`cache_scan_filters`]), applied in order to the rows it keeps:
    /// what its runs keep is their output.
    derived: Vec<Derived>,
    /// The schema of the table's columns it reads (its output without
    /// derived projections).
    scanned: SchemaRef,
}

/// A deterministic projection a filtered scan applies to the rows it keeps.
#[derive(Debug, Clone)]
struct Derived {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

/// The properties of a slot scan whose output is `schema`.
fn scan_properties(schema: SchemaRef) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl SlotExec {
    fn new(schema: SchemaRef, projection: Option<Vec<usize>>, slot: Arc<BatchSlot>) -> Self {
        SlotExec {
            properties: scan_properties(schema.clone()),
            scanned: schema,
            projection,
            slot,
            time_bounds: None,
            filter: None,
            derived: Vec::new(),
        }
    }

    /// The same scan, emitting only rows whose nanosecond timestamp
    /// `column` (in its output) is within `bounds` at execution.
    pub fn within(&self, column: usize, bounds: Arc<TimeBounds>) -> SlotExec {
        // Time bounds read the scanned columns: they come before any
        // derived projection (`cache_scan_filters` runs after the delta
        // rewrite).
        debug_assert!(self.derived.is_empty(), "time bounds on a derived scan");
        SlotExec {
            time_bounds: Some((column, bounds)),
            ..self.clone()
        }
    }

    /// The same scan, emitting only the rows `predicate` (over its output,
    /// deterministic) keeps, evaluated once per identified batch.
    fn filtered(&self, predicate: Arc<dyn PhysicalExpr>) -> SlotExec {
        SlotExec {
            filter: Some(Arc::new(CachedFilter {
                predicate,
                selections: Mutex::default(),
                runs: Mutex::default(),
            })),
            ..self.clone()
        }
    }

    /// The same filtered scan, emitting `exprs` (deterministic, over its
    /// output) instead, whose output schema is `schema`.
    fn deriving(&self, exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> SlotExec {
        let mut derived = self.derived.clone();
        derived.push(Derived {
            exprs,
            schema: schema.clone(),
        });
        SlotExec {
            derived,
            properties: scan_properties(schema),
            ..self.clone()
        }
    }

    /// The scan's output of the rows it kept: its derived projections
    /// applied to them.
    fn derive(&self, mut batch: RecordBatch) -> Result<RecordBatch> {
        for stage in &self.derived {
            let columns = stage
                .exprs
                .iter()
                .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
                .collect::<Result<Vec<_>>>()?;
            let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows()));
            batch = RecordBatch::try_new_with_options(stage.schema.clone(), columns, &options)?;
        }
        Ok(batch)
    }

    /// `batch` projected, and the rows of it this scan emits (those its
    /// filter keeps, within its time bounds).
    fn scan(
        &self,
        batch: RecordBatch,
        id: Option<u64>,
        bounds: Option<(usize, (i64, i64))>,
    ) -> Result<(RecordBatch, Selection)> {
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        let selected = match &self.filter {
            None => Selection::All,
            Some(filter) => filter.selection(&batch, id)?,
        };
        let selected = match bounds {
            Some((column, range)) if range != (i64::MIN, i64::MAX) => {
                if matches!(selected, Selection::None) {
                    return Ok((batch, selected));
                }
                selected.and(within(&batch, column, range)?)?
            }
            _ => selected,
        };
        Ok((batch, selected))
    }
}

/// A scan's filter and, per identified batch, which of its rows pass.
///
/// Invariant: a selection is stored under a batch identity only, and an
/// identity names one batch that never changes, so a stored selection is
/// the predicate's result on that batch. The predicate is deterministic
/// (no volatile function, see [`cache_scan_filters`]): reusing its result
/// is the same as evaluating it again.
#[derive(Debug)]
struct CachedFilter {
    predicate: Arc<dyn PhysicalExpr>,
    /// Selections of the batches the slot held at the last execution.
    selections: Mutex<HashMap<u64, Selection>>,
    /// The rows kept of those batches, in runs (see `kept`); held until
    /// the next execution, which reuses or drops them.
    runs: Mutex<Vec<Arc<kept::KeptRun>>>,
}

/// The rows of a batch a filter keeps.
#[derive(Debug, Clone)]
enum Selection {
    All,
    None,
    Rows(BooleanArray),
}

impl CachedFilter {
    /// Put together the selections of batches merged from batches whose
    /// selections are known, then forget those of batches the slot no
    /// longer holds.
    fn keep_only(&self, ids: &[u64], lineage: &Lineage) {
        let mut selections = self.selections.lock().expect("filter cache lock");
        if !lineage.is_empty() {
            for &id in ids {
                merged_selection(&mut selections, lineage, id);
            }
        }
        let ids: HashSet<u64> = ids.iter().copied().collect();
        selections.retain(|id, _| ids.contains(id));
    }

    /// The runs of the last execution, to reuse; the next execution keeps
    /// its own ([`CachedFilter::keep_run`]).
    fn take_runs(&self) -> Vec<Arc<kept::KeptRun>> {
        std::mem::take(&mut *self.runs.lock().expect("filter cache lock"))
    }

    fn keep_run(&self, run: Arc<kept::KeptRun>) {
        self.runs.lock().expect("filter cache lock").push(run);
    }

    /// The rows of `batch` (whose identity is `id`, if any) the filter keeps.
    fn selection(&self, batch: &RecordBatch, id: Option<u64>) -> Result<Selection> {
        let cached = id.and_then(|id| {
            let selections = self.selections.lock().expect("filter cache lock");
            selections.get(&id).cloned()
        });
        let selection = match cached {
            Some(selection) => selection,
            None => {
                let selection = self.select(batch)?;
                if let Some(id) = id {
                    let mut selections = self.selections.lock().expect("filter cache lock");
                    selections.insert(id, selection.clone());
                }
                selection
            }
        };
        Ok(selection)
    }

    fn select(&self, batch: &RecordBatch) -> Result<Selection> {
        let keep = self
            .predicate
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        let keep = keep.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a scan filter evaluated to {}, not to booleans",
                keep.data_type()
            ))
        })?;
        Ok(Selection::of(keep))
    }
}

/// The selection of batch `id`: known, or put together from its merged
/// parts' (and kept for it), or `None` when a part's is not known.
fn merged_selection(
    selections: &mut HashMap<u64, Selection>,
    lineage: &Lineage,
    id: u64,
) -> Option<Selection> {
    if let Some(known) = selections.get(&id) {
        return Some(known.clone());
    }
    let merge = lineage.parts(id)?;
    let earlier = merged_selection(selections, lineage, merge.earlier.0)?;
    let later = merged_selection(selections, lineage, merge.later.0)?;
    let selection = Selection::concat((earlier, merge.earlier.1), (later, merge.later.1));
    selections.insert(id, selection.clone());
    Some(selection)
}

impl Selection {
    /// The selection of `a`'s rows followed by `b`'s (each with its number
    /// of rows).
    fn concat((a, a_rows): (Selection, usize), (b, b_rows): (Selection, usize)) -> Selection {
        match (a, b) {
            (Selection::All, Selection::All) => Selection::All,
            (Selection::None, Selection::None) => Selection::None,
            (a, b) => {
                let mut keep = BooleanBufferBuilder::new(a_rows + b_rows);
                for (part, rows) in [(a, a_rows), (b, b_rows)] {
                    match part {
                        Selection::All => keep.append_n(rows, true),
                        Selection::None => keep.append_n(rows, false),
                        Selection::Rows(r) => keep.append_buffer(r.values()),
                    }
                }
                Selection::Rows(BooleanArray::new(keep.finish(), None))
            }
        }
    }

    /// The rows `keep` marks true (NULL does not pass, as in a WHERE clause).
    fn of(keep: &BooleanArray) -> Selection {
        let keep = match keep.null_count() {
            0 => keep.clone(),
            _ => datafusion::arrow::compute::prep_null_mask_filter(keep),
        };
        match keep.true_count() {
            0 => Selection::None,
            n if n == keep.len() => Selection::All,
            _ => Selection::Rows(keep),
        }
    }

    /// The rows both select.
    fn and(self, other: Selection) -> Result<Selection> {
        Ok(match (self, other) {
            (Selection::None, _) | (_, Selection::None) => Selection::None,
            (Selection::All, s) | (s, Selection::All) => s,
            (Selection::Rows(a), Selection::Rows(b)) => Selection::of(&and(&a, &b)?),
        })
    }
}

/// Move each deterministic filter that sits on a slot scan (directly or
/// through `CooperativeExec`) into the scan, which then evaluates it once
/// per identified batch ([`BatchSlot::set_identified`]). A filter's
/// projection becomes a projection above the scan: the plan's output is
/// unchanged.
pub fn cache_scan_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            return move_filter(filter, &node);
        }
        if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
            return move_projection(projection, &node);
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The slot scan `input` is, directly or through `CooperativeExec`s (given
/// outermost first).
fn slot_scan_of(input: &Arc<dyn ExecutionPlan>) -> Option<(SlotExec, Vec<Arc<dyn ExecutionPlan>>)> {
    let mut between = Vec::new();
    let mut below = input.clone();
    while below.name() == "CooperativeExec" {
        between.push(below.clone());
        below = below.children()[0].clone();
    }
    let scan = below.downcast_ref::<SlotExec>()?.clone();
    Some((scan, between))
}

/// `scan` under the `CooperativeExec`s it was found under.
fn rewrap(scan: SlotExec, between: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
    let mut input: Arc<dyn ExecutionPlan> = Arc::new(scan);
    for operator in between.into_iter().rev() {
        input = operator.replace_children(
            vec![input],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
    }
    Ok(input)
}

/// A deterministic filter on a slot scan becomes the scan's filter; its
/// projection becomes the scan's derived projection, or (when the scan has
/// time bounds, which read its columns before any projection) a projection
/// above it.
fn move_filter(
    filter: &FilterExec,
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if filter.fetch().is_some() || is_volatile(filter.predicate()) {
        return Ok(Transformed::no(node.clone()));
    }
    if let Some(swapped) = filter_below_projection(filter)? {
        return Ok(Transformed::yes(swapped));
    }
    let Some((scan, between)) = slot_scan_of(filter.input()) else {
        return Ok(Transformed::no(node.clone()));
    };
    if scan.filter.is_some() || !scan.derived.is_empty() {
        return Ok(Transformed::no(node.clone()));
    }
    let scan = scan.filtered(filter.predicate().clone());
    let Some(indices) = filter.projection().as_ref() else {
        return Ok(Transformed::yes(rewrap(scan, between)?));
    };
    let schema = scan.schema();
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = indices
        .iter()
        .map(|&i| {
            let name = schema.field(i).name().clone();
            (Arc::new(Column::new(&name, i)) as _, name)
        })
        .collect();
    if scan.time_bounds.is_none() {
        let projected = Arc::new(schema.project(indices)?);
        let scan = scan.deriving(exprs.into_iter().map(|(e, _)| e).collect(), projected);
        return Ok(Transformed::yes(rewrap(scan, between)?));
    }
    let input = rewrap(scan, between)?;
    Ok(Transformed::yes(Arc::new(ProjectionExec::try_new(
        exprs, input,
    )?)))
}

/// A deterministic filter over a deterministic projection of a slot scan
/// (DataFusion computes common subexpressions of a predicate in a
/// projection below it: `verb = 'delete' OR verb = 'deletecollection' AS
/// __common_expr_9`) is evaluated on the scan itself, with the projection's
/// expressions written into its predicate, and the projection goes above
/// it, where it reads only the rows that passed. Both then move into the
/// scan as [`move_filter`] and [`move_projection`] allow. `None` when the
/// plan is not of that shape.
fn filter_below_projection(filter: &FilterExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(projection) = filter.input().downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    let Some((scan, _)) = slot_scan_of(projection.input()) else {
        return Ok(None);
    };
    let exprs = projection.expr();
    if scan.filter.is_some()
        || !scan.derived.is_empty()
        || exprs.iter().any(|e| is_volatile(&e.expr))
    {
        return Ok(None);
    }
    let predicate = filter
        .predicate()
        .clone()
        .transform_up(|e| match e.downcast_ref::<Column>() {
            Some(c) => Ok(Transformed::yes(exprs[c.index()].expr.clone())),
            None => Ok(Transformed::no(e)),
        })?
        .data;
    let below: Arc<dyn ExecutionPlan> =
        Arc::new(FilterExec::try_new(predicate, projection.input().clone())?);
    let below = match below.downcast_ref::<FilterExec>() {
        Some(f) => move_filter(f, &below)?.data,
        None => below,
    };
    let above: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(
        exprs.iter().map(|e| (e.expr.clone(), e.alias.clone())),
        below,
    )?);
    let above = match above.downcast_ref::<ProjectionExec>() {
        Some(p) => move_projection(p, &above)?.data,
        None => above,
    };
    let Some(indices) = filter.projection().as_ref() else {
        return Ok(Some(above));
    };
    let schema = above.schema();
    let kept = indices.iter().map(|&i| {
        let name = schema.field(i).name().clone();
        (
            Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
            name,
        )
    });
    Ok(Some(Arc::new(ProjectionExec::try_new(kept, above)?)))
}

/// A deterministic projection on a filtered slot scan without time bounds
/// becomes one of its derived projections: the rows it keeps are the
/// projection's output, computed once.
fn move_projection(
    projection: &ProjectionExec,
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some((scan, between)) = slot_scan_of(projection.input()) else {
        return Ok(Transformed::no(node.clone()));
    };
    let exprs: Vec<Arc<dyn PhysicalExpr>> =
        projection.expr().iter().map(|p| p.expr.clone()).collect();
    if scan.filter.is_none() || scan.time_bounds.is_some() || exprs.iter().any(is_volatile) {
        return Ok(Transformed::no(node.clone()));
    }
    let scan = scan.deriving(exprs, projection.schema());
    Ok(Transformed::yes(rewrap(scan, between)?))
}

/// A half-open range of event times, `after < t <= through`, that a scan
/// made with [`SlotExec::within`] reads; set between executions.
#[derive(Debug)]
pub struct TimeBounds {
    after: AtomicI64,
    through: AtomicI64,
}

impl Default for TimeBounds {
    /// Every time.
    fn default() -> Self {
        TimeBounds {
            after: AtomicI64::new(i64::MIN),
            through: AtomicI64::new(i64::MAX),
        }
    }
}

impl TimeBounds {
    pub fn set(&self, after: i64, through: i64) {
        self.after.store(after, Ordering::Relaxed);
        self.through.store(through, Ordering::Relaxed);
    }

    fn get(&self) -> (i64, i64) {
        (
            self.after.load(Ordering::Relaxed),
            self.through.load(Ordering::Relaxed),
        )
    }
}

/// The rows of `batch` whose timestamp `column` is in `(after, through]`.
fn within(batch: &RecordBatch, column: usize, (after, through): (i64, i64)) -> Result<Selection> {
    let times = batch
        .column(column)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "column {column} of a delta scan is not a nanosecond timestamp"
            ))
        })?;
    // NULL times are never within: they decide nothing here.
    match min(times).zip(max(times)) {
        None => return Ok(Selection::None),
        Some((_, greatest)) if greatest <= after => return Ok(Selection::None),
        Some((least, _)) if least > through => return Ok(Selection::None),
        Some((least, greatest))
            if times.null_count() == 0 && least > after && greatest <= through =>
        {
            return Ok(Selection::All)
        }
        Some(_) => {}
    }
    // The scalars must carry the column's time zone to compare with it.
    let scalar = |t: i64| {
        Scalar::new(
            TimestampNanosecondArray::from(vec![t]).with_data_type(times.data_type().clone()),
        )
    };
    let keep = and(
        &gt(times, &scalar(after))?,
        &lt_eq(times, &scalar(through))?,
    )?;
    Ok(Selection::of(&keep))
}

/// The selected rows of scanned batches, gathered into batches of the
/// coalescer's target size.
struct Coalesced<I> {
    scanned: I,
    coalescer: BatchCoalescer,
    finished: bool,
}

impl<I: Iterator<Item = Result<(RecordBatch, Selection)>>> Iterator for Coalesced<I> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.coalescer.next_completed_batch() {
                return Some(Ok(batch));
            }
            if self.finished {
                return None;
            }
            let pushed = match self.scanned.next() {
                Some(Ok((batch, Selection::All))) => self.coalescer.push_batch(batch),
                Some(Ok((_, Selection::None))) => Ok(()),
                Some(Ok((batch, Selection::Rows(keep)))) => {
                    self.coalescer.push_batch_with_filter(batch, &keep)
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    self.finished = true;
                    self.coalescer.finish_buffered_batch()
                }
            };
            if let Err(e) = pushed {
                return Some(Err(e.into()));
            }
        }
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec: projection={:?}", self.projection)?;
        if let Some(filter) = &self.filter {
            write!(f, ", filter (once per batch)={}", filter.predicate)?;
        }
        for stage in &self.derived {
            let exprs: Vec<String> = stage.exprs.iter().map(|e| e.to_string()).collect();
            write!(f, ", then [{}]", exprs.join(", "))?;
        }
        if let Some((column, _)) = &self.time_bounds {
            write!(f, ", column {column} within the emission range")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &str {
        "SlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal("SlotExec has no children".into()))
        }
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "SlotExec has one partition, not {partition}"
            )));
        }
        let schema = self.properties.eq_properties.schema().clone();
        let bounds = self
            .time_bounds
            .as_ref()
            .map(|(column, bounds)| (*column, bounds.get()));
        let contents = self.slot.get();
        if let (Some(filter), Some(ids)) = (&self.filter, &contents.ids) {
            filter.keep_only(ids, &contents.lineage);
            // Retained batches: their kept rows, run by run, as polled.
            let kept = kept::KeptScan::new(
                self.clone(),
                filter.clone(),
                Arc::clone(&contents),
                bounds,
                context.session_config().batch_size(),
            );
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(kept),
            )));
        }
        // Scanned as the stream is polled: the filter's work happens
        // within the execution's time budget (`rules::budget`).
        let scan = self.clone();
        let scanned = (0..contents.batches.len()).map(move |at| {
            let id = contents.ids.as_ref().map(|ids| ids[at]);
            scan.scan(contents.batches[at].clone(), id, bounds)
        });
        let batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match &self.filter {
            // A filter keeps few rows of a batch: what passes is gathered
            // into batches of the session's size, as the `FilterExec` it
            // replaces would (operators above pay per batch).
            Some(_) => {
                let scan = self.clone();
                let coalesced = Coalesced {
                    scanned,
                    coalescer: BatchCoalescer::new(
                        self.scanned.clone(),
                        context.session_config().batch_size(),
                    ),
                    finished: false,
                };
                Box::new(coalesced.map(move |batch| batch.and_then(|b| scan.derive(b))))
            }
            None => Box::new(scanned.filter_map(|scanned| match scanned {
                Ok((batch, Selection::All)) => Some(Ok(batch)),
                Ok((_, Selection::None)) => None,
                Ok((batch, Selection::Rows(keep))) => {
                    Some(filter_record_batch(&batch, &keep).map_err(Into::into))
                }
                Err(e) => Some(Err(e)),
            })),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        )))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    use super::*;

    fn batch(times: &[i64], names: &[&str]) -> RecordBatch {
        let names: Vec<Option<&str>> = names.iter().copied().map(Some).collect();
        people(times, &names)
    }

    async fn names(exec: &SlotExec) -> Vec<String> {
        let batches: Vec<RecordBatch> = exec
            .execute(0, SessionContext::new().task_ctx())
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_delta_scan_emits_only_rows_within_the_bounds_read_at_each_execution() {
        let slot = Arc::new(BatchSlot::default());
        slot.set_all(vec![
            batch(&[10, 20, 30], &["a", "b", "c"]),
            batch(&[5, 6], &["d", "e"]),
            batch(&[40], &["f"]),
        ]);
        let plain = SlotExec::new(slot.get().batches[0].schema(), None, slot.clone());
        let bounds = Arc::new(TimeBounds::default());
        let delta = plain.within(0, bounds.clone());
        assert_eq!(
            names(&delta).await,
            ["a", "b", "c", "d", "e", "f"],
            "unbounded: everything"
        );
        // (20, 40]: 20 was emitted with the range ending at 20.
        bounds.set(20, 40);
        assert_eq!(names(&delta).await, ["c", "f"]);
        bounds.set(5, 30);
        assert_eq!(names(&delta).await, ["a", "b", "c", "e"]);
        bounds.set(40, i64::MAX);
        assert!(names(&delta).await.is_empty());
        assert_eq!(
            names(&plain).await.len(),
            6,
            "the scan it was made from is unchanged"
        );
    }

    /// A batch of a table of event times and (nullable) names.
    fn people(times: &[i64], names: &[Option<&str>]) -> RecordBatch {
        // Event time carries a time zone, as in the source schemas.
        let time = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_time", time.clone(), false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(times.to_vec()).with_data_type(time)),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    /// A session whose table `t` reads `slot`, with `kept(name)`: true
    /// unless the name is "b" (NULL for NULL), counting the rows it is
    /// evaluated on.
    fn session(
        slot: &Arc<BatchSlot>,
        volatility: datafusion::logical_expr::Volatility,
    ) -> (SessionContext, Arc<AtomicU64>) {
        use datafusion::logical_expr::{create_udf, ColumnarValue};
        let ctx = crate::rules::engine::new_session();
        let schema = people(&[], &[]).schema();
        ctx.register_table("t", Arc::new(SlotTable::new(schema, slot.clone())))
            .unwrap();
        let evaluated = Arc::new(AtomicU64::new(0));
        let counter = evaluated.clone();
        let kept = create_udf(
            "kept",
            vec![DataType::Utf8],
            DataType::Boolean,
            volatility,
            Arc::new(move |args: &[ColumnarValue]| {
                let names = match &args[0] {
                    ColumnarValue::Array(a) => a.clone(),
                    ColumnarValue::Scalar(s) => s.to_array()?,
                };
                counter.fetch_add(names.len() as u64, Ordering::Relaxed);
                let kept: BooleanArray = names
                    .as_string::<i32>()
                    .iter()
                    .map(|n| n.map(|n| n != "b"))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(kept)))
            }),
        );
        ctx.register_udf(kept);
        (ctx, evaluated)
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    /// The first column's values of the plan's output, in order.
    async fn run(plan: &Arc<dyn ExecutionPlan>) -> Vec<Option<String>> {
        let batches =
            datafusion::physical_plan::collect(plan.clone(), SessionContext::new().task_ctx())
                .await
                .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                c.as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn names_of(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    /// The filtered scan in a plan rewritten by [`cache_scan_filters`].
    fn filtered_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<CachedFilter>> {
        let mut found = None;
        plan.apply(|node| {
            if let Some(scan) = node.downcast_ref::<SlotExec>() {
                found = scan.filter.clone();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    /// A predicate whose common subexpressions DataFusion computes in a
    /// projection below the filter (`lower(name) AS __common_expr_1`) is
    /// still evaluated once per batch, in the scan, for a plain and for a
    /// delta scan, and gives the rows the plan gave before.
    #[tokio::test]
    async fn a_filter_over_common_subexpressions_moves_into_the_scan() {
        use datafusion::logical_expr::Volatility;
        let sql = "SELECT name, event_time FROM t WHERE kept(lower(name)) AND lower(name) <> 'z'";
        for bounded in [false, true] {
            let slot = Arc::new(BatchSlot::default());
            let (ctx, evaluated) = session(&slot, Volatility::Immutable);
            let bounds = Arc::new(TimeBounds::default());
            let planned = plan(&ctx, sql).await;
            let planned = if bounded {
                within_bounds(planned, &bounds)
            } else {
                planned
            };
            let mut shape = Vec::new();
            let mut node = planned.clone();
            while let Some(child) = node.children().first().map(|c| (*c).clone()) {
                if node.name() != "CooperativeExec" {
                    shape.push(node.name().to_string());
                }
                node = child;
            }
            assert_eq!(
                shape,
                ["FilterExec", "ProjectionExec"],
                "the shape this test is about"
            );
            let moved = cache_scan_filters(planned.clone()).unwrap();
            assert!(!moved.exists(|n| Ok(n.name() == "FilterExec")).unwrap());
            assert!(filtered_scan(&moved).is_some());
            slot.set_identified(vec![
                (401, people(&[1, 2, 3], &[Some("A"), Some("b"), Some("Z")])),
                (402, people(&[4, 5], &[None, Some("c")])),
            ]);
            bounds.set(1, 5);
            let expected = rows(&planned).await;
            let wanted: Vec<(Option<String>, i64)> = match bounded {
                false => vec![(Some("A".into()), 1), (Some("c".into()), 5)],
                true => vec![(Some("c".into()), 5)],
            };
            assert_eq!(expected, wanted);
            let before = evaluated.load(Ordering::Relaxed);
            assert_eq!(rows(&moved).await, expected);
            assert_eq!(rows(&moved).await, expected);
            assert_eq!(
                evaluated.load(Ordering::Relaxed) - before,
                5,
                "each retained row filtered once, in the scan"
            );
        }
    }

    #[tokio::test]
    async fn a_filter_moved_into_the_scan_is_evaluated_once_per_identified_batch() {
        use datafusion::logical_expr::Volatility;
        let slot = Arc::new(BatchSlot::default());
        let (ctx, evaluated) = session(&slot, Volatility::Immutable);
        let plan =
            cache_scan_filters(plan(&ctx, "SELECT name FROM t WHERE kept(name)").await).unwrap();
        assert!(
            !plan.exists(|n| Ok(n.name() == "FilterExec")).unwrap(),
            "the filter moved into the scan"
        );
        let filter = filtered_scan(&plan).expect("a filtered scan");
        let (a, b, c) = (
            people(&[1, 2, 3], &[Some("a"), Some("b"), None]),
            people(&[4, 5], &[Some("c"), Some("d")]),
            people(&[6, 7], &[Some("b"), Some("e")]),
        );
        slot.set_identified(vec![(101, a.clone()), (102, b.clone())]);
        assert_eq!(run(&plan).await, names_of(&["a", "c", "d"]));
        assert_eq!(evaluated.load(Ordering::Relaxed), 5);
        // Run again over the same batches: nothing is evaluated again.
        assert_eq!(run(&plan).await, names_of(&["a", "c", "d"]));
        assert_eq!(evaluated.load(Ordering::Relaxed), 5);
        // The oldest batch evicted, a new one retained: only it is evaluated,
        // and the evicted batch's result is forgotten.
        slot.set_identified(vec![(102, b.clone()), (103, c.clone())]);
        assert_eq!(run(&plan).await, names_of(&["c", "d", "e"]));
        assert_eq!(evaluated.load(Ordering::Relaxed), 7);
        let mut kept: Vec<u64> = filter.selections.lock().unwrap().keys().copied().collect();
        kept.sort();
        assert_eq!(kept, [102, 103]);
        // Batches without identities (new events) are evaluated every time.
        slot.set_all(vec![c.clone()]);
        assert_eq!(run(&plan).await, names_of(&["e"]));
        assert_eq!(run(&plan).await, names_of(&["e"]));
        assert_eq!(evaluated.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn a_volatile_filter_stays_where_it_is() {
        use datafusion::logical_expr::Volatility;
        let slot = Arc::new(BatchSlot::default());
        let (ctx, evaluated) = session(&slot, Volatility::Volatile);
        let plan =
            cache_scan_filters(plan(&ctx, "SELECT name FROM t WHERE kept(name)").await).unwrap();
        assert!(filtered_scan(&plan).is_none());
        assert!(plan.exists(|n| Ok(n.name() == "FilterExec")).unwrap());
        slot.set_identified(vec![(201, people(&[1, 2], &[Some("a"), Some("b")]))]);
        assert_eq!(run(&plan).await, names_of(&["a"]));
        assert_eq!(run(&plan).await, names_of(&["a"]));
        assert_eq!(
            evaluated.load(Ordering::Relaxed),
            4,
            "evaluated at every run"
        );
    }

    #[tokio::test]
    async fn a_rewritten_plan_gives_the_rows_the_original_gives() {
        use datafusion::logical_expr::Volatility;
        let slot = Arc::new(BatchSlot::default());
        let (ctx, _) = session(&slot, Volatility::Immutable);
        // Many small batches, NULLs, a filter that keeps none, some or all
        // of a batch, a projection the filter carried, and a join above.
        let mut batches = Vec::new();
        for i in 0..40i64 {
            let names: Vec<Option<&str>> = match i % 4 {
                0 => vec![Some("b"), Some("b")],
                1 => vec![Some("a"), None, Some("b")],
                2 => vec![Some("c"), Some("d")],
                _ => vec![None],
            };
            let times: Vec<i64> = (0..names.len() as i64).map(|j| i * 10 + j).collect();
            batches.push((1000 + i as u64, people(&times, &names)));
        }
        slot.set_identified(batches);
        for sql in [
            "SELECT name FROM t WHERE kept(name) ORDER BY event_time",
            "SELECT upper(name) AS n FROM t WHERE kept(name) AND event_time > to_timestamp_nanos(50) ORDER BY n, event_time",
            "SELECT x.name FROM t x JOIN t y ON x.name = y.name WHERE kept(x.name) AND y.name <> 'c' ORDER BY x.event_time, y.event_time",
            "SELECT count(*) FROM t WHERE NOT kept(name)",
        ] {
            let original = plan(&ctx, sql).await;
            let rewritten = cache_scan_filters(original.clone()).unwrap();
            assert!(filtered_scan(&rewritten).is_some(), "{sql}: a filtered scan");
            let expected = run(&original).await;
            assert!(!expected.is_empty(), "{sql}: the case selects rows");
            assert_eq!(run(&rewritten).await, expected, "{sql}");
            assert_eq!(run(&rewritten).await, expected, "{sql}, run again");
        }
    }

    /// `plan` with every slot scan reading within `bounds`, on column
    /// `event_time`.
    fn within_bounds(
        plan: Arc<dyn ExecutionPlan>,
        bounds: &Arc<TimeBounds>,
    ) -> Arc<dyn ExecutionPlan> {
        plan.transform_up(|node| match node.downcast_ref::<SlotExec>() {
            Some(scan) => {
                let time = scan.schema().index_of("event_time")?;
                Ok(Transformed::yes(
                    Arc::new(scan.within(time, bounds.clone())) as Arc<dyn ExecutionPlan>,
                ))
            }
            None => Ok(Transformed::no(node)),
        })
        .unwrap()
        .data
    }

    /// The (name, time) rows of the plan's output, in order.
    async fn rows(plan: &Arc<dyn ExecutionPlan>) -> Vec<(Option<String>, i64)> {
        let batches =
            datafusion::physical_plan::collect(plan.clone(), SessionContext::new().task_ctx())
                .await
                .unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            let names = b.column(0).as_string::<i32>();
            let times = b.column(1).as_primitive::<TimestampNanosecondType>();
            for i in 0..b.num_rows() {
                rows.push((
                    names.is_valid(i).then(|| names.value(i).to_string()),
                    times.value(i),
                ));
            }
        }
        rows
    }

    #[tokio::test]
    async fn kept_runs_give_the_rows_a_fresh_scan_gives_as_batches_come_and_go() {
        use datafusion::logical_expr::Volatility;
        let slot = Arc::new(BatchSlot::default());
        let (ctx, evaluated) = session(&slot, Volatility::Immutable);
        let bounds = Arc::new(TimeBounds::default());
        // A delta scan (time bounds, then its filter moved in), and a scan
        // whose filter and computed projection move in (derived).
        let sql = "SELECT name, event_time FROM t WHERE kept(name)";
        let fresh = within_bounds(plan(&ctx, sql).await, &bounds);
        let kept = cache_scan_filters(within_bounds(plan(&ctx, sql).await, &bounds)).unwrap();
        let filter = filtered_scan(&kept).expect("a filtered scan");
        let sql = "SELECT upper(name) AS name, event_time + INTERVAL '1 second' AS t FROM t WHERE kept(name)";
        let fresh_derived = plan(&ctx, sql).await;
        let derived = cache_scan_filters(plan(&ctx, sql).await).unwrap();
        assert!(
            !derived
                .exists(|n| Ok(n.name() == "ProjectionExec"))
                .unwrap(),
            "the projection moved into the scan: {}",
            datafusion::physical_plan::displayable(derived.as_ref()).indent(true)
        );
        let mut seed = 7u64;
        let mut random = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let (mut held, mut next_id, mut next_time) = (Vec::new(), 1u64, 0i64);
        let mut added_rows = 0u64;
        let mut merges = 0;
        for step in 0..400 {
            let mut lineage = Lineage::default();
            let mut batch = |random: &mut dyn FnMut(u64) -> u64| {
                let n = random(6) as usize;
                let names: Vec<Option<&str>> = (0..n)
                    .map(|_| [Some("a"), Some("b"), Some("c"), None][random(4) as usize])
                    .collect();
                let times: Vec<i64> = (0..n)
                    .map(|_| {
                        next_time += random(3) as i64;
                        next_time - random(4) as i64
                    })
                    .collect();
                people(&times, &names)
            };
            match random(6) {
                // Merge two batches side by side (as correlation merges
                // small retained batches), or a merged one again.
                5 if held.len() >= 2 => {
                    for _ in 0..=random(2) {
                        if held.len() < 2 {
                            break;
                        }
                        let at = random(held.len() as u64 - 1) as usize;
                        let (earlier, later): ((u64, RecordBatch), (u64, RecordBatch)) =
                            (held.remove(at), held.remove(at));
                        let merged =
                            concat_batches(&earlier.1.schema(), [&earlier.1, &later.1]).unwrap();
                        lineage.record(
                            (earlier.0, earlier.1.num_rows()),
                            (later.0, later.1.num_rows()),
                            next_id,
                        );
                        held.insert(at, (next_id, merged));
                        next_id += 1;
                        merges += 1;
                    }
                }
                // Evict the oldest batches.
                0 => {
                    let k = (random(4) as usize).min(held.len());
                    held.drain(..k);
                }
                // Cut a batch (eviction by time cuts any batch holding
                // older events): a new batch, with a new identity; or drop it.
                1 if !held.is_empty() => {
                    let at = random(held.len() as u64) as usize;
                    let (_, cut): (u64, RecordBatch) = held.remove(at);
                    if random(2) == 0 {
                        let half = cut.num_rows() / 2;
                        let rest = cut.slice(half, cut.num_rows() - half);
                        added_rows += rest.num_rows() as u64;
                        held.insert(at, (next_id, rest));
                        next_id += 1;
                    }
                }
                _ => {
                    for _ in 0..=random(3) {
                        let b = batch(&mut random);
                        added_rows += b.num_rows() as u64;
                        held.push((next_id, b));
                        next_id += 1;
                    }
                }
            }
            match random(3) {
                0 => bounds.set(i64::MIN, i64::MAX),
                _ => {
                    let after = random(next_time.max(1) as u64) as i64 - 2;
                    bounds.set(after, after + random(40) as i64);
                }
            }
            slot.set_retained(held.clone(), Arc::new(lineage));
            for (fresh, kept) in [(&fresh, &kept), (&fresh_derived, &derived)] {
                let before = evaluated.load(Ordering::Relaxed);
                let expected = rows(fresh).await;
                let fresh_evaluated = evaluated.load(Ordering::Relaxed) - before;
                assert_eq!(rows(kept).await, expected, "step {step}");
                // Rerun: the same rows from the runs kept.
                assert_eq!(rows(kept).await, expected, "step {step}, again");
                evaluated.fetch_sub(fresh_evaluated, Ordering::Relaxed);
            }
            let runs = filter.runs.lock().unwrap();
            assert!(runs.iter().all(|r| r.batches() <= kept::MAX_RUN_BATCHES));
            assert_eq!(
                runs.iter().map(|r| r.batches()).sum::<usize>(),
                held.len(),
                "step {step}: the runs cover the slot"
            );
        }
        assert!(merges > 50, "{merges} merges");
        assert_eq!(
            evaluated.load(Ordering::Relaxed),
            2 * added_rows,
            "each batch is filtered once per plan, whatever the runs, and a merged one not again"
        );
    }

    /// A plan whose filter (`kept`) and derived projection (`counted`)
    /// moved into its scan, with the rows each has been given.
    async fn counted_scan(
        slot: &Arc<BatchSlot>,
    ) -> (Arc<dyn ExecutionPlan>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let (ctx, evaluated) = session(slot, datafusion::logical_expr::Volatility::Immutable);
        let derived_rows = register_counted(&ctx);
        let sql = "SELECT upper(counted(name)) FROM t WHERE kept(name)";
        let derived = cache_scan_filters(plan(&ctx, sql).await).unwrap();
        (derived, evaluated, derived_rows)
    }

    #[tokio::test]
    async fn a_scan_dropped_before_its_end_keeps_the_runs_it_did_not_reach() {
        let slot = Arc::new(BatchSlot::default());
        let (derived, _, derived_rows) = counted_scan(&slot).await;
        let mut held = Vec::new();
        for i in 0..20i64 {
            held.push((7000 + i as u64, people(&[i], &[Some("a")])));
            slot.set_identified(held.clone());
            if i % 3 == 0 {
                assert_eq!(run(&derived).await.len(), held.len());
            } else {
                // Executed and dropped unread, as a join's probe side is
                // when its build side is empty.
                drop(
                    derived
                        .execute(0, SessionContext::new().task_ctx())
                        .unwrap(),
                );
            }
        }
        assert_eq!(run(&derived).await.len(), 20);
        assert_eq!(
            derived_rows.load(Ordering::Relaxed),
            20,
            "each kept row derived once"
        );
    }

    #[tokio::test]
    async fn merged_batches_are_neither_filtered_nor_derived_again() {
        let slot = Arc::new(BatchSlot::default());
        let (derived, evaluated, derived_rows) = counted_scan(&slot).await;
        let (mut held, mut next_id): (Vec<(u64, RecordBatch)>, u64) = (Vec::new(), 9000);
        let (mut lineage, mut first_merged) = (Lineage::default(), 0);
        for i in 0..40i64 {
            // One batch per emission; after it, the last two merged while
            // the earlier is no larger, as correlation retains them.
            held.push((next_id, people(&[i, i], &[Some("a"), Some("b")])));
            next_id += 1;
            slot.set_retained(held.clone(), Arc::new(std::mem::take(&mut lineage)));
            assert_eq!(run(&derived).await.len(), i as usize + 1, "emission {i}");
            first_merged = next_id;
            while let [.., (a, earlier), (b, later)] = &held[..] {
                if earlier.num_rows() > later.num_rows() {
                    break;
                }
                let merged = concat_batches(&earlier.schema(), [earlier, later]).unwrap();
                lineage.record((*a, earlier.num_rows()), (*b, later.num_rows()), next_id);
                held.truncate(held.len() - 2);
                held.push((next_id, merged));
                next_id += 1;
            }
        }
        assert!(held.len() < 5, "the batches were merged");
        assert_eq!(
            evaluated.load(Ordering::Relaxed),
            2 * 40,
            "each row filtered once"
        );
        assert_eq!(
            derived_rows.load(Ordering::Relaxed),
            40,
            "each kept row derived once"
        );
        // Without the last merges named, the batches they made are
        // filtered anew.
        let merged_rows: usize = held
            .iter()
            .filter(|(id, _)| *id >= first_merged)
            .map(|(_, b)| b.num_rows())
            .sum();
        assert!(merged_rows > 0);
        slot.set_identified(held.clone());
        assert_eq!(run(&derived).await.len(), 40);
        assert_eq!(
            evaluated.load(Ordering::Relaxed),
            2 * 40 + merged_rows as u64
        );
    }

    /// A UDF `counted(name)` giving `name` back, counting the rows it is
    /// given.
    fn register_counted(ctx: &SessionContext) -> Arc<AtomicU64> {
        use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
        let derived = Arc::new(AtomicU64::new(0));
        let counter = derived.clone();
        ctx.register_udf(create_udf(
            "counted",
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                if let ColumnarValue::Array(a) = &args[0] {
                    counter.fetch_add(a.len() as u64, Ordering::Relaxed);
                }
                Ok(args[0].clone())
            }),
        ));
        derived
    }

    #[tokio::test]
    async fn runs_grow_as_batches_are_retained_one_per_emission() {
        use datafusion::logical_expr::Volatility;
        let slot = Arc::new(BatchSlot::default());
        let (ctx, _) = session(&slot, Volatility::Immutable);
        let derived_rows = register_counted(&ctx);
        let bounds = Arc::new(TimeBounds::default());
        let sql = "SELECT name, event_time FROM t WHERE kept(name)";
        let delta = cache_scan_filters(within_bounds(plan(&ctx, sql).await, &bounds)).unwrap();
        let sql = "SELECT upper(counted(name)) FROM t WHERE kept(name)";
        let derived = cache_scan_filters(plan(&ctx, sql).await).unwrap();
        let mut held = Vec::new();
        for i in 0..40i64 {
            held.push((5000 + i as u64, people(&[i, i], &[Some("a"), Some("c")])));
            slot.set_identified(held.clone());
            bounds.set(i - 1, i);
            assert_eq!(run(&delta).await, names_of(&["a", "c"]), "emission {i}");
            assert_eq!(run(&derived).await.len(), 2 * held.len());
        }
        // A growing run takes in the new batches' rows: the rows it holds
        // are not derived again.
        assert_eq!(derived_rows.load(Ordering::Relaxed), 2 * 40);
        for plan in [&delta, &derived] {
            let filter = filtered_scan(plan).unwrap();
            let runs = filter.runs.lock().unwrap();
            let batches: Vec<usize> = runs.iter().map(|r| r.batches()).collect();
            assert_eq!(
                batches,
                [16, 16, 8],
                "runs of full size, not one per emission"
            );
        }
    }

    #[tokio::test]
    async fn a_filtered_delta_scan_emits_the_filtered_rows_within_the_bounds() {
        use datafusion::logical_expr::Volatility;
        let slot = Arc::new(BatchSlot::default());
        let (ctx, _) = session(&slot, Volatility::Immutable);
        let bounds = Arc::new(TimeBounds::default());
        // As a re-scan is planned: the delta rewrite, then the filter moved in.
        let plan = cache_scan_filters(within_bounds(
            plan(&ctx, "SELECT name, event_time FROM t WHERE kept(name)").await,
            &bounds,
        ))
        .unwrap();
        assert!(filtered_scan(&plan).is_some());
        slot.set_identified(vec![
            (
                301,
                people(&[10, 20, 30], &[Some("a"), Some("b"), Some("c")]),
            ),
            (302, people(&[5, 40], &[None, Some("d")])),
        ]);
        assert_eq!(run(&plan).await, names_of(&["a", "c", "d"]));
        bounds.set(10, 30);
        assert_eq!(run(&plan).await, names_of(&["c"]));
        bounds.set(0, 40);
        assert_eq!(run(&plan).await, names_of(&["a", "c", "d"]));
        bounds.set(40, 50);
        assert!(run(&plan).await.is_empty());
    }
}
