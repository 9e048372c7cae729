//! Correlation tests that the cases of `tests/correlation/` cannot express
//! (rules rejected at load, time budgets, metrics), and the helpers the
//! incremental tests share. The semantics (windows, watermarks, lateness,
//! sequences, joins, suppression, ...) are tested there, as data: see
//! `tests/correlation/README.md`.

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
pub(super) async fn detector_and_metrics(
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

/// The shipped pack's correlation rules, compiled with default settings.
pub(super) async fn shipped_correlator() -> super::Correlator {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    let set = crate::rules::RulePack::load_dir(&dir).unwrap().rule_set();
    let rules: Vec<_> = set
        .rules
        .iter()
        .filter(|r| r.meta.mode == crate::rules::RuleMode::Correlation)
        .cloned()
        .collect();
    super::compile::compile(
        rules,
        CorrelationSettings::default(),
        &Arc::default(),
        &set.definitions,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"))
}

pub(super) fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(T0 + secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An audit event at T0 + `secs`.
#[allow(clippy::too_many_arguments)]
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

/// `n` requests of `user` refused (403) one second apart from T0 +
/// `from`, with ids `<prefix>0`, `<prefix>1`, ...
fn denied(prefix: &str, user: &str, from: i64, n: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            audit(
                &format!("{prefix}{i}"),
                user,
                "get",
                "pods",
                None,
                "ns",
                403,
                from + i,
            )
        })
        .collect()
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

// The semantics of these two inputs (what is emitted when, what is late)
// are the cases tests/correlation/tumbling_threshold_emits_once_*.case and
// out_of_order_within_lateness_*.case; here, what they report to metrics.

/// The ids of the events `alert` names.
fn event_ids(alert: &Alert) -> Vec<&str> {
    alert.events.iter().map(|e| e.event_id.as_str()).collect()
}

/// A detector with [`THRESHOLD`] suppressed for 10 minutes per user, no
/// allowed lateness.
async fn suppressed_threshold_detector() -> Detector {
    detector_with(
        &[(
            "t.threshold",
            "k8s_audit",
            "-- window: 1m\n-- suppress: 10m\n-- suppress_key: username\n",
            THRESHOLD,
        )],
        CorrelationSettings {
            allowed_lateness_ms: 0,
            ..Default::default()
        },
    )
    .await
}

/// The last alert folded into a suppression period is built when the
/// period's summary is emitted, from the row kept: the events it names
/// stay known until then, though nothing else holds them (its window was
/// emitted, its events are gone from the state) and identities were
/// collected in between.
#[tokio::test]
async fn a_suppression_summary_names_the_events_of_the_last_folded_alert() {
    let mut d = suppressed_threshold_detector().await;
    let mut f = Feed::new();
    let other = |id: &str, secs: i64| audit(id, "x", "get", "pods", None, "ns", 200, secs);
    let mut alerts = Vec::new();
    for batch in [
        denied("a", "alice", 0, 3),
        denied("b", "alice", 60, 3), // closes the first window: raised
        vec![other("o1", 121)],      // closes the second: folded
    ] {
        alerts.extend(run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await.0);
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    d.engine_mut().correlator_mut().collect_identities_now();
    // Past the period's end (0:01 + 10 minutes): its summary.
    let (summary, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[other("o2", 700)])).await;
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0].suppressed_count, Some(1));
    let named = event_ids(&summary[0]);
    assert_eq!(
        named,
        [
            "b0/ResponseComplete",
            "b1/ResponseComplete",
            "b2/ResponseComplete"
        ]
    );
}

