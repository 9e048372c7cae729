//! Correlation semantics, with event time driven explicitly.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::CorrelationSettings;
use crate::alert::Alert;
use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::detect::Detector;
use crate::observe::{CountingMetrics, NoMetrics};
use crate::rules::{parse_rule, RuleEngine};
use crate::source::{Origin, RawMessage, SourceKind};

pub(super) const T0: i64 = 1_699_999_800; // seconds; a multiple of 600

pub(super) fn header(id: &str, source: &str, extra: &str) -> String {
    format!(
        "-- id: {id}\n-- title: {id}\n-- severity: high\n-- description: test\n-- mitre: T1110\n-- source: {source}\n-- author: test\n-- based_on: vigil:test\n-- mode: correlation\n{extra}"
    )
}

pub(super) async fn detector(rules: &[(&str, &str, &str, &str)], lateness_ms: u64) -> Detector {
    detector_with(
        rules,
        CorrelationSettings {
            allowed_lateness_ms: lateness_ms,
            ..Default::default()
        },
    )
    .await
}

pub(super) async fn detector_with(
    rules: &[(&str, &str, &str, &str)],
    settings: CorrelationSettings,
) -> Detector {
    detector_reporting_to(rules, settings, Arc::new(NoMetrics)).await
}

async fn detector_reporting_to(
    rules: &[(&str, &str, &str, &str)],
    settings: CorrelationSettings,
    metrics: Arc<dyn crate::observe::DetectionMetrics>,
) -> Detector {
    let rules = rules
        .iter()
        .map(|(id, source, extra, sql)| {
            parse_rule(
                &PathBuf::from(format!("{id}.sql")),
                &format!("{}{sql}", header(id, source, extra)),
            )
            .unwrap()
        })
        .collect::<Vec<_>>();
    let engine = RuleEngine::compile_with(rules, settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Detector::new(engine, Default::default(), metrics)
}

/// [`detector`], and the metrics it reports to.
async fn detector_and_metrics(
    rules: &[(&str, &str, &str, &str)],
    lateness_ms: u64,
) -> (Detector, Arc<CountingMetrics>) {
    let metrics = Arc::new(CountingMetrics::default());
    let settings = CorrelationSettings {
        allowed_lateness_ms: lateness_ms,
        ..Default::default()
    };
    let d = detector_reporting_to(rules, settings, metrics.clone()).await;
    (d, metrics)
}

pub(super) fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(T0 + secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An audit event at T0 + `secs`.
pub(super) fn audit(
    id: &str,
    user: &str,
    verb: &str,
    resource: &str,
    sub: Option<&str>,
    ns: &str,
    code: i32,
    secs: i64,
) -> String {
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": id, "stage": "ResponseComplete",
        "verb": verb, "user": {"username": user},
        "objectRef": {"resource": resource, "subresource": sub, "namespace": ns, "name": "x"},
        "responseStatus": {"code": code}, "requestReceivedTimestamp": ts(secs)
    })
    .to_string()
}

pub(super) struct Feed {
    offsets: std::collections::BTreeMap<i32, i64>,
}

impl Feed {
    pub(super) fn new() -> Self {
        Feed {
            offsets: Default::default(),
        }
    }
    pub(super) fn msgs(
        &mut self,
        source: SourceKind,
        partition: i32,
        lines: &[String],
    ) -> Vec<RawMessage> {
        lines
            .iter()
            .map(|l| {
                let o = self.offsets.entry(partition).or_default();
                *o += 1;
                RawMessage {
                    source,
                    payload: l.clone().into_bytes(),
                    origin: Origin::Kafka {
                        topic: source.table_name().into(),
                        partition,
                        offset: *o,
                    },
                    timestamp_ms: None,
                    state_only: false,
                }
            })
            .collect()
    }
}

pub(super) async fn run(d: &mut Detector, msgs: Vec<RawMessage>) -> (Vec<Alert>, Vec<DeadLetter>) {
    let out = d.process(msgs).await;
    (out.alerts, out.dead_letters)
}

