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
/// incrementally, made for a whole new batch: each first tests that a row
/// was pre-filtered (it has a sequence number), and then evaluates
/// condition by condition on the rows still passing, sharing values
/// through `shared` with the pre-filter, which has just computed most of
/// the same conditions on the same arrays. The first test changes no
/// result (a row the pre-filter drops fails every scan's filter); it keeps
/// the costly conditions to the rows the pre-filter kept.
pub(super) fn at_ingest(
    mut rule: CompiledCorrelation,
    shared: &Arc<SharedConditions>,
) -> Result<CompiledCorrelation, RuleError> {
    if let Strategy::Incremental { split, .. } = &mut rule.strategy {
        split.partial = only_pre_filtered(Arc::clone(&split.partial))
            .and_then(|plan| selective_filters(plan, shared))
            .map_err(|e| rule_error(&rule.rule, format!("physical planning failed: {e}")))?;
    }
    Ok(rule)
}

/// Every filter of `plan` whose input carries the row column with
/// `__row != UNNUMBERED AND` before its predicate.
fn only_pre_filtered(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        let Ok(row) = filter.input().schema().index_of(ROW_COLUMN) else {
            return Ok(Transformed::no(node));
        };
        let numbered: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new(ROW_COLUMN, row)),
            Operator::NotEq,
            lit(ScalarValue::UInt64(Some(UNNUMBERED))),
        ));
        let predicate = Arc::new(BinaryExpr::new(
            numbered,
            Operator::And,
            Arc::clone(filter.predicate()),
        ));
        let rebuilt = FilterExecBuilder::from(filter)
            .with_predicate(predicate)
            .build()?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A filter passing rows the pre-filter did not number (as no scan's
    /// filter does) drops them once rewritten, and keeps the others.
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
        let source = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap();
        let n_positive = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("n", 0)),
            Operator::Gt,
            lit(0i64),
        ));
        let filter: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(n_positive, source).unwrap());
        let task = SessionContext::new().task_ctx();
        let rows = |plan| async {
            let out = collect(plan, Arc::clone(&task)).await.unwrap();
            out.iter()
                .flat_map(|b| b.column(1).as_primitive::<UInt64Type>().values().to_vec())
                .collect::<Vec<u64>>()
        };
        assert_eq!(rows(Arc::clone(&filter)).await.len(), 4);
        let rewritten = only_pre_filtered(filter).unwrap();
        assert_eq!(rows(rewritten).await, [7, 8]);
    }
}
