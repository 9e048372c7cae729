//! Operating Vigil against a real broker: the metrics it serves after
//! processing known input, its health endpoints, and the trace ids on its
//! alerts when OpenTelemetry export is on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use vigil::alert::Alert;

/// An OTLP/gRPC trace receiver (what a collector is to Vigil) keeping every
/// span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Start a receiver on a free localhost port; returns it and its endpoint.
async fn start_receiver() -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (receiver, endpoint)
}

/// Scrape until `done` holds for the metrics text (the pipeline updates its
/// counters right after the broker acknowledges, which can be just after a
/// reader saw the records), or 60 s passed. Returns the last scrape.
fn scrape_until(addr: std::net::SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_health_and_trace_ids_for_what_it_processed() {
    let addr = broker().addr.clone();
    let topics = Topics::new("ops");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.write_config(dir.path(), &addr);

    let audit = lines(&shared_data("k8s-audit/panther-rule-cases.jsonl"));
    let falco = lines(&shared_data("runtime/falco-alerts-sample.jsonl"));
    let tetragon = lines(&shared_data("runtime/tetragon-book-events.jsonl"));
    let malformed: Vec<Vec<u8>> = vec![b"{not json".to_vec(), b"[1,2".to_vec(), vec![0xff, 0xfe]];
    produce(&addr, &topics.audit, 0, &audit).await;
    produce(&addr, &topics.audit, 0, &malformed).await;
    produce(&addr, &topics.falco, 0, &falco).await;
    produce(&addr, &topics.tetragon, 0, &tetragon).await;

    // Traces on, exported to the in-process receiver.
    let (receiver, endpoint) = start_receiver().await;
    let vigil = Vigil::start_with_env(
        &config,
        dir.path().join("vigil.log"),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    let http = vigil.http_addr();
    assert_eq!(http_get(http, "/healthz"), (200, "ok\n".to_string()));

    // Every batch is done (batch_done is counted after delivery and commit)
    // once the batch sizes add up to everything produced.
    let consumed = (audit.len() + malformed.len() + falco.len() + tetragon.len()) as f64;
    let mut text = scrape_until(http, |t| {
        metric(t, "vigil_batch_messages_sum") == Some(consumed)
    });
    assert_eq!(
        metric(&text, "vigil_batch_messages_sum"),
        Some(consumed),
        "{text}\nlog:\n{}",
        vigil.log_text()
    );
    let mut produced = metric(&text, "vigil_alerts_produced_total").unwrap() as usize;
    assert!(produced >= 10, "{text}");
    // Alerts may still come after the last batch (windows that close when
    // a quiet partition goes idle, on a wall-clock tick): compare topic
    // and counter once both agree. (Alert ids may repeat here: the Panther
    // cases hold the same event more than once.) The counters below are
    // read from the scrape that agreed with the topic.
    let mut alerts_text = Vec::new();
    for _ in 0..5 {
        alerts_text = read_topic(
            &addr,
            &topics.alerts,
            produced,
            Duration::from_secs(60),
            Duration::from_secs(2),
        );
        text = scrape_until(http, |t| {
            metric(t, "vigil_alerts_produced_total").unwrap_or(0.0) >= alerts_text.len() as f64
        });
        produced = metric(&text, "vigil_alerts_produced_total").unwrap() as usize;
        if produced == alerts_text.len() {
            break;
        }
    }
    let alerts: Vec<Alert> = alerts_text
        .iter()
        .map(|(_, a)| serde_json::from_str(a).unwrap())
        .collect();
    assert_eq!(
        alerts.len(),
        produced,
        "the alerts topic and vigil_alerts_produced_total disagree\nlog:\n{}",
        vigil.log_text()
    );
    let dead = read_topic(
        &addr,
        &topics.dead_letter,
        3,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert_eq!(dead.len(), 3);

    // Input, per source.
    let source = |name: &str, s: &str| metric(&text, &format!("{name}{{source=\"{s}\"}}"));
    assert_eq!(
        source("vigil_messages_consumed_total", "k8s_audit"),
        Some((audit.len() + 3) as f64),
        "{text}"
    );
    assert_eq!(
        source("vigil_messages_consumed_total", "falco"),
        Some(falco.len() as f64)
    );
    assert_eq!(
        source("vigil_messages_consumed_total", "tetragon"),
        Some(tetragon.len() as f64)
    );
    assert_eq!(
        source("vigil_decode_failures_total", "k8s_audit"),
        Some(3.0)
    );
    assert_eq!(source("vigil_decode_failures_total", "falco"), Some(0.0));
    assert!(source("vigil_events_decoded_total", "k8s_audit").unwrap() >= audit.len() as f64);
    assert!(
        source("vigil_source_event_time_seconds", "k8s_audit").unwrap() > 1.0e9,
        "{text}"
    );

    // Output: the counters agree with what is on the topics, rule by rule.
    assert_eq!(
        metric(&text, "vigil_alerts_produced_total"),
        Some(alerts.len() as f64)
    );
    let mut by_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    for a in &alerts {
        *by_rule
            .entry((a.rule_id.clone(), a.severity.to_string()))
            .or_default() += 1;
    }
    for ((rule, severity), n) in &by_rule {
        let name = format!("vigil_alerts_total{{rule=\"{rule}\",severity=\"{severity}\"}}");
        assert_eq!(metric(&text, &name), Some(*n as f64), "{name}\n{text}");
    }
    let exec_alerts = alerts
        .iter()
        .filter(|a| a.rule_id == "k8s.pod_exec")
        .count();
    assert!(exec_alerts > 0);
    assert_eq!(
        metric(&text, "vigil_rule_matches_total{rule=\"k8s.pod_exec\"}"),
        Some(exec_alerts as f64)
    );
    assert!(
        metric(
            &text,
            "vigil_rule_evaluation_seconds_count{rule=\"k8s.pod_exec\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(&text, "vigil_dead_letters_total{kind=\"decode_error\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "vigil_dead_letters_produced_total"),
        Some(3.0 + late_events(&text))
    );
    let rules = vigil::rules::RulePack::load_dir(&repo().join("sql-rules"))
        .unwrap()
        .rules
        .len();
    assert_eq!(metric(&text, "vigil_rules_loaded"), Some(rules as f64));
    assert_eq!(metric(&text, "vigil_assigned_partitions"), Some(3.0));
    assert_eq!(metric(&text, "vigil_delivery_paused"), Some(0.0));
    let batches = metric(&text, "vigil_batches_total").unwrap();
    assert!(batches >= 1.0);
    assert_eq!(
        metric(&text, "vigil_batch_duration_seconds_count"),
        Some(batches)
    );
    assert_eq!(metric(&text, "vigil_batch_messages_sum"), Some(consumed));

    // Lag, from librdkafka's statistics (every 5 s): everything was read.
    let lag = format!(
        "vigil_consumer_fetch_lag{{topic=\"{}\",partition=\"0\"}}",
        topics.audit
    );
    let text = scrape_until(http, |t| metric(t, &lag) == Some(0.0));
    assert_eq!(metric(&text, &lag), Some(0.0), "{text}");
    // Committed lag: the committed offset trails by the events open
    // correlation windows retain, so it is only known, not 0.
    let committed = format!(
        "vigil_consumer_committed_lag{{topic=\"{}\",partition=\"0\"}}",
        topics.audit
    );
    let text = scrape_until(http, |t| metric(t, &committed).is_some());
    let committed_lag = metric(&text, &committed).expect("committed lag");
    assert!(
        committed_lag >= 0.0 && committed_lag <= (audit.len() + 3) as f64,
        "{text}"
    );
    // Everything read was committed: nothing pending.
    assert_eq!(
        metric(&text, "vigil_uncommitted_read_age_seconds"),
        Some(0.0)
    );
    assert!(metric(&text, "vigil_last_progress_timestamp_seconds").unwrap() > 1.7e9);

    // Ready: rules loaded, partitions assigned, polling.
    assert_eq!(http_get(http, "/readyz"), (200, "ready\n".to_string()));

    // Every alert names the trace of its batch: at most one trace per batch.
    let mut traces: Vec<&str> = alerts
        .iter()
        .map(|a| a.trace_id.as_deref().expect("trace_id with tracing on"))
        .collect();
    for t in &traces {
        assert!(
            t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit()) && *t != "0".repeat(32),
            "{t}"
        );
    }
    traces.sort();
    traces.dedup();
    assert!(
        traces.len() as f64 <= batches,
        "{} traces for {batches} batches",
        traces.len()
    );
    // The trace id is not part of the alert id.
    let a = &alerts[0];
    let ids: Vec<&str> = a.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(a.alert_id, vigil::alert::alert_id(&a.rule_id, ids));

    // At shutdown Vigil flushes its spans: every alert's trace is a batch
    // trace the receiver got, with the decode, rule, deliver and commit
    // steps as children of the batch span.
    assert!(vigil.terminate().success());
    let spans = receiver.0.lock().unwrap();
    let batch_spans: Vec<&Span> = spans.iter().filter(|s| s.name == "batch").collect();
    assert_eq!(
        batch_spans.len() as f64,
        batches,
        "one exported batch span per batch"
    );
    let exported: BTreeSet<String> = batch_spans.iter().map(|s| hex(&s.trace_id)).collect();
    for t in &traces {
        assert!(exported.contains(*t), "alert trace {t} was not exported");
    }
    let with_alerts = batch_spans
        .iter()
        .find(|s| traces.contains(&hex(&s.trace_id).as_str()))
        .unwrap();
    let children: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.trace_id == with_alerts.trace_id && s.parent_span_id == with_alerts.span_id)
        .map(|s| s.name.as_str())
        .collect();
    for step in ["decode", "rule", "deliver", "commit"] {
        assert!(
            children.contains(step),
            "no {step} span under the batch span: {children:?}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Late-event reports also count as dead letters produced.
fn late_events(text: &str) -> f64 {
    metric(text, "vigil_dead_letters_total{kind=\"late_event\"}").unwrap_or(0.0)
}

/// One per-event rule: alerts on a `probe/` user agent, copying it into
/// the alert (so a huge user agent makes a huge alert). No correlation
/// rule: nothing is retained, so at rest the committed lag is 0.
const PROBE_RULE: &str = "-- id: test.probe_user_agent\n-- title: probe\n-- severity: high\n-- description: test\n-- mitre: T1613\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\n\
SELECT user_agent AS user_agent FROM k8s_audit WHERE user_agent LIKE 'probe/%'\n";

fn probe_event(id: &str, user_agent: &str) -> Vec<u8> {
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": id,
        "stage": "ResponseComplete", "verb": "get", "requestURI": "/api/v1/namespaces/prod/secrets/db",
        "user": {"username": "eve"}, "userAgent": user_agent,
        "objectRef": {"resource": "secrets", "namespace": "prod", "name": "db"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-01-01T00:00:00Z"
    })
    .to_string()
    .into_bytes()
}

/// Scrape until `done` holds or `within` passed; returns the last scrape.
fn scrape_within(
    addr: std::net::SocketAddr,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 23: a delivery stall (an alert larger than the producer accepts,
/// which Vigil does not cut because its own record limit is higher) is
/// visible in the new metrics within about a statistics interval: the
/// committed lag grows, the last progress stands still and the age of
/// what was read and not committed grows, while the fetch lag stays 0
/// (Vigil read everything) and /healthz stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_stall_shows_in_committed_lag_and_progress_not_in_fetch_lag() {
    let addr = broker().addr.clone();
    let topics = Topics::new("stall");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("probe.sql"), PROBE_RULE).unwrap();
    // Statistics every second (Vigil's default is 5 s) keep the test short.
    let extra = "\n[limits]\nmax_record_bytes = 200000\n\n[kafka.properties]\n\"message.max.bytes\" = \"30000\"\n\"statistics.interval.ms\" = \"1000\"\n";
    let config = topics.write_config_with(dir.path(), &addr, &rules, extra);
    let stats_interval = Duration::from_secs(1);

    // Healthy first: three small alerts delivered and committed.
    let before: Vec<Vec<u8>> = (0..3)
        .map(|i| probe_event(&format!("before-{i}"), "probe/1.0"))
        .collect();
    produce(&addr, &topics.audit, 0, &before).await;
    let vigil = Vigil::start_with_env(
        &config,
        dir.path().join("vigil.log"),
        &[("VIGIL__HTTP__READY_MAX_POLL_GAP_MS", "3000")],
    );
    let http = vigil.http_addr();
    let committed = format!(
        "vigil_consumer_committed_lag{{topic=\"{}\",partition=\"0\"}}",
        topics.audit
    );
    let fetch = format!(
        "vigil_consumer_fetch_lag{{topic=\"{}\",partition=\"0\"}}",
        topics.audit
    );
    let text = scrape_within(http, Duration::from_secs(30), |t| {
        metric(t, "vigil_alerts_produced_total") == Some(3.0)
            && metric(t, &committed) == Some(0.0)
            && metric(t, &fetch) == Some(0.0)
    });
    assert_eq!(
        (
            metric(&text, "vigil_alerts_produced_total"),
            metric(&text, &committed),
            metric(&text, &fetch)
        ),
        (Some(3.0), Some(0.0), Some(0.0)),
        "healthy at first\n{text}\nlog:\n{}",
        vigil.log_text()
    );
    assert_eq!(
        metric(&text, "vigil_uncommitted_read_age_seconds"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "vigil_uncommitted_event_age_seconds"),
        Some(0.0)
    );
    let progress = metric(&text, "vigil_last_progress_timestamp_seconds").unwrap();

    // The stall: an alert of about 60 KB, then four ordinary events.
    let huge = probe_event("huge", &format!("probe/{}", "a".repeat(60_000)));
    let mut after = vec![huge];
    after.extend((0..4).map(|i| probe_event(&format!("after-{i}"), "probe/1.0")));
    produce(&addr, &topics.audit, 0, &after).await;
    let paused = scrape_within(http, Duration::from_secs(30), |t| {
        metric(t, "vigil_delivery_paused") == Some(1.0)
    });
    assert_eq!(
        metric(&paused, "vigil_delivery_paused"),
        Some(1.0),
        "the huge alert stalls delivery\n{paused}\nlog:\n{}",
        vigil.log_text()
    );
    // Within about a statistics interval of the stall: the committed lag
    // shows every message after the last commit; the fetch lag shows
    // nothing (all of them were read).
    let started = Instant::now();
    let text = scrape_within(http, 5 * stats_interval, |t| {
        metric(t, &committed) == Some(5.0) && metric(t, &fetch) == Some(0.0)
    });
    assert_eq!(
        (metric(&text, &committed), metric(&text, &fetch)),
        (Some(5.0), Some(0.0)),
        "committed lag 5, fetch lag 0, {:?} after the pause\n{text}\nlog:\n{}",
        started.elapsed(),
        vigil.log_text()
    );
    // No progress, and what was read waits longer and longer.
    let age = metric(&text, "vigil_uncommitted_read_age_seconds").unwrap();
    assert!(age > 0.0, "{text}");
    // In event time, the events (of 2026-01-01) are months old.
    assert!(
        metric(&text, "vigil_uncommitted_event_age_seconds").unwrap() > 1.0e6,
        "{text}"
    );
    std::thread::sleep(2 * stats_interval);
    let (status, later) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&later, "vigil_last_progress_timestamp_seconds"),
        Some(progress),
        "no batch committed since the stall\n{later}"
    );
    assert!(
        metric(&later, "vigil_uncommitted_read_age_seconds").unwrap() >= age + 1.5,
        "{later}"
    );
    assert_eq!(metric(&later, &committed), Some(5.0), "{later}");
    assert_eq!(metric(&later, "vigil_delivery_paused"), Some(1.0));
    // Alive, and (after http.ready_max_poll_gap_ms, 3 s here) not ready:
    // the probes show the stall too, neither hides it.
    assert_eq!(http_get(http, "/healthz"), (200, "ok\n".to_string()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = http_get(http, "/readyz");
        if ready.0 == 503 || Instant::now() > deadline {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ready.0, 503, "{ready:?}");
    assert!(ready.1.contains("no poll of the source"), "{ready:?}");
    let log = vigil.log_text();
    assert!(
        log.contains("output not delivered") && log.to_lowercase().contains("too large"),
        "{log}"
    );
}
