//! The filters of an incremental rule's partial aggregation, as they run
//! at ingest: on each new batch as decoded, not on a copy of its
//! pre-filtered rows (`ingest::fold_into_state`).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

use super::compile::rule_error;
use super::ingest::UNNUMBERED;
use super::{CompiledCorrelation, Strategy};
use crate::rules::conjunction::{selective_filters, SharedConditions};
use crate::rules::RuleError;
use crate::schema::ROW_COLUMN;

/// `rule` with the filters of its partial aggregation, when it runs
/// incrementally, made for a whole new batch: each first drops the rows
/// without a sequence number (dropped by the pre-filter, or late), and
/// then evaluates condition by condition on the rows still passing,
/// sharing values through `shared` with the pre-filter, which has just
/// computed most of the same conditions on the same arrays. So the costly
/// conditions run on the pre-filtered rows only. Dropping the late rows is
/// what keeps them out of the windows: a plan without such a filter gets
/// one above its scan.
pub(super) fn at_ingest(
    mut rule: CompiledCorrelation,
    shared: &Arc<SharedConditions>,
) -> Result<CompiledCorrelation, RuleError> {
    if let Strategy::Incremental { split, .. } = &mut rule.strategy {
        split.partial = only_numbered(Arc::clone(&split.partial))
            .and_then(|plan| selective_filters(plan, shared))
            .map_err(|e| rule_error(&rule.rule, format!("physical planning failed: {e}")))?;
    }
    Ok(rule)
}

/// `plan` passing only rows with a sequence number to what is above its
/// filters: every filter whose input carries the row column gets
/// `__row != UNNUMBERED AND` before its predicate; a plan with no such
/// filter gets a filter of that test alone above each scan.
fn only_numbered(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let mut tested = false;
    let plan = plan
        .transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let Ok(row) = filter.input().schema().index_of(ROW_COLUMN) else {
                return Ok(Transformed::no(node));
            };
            tested = true;
            let predicate = Arc::new(BinaryExpr::new(
                numbered(row),
                Operator::And,
                Arc::clone(filter.predicate()),
            ));
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(predicate)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })?
        .data;
    if tested {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        if !node.children().is_empty() {
            return Ok(Transformed::no(node));
        }
        let row = node.schema().index_of(ROW_COLUMN)?;
        let filter = FilterExec::try_new(numbered(row), node)?;
        Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// `__row != UNNUMBERED`, the row column at `row`.
fn numbered(row: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(
        Arc::new(Column::new(ROW_COLUMN, row)),
        Operator::NotEq,
        lit(ScalarValue::UInt64(Some(UNNUMBERED))),
    ))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Rows without a number (dropped by the pre-filter, or late) are
    /// dropped by a rewritten filter that would pass them, and by the
    /// filter added to a plan without one; the others are kept.
    #[tokio::test]
    async fn a_rewritten_filter_passes_numbered_rows_only() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new(ROW_COLUMN, DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(UInt64Array::from(vec![7, UNNUMBERED, 8, UNNUMBERED])),
            ],
        )
        .unwrap();
        let source: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap();
        let n_positive = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("n", 0)),
            Operator::Gt,
            lit(0i64),
        ));
        let filter: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(n_positive, Arc::clone(&source)).unwrap());
        let task = SessionContext::new().task_ctx();
        let rows = |plan| async {
            let out = collect(plan, Arc::clone(&task)).await.unwrap();
            out.iter()
                .flat_map(|b| b.column(1).as_primitive::<UInt64Type>().values().to_vec())
                .collect::<Vec<u64>>()
        };
        assert_eq!(rows(Arc::clone(&filter)).await.len(), 4);
        let rewritten = only_numbered(filter).unwrap();
        assert_eq!(rows(rewritten).await, [7, 8]);
        // Without a filter, one is added above the scan.
        assert_eq!(rows(Arc::clone(&source)).await.len(), 4);
        assert_eq!(rows(only_numbered(source).unwrap()).await, [7, 8]);
    }
}
