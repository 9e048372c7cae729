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
//! * `tumble_end(ts, interval)` and `hop_ends(ts, size, slide)`: window
//!   assignment for correlation rules (see docs/rules.md).
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
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(windows::TumbleEnd::new())))?;
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(windows::HopEnds::new())))?;
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

/// `tumble_end(ts, interval)`: end of the tumbling window of length
/// `interval` (aligned to the Unix epoch) that contains `ts`.
/// `hop_ends(ts, size, slide)`: ends of every hopping window of length
/// `size`, advancing by `slide`, that contains `ts` (a list: `unnest` it).
pub(crate) mod windows {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, AsArray, ListBuilder, TimestampNanosecondBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit, TimestampNanosecondType};
    use datafusion::common::{exec_err, Result, ScalarValue};
    use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

    fn ts_type() -> DataType {
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    }

    fn interval_ns(v: &ColumnarValue, name: &str) -> Result<i64> {
        match v {
            ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano { months: 0, days, nanoseconds }))) => {
                let ns = *days as i64 * 86_400_000_000_000 + nanoseconds;
                if ns <= 0 {
                    return exec_err!("{name}: the interval must be positive");
                }
                Ok(ns)
            }
            _ => exec_err!("{name}: window lengths must be literal intervals without months, e.g. INTERVAL '5 minutes'"),
        }
    }

    fn timestamps(v: &ColumnarValue) -> Result<ArrayRef> {
        let a = v.to_array(1)?;
        Ok(datafusion::arrow::compute::cast(&a, &ts_type())?)
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    pub struct TumbleEnd {
        signature: Signature,
    }

    impl TumbleEnd {
        pub fn new() -> Self {
            TumbleEnd {
                signature: Signature::any(2, Volatility::Immutable),
            }
        }
    }

    impl ScalarUDFImpl for TumbleEnd {
        fn name(&self) -> &str {
            "tumble_end"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> Result<DataType> {
            Ok(ts_type())
        }
        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            let size = interval_ns(&args.args[1], "tumble_end")?;
            let ts = timestamps(&args.args[0])?;
            let out: datafusion::arrow::array::TimestampNanosecondArray = ts
                .as_primitive::<TimestampNanosecondType>()
                .iter()
                .map(|t| t.map(|t| t.div_euclid(size) * size + size))
                .collect();
            let out: ArrayRef = Arc::new(out.with_timezone("UTC"));
            Ok(match &args.args[0] {
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
                ColumnarValue::Array(_) => ColumnarValue::Array(out),
            })
        }
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    pub struct HopEnds {
        signature: Signature,
    }

    impl HopEnds {
        pub fn new() -> Self {
            HopEnds { signature: Signature::any(3, Volatility::Immutable) }
        }
    }

    impl ScalarUDFImpl for HopEnds {
        fn name(&self) -> &str {
            "hop_ends"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> Result<DataType> {
            Ok(DataType::List(Arc::new(Field::new("item", ts_type(), true))))
        }
        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            let size = interval_ns(&args.args[1], "hop_ends")?;
            let slide = interval_ns(&args.args[2], "hop_ends")?;
            if slide > size {
                return exec_err!("hop_ends: the slide must not exceed the window size");
            }
            let ts = timestamps(&args.args[0])?;
            let mut b = ListBuilder::new(TimestampNanosecondBuilder::new().with_timezone("UTC"))
                .with_field(Arc::new(Field::new("item", ts_type(), true)));
            for t in ts.as_primitive::<TimestampNanosecondType>().iter() {
                match t {
                    Some(t) => {
                        // Windows (end - size, end] ... aligned so ends are multiples of slide:
                        // every end e with e - size <= t < e.
                        let mut end = t.div_euclid(slide) * slide + slide;
                        while end - size <= t {
                            b.values().append_value(end);
                            end += slide;
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            let out: ArrayRef = Arc::new(b.finish());
            Ok(match &args.args[0] {
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
                ColumnarValue::Array(_) => ColumnarValue::Array(out),
            })
        }
    }

}