pub(super) const THRESHOLD: &str = "SELECT user_info.username AS username, count(*) AS denied, \
     tumble_end(event_time, INTERVAL '1 minute') AS window_end \
   FROM k8s_audit WHERE response_status.code = 403 \
   GROUP BY user_info.username, tumble_end(event_time, INTERVAL '1 minute') \
   HAVING count(*) >= 3";

#[tokio::test]
async fn threshold_in_tumbling_window_emits_once_when_the_watermark_passes_its_end() {
    let (mut d, metrics) = detector_and_metrics(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
        0,
    )
    .await;
    let mut f = Feed::new();
    let mut batch: Vec<String> = (0..5)
        .map(|i| {
            audit(
                &format!("a{i}"),
                "alice",
                "get",
                "pods",
                None,
                "ns",
                403,
                10 + i,
            )
        })
        .collect();
    batch.push(audit("b0", "bob", "get", "pods", None, "ns", 403, 20));
    batch.push(audit("b1", "bob", "get", "pods", None, "ns", 403, 21));
    batch.push(audit("ok", "alice", "get", "pods", None, "ns", 200, 22));
    let (alerts, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await;
    assert!(dead.is_empty());
    assert!(
        alerts.is_empty(),
        "the window [0, 60) is still open: {alerts:?}"
    );
    // An event at 61 moves the watermark past the window's end.
    let (alerts, _) = run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            0,
            &[audit("c", "carol", "get", "pods", None, "ns", 200, 61)],
        ),
    )
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.fields["username"], "alice");
    assert_eq!(a.fields["denied"], 5);
    assert_eq!(a.event_time, ts(60));
    let ids: Vec<&str> = a.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "a0/ResponseComplete",
            "a1/ResponseComplete",
            "a2/ResponseComplete",
            "a3/ResponseComplete",
            "a4/ResponseComplete"
        ]
    );
    // Later batches never emit that window again.
    let (alerts, _) = run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            0,
            &[audit("d", "dave", "get", "pods", None, "ns", 200, 200)],
        ),
    )
    .await;
    assert!(alerts.is_empty(), "{alerts:?}");
    // Metrics: the rule ran once per watermark advance, and emitted one row.
    let (runs, matches) = metrics.rule("t.threshold");
    assert!(runs >= 2, "{runs} runs");
    assert_eq!(matches, 1);
    assert_eq!(
        metrics
            .watermark_ns
            .load(std::sync::atomic::Ordering::Relaxed),
        (T0 + 200) * 1_000_000_000
    );
    assert!(d.finish().await.alerts.is_empty());
}

#[tokio::test]
async fn out_of_order_within_lateness_counts_and_beyond_lateness_goes_to_late_events() {
    let (mut d, metrics) = detector_and_metrics(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
        10_000,
    )
    .await;
    let mut f = Feed::new();
    let e = |id: &str, s: i64| audit(id, "alice", "get", "pods", None, "ns", 403, s);
    // 55, 65 then 58 (7 s out of order, within the 10 s lateness).
    let (alerts, dead) = run(
        &mut d,
        f.msgs(SourceKind::K8sAudit, 0, &[e("x1", 55), e("x2", 65)]),
    )
    .await;
    assert!(alerts.is_empty() && dead.is_empty());
    let (alerts, dead) = run(
        &mut d,
        f.msgs(SourceKind::K8sAudit, 0, &[e("x3", 58), e("x4", 59)]),
    )
    .await;
    assert!(
        alerts.is_empty() && dead.is_empty(),
        "watermark is 55: window [0,60) still open"
    );
    // 71 moves the watermark to 61: the window closes with 3 events.
    let (alerts, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[e("x5", 71)])).await;
    assert!(dead.is_empty());
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].fields["denied"], 3);
    // 30 is behind the watermark (61): late, reported, not counted.
    let (alerts, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[e("late", 30)])).await;
    assert!(alerts.is_empty());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, DeadLetterKind::LateEvent);
    assert!(dead[0].payload.as_deref().unwrap().contains("\"late\""));
    assert_eq!(CountingMetrics::get(&metrics.late_events), 1);
}