/// A join of audit events with Tetragon events is not run while no
/// Tetragon event is retained: the watermark passes, no retained row is
/// read. Once Tetragon events arrive it runs, and matches.
#[tokio::test]
async fn a_join_is_not_run_while_one_of_its_sources_has_no_events() {
    const CROSS: &str = "SELECT a.user_info.username AS username, t.process.binary AS binary, \
        t.event_time AS window_end \
      FROM k8s_audit a JOIN tetragon t \
        ON a.object_ref.namespace = t.process.pod.namespace AND a.object_ref.name = t.process.pod.name \
       AND t.event_time >= a.event_time AND t.event_time <= a.event_time + INTERVAL '1 minute' \
      WHERE a.object_ref.subresource = 'exec' AND t.event_type = 'process_exec'";
    let settings = CorrelationSettings {
        allowed_lateness_ms: 0,
        ..Default::default()
    };
    let mut d = detector_with(
        &[("t.cross", "k8s_audit", "-- window: 1m\n", CROSS)],
        settings,
    )
    .await;
    let mut f = Feed::new();
    let exec = |id: &str, secs: i64| {
        audit(
            id,
            "mallory",
            "create",
            "pods",
            Some("exec"),
            "ns",
            200,
            secs,
        )
    };
    let other = |id: &str, secs: i64| audit(id, "x", "get", "pods", None, "ns", 200, secs);
    let shell = |id: &str, secs: i64| {
        json!({"process_exec": {"process": {"exec_id": id, "binary": "/bin/sh",
            "pod": {"namespace": "ns", "name": "x"}}}, "node_name": "n", "time": ts(secs)})
        .to_string()
    };
    let evaluated = |d: &Detector| d.engine().correlator().stats().rows_evaluated;
    let mut alerts = Vec::new();
    for batch in [vec![exec("a1", 0), other("o1", 10)], vec![other("o2", 100)]] {
        alerts.extend(run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await.0);
    }
    assert!(d.engine().correlator().stats().watermark.is_some());
    assert_eq!(evaluated(&d), 0, "the join ran with no Tetragon event");
    let mut msgs = f.msgs(SourceKind::K8sAudit, 0, &[exec("a2", 200)]);
    msgs.extend(f.msgs(SourceKind::Tetragon, 0, &[shell("s1", 205)]));
    alerts.extend(run(&mut d, msgs).await.0);
    let mut msgs = f.msgs(SourceKind::K8sAudit, 0, &[other("o3", 400)]);
    msgs.extend(f.msgs(SourceKind::Tetragon, 0, &[shell("s2", 400)]));
    alerts.extend(run(&mut d, msgs).await.0);
    assert!(evaluated(&d) > 0);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let shell_id = format!("s1/process_exec/{}", ts(205));
    assert_eq!(
        event_ids(&alerts[0]),
        ["a2/ResponseComplete", shell_id.as_str()]
    );
}

/// A suppressed join whose top projection runs only for alerts: the
/// raised alert and the summary of the rows folded after it both carry
/// the projected fields (the distinct list), not the run's rows.
#[tokio::test]
async fn alerts_of_a_run_without_its_projection_carry_the_projected_fields() {
    const SEQUENCE: &str =
        "SELECT d.username AS username, array_distinct(array_agg(c.name)) AS names, \
        d.event_time AS window_end \
      FROM (SELECT __row, event_time, user_info.username AS username, object_ref.name AS name \
            FROM k8s_audit WHERE verb = 'create') c \
      JOIN (SELECT __row, event_time, user_info.username AS username \
            FROM k8s_audit WHERE verb = 'delete') d \
        ON c.username = d.username AND c.event_time < d.event_time \
       AND c.event_time >= d.event_time - INTERVAL '1 minute' \
      GROUP BY d.__row, d.username, d.event_time";
    let settings = CorrelationSettings {
        allowed_lateness_ms: 0,
        ..Default::default()
    };
    let extra = "-- window: 1m\n-- suppress: 10m\n-- suppress_key: username\n";
    let mut d = detector_with(&[("t.seq", "k8s_audit", extra, SEQUENCE)], settings).await;
    assert!(d.engine().correlator().rules[0].fields.is_some());
    let mut f = Feed::new();
    let event =
        |id: &str, verb: &str, secs: i64| audit(id, "alice", verb, "pods", None, "ns", 200, secs);
    let mut alerts = Vec::new();
    for batch in [
        vec![event("c1", "create", 0), event("c2", "create", 1)],
        vec![event("d1", "delete", 10)],
        vec![event("d2", "delete", 20)],
        vec![event("d3", "delete", 30)],
        vec![event("o", "get", 700)],
    ] {
        alerts.extend(run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await.0);
    }
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let expected = json!({"username": "alice", "names": ["x"]});
    for alert in &alerts {
        let mut fields = serde_json::Value::Object(alert.fields.clone());
        fields.as_object_mut().unwrap().remove("window_end");
        assert_eq!(fields, expected, "{alert:?}");
    }
    assert_eq!(alerts[1].suppressed_count, Some(2));
    assert_eq!(event_ids(&alerts[1])[0], "c1/ResponseComplete");
}

