//! `lookup(table, column, key)`: the value of `column` in the row of a
//! lookup table whose key is `key`, or NULL when there is no such row (or
//! `key` is NULL). The table and column are string literals, checked when
//! the rule is planned.
//!
//! The tables are the engine's (`vigil_engine::rules::definitions::Lookup`,
//! read from a rule pack's `lookups/*.csv`); the function reads them
//! through [`LookupTable`], so this crate does not depend on the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// A lookup table as `lookup(...)` reads it: rows of value columns by key.
pub trait LookupTable: std::fmt::Debug + Send + Sync + 'static {
    /// The index of a value column (not the key) in a row's values; `None`
    /// when the table has no such value column.
    fn value_column(&self, column: &str) -> Option<usize>;
    /// The values of the row whose key is `key`, in value-column order.
    fn row(&self, key: &str) -> Option<&[String]>;
}

/// `lookup(table, column, key)` over one rule set's tables, by name.
#[derive(Debug)]
pub struct LookupFn<T> {
    tables: Arc<BTreeMap<String, T>>,
    signature: Signature,
}

impl<T: LookupTable> LookupFn<T> {
    pub fn new(tables: Arc<BTreeMap<String, T>>) -> Self {
        LookupFn {
            tables,
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

impl<T> PartialEq for LookupFn<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tables, &other.tables)
    }
}
impl<T> Eq for LookupFn<T> {}
impl<T> std::hash::Hash for LookupFn<T> {
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

impl<T: LookupTable> ScalarUDFImpl for LookupFn<T> {
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
            out.append_option(key.and_then(|k| lookup.row(k)).map(|row| &row[index]));
        }
        let out: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}
