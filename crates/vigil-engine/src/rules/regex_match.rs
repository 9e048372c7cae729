//! `x ~ 'pattern'` with the pattern compiled once, when the rule is.
//!
//! DataFusion evaluates a regular-expression match against a literal
//! pattern (`~`, `~*`, `!~`, `!~*`, and `regexp_like`, which its simplifier
//! turns into `~`) with Arrow's `regexp_is_match_scalar`, which compiles
//! the pattern at every call: once per rule and batch. [`RegexMatch`]
//! holds the compiled expression and gives the same result: the pattern
//! compiled by the same `regex` crate with the same flag prefix (`(?i)`
//! for the case-insensitive operators), a match anywhere in the value,
//! NULL where the value is NULL, negated by `!~`.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, StringArrayType,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;
use regex::Regex;

/// Whether `value` matches a regular expression compiled once, or does
/// not (`negated`); NULL where `value` is NULL.
#[derive(Debug)]
pub struct RegexMatch {
    value: Arc<dyn PhysicalExpr>,
    /// The pattern as written in the rule, without the flag prefix.
    pattern: String,
    case_insensitive: bool,
    negated: bool,
    regex: Regex,
}

impl PartialEq for RegexMatch {
    fn eq(&self, other: &Self) -> bool {
        self.value.eq(&other.value)
            && self.pattern == other.pattern
            && self.case_insensitive == other.case_insensitive
            && self.negated == other.negated
    }
}

impl Eq for RegexMatch {}

impl Hash for RegexMatch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
        self.pattern.hash(state);
        self.case_insensitive.hash(state);
        self.negated.hash(state);
    }
}

impl RegexMatch {
    /// The `RegexMatch` equal to `binary`, if it matches a string value
    /// against a literal pattern that compiles. A pattern that does not
    /// compile is left to DataFusion, which reports it when evaluated.
    pub fn of_binary(binary: &BinaryExpr, schema: &Schema) -> Option<RegexMatch> {
        let (negated, case_insensitive) = match binary.op() {
            Operator::RegexMatch => (false, false),
            Operator::RegexIMatch => (false, true),
            Operator::RegexNotMatch => (true, false),
            Operator::RegexNotIMatch => (true, true),
            _ => return None,
        };
        let value_type = binary.left().data_type(schema).ok()?;
        if !matches!(
            value_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return None;
        }
        let literal = binary.right().downcast_ref::<Literal>()?;
        let pattern = literal.value().try_as_str()??.to_string();
        RegexMatch::new(
            Arc::clone(binary.left()),
            pattern,
            case_insensitive,
            negated,
        )
        .ok()
    }

    fn new(
        value: Arc<dyn PhysicalExpr>,
        pattern: String,
        case_insensitive: bool,
        negated: bool,
    ) -> std::result::Result<RegexMatch, regex::Error> {
        // As Arrow's `regexp_is_match_scalar` builds it.
        let full = if case_insensitive {
            format!("(?i){pattern}")
        } else {
            pattern.clone()
        };
        Ok(RegexMatch {
            value,
            regex: Regex::new(&full)?,
            pattern,
            case_insensitive,
            negated,
        })
    }

    fn operator(&self) -> &'static str {
        match (self.negated, self.case_insensitive) {
            (false, false) => "~",
            (false, true) => "~*",
            (true, false) => "!~",
            (true, true) => "!~*",
        }
    }

    fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value) != self.negated
    }

    fn evaluate_strings<'a>(&self, array: impl StringArrayType<'a>) -> BooleanArray {
        let mut values = BooleanBufferBuilder::new(array.len());
        for i in 0..array.len() {
            values.append(array.is_valid(i) && self.matches(array.value(i)));
        }
        let values: BooleanBuffer = values.finish();
        BooleanArray::new(values, array.logical_nulls())
    }
}

impl fmt::Display for RegexMatch {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {} {:?}", self.value, self.operator(), self.pattern)
    }
}

