//! `tetragon`: Cilium Tetragon JSON events (process_exec, process_exit,
//! process_kprobe, ...).

mod decode;
pub mod schema;

use vigil_model::source::SourceKind;

use crate::SourceSpec;

/// The registry entry.
pub static SPEC: SourceSpec = SourceSpec {
    kind: SourceKind::Tetragon,
    about: "Cilium Tetragon JSON events",
    default_topic: "tetragon",
    example: r#"{"process_exec":{"process":{"exec_id":"e","pid":1,"binary":"/bin/sh","pod":{"namespace":"n","container":{"image":{"name":"i"}}}}},"node_name":"n","time":"2025-06-01T00:00:00Z"}"#,
    schema: schema::tetragon,
    json_columns: &["args", "payload"],
    rows: |messages, _| Box::new(decode::TetragonRows::with_capacity(messages)),
};
