//! [`RuleProjectionExec`]: DataFusion's projection without per-execution
//! expression metrics.
//!
//! Each time a `ProjectionExec` is executed, it registers one timing metric
//! per expression, labelled with the expression's SQL text, which it
//! formats anew. Vigil executes every rule's plan once per batch, so that
//! formatting was paid for each rule and batch; nothing reads the labels.
//! This operator evaluates the same expressions into the same schema,
//! batch by batch, and keeps no metrics.
//! The cost it removes is measured in docs/benchmarks.md (stop 36).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::projection::Projector;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// Every `ProjectionExec` of `plan` as a [`RuleProjectionExec`].
pub fn without_expression_metrics(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
            return Ok(Transformed::no(node));
        };
        let replaced: Arc<dyn ExecutionPlan> = Arc::new(RuleProjectionExec::of(projection)?);
        Ok(Transformed::yes(replaced))
    })
    .map(|t| t.data)
}

/// A projection evaluated batch by batch, with no per-expression metrics.
///
/// Invariant: its schema and properties are those of the `ProjectionExec`
/// it replaced, and [`Projector`] checks each output batch against that
/// schema.
#[derive(Debug)]
pub struct RuleProjectionExec {
    input: Arc<dyn ExecutionPlan>,
    projector: Projector,
    properties: Arc<PlanProperties>,
}

impl RuleProjectionExec {
    fn of(projection: &ProjectionExec) -> Result<Self> {
        let projector = projection
            .projection_expr()
            .make_projector_with_schema_metadata(
                &projection.input().schema(),
                &projection.schema(),
            )?;
        Ok(RuleProjectionExec {
            input: Arc::clone(projection.input()),
            projector,
            properties: Arc::clone(projection.properties()),
        })
    }

    /// The expressions, and the output schema they give.
    pub(crate) fn projector(&self) -> &Projector {
        &self.projector
    }

    pub(crate) fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for RuleProjectionExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let exprs: Vec<String> = self
            .projector
            .projection()
            .iter()
            .map(|p| format!("{} as {}", p.expr, p.alias))
            .collect();
        write!(f, "RuleProjectionExec: expr=[{}]", exprs.join(", "))
    }
}

impl ExecutionPlan for RuleProjectionExec {
    fn name(&self) -> &str {
        "RuleProjectionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut recursion = TreeNodeRecursion::Continue;
        for p in self.projector.projection().iter() {
            recursion = f(&p.expr)?;
            if recursion == TreeNodeRecursion::Stop {
                break;
            }
        }
        Ok(recursion)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "RuleProjectionExec has one child, got {}",
                children.len()
            )));
        }
        // The projector and properties hold for the input's schema; a reset
        // (the one use in Vigil) keeps it.
        let input = children.remove(0);
        if input.schema() != self.input.schema() {
            return Err(DataFusionError::Internal(
                "RuleProjectionExec cannot take an input of another schema".into(),
            ));
        }
        Ok(Arc::new(RuleProjectionExec {
            input,
            projector: self.projector.clone(),
            properties: Arc::clone(&self.properties),
        }))
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
        Ok(Box::pin(ProjectedStream {
            input: self.input.execute(partition, context)?,
            projector: self.projector.clone(),
        }))
    }
}

struct ProjectedStream {
    input: SendableRecordBatchStream,
    projector: Projector,
}

impl Stream for ProjectedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.input.poll_next_unpin(cx).map(|next| match next {
            Some(Ok(batch)) => Some(self.projector.project_batch(&batch)),
            other => other,
        })
    }
}

impl RecordBatchStream for ProjectedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.projector.output_schema())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::collect;
    use datafusion::physical_plan::execution_plan::reset_plan_states;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn planned(sql: &str) -> (SessionContext, Arc<dyn ExecutionPlan>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("d"),
                ])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        (ctx, plan)
    }

    fn has(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
        plan.exists(|n| Ok(n.name() == name)).unwrap()
    }

    #[tokio::test]
    async fn replaced_projections_give_the_same_batches_execution_after_execution() {
        let sql = "SELECT n + 1 AS m, upper(s) AS u, s FROM t WHERE n IS NULL OR n > 2";
        let (ctx, original) = planned(sql).await;
        assert!(has(&original, "ProjectionExec"));
        let replaced = without_expression_metrics(original.clone()).unwrap();
        assert!(!has(&replaced, "ProjectionExec"));
        assert!(has(&replaced, "RuleProjectionExec"));
        assert_eq!(replaced.schema(), original.schema());

        let expected = collect(original, ctx.task_ctx()).await.unwrap();
        assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        for _ in 0..2 {
            let again = reset_plan_states(replaced.clone()).unwrap();
            assert_eq!(collect(again, ctx.task_ctx()).await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn an_input_of_another_schema_is_refused() {
        let (_, plan) = planned("SELECT n + 1 AS m FROM t").await;
        let (_, other) = planned("SELECT s FROM t").await;
        let projection = without_expression_metrics(plan).unwrap();
        assert_eq!(projection.name(), "RuleProjectionExec");
        let refused = projection.replace_children(
            vec![other],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        );
        assert!(refused.is_err());
    }
}