#[tokio::test]
async fn keys_split_across_partitions_are_correlated_and_the_slowest_partition_holds_the_watermark()
{
    let mut d = detector(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
        0,
    )
    .await;
    let mut f = Feed::new();
    let e = |id: &str, s: i64| audit(id, "alice", "get", "pods", None, "ns", 403, s);
    let mut msgs = f.msgs(SourceKind::K8sAudit, 0, &[e("p0a", 10), e("p0b", 90)]);
    msgs.extend(f.msgs(SourceKind::K8sAudit, 1, &[e("p1a", 20), e("p1b", 30)]));
    let (alerts, _) = run(&mut d, msgs).await;
    assert!(
        alerts.is_empty(),
        "partition 1 is at 30: the watermark is 30"
    );
    let (alerts, _) = run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            1,
            &[audit("n", "nobody", "get", "pods", None, "ns", 200, 95)],
        ),
    )
    .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].events.len(), 3);
}

pub(super) const SEQUENCE: &str = "SELECT a.user_info.username AS username, a.object_ref.name AS pod, b.object_ref.name AS secret, \
     b.event_time AS window_end \
   FROM k8s_audit a JOIN k8s_audit b \
     ON a.user_info.username = b.user_info.username \
    AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes' \
   WHERE a.object_ref.subresource = 'exec' AND b.object_ref.resource = 'secrets' AND b.verb IN ('get', 'list')";

#[tokio::test]
async fn ordered_sequence_by_key_within_a_time_bound() {
    let mut d = detector(&[("t.seq", "k8s_audit", "-- window: 10m\n", SEQUENCE)], 0).await;
    let mut f = Feed::new();
    let lines = vec![
        audit(
            "e1",
            "mallory",
            "create",
            "pods",
            Some("exec"),
            "prod",
            101,
            0,
        ),
        audit("s1", "mallory", "get", "secrets", None, "prod", 200, 120), // fires
        audit("s2", "bob", "get", "secrets", None, "prod", 200, 130),     // other user
        audit("s0", "trudy", "get", "secrets", None, "prod", 200, 5),     // secret first ...
        audit(
            "e0",
            "trudy",
            "create",
            "pods",
            Some("exec"),
            "prod",
            101,
            10,
        ), // ... then exec: wrong order
        audit(
            "e2",
            "oscar",
            "create",
            "pods",
            Some("exec"),
            "prod",
            101,
            100,
        ),
        audit(
            "s3",
            "oscar",
            "get",
            "secrets",
            None,
            "prod",
            200,
            100 + 601,
        ), // too late
    ];
    let (mut alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
    alerts.extend(d.finish().await.alerts);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].fields["username"], "mallory");
    let ids: Vec<&str> = alerts[0]
        .events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(ids, vec!["e1/ResponseComplete", "s1/ResponseComplete"]);
}

