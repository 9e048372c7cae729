//! A table whose contents are the micro-batch being evaluated.
//!
//! Rules are planned once, at load time, against a [`SlotTable`]. Its scan is
//! a [`SlotExec`] leaf that reads whatever batch is in the shared
//! [`BatchSlot`] when the plan is *executed*. The engine puts each new batch
//! in the slot and re-executes the same physical plans: no SQL parsing,
//! logical optimisation or physical planning happens per batch.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Scalar, TimestampNanosecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::kernels::boolean::and;
use datafusion::arrow::compute::kernels::cmp::{gt, lt_eq};
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, Volatility};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};

/// The batches a table currently holds: the micro-batch being evaluated
/// (per-event rules) or the retained window state (correlation rules).
#[derive(Debug, Default)]
pub struct BatchSlot {
    current: Mutex<Vec<RecordBatch>>,
}

impl BatchSlot {
    pub fn set(&self, batch: RecordBatch) {
        *self.current.lock().expect("slot lock") = vec![batch];
    }

    pub fn set_all(&self, batches: Vec<RecordBatch>) {
        *self.current.lock().expect("slot lock") = batches;
    }

    pub fn clear(&self) {
        self.current.lock().expect("slot lock").clear();
    }

    fn get(&self) -> Vec<RecordBatch> {
        self.current.lock().expect("slot lock").clone()
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

/// Leaf operator that emits the slot's current batch (projected).
#[derive(Debug)]
pub struct SlotExec {
    projection: Option<Vec<usize>>,
    slot: Arc<BatchSlot>,
    properties: Arc<PlanProperties>,
    /// Emit only rows whose timestamp column (index in the output) is
    /// within the bounds, read at each execution (delta re-scans of
    /// correlation rules, `correlate::delta`).
    time_bounds: Option<(usize, Arc<TimeBounds>)>,
    /// A filter merged into the scan whose result is kept per slot batch
    /// (re-scans of retained events, [`cache_scan_filters`]).
    filter: Option<CachedFilter>,
}

/// A scan filter evaluated once per slot batch: retained batches are
/// immutable and re-read at every run of a re-scan rule.
#[derive(Debug)]
struct CachedFilter {
    predicate: Arc<dyn PhysicalExpr>,
    /// The filter's own output projection (applied last).
    projection: Option<Vec<usize>>,
    /// Mask per batch, keyed by the address of the batch's first column,
    /// which the entry holds so the address cannot be reused by another
    /// batch while the entry exists. Entries of batches no longer in the
    /// slot are dropped after each execution.
    masks: Mutex<HashMap<usize, (ArrayRef, BooleanArray)>>,
}

impl CachedFilter {
    fn mask(&self, batch: &RecordBatch, seen: &mut HashSet<usize>) -> Result<BooleanArray> {
        let evaluate = || -> Result<BooleanArray> {
            let values = self
                .predicate
                .evaluate(batch)?
                .into_array(batch.num_rows())?;
            values
                .as_boolean_opt()
                .cloned()
                .ok_or_else(|| DataFusionError::Internal("a scan filter is not boolean".into()))
        };
        let Some(first) = batch.columns().first() else {
            return evaluate();
        };
        let key = Arc::as_ptr(first) as *const () as usize;
        seen.insert(key);
        let mut masks = self.masks.lock().expect("filter cache lock");
        if let Some((_, mask)) = masks.get(&key) {
            if mask.len() == batch.num_rows() {
                return Ok(mask.clone());
            }
        }
        let mask = evaluate()?;
        masks.insert(key, (first.clone(), mask.clone()));
        Ok(mask)
    }
}

impl SlotExec {
    fn new(schema: SchemaRef, projection: Option<Vec<usize>>, slot: Arc<BatchSlot>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        SlotExec {
            projection,
            slot,
            properties: Arc::new(properties),
            time_bounds: None,
            filter: None,
        }
    }

    /// The same scan, emitting only rows whose nanosecond timestamp
    /// `column` (in its output) is within `bounds` at execution.
    pub fn within(&self, column: usize, bounds: Arc<TimeBounds>) -> SlotExec {
        SlotExec {
            projection: self.projection.clone(),
            slot: self.slot.clone(),
            properties: self.properties.clone(),
            time_bounds: Some((column, bounds)),
            filter: None,
        }
    }
}

/// Merge every filter directly over a slot scan into the scan, with its
/// result cached per slot batch: for plans re-executed over retained
/// events that change only by appends and evictions, so each retained
/// event goes through each scan filter once instead of at every run.
/// Filters calling a volatile function are left alone.
pub fn cache_scan_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(scan) = filter.input().downcast_ref::<SlotExec>() else {
            return Ok(Transformed::no(node));
        };
        if filter.fetch().is_some() || scan.filter.is_some() || is_volatile(filter.predicate())? {
            return Ok(Transformed::no(node));
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(filter.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        let merged = SlotExec {
            projection: scan.projection.clone(),
            slot: scan.slot.clone(),
            properties: Arc::new(properties),
            time_bounds: scan.time_bounds.clone(),
            filter: Some(CachedFilter {
                predicate: filter.predicate().clone(),
                projection: filter.projection().as_deref().map(<[usize]>::to_vec),
                masks: Mutex::default(),
            }),
        };
        Ok(Transformed::yes(Arc::new(merged) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

fn is_volatile(predicate: &Arc<dyn PhysicalExpr>) -> Result<bool> {
    let mut volatile = false;
    predicate.apply(|e| {
        if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() {
            if f.fun().signature().volatility != Volatility::Immutable {
                volatile = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(volatile)
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

/// Which rows of `batch` have their timestamp `column` in `(after,
/// through]`; `None` when all do.
fn bounds_mask(
    batch: &RecordBatch,
    column: usize,
    (after, through): (i64, i64),
) -> Result<Option<BooleanArray>> {
    let times = batch
        .column(column)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "column {column} of a delta scan is not a nanosecond timestamp"
            ))
        })?;
    if times.null_count() == 0
        && min(times).is_some_and(|t| t > after)
        && max(times).is_some_and(|t| t <= through)
    {
        return Ok(None);
    }
    // The scalars must carry the column's time zone to compare with it.
    let scalar = |t: i64| {
        Scalar::new(
            TimestampNanosecondArray::from(vec![t]).with_data_type(times.data_type().clone()),
        )
    };
    Ok(Some(and(
        &gt(times, &scalar(after))?,
        &lt_eq(times, &scalar(through))?,
    )?))
}

impl SlotExec {
    /// One slot batch as this scan emits it: projected, filtered (cached
    /// filter, time bounds), then the merged filter's projection.
    fn emit(&self, batch: RecordBatch, seen: &mut HashSet<usize>) -> Result<Option<RecordBatch>> {
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        let mut mask = match &self.filter {
            Some(f) => Some(f.mask(&batch, seen)?),
            None => None,
        };
        if let Some((column, bounds)) = &self.time_bounds {
            let range = bounds.get();
            if range != (i64::MIN, i64::MAX) {
                if let Some(within) = bounds_mask(&batch, *column, range)? {
                    mask = Some(match mask {
                        Some(m) => and(&m, &within)?,
                        None => within,
                    });
                }
            }
        }
        let batch = match mask {
            None => batch,
            Some(m) => match m.true_count() {
                0 => return Ok(None),
                n if n == batch.num_rows() => batch,
                _ => filter_record_batch(&batch, &m)?,
            },
        };
        match self.filter.as_ref().and_then(|f| f.projection.as_ref()) {
            Some(p) => Ok(Some(batch.project(p)?)),
            None => Ok(Some(batch)),
        }
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec: projection={:?}", self.projection)?;
        if let Some((column, _)) = &self.time_bounds {
            write!(f, ", column {column} within the emission range")?;
        }
        if let Some(filter) = &self.filter {
            write!(f, ", filter={} (cached per batch)", filter.predicate)?;
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
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "SlotExec has one partition, not {partition}"
            )));
        }
        let schema = self.properties.eq_properties.schema().clone();
        let mut seen = HashSet::new();
        let batches: Vec<Result<RecordBatch>> = self
            .slot
            .get()
            .into_iter()
            .filter_map(|batch| self.emit(batch, &mut seen).transpose())
            .collect();
        if let Some(filter) = &self.filter {
            // Batches evicted from the slot since: their masks go too.
            filter
                .masks
                .lock()
                .expect("filter cache lock")
                .retain(|key, _| seen.contains(key));
        }
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        )))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    use super::*;

    fn batch(times: &[i64], names: &[&str]) -> RecordBatch {
        // Event time carries a time zone, as in the source schemas.
        let time = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_time", time.clone(), false),
            Field::new("name", DataType::Utf8, false),
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
        let plain = SlotExec::new(slot.get()[0].schema(), None, slot.clone());
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

    #[tokio::test]
    async fn a_cached_scan_filter_keeps_one_mask_per_slot_batch_and_drops_evicted_ones() {
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{binary, col, lit};

        let slot = Arc::new(BatchSlot::default());
        let first = batch(&[10, 20, 30], &["a", "b", "c"]);
        let second = batch(&[40, 50], &["b", "d"]);
        slot.set_all(vec![first.clone(), second.clone()]);
        let scan: Arc<dyn ExecutionPlan> =
            Arc::new(SlotExec::new(first.schema(), None, slot.clone()));
        let schema = first.schema();
        let predicate = binary(
            col("name", &schema).unwrap(),
            Operator::NotEq,
            lit("b"),
            &schema,
        )
        .unwrap();
        let filter: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(predicate, scan).unwrap());
        let merged = cache_scan_filters(filter).unwrap();
        let merged = merged
            .downcast_ref::<SlotExec>()
            .expect("the filter is merged into the scan");
        let masks = |m: &SlotExec| m.filter.as_ref().unwrap().masks.lock().unwrap().len();
        assert_eq!(names(merged).await, ["a", "c", "d"]);
        assert_eq!(masks(merged), 2);
        // Again, from the cache: the same rows.
        assert_eq!(names(merged).await, ["a", "c", "d"]);
        // The first batch evicted, a third appended: its mask is computed,
        // the evicted batch's is dropped.
        slot.set_all(vec![second, batch(&[60, 70], &["e", "b"])]);
        assert_eq!(names(merged).await, ["d", "e"]);
        assert_eq!(masks(merged), 2);
        // With time bounds too (a delta scan whose filter was merged).
        let bounds = Arc::new(TimeBounds::default());
        let delta = SlotExec::new(first.schema(), None, slot.clone()).within(0, bounds.clone());
        let predicate = binary(
            col("name", &schema).unwrap(),
            Operator::NotEq,
            lit("b"),
            &schema,
        )
        .unwrap();
        let merged = cache_scan_filters(Arc::new(
            FilterExec::try_new(predicate, Arc::new(delta)).unwrap(),
        ))
        .unwrap();
        bounds.set(50, 60);
        assert_eq!(
            names(merged.downcast_ref::<SlotExec>().unwrap()).await,
            ["e"]
        );
    }
}
