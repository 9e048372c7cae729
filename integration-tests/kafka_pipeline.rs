//! End to end against a real broker process: sample events in, alerts and
//! dead letters out, offsets committed, restart without re-emission.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use vigil::alert::Alert;
use vigil::dead_letter::{DeadLetter, DeadLetterKind};
use vigil::source::{Origin, SourceKind};

/// The ids of the shipped per-event rules (see [`event_rules`]).
fn event_rule_ids() -> BTreeSet<String> {
    event_rules().rules.into_iter().map(|r| r.meta.id).collect()
}

/// The per-event alert ids the library computes offline for the same
/// inputs, sorted: those the stream raises, and the summaries of the
/// suppression periods still open at its end (through Kafka they close
/// when the watermark passes them). Multisets: sample events without an id
/// of their own that are byte-identical get the same content id, hence the
/// same alert id.
async fn offline_alert_ids(inputs: &[(SourceKind, &[Vec<u8>])]) -> (Vec<String>, Vec<String>) {
    let offline = offline_event_alerts(inputs).await;
    let sorted = |alerts: Vec<Alert>| {
        let mut ids: Vec<String> = alerts.into_iter().map(|a| a.alert_id).collect();
        ids.sort();
        ids
    };
    (sorted(offline.stream), sorted(offline.at_end))
}

/// How many of the alert records `read` are of the rules `per_event`.
fn per_event_alerts(read: &[(i64, String)], per_event: &BTreeSet<String>) -> usize {
    read.iter()
        .filter(|(_, a)| {
            serde_json::from_str::<Alert>(a).is_ok_and(|a| per_event.contains(&a.rule_id))
        })
        .count()
}

/// Line -> the rules whose alerts name an event of that line (`line_of` an
/// origin).
fn fired_by_line(
    alerts: &[Alert],
    line_of: impl Fn(&Origin) -> Option<u64>,
) -> BTreeMap<u64, BTreeSet<String>> {
    let mut fired: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in alerts {
        for line in a.events.iter().filter_map(|e| line_of(&e.origin)) {
            fired.entry(line).or_default().insert(a.rule_id.clone());
        }
    }
    fired
}

/// Panther labels: line -> (panther rule, expected to fire).
fn panther_labels() -> BTreeMap<u64, (String, bool)> {
    let text =
        std::fs::read_to_string(shared_data("k8s-audit/panther-rule-cases.labels.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), (f[1].to_string(), f[3] == "True"))
        })
        .collect()
}

/// Panther rule -> our per-event counterparts (correlation counterparts are
/// checked on bursts by services/vigil/tests/panther_cases.rs).
fn panther_counterparts() -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in event_rules().rules {
        for b in &rule.meta.based_on {
            if let Some(p) = b.strip_prefix("panther:") {
                map.entry(p.to_string())
                    .or_default()
                    .insert(rule.meta.id.clone());
            }
        }
    }
    map
}

