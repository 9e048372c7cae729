//! SQL functions available to rules, beyond DataFusion's built-ins.
//!
//! * The JSON functions of `datafusion-functions-json` (`json_get_str`,
//!   `json_get_bool`, `json_get_int`, `json_contains`, `json_get_array`,
//!   `json_length`, the `->` / `->>` operators, ...) for the free-form JSON
//!   columns (`request_object`, `response_object`, `output_fields`, `args`).
//! * `json_path_values(json, path)`: every value matching an RFC 9535
//!   JSONPath, as a list of strings (strings unquoted, other values as JSON
//!   text). It answers "any element of an array" questions, which the
//!   index-based functions above cannot:
//!   `array_has(json_path_values(request_object, '$.spec.containers[*].securityContext.privileged'), 'true')`.
//! * `json_path_exists(json, path)`: whether that JSONPath matches anything.
//!
//! Invalid JSON input yields NULL (the event is not matched by that
//! predicate); an invalid path is a planning-time error in the rule.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanBuilder, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use serde_json::Value;
use serde_json_path::JsonPath;

/// Register every function rules may use.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    datafusion_functions_json::register_all(registry)?;
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(JsonPathFn::values())))?;
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(JsonPathFn::exists())))?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonPathFn {
    name: &'static str,
    exists: bool,
    signature: Signature,
}

impl JsonPathFn {
    fn new(name: &'static str, exists: bool) -> Self {
        let signature = Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8View, DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::LargeUtf8, DataType::Utf8]),
            ],
            Volatility::Immutable,
        );
        JsonPathFn { name, exists, signature }
    }
    fn values() -> Self {
        Self::new("json_path_values", false)
    }
    fn exists() -> Self {
        Self::new("json_path_exists", true)
    }
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// Text of one matched JSON value: strings unquoted, anything else as JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ScalarUDFImpl for JsonPathFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(if self.exists { DataType::Boolean } else { list_type() })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let path = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(p))) => p.clone(),
            _ => return exec_err!("{}: the path must be a string literal", self.name),
        };
        let path = match JsonPath::parse(&path) {
            Ok(p) => p,
            Err(e) => return plan_err!("{}: invalid JSONPath {path:?}: {e}", self.name),
        };
        let (input, scalar) = match &args.args[0] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array()?, true),
        };
        let input = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
        let input = input.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().expect("cast to Utf8");
        let out: ArrayRef = if self.exists {
            let mut b = BooleanBuilder::with_capacity(input.len());
            for i in 0..input.len() {
                if input.is_null(i) {
                    b.append_null();
                    continue;
                }
                match serde_json::from_str::<Value>(input.value(i)) {
                    Ok(v) => b.append_value(!path.query(&v).is_empty()),
                    Err(_) => b.append_null(),
                }
            }
            Arc::new(b.finish())
        } else {
            let mut b = ListBuilder::new(StringBuilder::new());
            for i in 0..input.len() {
                if input.is_null(i) {
                    b.append(false);
                    continue;
                }
                match serde_json::from_str::<Value>(input.value(i)) {
                    Ok(v) => {
                        for node in path.query(&v).all() {
                            b.values().append_value(value_text(node));
                        }
                        b.append(true);
                    }
                    Err(_) => b.append(false),
                }
            }
            Arc::new(b.finish())
        };
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}
