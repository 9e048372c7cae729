//! Span structure and trace ids, with an in-process span exporter.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::rules::{parse_rule, RuleEngine};
use crate::source::{Origin, RawMessage, SourceKind};

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

fn rule(id: &str, verb: &str) -> crate::rules::Rule {
    let text = format!(
        "-- id: {id}\n-- title: {id}\n-- severity: high\n-- description: test\n-- mitre: T1609\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\nSELECT verb FROM k8s_audit WHERE verb = '{verb}'\n"
    );
    parse_rule(&PathBuf::from(format!("{id}.sql")), &text).unwrap()
}

fn message(line: u64, verb: &str) -> RawMessage {
    let payload = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a{line}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"u"}},"requestReceivedTimestamp":"2024-05-01T10:00:00Z"}}"#
    );
    RawMessage {
        source: SourceKind::K8sAudit,
        payload: payload.into_bytes(),
        origin: Origin::File {
            path: "t".into(),
            line,
        },
        timestamp_ms: None,
        state_only: false,
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test]
async fn a_batch_trace_has_decode_and_per_rule_child_spans_and_names_its_trace_id() {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    // Tests on other threads register and drop their own dispatchers; a
    // rebuild racing with this one's registration can leave a stale
    // "disabled" interest or max level for these callsites (seen once in
    // CI: no decode span). Recompute them with this dispatcher live.
    tracing::callsite::rebuild_interest_cache();

    let engine = RuleEngine::compile(vec![rule("t.create", "create"), rule("t.delete", "delete")])
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut detector = Detector::new(engine, Default::default(), metrics.clone());
    let span = tracing::info_span!("batch");
    let detections = detector
        .process(vec![
            message(1, "create"),
            message(2, "get"),
            message(3, "create"),
        ])
        .instrument(span.clone())
        .await;
    assert_eq!(detections.alerts.len(), 2);
    let trace = trace_id(&span).expect("a trace id while spans are exported");
    assert_eq!(trace.len(), 32);
    assert!(
        trace.chars().all(|c| c.is_ascii_hexdigit()) && trace != "0".repeat(32),
        "{trace}"
    );
    drop(span);
    provider.force_flush().unwrap();

    let spans = collected.0.lock().unwrap();
    let batch = spans
        .iter()
        .find(|s| s.name == "batch")
        .expect("the batch span was exported");
    assert_eq!(batch.span_context.trace_id().to_string(), trace);
    assert!(spans
        .iter()
        .all(|s| s.span_context.trace_id() == batch.span_context.trace_id()));
    let children: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.parent_span_id == batch.span_context.span_id())
        .collect();
    let decode = children
        .iter()
        .find(|s| s.name == "decode")
        .expect("a decode child span");
    assert_eq!(attribute(decode, "events"), Some(&Value::I64(3)));
    assert_eq!(
        attribute(decode, "source").map(|v| v.as_str().into_owned()),
        Some("k8s_audit".into())
    );
    let mut rules: Vec<(String, Option<&Value>)> = children
        .iter()
        .filter(|s| s.name == "rule")
        .map(|s| {
            (
                attribute(s, "rule").unwrap().as_str().into_owned(),
                attribute(s, "matches"),
            )
        })
        .collect();
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rules,
        vec![
            ("t.create".into(), Some(&Value::I64(2))),
            ("t.delete".into(), Some(&Value::I64(0)))
        ]
    );

    // The same evaluation fed the per-rule metrics.
    let text = metrics.encode();
    assert!(
        text.contains("vigil_rule_matches_total{rule=\"t.create\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("vigil_rule_evaluation_seconds_count{rule=\"t.delete\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vigil_events_decoded_total{source=\"k8s_audit\"} 3"),
        "{text}"
    );
}

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
