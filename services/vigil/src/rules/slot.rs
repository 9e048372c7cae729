//! A table whose contents are the micro-batch being evaluated.
//!
//! Rules are planned once, at load time, against a [`SlotTable`]. Its scan is
//! a [`SlotExec`] leaf that reads whatever batch is in the shared
//! [`BatchSlot`] when the plan is *executed*. The engine puts each new batch
//! in the slot and re-executes the same physical plans: no SQL parsing,
//! logical optimisation or physical planning happens per batch.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
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
        }
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec: projection={:?}", self.projection)
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
        let batches: Vec<Result<RecordBatch>> = self
            .slot
            .get()
            .into_iter()
            .map(|batch| match &self.projection {
                Some(p) => batch.project(p).map_err(Into::into),
                None => Ok(batch),
            })
            .collect();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        )))
    }
}
