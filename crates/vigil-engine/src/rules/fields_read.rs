//! The fields of struct columns a condition reads.
//!
//! A condition that reads one field of a struct column
//! (`object_ref.resource`, `pod_spec.images`) names the whole column, so
//! copying its selected rows for a costly condition
//! ([`super::conjunction`]) copied every field of the struct: seven strings
//! of `object_ref`, nine lists and flags of `pod_spec`. That copy cost more
//! than evaluating the condition (docs/benchmarks.md, stop 41).
//!
//! [`FieldsRead`] lists, per input column, the fields a condition reads
//! when it reads that column only as `get_field(column, 'name')`, and
//! narrows a batch's struct columns to those fields. `get_field` finds a
//! field by its name when it is evaluated, so the condition gives the same
//! values on the narrowed batch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, ScalarValue};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

/// Per input column of a condition: the names of the struct fields it
/// reads, or `None` when it reads the column otherwise (whole, or not as a
/// struct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldsRead(Vec<Option<Vec<String>>>);

impl FieldsRead {
    /// The fields `expr` reads of each of the `columns` columns of its input.
    pub(crate) fn of(expr: &Arc<dyn PhysicalExpr>, columns: usize) -> Self {
        FieldsRead(
            (0..columns)
                .map(|column| {
                    let mut names = Vec::new();
                    let by_name_only = names_read(expr, column, &mut names);
                    (by_name_only && !names.is_empty()).then_some(names)
                })
                .collect(),
        )
    }

    /// `batch` (the condition's input) with each struct column narrowed to
    /// the fields the condition reads; other columns as they are.
    pub(crate) fn narrow(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.0.iter().all(Option::is_none) {
            return Ok(batch.clone());
        }
        let schema = batch.schema();
        let (fields, columns): (Vec<Arc<Field>>, Vec<ArrayRef>) = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .zip(&self.0)
            .map(|((field, column), names)| match names {
                Some(names) => narrowed(field, column, names),
                None => (Arc::clone(field), Arc::clone(column)),
            })
            .unzip();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// Whether `expr` reads input column `column` only by field name, adding
/// the names it reads to `names`.
fn names_read(expr: &Arc<dyn PhysicalExpr>, column: usize, names: &mut Vec<String>) -> bool {
    if let Some(name) = field_of(expr, column) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        return true;
    }
    if expr
        .downcast_ref::<Column>()
        .is_some_and(|c| c.index() == column)
    {
        return false;
    }
    expr.children()
        .into_iter()
        .all(|child| names_read(child, column, names))
}

/// The field name of `expr` when it is `get_field(column, 'name')`.
fn field_of(expr: &Arc<dyn PhysicalExpr>, column: usize) -> Option<&str> {
    let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
    if call.name() != "get_field" {
        return None;
    }
    let [of, name] = call.args() else {
        return None;
    };
    if of
        .downcast_ref::<Column>()
        .is_none_or(|c| c.index() != column)
    {
        return None;
    }
    match name.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(n))
        | ScalarValue::Utf8View(Some(n))
        | ScalarValue::LargeUtf8(Some(n)) => Some(n),
        _ => None,
    }
}

/// A struct `column` with only the fields `names`, its nulls kept; the
/// column as it is when it is no struct or lacks one of the names.
fn narrowed(field: &Arc<Field>, column: &ArrayRef, names: &[String]) -> (Arc<Field>, ArrayRef) {
    let whole = || (Arc::clone(field), Arc::clone(column));
    let Some(array) = column.as_struct_opt() else {
        return whole();
    };
    if names.len() >= array.num_columns() {
        return whole();
    }
    let mut kept_fields = Vec::with_capacity(names.len());
    let mut kept_columns = Vec::with_capacity(names.len());
    for name in names {
        let Some((index, child)) = array.fields().find(name) else {
            return whole();
        };
        kept_fields.push(Arc::clone(child));
        kept_columns.push(Arc::clone(array.column(index)));
    }
    let kept_fields = Fields::from(kept_fields);
    let narrow = StructArray::new(kept_fields.clone(), kept_columns, array.nulls().cloned());
    let field = field
        .as_ref()
        .clone()
        .with_data_type(DataType::Struct(kept_fields));
    (Arc::new(field), Arc::new(narrow))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::buffer::NullBuffer;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    use super::*;

    fn batch() -> RecordBatch {
        let fields = Fields::from(vec![
            Field::new("resource", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("code", DataType::Int32, true),
        ]);
        let object = StructArray::new(
            fields.clone(),
            vec![
                // The NULL struct's field holds a value: it must read alike.
                Arc::new(StringArray::from(vec!["pods", "secrets", "pods"])),
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("c")])),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
            ],
            Some(NullBuffer::from(vec![true, true, false])),
        );
        let schema = Schema::new(vec![
            Field::new("object", DataType::Struct(fields), true),
            Field::new("verb", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(object),
                Arc::new(StringArray::from(vec!["get", "list", "get"])),
            ],
        )
        .unwrap()
    }

    fn get_field(batch: &RecordBatch, name: &str) -> Arc<dyn PhysicalExpr> {
        let schema = batch.schema();
        let udf = datafusion::functions::core::get_field();
        let args = vec![col("object", &schema).unwrap(), lit(name)];
        let config = Arc::new(datafusion::config::ConfigOptions::default());
        Arc::new(ScalarFunctionExpr::try_new(udf, args, &schema, config).unwrap())
    }

    #[test]
    fn a_struct_read_by_field_name_is_narrowed_to_those_fields() {
        let b = batch();
        let schema = b.schema();
        let resource = get_field(&b, "resource");
        let expr = binary(
            binary(Arc::clone(&resource), Operator::Eq, lit("pods"), &schema).unwrap(),
            Operator::Or,
            binary(
                get_field(&b, "name"),
                Operator::Eq,
                col("verb", &schema).unwrap(),
                &schema,
            )
            .unwrap(),
            &schema,
        )
        .unwrap();
        let read = FieldsRead::of(&expr, 2);
        assert_eq!(
            read,
            FieldsRead(vec![Some(vec!["resource".into(), "name".into()]), None])
        );
        let narrow = read.narrow(&b).unwrap();
        let object = narrow.column(0).as_struct();
        assert_eq!(object.column_names(), ["resource", "name"]);
        assert_eq!(
            object.nulls(),
            b.column(0).nulls(),
            "the struct's nulls are kept"
        );
        assert_eq!(
            expr.evaluate(&narrow)
                .unwrap()
                .into_array(3)
                .unwrap()
                .as_ref(),
            expr.evaluate(&b).unwrap().into_array(3).unwrap().as_ref(),
        );
        assert_eq!(
            resource
                .evaluate(&narrow)
                .unwrap()
                .into_array(3)
                .unwrap()
                .as_ref(),
            resource
                .evaluate(&b)
                .unwrap()
                .into_array(3)
                .unwrap()
                .as_ref(),
            "a field of a NULL struct reads alike"
        );
    }

    #[test]
    fn a_struct_read_whole_is_not_narrowed() {
        let b = batch();
        let schema = b.schema();
        let whole =
            datafusion::physical_expr::expressions::is_not_null(col("object", &schema).unwrap())
                .unwrap();
        let expr = binary(
            binary(
                get_field(&b, "resource"),
                Operator::Eq,
                lit("pods"),
                &schema,
            )
            .unwrap(),
            Operator::And,
            whole,
            &schema,
        )
        .unwrap();
        let read = FieldsRead::of(&expr, 2);
        assert_eq!(read, FieldsRead(vec![None, None]));
        assert_eq!(read.narrow(&b).unwrap(), b);
    }
}
