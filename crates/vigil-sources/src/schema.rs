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

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Name of the internal row-index column present in every source table.
pub const ROW_COLUMN: &str = "__row";

/// Arrow type of every event-time column: nanoseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn utf8_list(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )
}

fn event_time() -> Field {
    Field::new("event_time", timestamp_type(), false)
}

fn row_index() -> Field {
    Field::new(ROW_COLUMN, DataType::UInt32, false)
}

/// `user` / `impersonated_user` of an audit event (authentication.k8s.io UserInfo).
pub fn user_info_fields() -> Fields {
    Fields::from(vec![utf8("username"), utf8("uid"), utf8_list("groups")])
}

/// `object_ref` of an audit event (audit.k8s.io ObjectReference).
pub fn object_ref_fields() -> Fields {
    Fields::from(vec![
        utf8("resource"),
        utf8("subresource"),
        utf8("namespace"),
        utf8("name"),
        utf8("api_group"),
        utf8("api_version"),
        utf8("uid"),
    ])
}

/// `response_status` of an audit event (meta/v1 Status, the parts rules use).
pub fn response_status_fields() -> Fields {
    Fields::from(vec![
        Field::new("code", DataType::Int32, true),
        utf8("status"),
        utf8("reason"),
        utf8("message"),
    ])
}

/// Map type of `annotations`: string keys to string values.
pub fn annotations_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn bool_field(name: &str) -> Field {
    Field::new(name, DataType::Boolean, true)
}

/// `pod_spec` of an audit event: what a workload request object says about
/// its pods (see `decode::pod_spec` for the exact semantics of each field).
pub fn pod_spec_fields() -> Fields {
    Fields::from(vec![
        utf8_list("images"),
        bool_field("privileged"),
        bool_field("run_as_root"),
        bool_field("run_as_non_root_false"),
        utf8_list("added_capabilities"),
        bool_field("host_network"),
        bool_field("host_pid"),
        bool_field("host_ipc"),
        utf8_list("host_paths"),
    ])
}

static K8S_AUDIT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        event_time(),
        utf8("audit_id"),
        utf8("api_version"),
        utf8("level"),
        utf8("stage"),
        utf8("verb"),
        utf8("request_uri"),
        Field::new("user_info", DataType::Struct(user_info_fields()), true),
        Field::new(
            "impersonated_user",
            DataType::Struct(user_info_fields()),
            true,
        ),
        utf8_list("source_ips"),
        utf8("user_agent"),
        Field::new("object_ref", DataType::Struct(object_ref_fields()), true),
        Field::new(
            "response_status",
            DataType::Struct(response_status_fields()),
            true,
        ),
        Field::new("request_received_at", timestamp_type(), true),
        Field::new("stage_at", timestamp_type(), true),
        Field::new("annotations", annotations_type(), true),
        utf8("request_object"),
        utf8("response_object"),
        Field::new("pod_spec", DataType::Struct(pod_spec_fields()), true),
        row_index(),
    ]))
});

/// Table `k8s_audit`: one row per audit.k8s.io Event.
pub fn k8s_audit() -> SchemaRef {
    K8S_AUDIT.clone()
}

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

/// The declared Arrow schema of a source's table.
pub trait SourceSchema {
    fn schema(self) -> SchemaRef;
}

impl SourceSchema for vigil_model::source::SourceKind {
    fn schema(self) -> SchemaRef {
        use vigil_model::source::SourceKind;
        match self {
            SourceKind::K8sAudit => k8s_audit(),
            SourceKind::Falco => falco(),
            SourceKind::Tetragon => tetragon(),
        }
    }
}
