//! `lookup(table, column, key)`: the value of `column` in the row of a
//! lookup table (`rules::definitions::lookups`) whose key is `key`, or NULL
//! when there is no such row (or `key` is NULL). The table and column are
//! string literals, checked when the rule is planned.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::rules::definitions::Lookup;

#[derive(Debug)]
pub struct LookupFn {
    tables: Arc<BTreeMap<String, Lookup>>,
    signature: Signature,
}

impl LookupFn {
    pub fn new(tables: Arc<BTreeMap<String, Lookup>>) -> Self {
        LookupFn {
            tables,
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

impl PartialEq for LookupFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tables, &other.tables)
    }
}
impl Eq for LookupFn {}
impl std::hash::Hash for LookupFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.tables) as usize).hash(state)
    }
}

fn literal<'a>(v: &'a ColumnarValue, what: &str) -> Result<&'a str> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => Ok(s),
        _ => exec_err!("lookup: the {what} must be a string literal"),
    }
}

impl ScalarUDFImpl for LookupFn {
    fn name(&self) -> &str {
        "lookup"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let table = literal(&args.args[0], "table name")?;
        let column = literal(&args.args[1], "column name")?;
        let Some(lookup) = self.tables.get(table) else {
            return exec_err!("lookup: unknown lookup table {table:?}");
        };
        let Some(index) = lookup.value_column(column) else {
            return exec_err!("lookup: table {table:?} has no value column {column:?}");
        };
        let (keys, scalar) = match &args.args[2] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        let keys = keys.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(keys.len(), 0);
        for key in keys.iter() {
            out.append_option(key.and_then(|k| lookup.rows.get(k)).map(|row| &row[index]));
        }
        let out: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}