impl PhysicalExpr for RegexMatch {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.value.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array: ArrayRef = match self.value.evaluate(batch)? {
            ColumnarValue::Scalar(s) => {
                let matched = s.try_as_str().flatten().map(|v| self.matches(v));
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(matched)));
            }
            ColumnarValue::Array(a) => a,
        };
        let matched = match array.data_type() {
            DataType::Utf8 => self.evaluate_strings(array.as_string::<i32>()),
            DataType::LargeUtf8 => self.evaluate_strings(array.as_string::<i64>()),
            DataType::Utf8View => self.evaluate_strings(array.as_string_view()),
            other => return internal_err!("{self}: a regular expression cannot match {other}"),
        };
        Ok(ColumnarValue::Array(Arc::new(matched)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.value]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(RegexMatch {
            value: children.swap_remove(0),
            pattern: self.pattern.clone(),
            case_insensitive: self.case_insensitive,
            negated: self.negated,
            regex: self.regex.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt_sql(f)?;
        let pattern = self.pattern.replace('\'', "''");
        write!(f, " {} '{pattern}'", self.operator())
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::conjunction::with_faster_forms;
    use datafusion::arrow::array::{LargeStringArray, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    use super::*;

    const VALUES: [Option<&str>; 6] = [
        Some("system:serviceaccount:kube-system:deployment-controller"),
        None,
        Some("SYSTEM:NODE:worker-1"),
        Some(""),
        Some("alice"),
        None,
    ];

    fn batches() -> Vec<RecordBatch> {
        let arrays: [ArrayRef; 3] = [
            Arc::new(StringArray::from(VALUES.to_vec())),
            Arc::new(LargeStringArray::from(VALUES.to_vec())),
            Arc::new(StringViewArray::from(VALUES.to_vec())),
        ];
        arrays
            .into_iter()
            .map(|a| {
                let schema = Schema::new(vec![Field::new("user", a.data_type().clone(), true)]);
                RecordBatch::try_new(Arc::new(schema), vec![a]).unwrap()
            })
            .collect()
    }

    fn result(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> BooleanArray {
        let array = expr
            .evaluate(batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        array.as_boolean().clone()
    }

    #[test]
    fn gives_datafusions_result_for_every_operator_and_string_type() {
        let operators = [
            Operator::RegexMatch,
            Operator::RegexIMatch,
            Operator::RegexNotMatch,
            Operator::RegexNotIMatch,
        ];
        for batch in batches() {
            let schema = batch.schema();
            for op in operators {
                for pattern in ["^system:(node|serviceaccount):", "worker-[0-9]$", ""] {
                    let plain =
                        binary(col("user", &schema).unwrap(), op, lit(pattern), &schema).unwrap();
                    let compiled = with_faster_forms(plain.clone(), &schema).unwrap();
                    assert!(compiled.downcast_ref::<RegexMatch>().is_some(), "{plain}");
                    assert_eq!(
                        result(&compiled, &batch),
                        result(&plain, &batch),
                        "{plain} on {}",
                        schema.field(0).data_type()
                    );
                }
            }
        }
    }

    #[test]
    fn a_pattern_that_does_not_compile_is_left_to_datafusion() {
        let batch = &batches()[0];
        let schema = batch.schema();
        let plain = binary(
            col("user", &schema).unwrap(),
            Operator::RegexMatch,
            lit("(unclosed"),
            &schema,
        )
        .unwrap();
        let kept = with_faster_forms(plain, &schema).unwrap();
        assert!(kept.downcast_ref::<BinaryExpr>().is_some());
        assert!(kept.evaluate(batch).is_err());
    }

    #[test]
    fn a_scalar_value_is_matched_once() {
        let batch = &batches()[0];
        let schema = batch.schema();
        for (value, expected) in [(Some("kube-proxy"), Some(true)), (None, None)] {
            let plain = binary(
                lit(ScalarValue::Utf8(value.map(str::to_string))),
                Operator::RegexMatch,
                lit("^kube-"),
                &schema,
            )
            .unwrap();
            let compiled = with_faster_forms(plain, &schema).unwrap();
            match compiled.evaluate(batch).unwrap() {
                ColumnarValue::Scalar(ScalarValue::Boolean(b)) => assert_eq!(b, expected),
                other => panic!("{other:?}"),
            }
        }
    }
}
