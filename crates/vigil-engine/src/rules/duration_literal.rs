//! `event_time - INTERVAL '5 minutes'` evaluated as a subtraction of
//! nanoseconds.
//!
//! SQL's `INTERVAL '5 minutes'` is a month-day-nanosecond interval, and
//! Arrow adds one to a timestamp value by value through calendar
//! arithmetic (a `chrono` date-time in the column's time zone, months,
//! then days, then nanoseconds). The sequence rules compare every joined
//! pair with such a bound (`b.event_time >= w.event_time - INTERVAL '5
//! minutes'`), and that arithmetic was 15% of their join's samples end to
//! end (docs/benchmarks.md, stop 43). An interval of no months and no days
//! is a fixed number of nanoseconds in every time zone, so it is replaced
//! by the same duration, which Arrow subtracts as integers. Intervals with
//! months or days are left as they are (their length depends on the date).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, Schema, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::ExecutionPlan;

/// `expr` (over `schema`) with every `timestamp ± interval literal` of no
/// months and no days as `timestamp ± duration literal`.
pub(crate) fn with_durations(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|e| match as_duration(&e, schema) {
            Some(replaced) => Ok(Transformed::yes(replaced)),
            None => Ok(Transformed::no(e)),
        })?
        .data)
}

/// `e` as `timestamp ± duration literal`, if it is `timestamp ± interval
/// literal` of no months and no days.
pub(crate) fn as_duration(
    e: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Option<Arc<dyn PhysicalExpr>> {
    let binary = e.downcast_ref::<BinaryExpr>()?;
    if !matches!(binary.op(), Operator::Plus | Operator::Minus) {
        return None;
    }
    let DataType::Timestamp(TimeUnit::Nanosecond, _) = binary.left().data_type(schema).ok()? else {
        return None;
    };
    let literal = binary.right().downcast_ref::<Literal>()?;
    let ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
        months: 0,
        days: 0,
        nanoseconds,
    })) = literal.value()
    else {
        return None;
    };
    let duration = Arc::new(Literal::new(ScalarValue::DurationNanosecond(Some(
        *nanoseconds,
    ))));
    Some(Arc::new(BinaryExpr::new(
        Arc::clone(binary.left()),
        *binary.op(),
        duration,
    )))
}

/// `plan` with the filter of every hash join in [`with_durations`].
pub(crate) fn join_filters_with_durations(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(filter) = join.filter() else {
            return Ok(Transformed::no(node));
        };
        let expression = with_durations(Arc::clone(filter.expression()), filter.schema())?;
        if Arc::ptr_eq(&expression, filter.expression()) {
            return Ok(Transformed::no(node));
        }
        let filter = JoinFilter::new(
            expression,
            filter.column_indices().to_vec(),
            Arc::clone(filter.schema()),
        );
        let rebuilt = join.builder().with_filter(Some(filter)).build()?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::{col, lit};

    use super::*;

    fn batch() -> RecordBatch {
        let times = TimestampNanosecondArray::from(vec![
            Some(1_700_000_000_123_456_789),
            None,
            Some(0),
            Some(-5),
        ])
        .with_timezone("+00:00");
        let schema = Schema::new(vec![Field::new("t", times.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(times)]).unwrap()
    }

    fn interval(months: i32, days: i32, nanoseconds: i64) -> Arc<dyn PhysicalExpr> {
        lit(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano {
                months,
                days,
                nanoseconds,
            },
        )))
    }

    fn values(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<Option<i64>> {
        let out = expr
            .evaluate(batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        assert_eq!(out.data_type(), batch.schema().field(0).data_type());
        let out = out
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        out.iter().collect()
    }

    #[test]
    fn an_interval_of_nanoseconds_gives_the_same_times_as_a_duration() {
        let batch = batch();
        let schema = batch.schema();
        for op in [Operator::Minus, Operator::Plus] {
            let original: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
                col("t", &schema).unwrap(),
                op,
                interval(0, 0, 300_000_000_000),
            ));
            let rewritten = with_durations(Arc::clone(&original), &schema).unwrap();
            assert!(!Arc::ptr_eq(&rewritten, &original), "{op}: not rewritten");
            assert_eq!(rewritten.to_string(), format!("t@0 {op} 300000000000"));
            assert_eq!(
                values(&rewritten, &batch),
                values(&original, &batch),
                "{op}"
            );
        }
    }

    #[test]
    fn intervals_of_days_or_months_and_other_operands_are_left_alone() {
        let batch = batch();
        let schema = batch.schema();
        let kept = [
            BinaryExpr::new(
                col("t", &schema).unwrap(),
                Operator::Minus,
                interval(0, 1, 0),
            ),
            BinaryExpr::new(
                col("t", &schema).unwrap(),
                Operator::Minus,
                interval(1, 0, 5),
            ),
            BinaryExpr::new(
                col("t", &schema).unwrap(),
                Operator::Multiply,
                interval(0, 0, 5),
            ),
        ];
        for expr in kept {
            let expr: Arc<dyn PhysicalExpr> = Arc::new(expr);
            let same = with_durations(Arc::clone(&expr), &schema).unwrap();
            assert!(Arc::ptr_eq(&same, &expr), "{expr} was rewritten");
        }
    }
}