/// The sequence's two events in different batches, with the join evaluated
/// in between (a hash join's build side lives in the plan node: each
/// evaluation must rebuild it from the retained events of that moment).
#[tokio::test]
async fn sequence_split_across_batches_and_evaluations() {
    let mut d = detector(&[("t.seq", "k8s_audit", "-- window: 10m\n", SEQUENCE)], 0).await;
    let mut f = Feed::new();
    let mut alerts = Vec::new();
    for (i, batch) in [
        vec![
            audit("bg0", "dev", "get", "pods", None, "prod", 200, 0),
            audit(
                "e1",
                "mallory",
                "create",
                "pods",
                Some("exec"),
                "prod",
                101,
                30,
            ),
        ],
        vec![audit("bg1", "dev", "get", "pods", None, "prod", 200, 90)],
        vec![audit(
            "s1", "mallory", "get", "secrets", None, "prod", 200, 200,
        )],
        vec![audit("bg2", "dev", "get", "pods", None, "prod", 200, 300)],
        vec![audit(
            "e2",
            "eve",
            "create",
            "pods",
            Some("exec"),
            "prod",
            101,
            310,
        )],
        vec![
            audit("s2", "eve", "get", "secrets", None, "prod", 200, 400),
            audit("bg3", "dev", "get", "pods", None, "prod", 200, 500),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let (a, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await;
        assert!(dead.is_empty(), "batch {i}: {dead:?}");
        alerts.extend(a);
    }
    alerts.extend(d.finish().await.alerts);
    let users: Vec<&str> = alerts
        .iter()
        .map(|a| a.fields["username"].as_str().unwrap())
        .collect();
    assert_eq!(users, vec!["mallory", "eve"], "{alerts:?}");
}

#[tokio::test]
async fn a_join_rule_run_again_joins_the_new_events_not_the_first_runs_build_side() {
    // A hash join builds its table once per execution plan instance: the
    // stored plan must be reset before each run, or the second run would
    // probe with the first run's build side (dave only) and miss mallory.
    let mut d = detector(&[("t.seq", "k8s_audit", "-- window: 10m\n", SEQUENCE)], 0).await;
    let mut f = Feed::new();
    let first = [audit(
        "e0",
        "dave",
        "create",
        "pods",
        Some("exec"),
        "prod",
        101,
        0,
    )];
    let (alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &first)).await;
    assert!(alerts.is_empty());
    let second = [
        audit(
            "e1",
            "mallory",
            "create",
            "pods",
            Some("exec"),
            "prod",
            101,
            10,
        ),
        audit("s1", "mallory", "get", "secrets", None, "prod", 200, 20),
        audit("later", "nobody", "get", "pods", None, "prod", 200, 30),
    ];
    let (mut alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &second)).await;
    alerts.extend(d.finish().await.alerts);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].fields["username"], "mallory");
}

#[tokio::test]
async fn distinct_value_count_and_hopping_windows() {
    let distinct = "SELECT user_info.username AS username, count(DISTINCT object_ref.namespace) AS namespaces, \
         window_end FROM (SELECT *, unnest(hop_ends(event_time, INTERVAL '10 minutes', INTERVAL '5 minutes')) AS window_end \
                          FROM k8s_audit WHERE object_ref.resource = 'secrets') s \
         GROUP BY user_info.username, window_end HAVING count(DISTINCT object_ref.namespace) >= 3";
    let mut d = detector(
        &[("t.distinct", "k8s_audit", "-- window: 10m\n", distinct)],
        0,
    )
    .await;
    let mut f = Feed::new();
    // Hopping windows [end - 10m, end) with ends every 5 min (T0 is aligned).
    // eve: a@0, b@60, c@660: [0,600) has a, b; [300,900) only c.
    let lines = vec![
        audit("1", "eve", "get", "secrets", None, "a", 200, 0),
        audit("2", "eve", "get", "secrets", None, "b", 200, 60),
        audit("3", "eve", "get", "secrets", None, "b", 200, 61),
        audit("4", "eve", "list", "secrets", None, "c", 200, 660),
        audit("5", "sam", "get", "secrets", None, "a", 200, 0),
        audit("6", "sam", "get", "secrets", None, "b", 200, 10),
    ];
    let (mut alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
    alerts.extend(d.finish().await.alerts);
    assert!(alerts.is_empty(), "{alerts:?}");

    // a@350, b@360, c@660: [300,900) holds all three; [0,600) only a and b.
    let mut d = detector(
        &[("t.distinct", "k8s_audit", "-- window: 10m\n", distinct)],
        0,
    )
    .await;
    let lines = vec![
        audit("1", "eve", "get", "secrets", None, "a", 200, 350),
        audit("2", "eve", "get", "secrets", None, "b", 200, 360),
        audit("4", "eve", "list", "secrets", None, "c", 200, 660),
    ];
    let (mut alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
    alerts.extend(d.finish().await.alerts);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].fields["namespaces"], 3);
    assert_eq!(alerts[0].event_time, ts(900));
}

