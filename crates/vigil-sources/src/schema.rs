//! Declared Arrow schemas of the source tables rules query.
//!
//! The schemas are data: one function per source returns the exact table
//! layout, and docs/schemas.md documents every column. Decoders
//! (`crate::decode`) must produce batches with exactly these schemas; the
//! rule engine plans every rule against them at load time.
//!
//! Invariants shared by every source table:
//! * `event_time` is never null: it is the event's own time when the event
//!   carries one, otherwise the Kafka message timestamp, otherwise the time
//!   the message was decoded (see docs/schemas.md for each source's order).
//! * the last column is [`ROW_COLUMN`], the row's index in its micro-batch.
//!   It is internal: the engine uses it to tie a rule's output row back to
//!   the event (and Kafka offset) that produced it.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};

/// Name of the internal row-index column present in every source table.
pub const ROW_COLUMN: &str = "__row";

/// Arrow type of every event-time column: nanoseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub(crate) fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

pub(crate) fn utf8_list(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )
}

pub(crate) fn event_time() -> Field {
    Field::new("event_time", timestamp_type(), false)
}

pub(crate) fn row_index() -> Field {
    Field::new(ROW_COLUMN, DataType::UInt32, false)
}

/// The declared Arrow schema of a source's table (from the registry).
pub trait SourceSchema {
    /// Panics for a source the registry does not hold: a `SourceKind`
    /// reaches decoding and planning only after the registry resolved it.
    fn schema(self) -> SchemaRef;
}

impl SourceSchema for vigil_model::source::SourceKind {
    fn schema(self) -> SchemaRef {
        (crate::registry::expect(self).schema)()
    }
}
