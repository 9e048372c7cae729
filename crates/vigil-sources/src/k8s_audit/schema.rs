//! The `k8s_audit` table: documented column by column in docs/schemas.md.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use crate::schema::{event_time, row_index, timestamp_type, utf8, utf8_list};

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

