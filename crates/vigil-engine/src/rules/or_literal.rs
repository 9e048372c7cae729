//! `coalesce(x, <literal>)` evaluated in one pass over `x`.
//!
//! DataFusion's simplifier plans `coalesce(x, 200)` as
//! `CASE WHEN x IS NOT NULL THEN x ELSE 200 END`. When `x` is NULL on some
//! rows and not on others, `CaseExpr` evaluates `x` on every row for the
//! `WHEN`, then copies the rows where it holds, of every column the `CASE`
//! reads (for `response_status.code`, the whole `response_status` struct),
//! to evaluate `x` a second time on the copy. Rules test such defaults on
//! every event (`coalesce(response_status.code, 200) < 400`); that copy was
//! about 3% of a replay's profile (docs/benchmarks.md, stop 35).
//!
//! [`OrLiteral`] (put in by `conjunction::with_faster_forms`) keeps the values of the one evaluation of `x` and puts the
//! literal where they are NULL. The result is the same: the `WHEN`
//! already evaluated `x` on every row, and a literal cannot fail.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericStringArray, OffsetSizeTrait, Scalar,
};
use datafusion::arrow::compute::is_not_null;
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{CaseExpr, IsNotNullExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// `value`, or `fallback` on the rows where `value` is NULL. The fallback
/// has `value`'s type.
#[derive(Debug)]
pub struct OrLiteral {
    value: Arc<dyn PhysicalExpr>,
    fallback: ScalarValue,
    /// `fallback` as the one-row array `zip` takes, made once, not per batch.
    fallback_array: ArrayRef,
    /// The fallback is `''` (`coalesce(s, '')`, the common default of a
    /// string): see [`nulls_as_empty`].
    fallback_is_empty_string: bool,
}

impl PartialEq for OrLiteral {
    fn eq(&self, other: &Self) -> bool {
        self.value.eq(&other.value) && self.fallback == other.fallback
    }
}

impl Eq for OrLiteral {}

impl Hash for OrLiteral {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
        self.fallback.hash(state);
    }
}

impl OrLiteral {
    /// The `OrLiteral` equal to `case`, if it is
    /// `CASE WHEN x IS NOT NULL THEN x ELSE <literal> END` (one branch, no
    /// operand) and the literal converts to the type of `x`.
    pub fn of_case(case: &CaseExpr, schema: &Schema) -> Option<OrLiteral> {
        let [(when, then)] = case.when_then_expr() else {
            return None;
        };
        if case.expr().is_some() {
            return None;
        }
        let tested = when.downcast_ref::<IsNotNullExpr>()?.arg();
        if tested.as_ref() != then.as_ref() {
            return None;
        }
        let literal = case.else_expr()?.downcast_ref::<Literal>()?;
        let data_type = then.data_type(schema).ok()?;
        let fallback = literal.value().cast_to(&data_type).ok()?;
        OrLiteral::new(Arc::clone(then), fallback).ok()
    }

    fn new(value: Arc<dyn PhysicalExpr>, fallback: ScalarValue) -> Result<OrLiteral> {
        let fallback_is_empty_string = matches!(
            &fallback,
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) if s.is_empty()
        );
        Ok(OrLiteral {
            fallback_array: fallback.to_array_of_size(1)?,
            fallback_is_empty_string,
            value,
            fallback,
        })
    }
}

/// `values` (strings) with its NULLs read as empty strings, without copying
/// a byte, if each NULL slot already spans no bytes, as Arrow's builders and
/// its filter and take kernels leave them. `None` otherwise, or for other
/// types.
fn nulls_as_empty(values: &ArrayRef) -> Option<ArrayRef> {
    match values.data_type() {
        DataType::Utf8 => nulls_as_empty_of(values.as_string::<i32>()),
        DataType::LargeUtf8 => nulls_as_empty_of(values.as_string::<i64>()),
        _ => None,
    }
}

fn nulls_as_empty_of<O: OffsetSizeTrait>(strings: &GenericStringArray<O>) -> Option<ArrayRef> {
    let nulls = strings.nulls()?;
    let offsets = strings.value_offsets();
    let null_slots_are_empty = nulls
        .iter()
        .enumerate()
        .all(|(i, valid)| valid || offsets[i] == offsets[i + 1]);
    if !null_slots_are_empty {
        return None;
    }
    // SAFETY: the offsets and bytes are those of a valid string array; the
    // slots that were NULL span no bytes, so they are valid empty strings.
    let without_nulls = unsafe {
        GenericStringArray::<O>::new_unchecked(
            strings.offsets().clone(),
            strings.values().clone(),
            None,
        )
    };
    Some(Arc::new(without_nulls))
}

impl fmt::Display for OrLiteral {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // The literal with its type and quotes: shared condition values are
        // keyed by expression, and `'NULL'` must not read as NULL here.
        write!(f, "coalesce({}, {:?})", self.value, self.fallback)
    }
}

