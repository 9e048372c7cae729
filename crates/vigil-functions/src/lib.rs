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
//! * [`network`]: `cidr_contains`, `ip_is_private`, `ip_is_public`.
//! * [`images`]: `image_registry`, `image_repository`.
//! * [`paths`]: the function `path_clean`.
//! * [`lists`]: `glob_match`, `glob_match_any`, `glob_match_all` (what the
//!   list functions of rules expand to).
//! * [`lookup`]: `lookup(table, column, key)` over a rule set's lookup
//!   tables (registered by the engine with that set's tables).
//! * [`distinct`]: DataFusion's `array_agg` and `count`, registered again
//!   with a groups accumulator for `DISTINCT`.
//!
//! Invalid JSON input yields NULL (the event is not matched by that
//! predicate); an invalid path is a planning-time error in the rule.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanBuilder, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::{array_agg::array_agg_udaf, count::count_udaf};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use serde_json::Value;
use serde_json_path::JsonPath;

pub mod distinct;
mod error;
pub mod images;
pub mod lists;
pub mod lookup;
pub mod network;
pub mod paths;

pub use error::Error;

/// Register every function rules may use.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    register_with(registry, true)
}

/// Register every function; `share_parsed_json: false` makes the JSONPath
/// functions parse every document themselves (how they worked before the
/// cache; the benchmarks measure both).
pub fn register_with(registry: &mut dyn FunctionRegistry, share_parsed_json: bool) -> Result<()> {
    datafusion_functions_json::register_all(registry)?;
    // DataFusion's own, with a groups accumulator for DISTINCT ([`distinct`]).
    for (inner, output) in [
        (array_agg_udaf(), distinct::Distinct::List),
        (count_udaf(), distinct::Distinct::Count),
    ] {
        registry.register_udaf(Arc::new(distinct::with_distinct_groups(inner, output)))?;
    }
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(
        JsonPathFn::values().shared(share_parsed_json),
    )))?;
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(
        JsonPathFn::exists().shared(share_parsed_json),
    )))?;
    registry.register_udf(Arc::new(
        ScalarUDF::new_from_impl(windows::TumbleEnd::new()),
    ))?;
    registry.register_udf(Arc::new(ScalarUDF::new_from_impl(windows::HopEnds::new())))?;
    for udf in [
        ScalarUDF::new_from_impl(network::CidrContains::default()),
        ScalarUDF::new_from_impl(network::IpClass::private()),
        ScalarUDF::new_from_impl(network::IpClass::public()),
        ScalarUDF::new_from_impl(images::ImagePart::registry()),
        ScalarUDF::new_from_impl(images::ImagePart::repository()),
        ScalarUDF::new_from_impl(paths::PathClean::default()),
        ScalarUDF::new_from_impl(lists::GlobMatch::one()),
        ScalarUDF::new_from_impl(lists::GlobMatch::any()),
        ScalarUDF::new_from_impl(lists::GlobMatch::all()),
    ] {
        registry.register_udf(Arc::new(udf))?;
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonPathFn {
    name: &'static str,
    exists: bool,
    /// Parse through the thread's shared cache ([`parsed`]).
    shared: bool,
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
        JsonPathFn {
            name,
            exists,
            shared: true,
            signature,
        }
    }
    fn shared(self, shared: bool) -> Self {
        JsonPathFn { shared, ..self }
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
        Ok(if self.exists {
            DataType::Boolean
        } else {
            list_type()
        })
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
        let input = input
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .expect("cast to Utf8");
        let out: ArrayRef = if self.exists {
            let mut b = BooleanBuilder::with_capacity(input.len());
            for i in 0..input.len() {
                if input.is_null(i) {
                    b.append_null();
                    continue;
                }
                match parsed::with_value(input.value(i), self.shared, |v| !path.query(v).is_empty())
                {
                    Some(found) => b.append_value(found),
                    None => b.append_null(),
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
                let found = parsed::with_value(input.value(i), self.shared, |v| {
                    for node in path.query(v).all() {
                        b.values().append_value(value_text(node));
                    }
                });
                b.append(found.is_some());
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

/// Parsed JSON documents, shared by the JSONPath calls of one thread.
///
/// Several rules ask JSONPath questions of the same `request_object` (the
/// pod-spec rules all look at every container), each through its own call
/// on the same micro-batch: parsing the document once instead of once per
/// rule is most of their cost. Entries are keyed by the document's text
/// (a hash, then a full comparison, so a collision is only a miss).
///
/// The cache keeps a document while batches keep asking about it:
/// [`parsed::next_batch`] (called by the rule engine before it evaluates a
/// batch) lets go, at each thread's next use, of the documents held from
/// before that the batch just ended did not ask about. So a document
/// repeated batch after batch (the same manifest applied again and again,
/// as CI and GitOps controllers do) is parsed once, and a unique one (most
/// are: uids, resource versions, timestamps) is held for at most two
/// batches. Keeping every document until a size bound made the cache grow
/// with every distinct document: about 0.6 bytes per event of the
/// generated stream, which was the soak's slow RSS rise
/// (docs/benchmarks.md, seventh round).
/// The cache also starts over when a batch's documents reach
/// [`parsed::MAX_BYTES`] of text.
pub mod parsed {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::Value;

    /// Text of the documents held for one batch, at most (two batches are
    /// held). Their parsed form is several times larger (a `Value` per
    /// node), so this bounds memory at a few times this per thread.
    pub const MAX_BYTES: usize = 8 * 1024 * 1024;

    /// The batch being evaluated, process-wide. A cache filled under an
    /// older number is stale. Several engines in one process (a reload, the
    /// correlation leader beside the per-event stage) only make caches
    /// start over more often: entries are keyed by the full text, so a
    /// cache is never wrong, only colder.
    static BATCH: AtomicU64 = AtomicU64::new(0);

    /// A new batch begins: at its next use, every thread's cache lets go
    /// of the documents held from before that the batch just ended did not
    /// ask about.
    pub fn next_batch() {
        BATCH.fetch_add(1, Ordering::Relaxed);
    }

    type Entries = HashMap<u64, (Box<str>, Option<Value>)>;

    #[derive(Default)]
    struct Cache {
        hasher: RandomState,
        /// Documents asked about in batch `batch`.
        current: Entries,
        /// Documents asked about in the batch before, and not since.
        previous: Entries,
        /// Text held in `current`.
        bytes: usize,
        /// The [`BATCH`] of `current`.
        batch: u64,
    }

    impl Cache {
        fn clear(&mut self) {
            self.current.clear();
            self.previous.clear();
            self.bytes = 0;
        }

        /// `current` is of batch `batch` from here on.
        fn begin(&mut self, batch: u64) {
            if self.batch != batch {
                self.previous = std::mem::take(&mut self.current);
                self.bytes = 0;
                self.batch = batch;
            }
        }
    }

    /// Documents this thread's cache holds (what the engine's tests count
    /// to see that a batch lets go of the documents it did not ask about).
    pub fn cached_documents() -> usize {
        CACHE.with(|cache| {
            let cache = cache.borrow();
            cache.current.len() + cache.previous.len()
        })
    }

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    }

    /// `f` of the parsed `text`; `None` if `text` is not JSON. Without
    /// `shared`, parse `text` and do not keep it.
    pub fn with_value<R>(text: &str, shared: bool, f: impl FnOnce(&Value) -> R) -> Option<R> {
        if !shared {
            return serde_json::from_str::<Value>(text).ok().as_ref().map(f);
        }
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.begin(BATCH.load(Ordering::Relaxed));
            let key = cache.hasher.hash_one(text);
            if let Some((held, value)) = cache.current.get(&key) {
                if held.as_ref() == text {
                    return value.as_ref().map(f);
                }
            }
            // Asked about again: keep it for this batch too.
            let entry = match cache.previous.remove(&key) {
                Some(entry) if entry.0.as_ref() == text => entry,
                _ => (text.into(), serde_json::from_str::<Value>(text).ok()),
            };
            let result = entry.1.as_ref().map(f);
            if cache.bytes + text.len() > MAX_BYTES {
                cache.clear();
            }
            cache.bytes += text.len();
            if let Some((old, _)) = cache.current.insert(key, entry) {
                cache.bytes -= old.len();
            }
            result
        })
    }
}

/// `tumble_end(ts, interval)`: end of the tumbling window of length
/// `interval` (aligned to the Unix epoch) that contains `ts`.
/// `hop_ends(ts, size, slide)`: ends of every hopping window of length
/// `size`, advancing by `slide`, that contains `ts` (a list: `unnest` it).
pub(crate) mod windows {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, AsArray, ListBuilder, TimestampNanosecondBuilder};
    use datafusion::arrow::datatypes::{
        DataType, Field, IntervalMonthDayNano, TimeUnit, TimestampNanosecondType,
    };
    use datafusion::common::{exec_err, Result, ScalarValue};
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
    };

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
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                }
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
            HopEnds {
                signature: Signature::any(3, Volatility::Immutable),
            }
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
            Ok(DataType::List(Arc::new(Field::new(
                "item",
                ts_type(),
                true,
            ))))
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
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(out),
            })
        }
    }
}