const NEW_EXEC_EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"restart-test-0001","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/prod/pods/api-0/exec?command=sh&stdin=true&tty=true","verb":"create","user":{"username":"mallory@example.com","groups":["system:authenticated"]},"sourceIPs":["203.0.113.7"],"objectRef":{"resource":"pods","namespace":"prod","name":"api-0","subresource":"exec","apiVersion":"v1"},"responseStatus":{"code":101},"requestReceivedTimestamp":"2024-05-01T10:00:00.000000Z","stageTimestamp":"2024-05-01T10:00:00.100000Z"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detects_dead_letters_commits_and_restarts_without_reemitting() {
    let addr = broker().addr.clone();
    let topics = Topics::new("e2e");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.write_config(dir.path(), &addr);

    let audit = lines(&shared_data("k8s-audit/panther-rule-cases.jsonl"));
    let tetragon = lines(&shared_data("runtime/tetragon-book-events.jsonl"));
    let falco = lines(&shared_data("runtime/falco-alerts-sample.jsonl"));
    let malformed: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"kind":"Event","verb":42}"#.to_vec(),
        vec![0xff, 0xfe, b'{'],
    ];
    produce(&addr, &topics.audit, 0, &audit).await;
    produce(&addr, &topics.audit, 0, &malformed).await;
    produce(&addr, &topics.tetragon, 0, &tetragon).await;
    produce(&addr, &topics.falco, 0, &falco).await;

    let (expected, at_end) = offline_alert_ids(&[
        (SourceKind::K8sAudit, &audit),
        (SourceKind::Tetragon, &tetragon),
        (SourceKind::Falco, &falco),
    ])
    .await;
    assert!(
        !at_end.is_empty(),
        "the samples leave suppression periods open"
    );
    assert!(
        expected.len() >= 10,
        "the shipped rules should fire on the samples, got {}",
        expected.len()
    );

    let vigil = Vigil::start(&config, dir.path().join("vigil-1.log"));
    let per_event = event_rule_ids();
    let alerts = read_topic_until(
        &addr,
        &topics.alerts,
        Duration::from_secs(90),
        Duration::from_secs(3),
        |read| per_event_alerts(read, &per_event) >= expected.len(),
    );
    let parsed: Vec<Alert> = alerts
        .iter()
        .map(|(_, a)| serde_json::from_str::<Alert>(a).unwrap())
        .filter(|a| per_event.contains(&a.rule_id))
        .collect();
    let mut got: Vec<String> = parsed.iter().map(|a| a.alert_id.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        expected,
        "alerts via Kafka differ from the offline evaluation; log:\n{}",
        vigil.log_text()
    );
    // No OpenTelemetry export configured: no trace ids (tests/operations.rs has them on).
    assert!(parsed.iter().all(|a| a.trace_id.is_none()));

    // Malformed input went to the dead-letter topic with reason and origin.
    let dead = read_topic(
        &addr,
        &topics.dead_letter,
        3,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let dead: Vec<DeadLetter> = dead
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    let n = audit.len() as i64;
    for (i, d) in dead.iter().enumerate() {
        assert_eq!(d.kind, DeadLetterKind::DecodeError);
        assert_eq!(d.source, SourceKind::K8sAudit);
        assert_eq!(
            d.origins,
            vec![Origin::Kafka {
                topic: topics.audit.as_str().into(),
                partition: 0,
                offset: n + i as i64
            }]
        );
        assert!(d.reason.contains("invalid"), "{}", d.reason);
    }
    assert_eq!(dead[0].payload.as_deref(), Some("{not json"));
    assert!(
        dead[1].reason.contains("invalid type"),
        "{}",
        dead[1].reason
    );
    assert!(dead[2].payload.is_none() && dead[2].payload_base64.is_some());

    // Graceful stop commits everything consumed.
    let status = vigil.terminate();
    assert!(status.success(), "vigil exited with {status}");
    // Without correlation state retained, the resume offset is the end of
    // what was consumed (the shipped pack's correlation rules may retain
    // some events; then the checkpoint's `processed` still says how far
    // per-event evaluation got).
    let audit_offset =
        committed_offset(&addr, &topics.group, &topics.audit).expect("offsets committed");
    assert!(audit_offset <= n + 3);
    let cp = latest_checkpoint(&addr, &topics.checkpoints, &topics.group)
        .expect("a checkpoint was written");
    assert_eq!(cp.processed[&format!("{}/0", topics.audit)], n + 3);
    assert_eq!(
        cp.processed[&format!("{}/0", topics.tetragon)],
        tetragon.len() as i64
    );

    // Restart: committed input is not evaluated again; new input is. An
    // event two hours ahead moves event time past the open suppression
    // periods: their summaries come out now, rebuilt from the input the
    // held offsets re-read, each once.
    let clock = vigil::alert::format_time_ns(
        (std::time::SystemTime::now() + Duration::from_secs(2 * 3600))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64,
    );
    let clock_event = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"restart-test-clock","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default","verb":"get","user":{{"username":"alice@example.com","groups":["system:authenticated"]}},"sourceIPs":["10.0.0.5"],"objectRef":{{"resource":"namespaces","name":"default","apiVersion":"v1"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"{clock}","stageTimestamp":"{clock}"}}"#
    );
    let new_events = vec![NEW_EXEC_EVENT.as_bytes().to_vec(), clock_event.into_bytes()];
    let (expected_new, _) = offline_alert_ids(&[(SourceKind::K8sAudit, &new_events)]).await;
    assert!(!expected_new.is_empty());
    produce(&addr, &topics.audit, 0, &new_events).await;
    let vigil = Vigil::start_with_env(
        &config,
        dir.path().join("vigil-2.log"),
        &[("VIGIL__LIMITS__MAX_EVENT_TIME_AHEAD_MS", "10800000")],
    );
    let want = expected.len() + at_end.len() + expected_new.len();
    // The topic also holds the alerts of rules this test does not compare.
    let after = read_topic_until(
        &addr,
        &topics.alerts,
        Duration::from_secs(90),
        Duration::from_secs(4),
        |read| per_event_alerts(read, &per_event) >= want,
    );
    let parsed_after: Vec<Alert> = after
        .iter()
        .map(|(_, a)| serde_json::from_str::<Alert>(a).unwrap())
        .filter(|a| per_event.contains(&a.rule_id))
        .collect();
    assert_eq!(
        parsed_after.len(),
        want,
        "restart re-emitted or lost alerts; log:\n{}",
        vigil.log_text()
    );
    let mut new_ids: Vec<String> = parsed_after[expected.len()..]
        .iter()
        .map(|a| a.alert_id.clone())
        .collect();
    new_ids.sort();
    let mut want_new: Vec<String> = expected_new.iter().chain(&at_end).cloned().collect();
    want_new.sort();
    assert_eq!(new_ids, want_new);
    // The labelled Panther cases, through Kafka (the events folded into
    // summaries included; offset n is line n + 1), fire as they do offline,
    // and every case labelled True fires. (tests/panther_cases.rs checks the
    // offline verdicts against every label, with the deliberate
    // disagreements.)
    let kafka_fired = fired_by_line(&parsed_after, |o| match o {
        Origin::Kafka { topic, offset, .. } if **topic == *topics.audit => Some(*offset as u64 + 1),
        _ => None,
    });
    let offline = offline_event_alerts(&[(SourceKind::K8sAudit, &audit)]).await;
    let offline_alerts: Vec<Alert> = offline.stream.into_iter().chain(offline.at_end).collect();
    let offline_fired = fired_by_line(&offline_alerts, |o| match o {
        Origin::File { line, .. } => Some(*line),
        _ => None,
    });
    let counterparts = panther_counterparts();
    let mut checked = 0;
    for (line, (panther_rule, label)) in panther_labels() {
        if let Some(ours) = counterparts.get(&panther_rule) {
            let fires = |fired: &BTreeMap<u64, BTreeSet<String>>| {
                fired
                    .get(&line)
                    .is_some_and(|f| ours.iter().any(|r| f.contains(r)))
            };
            let via_kafka = fires(&kafka_fired);
            assert_eq!(
                via_kafka,
                fires(&offline_fired),
                "line {line} ({panther_rule}) via Kafka"
            );
            assert!(
                via_kafka || !label,
                "line {line} ({panther_rule}) is labelled True"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    let exec = parsed_after[expected.len()..]
        .iter()
        .find(|a| a.rule_id == "k8s.pod_exec")
        .expect("the exec alert");
    assert_eq!(exec.events[0].event_id, "restart-test-0001/ResponseStarted");
    assert_eq!(
        exec.events[0].origin,
        Origin::Kafka {
            topic: topics.audit.as_str().into(),
            partition: 0,
            offset: n + 3
        }
    );
    assert!(vigil.terminate().success());
}
