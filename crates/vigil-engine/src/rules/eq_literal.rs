//! `x = 'literal'` and `x <> 'literal'` on strings, decided by the value's
//! length and its first eight bytes before any byte-by-byte comparison.
//!
//! Rules compare fields with string literals everywhere (`verb =
//! 'create'`, `object_ref.resource = 'pods'`). Arrow compares each value
//! with the literal through a call to `memcmp` whenever the lengths are
//! equal, which was 4% of a replay of real audit events. [`EqLiteral`]
//! gives the same result: a value whose length differs is unequal; else
//! its first (up to) eight bytes, read as one word and masked to the
//! literal's length, must equal the literal's; only the bytes after the
//! eighth of a longer literal are compared as a slice. NULL where the
//! value is NULL.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericStringArray, OffsetSizeTrait, Scalar,
    StringArray,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// Whether a string `value` equals a literal (or, `negated`, differs from
/// it); NULL where `value` is NULL.
#[derive(Debug)]
pub struct EqLiteral {
    value: Arc<dyn PhysicalExpr>,
    literal: String,
    negated: bool,
}

impl PartialEq for EqLiteral {
    fn eq(&self, other: &Self) -> bool {
        self.value.eq(&other.value)
            && self.literal == other.literal
            && self.negated == other.negated
    }
}

impl Eq for EqLiteral {}

impl Hash for EqLiteral {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
        self.literal.hash(state);
        self.negated.hash(state);
    }
}

impl EqLiteral {
    /// The `EqLiteral` equal to `binary`, if it compares a `Utf8` or
    /// `LargeUtf8` value with a non-NULL string literal by `=` or `<>`.
    pub fn of_binary(binary: &BinaryExpr, schema: &Schema) -> Option<EqLiteral> {
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return None,
        };
        let (value, literal) = match binary.right().downcast_ref::<Literal>() {
            Some(literal) => (binary.left(), literal),
            None => (binary.right(), binary.left().downcast_ref::<Literal>()?),
        };
        if !matches!(
            value.data_type(schema).ok()?,
            DataType::Utf8 | DataType::LargeUtf8
        ) {
            return None;
        }
        Some(EqLiteral {
            value: Arc::clone(value),
            literal: literal.value().try_as_str()??.to_string(),
            negated,
        })
    }

    fn evaluate_strings<O: OffsetSizeTrait>(&self, array: &GenericStringArray<O>) -> BooleanArray {
        let equal = equal_values(array.value_offsets(), array.value_data(), &self.literal);
        let values = if self.negated { !&equal } else { equal };
        BooleanArray::new(values, array.nulls().cloned())
    }

    /// Arrow's comparison, for a value of a type the rule's schema did not
    /// announce.
    fn evaluate_other(&self, array: &ArrayRef) -> Result<BooleanArray> {
        let literal = StringArray::from(vec![self.literal.as_str()]);
        let literal = Scalar::new(datafusion::arrow::compute::cast(
            &literal,
            array.data_type(),
        )?);
        Ok(match self.negated {
            false => cmp::eq(array, &literal)?,
            true => cmp::neq(array, &literal)?,
        })
    }
}

/// Whether each value (between consecutive `offsets`, in `bytes`) equals
/// `literal`.
fn equal_values<O: OffsetSizeTrait>(offsets: &[O], bytes: &[u8], literal: &str) -> BooleanBuffer {
    let literal = literal.as_bytes();
    let head = literal.len().min(8);
    let mut word = [0u8; 8];
    word[..head].copy_from_slice(&literal[..head]);
    let prefix = u64::from_le_bytes(word);
    let mask = if head == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * head)) - 1
    };
    BooleanBuffer::collect_bool(offsets.len().saturating_sub(1), |i| {
        let start = offsets[i].as_usize();
        let end = offsets[i + 1].as_usize();
        if end - start != literal.len() {
            return false;
        }
        match bytes.get(start..start + 8) {
            Some(eight) => {
                let eight = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
                eight & mask == prefix
                    && (literal.len() <= 8 || bytes[start + 8..end] == literal[8..])
            }
            // Too near the end of the bytes to read a word.
            None => bytes[start..end] == *literal,
        }
    })
}

impl fmt::Display for EqLiteral {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{} {op} {:?}", self.value, self.literal)
    }
}

