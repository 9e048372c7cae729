//! Null-free filter conjuncts, so that a rule's cheap leading conditions
//! spare its expensive later ones.
//!
//! DataFusion evaluates `a AND b` by evaluating `a` over the batch and then,
//! if `a` is false on every row, skipping `b`, or, if `a` is true on at most
//! a fifth of the rows, evaluating `b` on those rows only. It does so only
//! when `a` has no NULLs. A rule's conditions on optional fields
//! (`object_ref.resource = 'pods'` on a request without an objectRef) are
//! NULL on some rows, and from there on every later condition (regular
//! expressions, JSON parsing of `request_object`) ran on every row.
//!
//! [`null_free_filters`] wraps each top-level conjunct of every filter in
//! [`NullAsFalse`]. The filter keeps exactly the same rows: a filter keeps a
//! row only where the predicate is TRUE, a conjunction is TRUE only where
//! every conjunct is TRUE, and `NullAsFalse(x)` is TRUE exactly where `x`
//! is. (It cannot be done in SQL: DataFusion's simplifier removes
//! `IS TRUE` and `COALESCE(x, FALSE)` from filters, as they do not change
//! the result.)

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

/// A boolean expression with NULL read as FALSE.
#[derive(Debug, Eq)]
pub struct NullAsFalse {
    arg: Arc<dyn PhysicalExpr>,
}

// Written out: deriving them on a `dyn` field trips rust-lang/rust#78808.
impl PartialEq for NullAsFalse {
    fn eq(&self, other: &Self) -> bool {
        self.arg.eq(&other.arg)
    }
}

impl Hash for NullAsFalse {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.arg.hash(state);
    }
}

impl fmt::Display for NullAsFalse {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "null_as_false({})", self.arg)
    }
}

impl PhysicalExpr for NullAsFalse {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        Ok(match self.arg.evaluate(batch)? {
            ColumnarValue::Array(array) => {
                let booleans = as_boolean_array(&array)?;
                if booleans.null_count() == 0 {
                    ColumnarValue::Array(array)
                } else {
                    ColumnarValue::Array(Arc::new(prep_null_mask_filter(booleans)))
                }
            }
            ColumnarValue::Scalar(ScalarValue::Boolean(None)) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))),
            scalar => scalar,
        })
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.arg]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(NullAsFalse { arg: Arc::clone(&children[0]) }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "COALESCE(")?;
        self.arg.fmt_sql(f)?;
        write!(f, ", FALSE)")
    }
}

/// `a AND b AND …` → `NullAsFalse(a) AND NullAsFalse(b) AND …` in every
/// filter of `plan`, conjuncts kept in their order.
pub fn null_free_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        let predicate = split_conjunction(filter.predicate())
            .into_iter()
            .map(|c| Arc::new(NullAsFalse { arg: Arc::clone(c) }) as Arc<dyn PhysicalExpr>)
            .reduce(|left, right| Arc::new(BinaryExpr::new(left, Operator::And, right)))
            .expect("a predicate has at least one conjunct");
        let rebuilt = FilterExecBuilder::from(filter).with_predicate(predicate).build()?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::BooleanArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::col;

    use super::*;

    #[test]
    fn null_reads_as_false_and_nothing_else_changes() {
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Boolean, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]))]).unwrap();
        let expr = NullAsFalse { arg: col("b", &schema).unwrap() };
        let ColumnarValue::Array(out) = expr.evaluate(&batch).unwrap() else { panic!("an array") };
        assert_eq!(as_boolean_array(&out).unwrap(), &BooleanArray::from(vec![true, false, false]));
        assert_eq!(out.null_count(), 0);
    }
}
