//! The `falco` table: documented column by column in docs/schemas.md.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{Schema, SchemaRef};

use crate::schema::{event_time, row_index, utf8, utf8_list};

static FALCO: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        event_time(),
        utf8("uuid"),
        utf8("rule"),
        utf8("priority"),
        utf8("source"),
        utf8("hostname"),
        utf8("output"),
        utf8_list("tags"),
        utf8("output_fields"),
        row_index(),
    ]))
});

/// Table `falco`: one row per Falco JSON alert.
pub fn falco() -> SchemaRef {
    FALCO.clone()
}