#[cfg(test)]
mod parsed_cache_tests {
    use super::parsed::{cached_documents, next_batch, with_value, MAX_BYTES};

    /// A document no batch asks about any more is let go: the cache used
    /// to keep every distinct document until it held `MAX_BYTES` of text,
    /// a slow growth over a long stream. Other tests may start batches
    /// concurrently (the counter is process-wide); that only lets go
    /// sooner, and the counts below hold either way.
    #[test]
    fn documents_no_batch_asks_about_are_let_go() {
        let once = r#"{"doc":"once"}"#;
        let again = r#"{"doc":"again"}"#;
        let ask = |doc: &str| with_value(doc, true, |v| v["doc"].as_str().map(str::to_owned));
        assert_eq!(ask(once), Some(Some("once".into())));
        assert_eq!(ask(again), Some(Some("again".into())));
        next_batch();
        assert_eq!(ask(again), Some(Some("again".into())));
        next_batch();
        assert_eq!(ask(again), Some(Some("again".into())));
        assert_eq!(ask(again), Some(Some("again".into())));
        assert_eq!(
            cached_documents(),
            1,
            "the document asked about in every batch is held once; the other is gone"
        );
    }

    #[test]
    fn cached_documents_answer_like_fresh_ones() {
        let doc = r#"{"spec":{"containers":[{"image":"a"},{"image":"b"}]}}"#;
        for _ in 0..3 {
            assert_eq!(
                with_value(doc, true, |v| v["spec"]["containers"][1]["image"].clone()),
                Some("b".into())
            );
        }
        assert_eq!(with_value("{not json", true, |_| ()), None);
        assert_eq!(with_value("{not json", true, |_| ()), None);
        // Past the bound the cache starts over; answers do not change.
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BYTES / 2));
        for _ in 0..3 {
            assert_eq!(
                with_value(&big, true, |v| v["pad"].as_str().map(str::len)),
                Some(Some(MAX_BYTES / 2))
            );
        }
        assert_eq!(
            with_value(doc, true, |v| v["spec"]["containers"][0]["image"].clone()),
            Some("a".into())
        );
    }
}
