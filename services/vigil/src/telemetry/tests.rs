//! Trace ids and settings. The span structure of a batch is tested in
//! `tests/telemetry_spans.rs`, a process of its own (see there why).

use super::*;

#[test]
fn no_trace_id_when_spans_are_not_exported() {
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        let span = tracing::info_span!("batch");
        assert_eq!(trace_id(&span), None);
    });
}

#[test]
fn log_format_auto_follows_the_terminal() {
    assert!(LogFormat::Auto.is_json(false));
    assert!(!LogFormat::Auto.is_json(true));
    assert!(LogFormat::Json.is_json(true));
    assert!(!LogFormat::Text.is_json(false));
}

#[test]
fn endpoint_from_configuration_then_environment() {
    let mut s = TracingSettings::default();
    assert_eq!(s.endpoint(None), None);
    assert_eq!(s.endpoint(Some(" ".into())), None);
    assert_eq!(
        s.endpoint(Some("http://env:4317".into())).as_deref(),
        Some("http://env:4317")
    );
    s.otlp_endpoint = "http://conf:4317".into();
    assert_eq!(
        s.endpoint(Some("http://env:4317".into())).as_deref(),
        Some("http://conf:4317")
    );
}
