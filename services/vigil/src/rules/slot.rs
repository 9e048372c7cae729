//! A table whose contents are the micro-batch being evaluated.
//!
//! Rules are planned once, at load time, against a [`SlotTable`]. Its scan is
//! a [`SlotExec`] leaf that reads whatever batch is in the shared
//! [`BatchSlot`] when the plan is *executed*. The engine puts each new batch
//! in the slot and re-executes the same physical plans: no SQL parsing,
//! logical optimisation or physical planning happens per batch.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Scalar, TimestampNanosecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::kernels::boolean::and;
use datafusion::arrow::compute::kernels::cmp::{gt, lt_eq};
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
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
        }
    }
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

/// The rows of `batch` whose timestamp `column` is in `(after, through]`;
/// the batch itself when all are, `None` when none is.
fn rows_within(
    batch: RecordBatch,
    column: usize,
    (after, through): (i64, i64),
) -> Result<Option<RecordBatch>> {
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
        return Ok(Some(batch));
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
    match keep.true_count() {
        0 => Ok(None),
        _ => Ok(Some(filter_record_batch(&batch, &keep)?)),
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec: projection={:?}", self.projection)?;
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
        _context: Arc<TaskContext>,
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
        let batches: Vec<Result<RecordBatch>> = self
            .slot
            .get()
            .into_iter()
            .map(|batch| match &self.projection {
                Some(p) => batch.project(p).map_err(Into::into),
                None => Ok(batch),
            })
            .filter_map(|batch| match (batch, bounds) {
                (Ok(batch), Some((column, range))) if range != (i64::MIN, i64::MAX) => {
                    rows_within(batch, column, range).transpose()
                }
                (batch, _) => Some(batch),
            })
            .collect();
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
}
