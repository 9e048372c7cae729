//! `x = 'literal'`, `x <> 'literal'`, `x IN ('a', 'b', ...)` and
//! `x NOT IN (...)` on strings, decided by the value's length and its first
//! eight bytes before any byte-by-byte comparison.
//!
//! Rules compare fields with string literals everywhere (`verb =
//! 'create'`, `object_ref.resource = 'pods'`, `stage NOT IN
//! ('RequestReceived', 'ResponseStarted')`, the workload resource list).
//! Arrow compares each value with the literal through a call to `memcmp`
//! whenever the lengths are equal, which was 4% of a replay of real audit
//! events; DataFusion tests a value against a list of literals by hashing
//! it and probing a table (2.8% of that replay at stop 48). [`EqLiteral`]
//! gives the same results: a value whose length differs from a literal's
//! is not that literal; else its first (up to) eight bytes, read as one
//! word and masked to the literal's length, must equal the literal's; only
//! the bytes after the eighth of a longer literal are compared as a slice.
//! NULL where the value is NULL (no literal is NULL).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericStringArray, OffsetSizeTrait, Scalar,
    StringArray,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::kernels::{boolean, cmp};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// The longest list of literals tested one by one; a longer `IN` list is
/// left to DataFusion's hash table.
const MAX_LITERALS: usize = 16;

/// Whether a string `value` is one of the literals (or, `negated`, none of
/// them); NULL where `value` is NULL. One literal is `=` (`<>`), more an
/// `IN` (`NOT IN`) list.
#[derive(Debug)]
pub struct EqLiteral {
    value: Arc<dyn PhysicalExpr>,
    literals: Vec<Word>,
    negated: bool,
}

/// A literal, with its first (up to) eight bytes as a word and the mask of
/// its length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Word {
    text: String,
    prefix: u64,
    mask: u64,
}

impl Word {
    fn new(text: &str) -> Word {
        let bytes = text.as_bytes();
        let head = bytes.len().min(8);
        let mut word = [0u8; 8];
        word[..head].copy_from_slice(&bytes[..head]);
        let mask = if head == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * head)) - 1
        };
        Word {
            text: text.to_string(),
            prefix: u64::from_le_bytes(word),
            mask,
        }
    }

    /// Whether `bytes[start..end]` is this literal.
    #[inline]
    fn is(&self, bytes: &[u8], start: usize, end: usize) -> bool {
        let literal = self.text.as_bytes();
        if end - start != literal.len() {
            return false;
        }
        match bytes.get(start..start + 8) {
            Some(eight) => {
                let eight = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
                eight & self.mask == self.prefix
                    && (literal.len() <= 8 || bytes[start + 8..end] == literal[8..])
            }
            // Too near the end of the bytes to read a word.
            None => bytes[start..end] == *literal,
        }
    }
}

impl PartialEq for EqLiteral {
    fn eq(&self, other: &Self) -> bool {
        self.value.eq(&other.value)
            && self.literals == other.literals
            && self.negated == other.negated
    }
}

impl Eq for EqLiteral {}

impl Hash for EqLiteral {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
        self.literals.hash(state);
        self.negated.hash(state);
    }
}

/// Whether `value` is a string column or expression of `schema`.
fn is_string(value: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    matches!(
        value.data_type(schema),
        Ok(DataType::Utf8 | DataType::LargeUtf8)
    )
}

/// The text of a non-NULL string literal.
fn literal_text(expr: &Arc<dyn PhysicalExpr>) -> Option<&str> {
    expr.downcast_ref::<Literal>()?.value().try_as_str()?
}

impl EqLiteral {
    /// The comparison `binary`, if it compares a `Utf8` or `LargeUtf8`
    /// value with a non-NULL string literal by `=` or `<>`.
    pub fn of_binary(binary: &BinaryExpr, schema: &Schema) -> Option<EqLiteral> {
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return None,
        };
        let (value, literal) = match literal_text(binary.right()) {
            Some(literal) => (binary.left(), literal),
            None => (binary.right(), literal_text(binary.left())?),
        };
        if !is_string(value, schema) {
            return None;
        }
        Some(EqLiteral {
            value: Arc::clone(value),
            literals: vec![Word::new(literal)],
            negated,
        })
    }

    /// The test `in_list`, if it tests a `Utf8` or `LargeUtf8` value
    /// against at most [`MAX_LITERALS`] non-NULL string literals.
    pub fn of_in_list(in_list: &InListExpr, schema: &Schema) -> Option<EqLiteral> {
        let list = in_list.list();
        if list.is_empty() || list.len() > MAX_LITERALS || !is_string(in_list.expr(), schema) {
            return None;
        }
        let literals = list
            .iter()
            .map(|item| literal_text(item).map(Word::new))
            .collect::<Option<Vec<Word>>>()?;
        Some(EqLiteral {
            value: Arc::clone(in_list.expr()),
            literals,
            negated: in_list.negated(),
        })
    }

    fn evaluate_strings<O: OffsetSizeTrait>(&self, array: &GenericStringArray<O>) -> BooleanArray {
        let equal = equal_values(array.value_offsets(), array.value_data(), &self.literals);
        let values = if self.negated { !&equal } else { equal };
        BooleanArray::new(values, array.nulls().cloned())
    }

    /// Arrow's comparison, for a value of a type the rule's schema did not
    /// announce.
    fn evaluate_other(&self, array: &ArrayRef) -> Result<BooleanArray> {
        let mut any: Option<BooleanArray> = None;
        for word in &self.literals {
            let literal = StringArray::from(vec![word.text.as_str()]);
            let literal = Scalar::new(datafusion::arrow::compute::cast(
                &literal,
                array.data_type(),
            )?);
            let equal = cmp::eq(array, &literal)?;
            any = Some(match any {
                None => equal,
                Some(before) => boolean::or(&before, &equal)?,
            });
        }
        let any = any.expect("at least one literal");
        Ok(if self.negated {
            boolean::not(&any)?
        } else {
            any
        })
    }
}