#[tokio::test]
async fn sliding_per_event_window_with_a_window_function() {
    let sliding = "SELECT username, n, window_end FROM ( \
         SELECT *, user_info.username AS username, event_time AS window_end, \
                count(*) OVER (PARTITION BY user_info.username ORDER BY event_time \
                               RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW) AS n \
         FROM k8s_audit WHERE response_status.code = 403) s WHERE n >= 3";
    let mut d = detector(&[("t.sliding", "k8s_audit", "-- window: 1m\n", sliding)], 0).await;
    let mut f = Feed::new();
    let e = |id: &str, s: i64| audit(id, "alice", "get", "pods", None, "ns", 403, s);
    // 0, 50, 100, 105: only the window ending at 105 (45..105) holds 3 events.
    let (mut alerts, _) = run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            0,
            &[e("1", 0), e("2", 50), e("3", 100)],
        ),
    )
    .await;
    let (more, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[e("4", 105)])).await;
    alerts.extend(more);
    alerts.extend(d.finish().await.alerts);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].fields["n"], 3);
    assert_eq!(alerts[0].event_time, ts(105));
}

#[tokio::test]
async fn cross_source_audit_exec_then_runtime_shell_in_the_same_pod() {
    let cross = "SELECT a.user_info.username AS username, t.process.binary AS binary, t.event_time AS window_end \
       FROM k8s_audit a JOIN tetragon t \
         ON a.object_ref.namespace = t.process.pod.namespace AND a.object_ref.name = t.process.pod.name \
        AND t.event_time >= a.event_time AND t.event_time <= a.event_time + INTERVAL '1 minute' \
       WHERE a.object_ref.subresource = 'exec' AND t.event_type = 'process_exec'";
    let mut d = detector(&[("t.cross", "k8s_audit", "-- window: 1m\n", cross)], 0).await;
    let mut f = Feed::new();
    let exec = json!({"kind":"Event","auditID":"x","stage":"ResponseStarted","verb":"create","user":{"username":"mallory"},
        "objectRef":{"resource":"pods","subresource":"exec","namespace":"prod","name":"web-1"},"requestReceivedTimestamp":ts(0)}).to_string();
    let shell = |pod: &str, s: i64| {
        json!({"process_exec":{"process":{"exec_id":format!("e-{pod}-{s}"),"binary":"/bin/sh",
        "pod":{"namespace":"prod","name":pod}}},"node_name":"n","time":ts(s)})
        .to_string()
    };
    let mut msgs = f.msgs(SourceKind::K8sAudit, 0, &[exec]);
    msgs.extend(f.msgs(
        SourceKind::Tetragon,
        0,
        &[shell("web-1", 5), shell("web-2", 6), shell("web-1", 200)],
    ));
    let (mut alerts, _) = run(&mut d, msgs).await;
    alerts.extend(d.finish().await.alerts);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].fields["binary"], "/bin/sh");
    assert_eq!(alerts[0].events.len(), 2);
}