#[tokio::test]
async fn a_folded_row_shares_its_runs_output_only_until_the_rules_next_run() {
    let mut d = suppressed_threshold_detector().await;
    let mut f = Feed::new();
    let other = |id: &str, secs: i64| audit(id, "x", "get", "pods", None, "ns", 200, secs);
    let sharing = |d: &Detector| d.engine().correlator().folded_rows_sharing_a_run_output();
    let mut alerts = Vec::new();
    for batch in [
        denied("a", "alice", 0, 3),
        denied("b", "alice", 60, 3),  // closes the first window: raised
        denied("c", "alice", 120, 3), // closes the second: folded
    ] {
        alerts.extend(run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await.0);
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        sharing(&d),
        1,
        "the row folded in this run is a slice of its output"
    );
    let copied = |d: &Detector| d.engine().correlator().folded_rows_copied();
    // Closes the third window: folded again, replacing the last row, which
    // is therefore never copied.
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[other("o1", 181)])).await;
    assert_eq!(sharing(&d), 1);
    assert_eq!(copied(&d), 0, "a replaced row is not copied");
    // Nothing folded in this run: the row kept from the last one is copied.
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[other("o2", 182)])).await;
    assert_eq!(
        sharing(&d),
        0,
        "a run's output outlives the rule's next run"
    );
    assert_eq!(copied(&d), 1);
    // Past the period's end: the copied row gives the summary, naming the
    // events of the last folded window.
    let (summary, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[other("o3", 700)])).await;
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0].suppressed_count, Some(2));
    let named = event_ids(&summary[0]);
    assert_eq!(
        named,
        [
            "c0/ResponseComplete",
            "c1/ResponseComplete",
            "c2/ResponseComplete"
        ]
    );
}

/// Rows kept past their run are copied together, one batch per run, and a
/// copy most of whose rows were replaced gives its remaining rows up to
/// the next copy: copies never hold many more rows than are kept.
#[tokio::test]
async fn folded_rows_are_copied_together_and_sparse_copies_again() {
    let mut d = suppressed_threshold_detector().await;
    let mut f = Feed::new();
    let c = |d: &Detector| {
        let c = d.engine().correlator();
        (c.folded_rows_copied(), c.batches_holding_folded_rows())
    };
    // Three users refused three times in the window starting at `secs`;
    // the event ids are `<user initial><window>-<n>`.
    let refused = |users: &[&str], secs: i64| -> Vec<String> {
        let mut batch = Vec::new();
        for user in users {
            batch.extend(denied(
                &format!("{}{}-", &user[..1], secs / 60),
                user,
                secs,
                3,
            ));
        }
        batch.push(audit(
            &format!("o{secs}"),
            "x",
            "get",
            "pods",
            None,
            "ns",
            200,
            secs + 5,
        ));
        batch
    };
    let all = ["alice", "bob", "carol"];
    let mut alerts = Vec::new();
    // Windows 0 and 1: raised at window 0, folded at window 1 (a run's
    // output: three rows, one batch).
    for (users, secs) in [(&all[..], 0), (&all[..], 60), (&all[..], 120)] {
        alerts.extend(
            run(
                &mut d,
                f.msgs(SourceKind::K8sAudit, 0, &refused(users, secs)),
            )
            .await
            .0,
        );
    }
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(c(&d), (0, 1));
    // Window 2 folds all three again (replacing: nothing copied); window 3
    // folds none, so the rows of window 2 are copied, in one batch.
    for (users, secs) in [(&[][..], 180), (&[][..], 240)] {
        run(
            &mut d,
            f.msgs(SourceKind::K8sAudit, 0, &refused(users, secs)),
        )
        .await;
    }
    assert_eq!(c(&d), (3, 1));
    // Window 5 folds alice and bob: carol's is the only row still kept in
    // the copy, so it is copied again; window 6 folds none: alice's and
    // bob's rows are copied, together.
    for (users, secs) in [(&all[..2], 300), (&[][..], 360)] {
        run(
            &mut d,
            f.msgs(SourceKind::K8sAudit, 0, &refused(users, secs)),
        )
        .await;
    }
    assert_eq!(c(&d), (4, 2), "carol's row copied again, alone");
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &refused(&[], 420))).await;
    assert_eq!(c(&d), (6, 2));
    // The periods end: each summary names the events of its last folded
    // window, read from the copies.
    let (mut summaries, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &refused(&[], 900))).await;
    summaries.sort_by(|a, b| {
        a.fields["username"]
            .as_str()
            .cmp(&b.fields["username"].as_str())
    });
    let seen: Vec<(Option<u64>, Vec<&str>)> = summaries
        .iter()
        .map(|a| (a.suppressed_count, event_ids(a)))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Some(3),
                vec![
                    "a5-0/ResponseComplete",
                    "a5-1/ResponseComplete",
                    "a5-2/ResponseComplete"
                ]
            ),
            (
                Some(3),
                vec![
                    "b5-0/ResponseComplete",
                    "b5-1/ResponseComplete",
                    "b5-2/ResponseComplete"
                ]
            ),
            (
                Some(2),
                vec![
                    "c2-0/ResponseComplete",
                    "c2-1/ResponseComplete",
                    "c2-2/ResponseComplete"
                ]
            ),
        ]
    );
}

