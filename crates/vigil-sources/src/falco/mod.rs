//! `falco`: Falco JSON output alerts.

mod decode;
pub mod schema;

use vigil_model::source::SourceKind;

use crate::SourceSpec;

/// The registry entry.
pub static SPEC: SourceSpec = SourceSpec {
    kind: SourceKind::Falco,
    about: "Falco JSON output alerts",
    default_topic: "falco",
    example: r#"{"rule":"Terminal shell","time":"2025-06-01T00:00:00Z","priority":"Warning","output":"o","tags":["a"],"output_fields":{"k":"v"}}"#,
    schema: schema::falco,
    json_columns: &["output_fields"],
    rows: |messages, _| Box::new(decode::FalcoRows::with_capacity(messages)),
};