impl PhysicalExpr for OrLiteral {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.value.data_type(input_schema)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(self.fallback.is_null())
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let values = match self.value.evaluate(batch)? {
            ColumnarValue::Scalar(s) if s.is_null() => {
                return Ok(ColumnarValue::Scalar(self.fallback.clone()))
            }
            ColumnarValue::Scalar(s) => return Ok(ColumnarValue::Scalar(s)),
            ColumnarValue::Array(a) => a,
        };
        if values.null_count() == 0 {
            return Ok(ColumnarValue::Array(values));
        }
        if self.fallback_is_empty_string {
            if let Some(strings) = nulls_as_empty(&values) {
                return Ok(ColumnarValue::Array(strings));
            }
        }
        let present = is_not_null(&values)?;
        let fallback = Scalar::new(&self.fallback_array);
        Ok(ColumnarValue::Array(zip(&present, &values, &fallback)?))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.value]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(OrLiteral::new(
            children.swap_remove(0),
            self.fallback.clone(),
        )?))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coalesce(")?;
        self.value.fmt_sql(f)?;
        write!(f, ", {})", self.fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::conjunction::with_faster_forms;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{self as ex, col, lit};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("code", DataType::Int64, true),
            Field::new("stage", DataType::Utf8, true),
        ]));
        let code: ArrayRef = Arc::new(Int64Array::from(vec![Some(403), None, Some(200), None]));
        let stage: ArrayRef = Arc::new(StringArray::from(vec![
            None,
            Some("ResponseComplete"),
            None,
            None,
        ]));
        RecordBatch::try_new(schema, vec![code, stage]).unwrap()
    }

    /// `CASE WHEN c IS NOT NULL THEN c ELSE <fallback> END`.
    fn defaulted(column: &str, fallback: ScalarValue) -> Arc<dyn PhysicalExpr> {
        let schema = batch().schema();
        let c = col(column, &schema).unwrap();
        ex::case(
            None,
            vec![(ex::is_not_null(Arc::clone(&c)).unwrap(), c)],
            Some(lit(fallback)),
        )
        .unwrap()
    }

    fn values(expr: &Arc<dyn PhysicalExpr>) -> ArrayRef {
        expr.evaluate(&batch()).unwrap().into_array(4).unwrap()
    }

    #[test]
    fn a_defaulted_column_gives_what_its_case_gives() {
        let schema = batch().schema();
        for (column, fallback) in [
            ("code", ScalarValue::Int64(Some(200))),
            ("stage", ScalarValue::Utf8(Some(String::new()))),
        ] {
            let case = defaulted(column, fallback);
            let rewritten = with_faster_forms(Arc::clone(&case), &schema).unwrap();
            assert!(rewritten.downcast_ref::<OrLiteral>().is_some(), "{case}");
            assert_eq!(
                values(&rewritten).as_ref(),
                values(&case).as_ref(),
                "{case}"
            );
        }
    }

    #[test]
    fn a_null_slot_that_spans_bytes_still_reads_as_the_fallback() {
        use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer};
        // Valid Arrow: a NULL slot may span bytes. Here the second slot,
        // NULL, spans "def".
        let stage = StringArray::new(
            OffsetBuffer::new(vec![0, 3, 6, 6].into()),
            Buffer::from("abcdef".as_bytes()),
            Some(NullBuffer::from(vec![true, false, false])),
        );
        let schema = Arc::new(Schema::new(vec![Field::new("stage", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(stage)]).unwrap();
        let c = col("stage", &schema).unwrap();
        let case = ex::case(
            None,
            vec![(ex::is_not_null(Arc::clone(&c)).unwrap(), c)],
            Some(lit("")),
        )
        .unwrap();
        let rewritten = with_faster_forms(case, &schema).unwrap();
        let got = rewritten.evaluate(&batch).unwrap().into_array(3).unwrap();
        assert_eq!(
            got.as_string::<i32>(),
            &StringArray::from(vec!["abc", "", ""])
        );
    }

    #[test]
    fn a_literal_of_another_type_is_converted_to_the_columns() {
        let schema = batch().schema();
        let case = defaulted("code", ScalarValue::Int32(Some(200)));
        let rewritten = with_faster_forms(case, &schema).unwrap();
        let got = values(&rewritten);
        assert_eq!(got.data_type(), &DataType::Int64);
        assert_eq!(
            got.as_any().downcast_ref::<Int64Array>().unwrap(),
            &Int64Array::from(vec![403, 200, 200, 200])
        );
    }

    #[test]
    fn other_cases_are_left_as_they_are() {
        let schema = batch().schema();
        let code = col("code", &schema).unwrap();
        let stage = col("stage", &schema).unwrap();
        let tests_another_column = ex::case(
            None,
            vec![(
                ex::is_not_null(Arc::clone(&stage)).unwrap(),
                Arc::clone(&code),
            )],
            Some(lit(200i64)),
        )
        .unwrap();
        let falls_back_to_a_column = ex::case(
            None,
            vec![(
                ex::is_not_null(Arc::clone(&code)).unwrap(),
                Arc::clone(&code),
            )],
            Some(Arc::clone(&code)),
        )
        .unwrap();
        for case in [tests_another_column, falls_back_to_a_column] {
            let rewritten = with_faster_forms(Arc::clone(&case), &schema).unwrap();
            assert!(rewritten.downcast_ref::<CaseExpr>().is_some(), "{case}");
        }
    }
}