#[tokio::test]
async fn a_threshold_rule_reports_its_runs_its_matches_and_the_watermark() {
    let (mut d, metrics) = detector_and_metrics(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
        0,
    )
    .await;
    let mut f = Feed::new();
    let mut batch = denied("a", "alice", 10, 5);
    batch.push(audit("b0", "bob", "get", "pods", None, "ns", 403, 20));
    batch.push(audit("b1", "bob", "get", "pods", None, "ns", 403, 21));
    batch.push(audit("ok", "alice", "get", "pods", None, "ns", 200, 22));
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await;
    // An event at 61 moves the watermark past the window's end: one alert.
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
    run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            0,
            &[audit("d", "dave", "get", "pods", None, "ns", 200, 200)],
        ),
    )
    .await;
    // The rule ran once per watermark advance, and emitted one row.
    let (runs, matches) = metrics.rule("t.threshold");
    assert!(runs >= 2, "{runs} runs");
    assert_eq!(matches, 1);
    assert_eq!(
        metrics
            .watermark_ns
            .load(std::sync::atomic::Ordering::Relaxed),
        (T0 + 200) * 1_000_000_000
    );
}

#[tokio::test]
async fn a_late_event_is_counted_in_the_late_events_metric() {
    let (mut d, metrics) = detector_and_metrics(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
        10_000,
    )
    .await;
    let mut f = Feed::new();
    let e = |id: &str, s: i64| audit(id, "alice", "get", "pods", None, "ns", 403, s);
    for batch in [
        vec![e("x1", 55), e("x2", 65)],
        vec![e("x3", 58), e("x4", 59)],
        vec![e("x5", 71)],
    ] {
        run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await;
    }
    assert_eq!(CountingMetrics::get(&metrics.late_events), 0);
    // 30 is behind the watermark (61): late.
    let (_, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &[e("late", 30)])).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, DeadLetterKind::LateEvent);
    assert_eq!(CountingMetrics::get(&metrics.late_events), 1);
}

pub(super) const SEQUENCE: &str = "SELECT a.user_info.username AS username, a.object_ref.name AS pod, b.object_ref.name AS secret, \
     b.event_time AS window_end \
   FROM k8s_audit a JOIN k8s_audit b \
     ON a.user_info.username = b.user_info.username \
    AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes' \
   WHERE a.object_ref.subresource = 'exec' AND b.object_ref.resource = 'secrets' AND b.verb IN ('get', 'list')";

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

