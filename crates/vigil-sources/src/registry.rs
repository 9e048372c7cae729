//! The registry of sources: everything Vigil knows about each kind of
//! event stream, one [`SourceSpec`] per source. The service subscribes to
//! a topic per registered source, the decoder and the rule planner look a
//! source's table up here, and the demo produces its sample.
//!
//! Adding a source is one folder (`src/<name>/`: its `SPEC`, schema and
//! decoder) and one line in the `registry!` list of `lib.rs`; see
//! docs/sources.md.

use std::fmt;

use arrow::datatypes::SchemaRef;
use vigil_model::source::SourceKind;

use crate::decode::RowSink;

/// What Vigil knows about one source.
pub struct SourceSpec {
    /// The source, named by its SQL table.
    pub kind: SourceKind,
    /// What the events are, in a line (for `--help` and errors).
    pub about: &'static str,
    /// The Kafka topic read when `topics.<name>` is not configured. The
    /// demo's sample is `samples/<default_topic>.jsonl`.
    pub default_topic: &'static str,
    /// One valid message holding one event: the registry's tests decode
    /// it, and the decoder fuzz tests mutate it.
    pub example: &'static str,
    /// The table's declared Arrow schema (docs/schemas.md).
    pub schema: fn() -> SchemaRef,
    /// The table's text columns holding raw JSON: values the decoder's
    /// parser accepted whole, kept as they arrived ([`crate::json`]).
    pub json_columns: &'static [&'static str],
    /// An empty row sink for a batch of `messages` messages of `bytes`
    /// bytes in all: the decoder of this source.
    pub rows: fn(messages: usize, bytes: usize) -> Box<dyn RowSink>,
}

/// Every registered source, in registry order.
pub fn specs() -> impl Iterator<Item = &'static SourceSpec> {
    crate::SOURCES.iter().copied()
}

/// Every registered source's kind, in registry order.
pub fn kinds() -> impl Iterator<Item = SourceKind> {
    specs().map(|s| s.kind)
}

/// The spec of `kind`, if it is registered.
pub fn spec(kind: SourceKind) -> Option<&'static SourceSpec> {
    specs().find(|s| s.kind == kind)
}

/// The spec of a kind that came from the registry (or was checked with
/// [`resolve`]). Panics otherwise: that is a bug, not bad input.
pub fn expect(kind: SourceKind) -> &'static SourceSpec {
    spec(kind).unwrap_or_else(|| panic!("source {kind} is not registered"))
}

/// The registered source named `name`, or why there is none.
pub fn resolve(name: &str) -> Result<SourceKind, UnknownSource> {
    specs()
        .find(|s| s.kind.table_name() == name)
        .map(|s| s.kind)
        .ok_or_else(|| UnknownSource(name.to_string()))
}

/// Check that `kind` is a registered source.
pub fn check(kind: SourceKind) -> Result<SourceKind, UnknownSource> {
    resolve(kind.table_name())
}

/// A source name the registry does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSource(pub String);

impl fmt::Display for UnknownSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = kinds().map(SourceKind::table_name).collect();
        write!(
            f,
            "unknown source {:?}: expected one of {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownSource {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, DecodeLimits};
    use crate::schema::SourceSchema;
    use arrow::array::AsArray;
    use vigil_model::source::{Origin, RawMessage};

    #[test]
    fn every_source_decodes_its_example_into_one_row_of_its_schema() {
        let mut names = std::collections::BTreeSet::new();
        for spec in specs() {
            assert!(names.insert(spec.kind), "{} registered twice", spec.kind);
            let message = RawMessage {
                source: spec.kind,
                payload: spec.example.as_bytes().to_vec(),
                origin: Origin::File {
                    path: "example".into(),
                    line: 1,
                },
                timestamp_ms: None,
                state_only: false,
            };
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            let decoded = decode(spec.kind, &[message], DecodeLimits::default(), now_ns);
            assert!(
                decoded.failures.is_empty(),
                "{}: {:?}",
                spec.kind,
                decoded.failures
            );
            assert_eq!(decoded.batch.num_rows(), 1, "{}", spec.kind);
            assert_eq!(decoded.batch.schema(), spec.kind.schema());
            for name in spec.json_columns {
                let column = decoded.batch.column_by_name(name);
                let text = column
                    .and_then(|c| c.as_string_opt::<i32>())
                    .unwrap_or_else(|| panic!("{}: no text column {name}", spec.kind));
                if let Some(json) = text.iter().next().flatten() {
                    let parsed = serde_json::from_str::<serde::de::IgnoredAny>(json);
                    assert!(parsed.is_ok(), "{}.{name}: {json}", spec.kind);
                }
            }
            assert_eq!(resolve(spec.kind.table_name()), Ok(spec.kind));
        }
        assert_eq!(names.len(), 3, "the three built-in sources");
    }

    #[test]
    fn an_unknown_source_names_the_known_ones() {
        let e = resolve("dns").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown source \"dns\": expected one of k8s_audit, falco, tetragon"
        );
    }
}
