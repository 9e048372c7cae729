//! The `tetragon` table: documented column by column in docs/schemas.md.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use crate::schema::{event_time, row_index, timestamp_type, utf8};

/// `image` of a Tetragon container.
fn image_fields() -> Fields {
    Fields::from(vec![utf8("id"), utf8("name")])
}

/// `container` of a Tetragon pod.
fn container_fields() -> Fields {
    Fields::from(vec![
        utf8("id"),
        utf8("name"),
        Field::new("image", DataType::Struct(image_fields()), true),
        Field::new("start_time", timestamp_type(), true),
        Field::new("pid", DataType::Int64, true),
    ])
}

/// `pod` of a Tetragon process.
fn pod_fields() -> Fields {
    Fields::from(vec![
        utf8("namespace"),
        utf8("name"),
        Field::new("container", DataType::Struct(container_fields()), true),
        utf8("workload"),
        utf8("workload_kind"),
    ])
}

/// `process` / `parent` of a Tetragon event.
pub fn process_fields() -> Fields {
    Fields::from(vec![
        utf8("exec_id"),
        Field::new("pid", DataType::Int64, true),
        Field::new("uid", DataType::Int64, true),
        utf8("cwd"),
        utf8("binary"),
        utf8("arguments"),
        utf8("flags"),
        Field::new("start_time", timestamp_type(), true),
        Field::new("auid", DataType::Int64, true),
        utf8("parent_exec_id"),
        Field::new("pod", DataType::Struct(pod_fields()), true),
        utf8("docker"),
    ])
}

static TETRAGON: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        event_time(),
        utf8("event_type"),
        utf8("node_name"),
        Field::new("process", DataType::Struct(process_fields()), true),
        Field::new("parent", DataType::Struct(process_fields()), true),
        utf8("function_name"),
        utf8("policy_name"),
        utf8("action"),
        utf8("args"),
        utf8("source_ip"),
        Field::new("source_port", DataType::Int32, true),
        utf8("destination_ip"),
        Field::new("destination_port", DataType::Int32, true),
        utf8("protocol"),
        utf8("payload"),
        row_index(),
    ]))
});

/// Table `tetragon`: one row per Tetragon event (process_exec, process_exit,
/// process_kprobe, process_connect, ...).
pub fn tetragon() -> SchemaRef {
    TETRAGON.clone()
}