#[tokio::test]
async fn suppression_folds_an_ongoing_attack_into_one_alert_and_a_count() {
    let mut d = detector(
        &[(
            "t.threshold",
            "k8s_audit",
            "-- window: 1m\n-- suppress: 10m\n-- suppress_key: username\n",
            THRESHOLD,
        )],
        0,
    )
    .await;
    let mut f = Feed::new();
    // alice: 3 denials in each of 5 consecutive minutes.
    let lines: Vec<String> = (0..5)
        .flat_map(|m| {
            (0..3).map(move |i| {
                audit(
                    &format!("{m}-{i}"),
                    "alice",
                    "get",
                    "pods",
                    None,
                    "ns",
                    403,
                    m * 60 + i,
                )
            })
        })
        .collect();
    let (mut alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
    alerts.extend(d.finish().await.alerts);
    assert_eq!(alerts.len(), 2, "first alert, then one summary: {alerts:?}");
    assert_eq!(alerts[0].suppressed_count, None);
    assert_eq!(alerts[1].suppressed_count, Some(4));
    assert_ne!(alerts[0].alert_id, alerts[1].alert_id);
}

#[tokio::test]
async fn alert_ids_do_not_depend_on_batching() {
    let lines: Vec<String> = (0..6)
        .map(|i| {
            audit(
                &format!("a{i}"),
                "alice",
                "get",
                "pods",
                None,
                "ns",
                403,
                i * 7,
            )
        })
        .collect();
    let mut ids = Vec::new();
    for batch_size in [1, 2, 6] {
        let mut d = detector(
            &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
            0,
        )
        .await;
        let mut f = Feed::new();
        let mut alerts = Vec::new();
        for chunk in lines.chunks(batch_size) {
            alerts.extend(run(&mut d, f.msgs(SourceKind::K8sAudit, 0, chunk)).await.0);
        }
        alerts.extend(d.finish().await.alerts);
        assert_eq!(alerts.len(), 1);
        ids.push(alerts[0].alert_id.clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[tokio::test]
async fn correlation_rules_are_checked_at_load() {
    let bad = [
        ("SELECT user_info.username FROM k8s_audit GROUP BY user_info.username", "window_end"),
        ("SELECT rule, event_time AS window_end FROM falco", "does not read it"),
        ("SELECT count(*) AS n, max(event_time) AS window_end FROM (SELECT verb, event_time FROM k8s_audit) s", "__row"),
    ];
    for (sql, expected) in bad {
        let rule = parse_rule(
            &PathBuf::from("bad.sql"),
            &format!("{}{sql}", header("t.bad", "k8s_audit", "-- window: 1m\n")),
        )
        .unwrap();
        let e = RuleEngine::compile(vec![rule])
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} compiled"))
            .to_string();
        assert!(e.contains(expected), "{sql}: {e}");
    }
}

#[tokio::test]
async fn a_correlation_rule_over_its_time_budget_fails_alone_and_the_pipeline_goes_on() {
    // A triple self join over the retained events of one window: 200
    // events make 8 million candidate rows, filtered out one by one, far
    // beyond a 50 ms budget. The threshold rule beside it must still fire.
    let slow = "SELECT a.user_info.username AS username, tumble_end(a.event_time, INTERVAL '1 minute') AS window_end \
       FROM k8s_audit a JOIN k8s_audit b ON a.user_info.username = b.user_info.username \
       JOIN k8s_audit c ON b.user_info.username = c.user_info.username \
       WHERE length(concat(a.request_uri, b.verb, c.verb)) < 0";
    let rules = [
        ("t.slow", "k8s_audit", "-- window: 1m\n", slow),
        ("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD),
    ];
    let rules = rules
        .iter()
        .map(|(id, source, extra, sql)| {
            parse_rule(
                &PathBuf::from(format!("{id}.sql")),
                &format!("{}{sql}", header(id, source, extra)),
            )
            .unwrap()
        })
        .collect::<Vec<_>>();
    let settings = CorrelationSettings {
        allowed_lateness_ms: 0,
        ..Default::default()
    };
    let mut engine = RuleEngine::compile_with(rules, settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    engine.set_time_budget(std::time::Duration::from_millis(50));
    let mut d = Detector::new(engine, Default::default(), Arc::new(NoMetrics));
    let mut f = Feed::new();
    let batch: Vec<String> = (0..200)
        .map(|i| {
            audit(
                &format!("a{i}"),
                "alice",
                "get",
                "pods",
                None,
                "ns",
                403,
                10 + i % 40,
            )
        })
        .collect();
    let (alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await;
    assert!(alerts.is_empty(), "the window is still open: {alerts:?}");
    // The watermark passes the window's end: both rules are evaluated.
    let (alerts, dead) = run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            0,
            &[audit("c", "carol", "get", "pods", None, "ns", 200, 61)],
        ),
    )
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule_id, "t.threshold");
    let failures: Vec<&DeadLetter> = dead
        .iter()
        .filter(|d| d.kind == DeadLetterKind::RuleError)
        .collect();
    assert!(!failures.is_empty(), "{dead:?}");
    for failure in failures {
        assert_eq!(failure.rule_id.as_deref(), Some("t.slow"), "{failure:?}");
        assert!(
            failure.reason.contains("exceeded its time budget of 50 ms"),
            "{failure:?}"
        );
    }
}