/// A correlation rule's pattern match is compiled once, at load, as in
/// per-event rules (`rules::regex_match`): left to DataFusion it was
/// compiled again at every evaluation, for every retained batch a scan
/// filters and every batch an incremental rule aggregates.
#[tokio::test]
async fn correlation_plans_match_patterns_compiled_at_load() {
    let sequence = SEQUENCE.replace(
        "WHERE a.object_ref.subresource = 'exec'",
        "WHERE regexp_like(a.user_agent, '^kubectl/[0-9]') AND a.object_ref.subresource = 'exec'",
    );
    let threshold = THRESHOLD.replace(
        "WHERE response_status.code = 403",
        "WHERE response_status.code = 403 AND user_agent ~ '^curl/[0-9]'",
    );
    for (id, extra, sql) in [
        ("t.sequence", "-- window: 10m\n", sequence.as_str()),
        ("t.threshold", "-- window: 1m\n", threshold.as_str()),
    ] {
        let text = format!("{}{sql}", header(id, "k8s_audit", extra));
        let rule = parse_rule(&PathBuf::from(format!("{id}.sql")), &text).unwrap();
        let correlator = super::Correlator::compile(
            vec![rule],
            CorrelationSettings::default(),
            &Arc::default(),
            &crate::rules::definitions::Definitions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        let compiled = &correlator.rules[0];
        let plans: Vec<&Arc<dyn datafusion::physical_plan::ExecutionPlan>> =
            match &compiled.strategy {
                super::Strategy::Incremental { split, .. } => vec![&split.partial, &split.finish],
                super::Strategy::Rescan { .. } => vec![&compiled.plan],
            };
        let shown: String = plans
            .iter()
            .map(|p| {
                datafusion::physical_plan::displayable(p.as_ref())
                    .indent(true)
                    .to_string()
            })
            .collect();
        assert!(
            shown.contains(r#"~ "^"#) && !shown.contains("regexp_like") && !shown.contains("~ ^"),
            "{id}: the pattern is not compiled at load:\n{shown}"
        );
    }
}

/// A correlation rule of thousands of alternatives plans on the test
/// thread's 2 MiB stack (its scan filters go into the pre-filter, the
/// retention filter and the cached scan filters, each planned or
/// rewritten by recursion), and still joins.
#[tokio::test]
async fn a_join_of_thousands_of_alternatives_plans_and_joins() {
    let namespaces: Vec<String> = (0..3000)
        .map(|i| format!("object_ref.namespace = 'ns{i}'"))
        .chain(["object_ref.namespace LIKE 'n%s'".to_string()])
        .collect();
    let sql = format!(
        "SELECT b.username AS username, b.event_time AS window_end \
         FROM (SELECT __row, event_time, user_info.username AS username FROM k8s_audit \
               WHERE verb = 'create' AND ({})) a \
         JOIN (SELECT __row, event_time, user_info.username AS username FROM k8s_audit \
               WHERE verb = 'delete') b \
           ON a.username = b.username AND a.event_time < b.event_time \
          AND a.event_time >= b.event_time - INTERVAL '5 minutes'",
        namespaces.join(" OR ")
    );
    let settings = CorrelationSettings {
        allowed_lateness_ms: 0,
        ..Default::default()
    };
    let mut d = detector_with(
        &[("t.deep", "k8s_audit", "-- window: 5m\n", &sql)],
        settings,
    )
    .await;
    let mut f = Feed::new();
    let events = [
        audit("c", "u", "create", "pods", None, "ns", 200, 1),
        audit("d", "u", "delete", "pods", None, "ns", 200, 10),
        audit("later", "v", "get", "pods", None, "ns", 200, 100),
    ];
    let (alerts, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &events)).await;
    assert!(dead.is_empty());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].fields.get("username").unwrap(), "u");
}

/// A batch mixing late events, on-time events and events no rule reads:
/// a windowed rule (incremental) counts exactly the on-time ones, though
/// its late events fall in a window still open; a rule without a filter
/// alike.
#[tokio::test]
async fn late_events_in_a_mixed_batch_count_in_no_window() {
    let unfiltered = THRESHOLD.replace("WHERE response_status.code = 403 ", "");
    for rule in [THRESHOLD, unfiltered.as_str()] {
        late_events_count_in_no_window(rule).await;
    }
}

async fn late_events_count_in_no_window(rule: &str) {
    let (mut d, metrics) = detector_and_metrics(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", rule)],
        10_000,
    )
    .await;
    let mut f = Feed::new();
    let e = |id: &str, s: i64| audit(id, "alice", "get", "pods", None, "ns", 403, s);
    let allowed = audit("ok", "alice", "get", "pods", None, "ns", 200, 66);
    // Watermark 55 after the first batch: [0, 60) is open, 50 and 52 late.
    let batches = [
        vec![e("a1", 40), e("a2", 65)],
        vec![
            e("late1", 50),
            allowed,
            e("a3", 57),
            e("late2", 52),
            e("a5", 58),
        ],
        vec![e("a4", 130)],
    ];
    let mut alerts = Vec::new();
    let mut late = 0;
    for batch in batches {
        let (a, dead) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &batch)).await;
        alerts.extend(a);
        late += dead
            .iter()
            .filter(|l| l.kind == DeadLetterKind::LateEvent)
            .count();
    }
    assert_eq!(late, 2, "{rule}");
    assert_eq!(CountingMetrics::get(&metrics.late_events), 2);
    assert_eq!(alerts.len(), 1, "{rule}: {alerts:?}");
    assert_eq!(
        alerts[0].fields.get("denied").unwrap(),
        3,
        "a1, a3 and a5: {rule}"
    );
    let ids: Vec<&str> = alerts[0]
        .events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
}