/// Whether each value (between consecutive `offsets`, in `bytes`) is one
/// of `literals`.
fn equal_values<O: OffsetSizeTrait>(
    offsets: &[O],
    bytes: &[u8],
    literals: &[Word],
) -> BooleanBuffer {
    let rows = offsets.len().saturating_sub(1);
    let span = |i: usize| (offsets[i].as_usize(), offsets[i + 1].as_usize());
    match literals {
        [one] => BooleanBuffer::collect_bool(rows, |i| {
            let (start, end) = span(i);
            one.is(bytes, start, end)
        }),
        many => BooleanBuffer::collect_bool(rows, |i| {
            let (start, end) = span(i);
            many.iter().any(|word| word.is(bytes, start, end))
        }),
    }
}

impl fmt::Display for EqLiteral {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (self.literals.as_slice(), self.negated) {
            ([one], negated) => {
                let op = if negated { "!=" } else { "=" };
                write!(f, "{} {op} {:?}", self.value, one.text)
            }
            (many, negated) => {
                let op = if negated { "NOT IN" } else { "IN" };
                let texts: Vec<&str> = many.iter().map(|w| w.text.as_str()).collect();
                write!(f, "{} {op} {texts:?}", self.value)
            }
        }
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
                    .map(|v| self.literals.iter().any(|w| w.text == v) != self.negated);
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
            literals: self.literals.clone(),
            negated: self.negated,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt_sql(f)?;
        let quoted: Vec<String> = self
            .literals
            .iter()
            .map(|w| format!("'{}'", w.text.replace('\'', "''")))
            .collect();
        match (quoted.as_slice(), self.negated) {
            ([one], false) => write!(f, " = {one}"),
            ([one], true) => write!(f, " <> {one}"),
            (many, false) => write!(f, " IN ({})", many.join(", ")),
            (many, true) => write!(f, " NOT IN ({})", many.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::LargeStringArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, in_list, lit};
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

    /// `IN` and `NOT IN` lists, against DataFusion's own.
    fn compare_lists_with_datafusion(
        array: ArrayRef,
        literals: &[String],
    ) -> Result<(), TestCaseError> {
        let schema = Schema::new(vec![Field::new("v", array.data_type().clone(), true)]);
        let list: Vec<Arc<dyn PhysicalExpr>> = literals
            .iter()
            .map(|l| match array.data_type() {
                DataType::LargeUtf8 => lit(ScalarValue::LargeUtf8(Some(l.clone()))),
                _ => lit(ScalarValue::Utf8(Some(l.clone()))),
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![array]).unwrap();
        for negated in [false, true] {
            let v = col("v", &schema).unwrap();
            let plain = in_list(v, list.clone(), &negated, &schema).unwrap();
            let faster = with_faster_forms(plain.clone(), &schema).unwrap();
            prop_assert!(faster.downcast_ref::<EqLiteral>().is_some(), "{}", plain);
            prop_assert_eq!(result(&faster, &batch), result(&plain, &batch), "{}", plain);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn gives_datafusions_result_for_lists_of_literals(
            (literals, values, skip) in proptest::collection::vec("[a-z:/.]{0,12}", 1..6)
                .prop_flat_map(|literals| {
                    let value = prop_oneof![
                        proptest::sample::select(literals.clone()).prop_flat_map(near),
                        "[a-z:/.]{0,12}".prop_map(Some),
                    ];
                    (Just(literals), proptest::collection::vec(value, 0..40), 0usize..3)
                })
        ) {
            let skip = skip.min(values.len());
            let small = StringArray::from(values.clone()).slice(skip, values.len() - skip);
            compare_lists_with_datafusion(Arc::new(small), &literals)?;
            let large = LargeStringArray::from(values.clone());
            compare_lists_with_datafusion(Arc::new(large), &literals)?;
        }
    }

    /// Lists DataFusion keeps: longer than [`MAX_LITERALS`], holding a
    /// NULL, or of another type.
    #[test]
    fn long_lists_lists_with_null_and_other_types_are_left_to_datafusion() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]);
        let s = || col("s", &schema).unwrap();
        let long: Vec<Arc<dyn PhysicalExpr>> =
            (0..=MAX_LITERALS).map(|i| lit(format!("v{i}"))).collect();
        let short: Vec<Arc<dyn PhysicalExpr>> = long[..MAX_LITERALS].to_vec();
        let with_null = vec![lit("a"), lit(ScalarValue::Utf8(None))];
        let numbers = vec![lit(1i64), lit(2i64)];
        let kept = [
            in_list(s(), long, &false, &schema).unwrap(),
            in_list(s(), with_null, &false, &schema).unwrap(),
            in_list(col("n", &schema).unwrap(), numbers, &false, &schema).unwrap(),
        ];
        for plain in kept {
            let faster = with_faster_forms(plain.clone(), &schema).unwrap();
            assert!(faster.downcast_ref::<EqLiteral>().is_none(), "{plain}");
        }
        let plain = in_list(s(), short, &true, &schema).unwrap();
        let faster = with_faster_forms(plain.clone(), &schema).unwrap();
        assert!(faster.downcast_ref::<EqLiteral>().is_some(), "{plain}");
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