impl PhysicalExpr for EqLiteral {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.value.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array: ArrayRef = match self.value.evaluate(batch)? {
            ColumnarValue::Scalar(s) => {
                let equal = s
                    .try_as_str()
                    .flatten()
                    .map(|v| (v == self.literal) != self.negated);
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(equal)));
            }
            ColumnarValue::Array(a) => a,
        };
        let result = match array.data_type() {
            DataType::Utf8 => self.evaluate_strings(array.as_string::<i32>()),
            DataType::LargeUtf8 => self.evaluate_strings(array.as_string::<i64>()),
            _ => self.evaluate_other(&array)?,
        };
        Ok(ColumnarValue::Array(Arc::new(result)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.value]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(EqLiteral {
            value: children.swap_remove(0),
            literal: self.literal.clone(),
            negated: self.negated,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt_sql(f)?;
        let op = if self.negated { "<>" } else { "=" };
        write!(f, " {op} '{}'", self.literal.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::LargeStringArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, lit};
    use proptest::prelude::*;

    use super::*;
    use crate::rules::conjunction::with_faster_forms;

    fn result(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> BooleanArray {
        let array = expr.evaluate(batch).unwrap().into_array(batch.num_rows());
        array.unwrap().as_boolean().clone()
    }

    /// Both comparisons, both operand orders, against DataFusion's own.
    fn compare_with_datafusion(array: ArrayRef, literal: &str) -> Result<(), TestCaseError> {
        let schema = Schema::new(vec![Field::new("v", array.data_type().clone(), true)]);
        // As the planner leaves it: the literal of the value's type.
        let literal = match array.data_type() {
            DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(literal.to_string())),
            _ => ScalarValue::Utf8(Some(literal.to_string())),
        };
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![array]).unwrap();
        for op in [Operator::Eq, Operator::NotEq] {
            let v = || col("v", &schema).unwrap();
            let l = || lit(literal.clone());
            for plain in [
                binary(v(), op, l(), &schema).unwrap(),
                binary(l(), op, v(), &schema).unwrap(),
            ] {
                let faster = with_faster_forms(plain.clone(), &schema).unwrap();
                prop_assert!(faster.downcast_ref::<EqLiteral>().is_some(), "{}", plain);
                prop_assert_eq!(result(&faster, &batch), result(&plain, &batch), "{}", plain);
            }
        }
        Ok(())
    }

    /// Values near the literal: the same, one byte changed anywhere, one
    /// byte longer or shorter, empty.
    fn near(literal: String) -> impl Strategy<Value = Option<String>> {
        let len = literal.len();
        prop_oneof![
            Just(Some(literal.clone())),
            Just(None),
            Just(Some(String::new())),
            (0..=len, "[a-z]").prop_map({
                let literal = literal.clone();
                move |(at, c)| {
                    let mut s = literal.clone();
                    s.insert_str(at, &c);
                    Some(s)
                }
            }),
            (0..len.max(1)).prop_map({
                let literal = literal.clone();
                move |at| {
                    let mut s: Vec<u8> = literal.clone().into_bytes();
                    if let Some(b) = s.get_mut(at) {
                        *b = if *b == b'x' { b'y' } else { b'x' };
                    } else {
                        s.pop();
                    }
                    Some(String::from_utf8(s).unwrap())
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn gives_datafusions_result_on_strings_near_the_literal(
            (literal, values, skip) in "[a-z:/.]{0,20}".prop_flat_map(|literal| {
                let values = proptest::collection::vec(near(literal.clone()), 0..40);
                (Just(literal), values, 0usize..3)
            })
        ) {
            let skip = skip.min(values.len());
            let small = StringArray::from(values.clone()).slice(skip, values.len() - skip);
            compare_with_datafusion(Arc::new(small), &literal)?;
            let large = LargeStringArray::from(values.clone());
            compare_with_datafusion(Arc::new(large), &literal)?;
        }
    }

    #[test]
    fn other_comparisons_and_types_are_left_to_datafusion() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]);
        for plain in [
            binary(col("s", &schema).unwrap(), Operator::Lt, lit("a"), &schema).unwrap(),
            binary(col("n", &schema).unwrap(), Operator::Eq, lit(3i64), &schema).unwrap(),
            binary(
                col("s", &schema).unwrap(),
                Operator::Eq,
                col("s", &schema).unwrap(),
                &schema,
            )
            .unwrap(),
        ] {
            let faster = with_faster_forms(plain.clone(), &schema).unwrap();
            assert!(faster.downcast_ref::<EqLiteral>().is_none(), "{plain}");
        }
    }
}
