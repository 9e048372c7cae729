//! The span structure of one batch, exported through OpenTelemetry to an
//! in-process exporter.
//!
//! A test binary of its own (one process, one test): `tracing` caches per
//! call site whether any dispatcher is interested, and tests on other
//! threads that install and drop their own dispatchers can race that cache
//! into "not interested" for this test's spans (seen in CI as missing
//! `decode` or `rule` spans, even with the cache rebuilt after installing
//! the dispatcher).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::rules::{parse_rule, RuleEngine};
use vigil::source::{Origin, RawMessage, SourceKind};
use vigil::telemetry::trace_id;

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

fn rule(id: &str, verb: &str) -> vigil::rules::Rule {
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
