//! A correlated attack stream with known alerts, shared by the crash and
//! scale-out tests: 25 minutes of event time with 403 bursts, exec-then-
//! secret sequences and execs, the rules that detect them, and the offline
//! evaluation the alerts topic is compared with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::rules::{RuleEngine, RulePack};
use vigil::source::{Origin, RawMessage, SourceKind};

use super::unique;

/// Rules of this test: two correlation rules (a threshold in a tumbling
/// window, an ordered sequence) and one per-event rule. Kept here, not taken
/// from sql-rules/, so the expected alerts follow from this file alone.
pub fn write_rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules/k8s_audit");
    std::fs::create_dir_all(&rules).unwrap();
    let header = |id: &str, mode: &str| {
        format!(
            "-- id: {id}\n-- title: {id}\n-- severity: high\n-- description: crash test rule\n-- mitre: T1110\n\
             -- source: k8s_audit\n-- author: Vigil tests\n-- based_on: vigil:crash-test\n{mode}"
        )
    };
    std::fs::write(
        rules.join("denied_burst.sql"),
        header("test.denied_burst", "-- mode: correlation\n-- window: 1m\n")
            + "SELECT user_info.username AS username, count(*) AS denied,\n\
               tumble_end(event_time, INTERVAL '1 minute') AS window_end\n\
               FROM k8s_audit WHERE response_status.code = 403\n\
               GROUP BY user_info.username, tumble_end(event_time, INTERVAL '1 minute')\n\
               HAVING count(*) >= 10\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("exec_then_secret.sql"),
        header("test.exec_then_secret", "-- mode: correlation\n-- window: 10m\n")
            + "SELECT a.user_info.username AS username, a.object_ref.name AS pod, b.object_ref.name AS secret,\n\
               b.event_time AS window_end\n\
               FROM k8s_audit a JOIN k8s_audit b\n\
                 ON a.user_info.username = b.user_info.username\n\
                AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes'\n\
               WHERE a.object_ref.subresource = 'exec' AND b.object_ref.resource = 'secrets' AND b.verb = 'get'\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("exec.sql"),
        header("test.exec", "")
            + "SELECT user_info.username AS username, object_ref.name AS pod FROM k8s_audit\n\
               WHERE object_ref.subresource = 'exec'\n",
    )
    .unwrap();
    dir.join("rules")
}

/// An audit event: one argument per field the tests vary.
#[allow(clippy::too_many_arguments)]
pub fn audit(
    id: usize,
    user: &str,
    verb: &str,
    resource: &str,
    sub: Option<&str>,
    name: &str,
    code: i32,
    secs: i64,
) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": format!("evt-{id:05}"),
        "stage": "ResponseComplete", "verb": verb, "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.30.0",
        "objectRef": {"resource": resource, "subresource": sub, "namespace": "prod", "name": name, "apiVersion": "v1"},
        "responseStatus": {"code": code}, "requestReceivedTimestamp": t, "stageTimestamp": t
    })
    .to_string()
    .into_bytes()
}

/// 25 minutes of event time, in order: background traffic from five users,
/// bursts of 403s from mallory in four minutes (one burst split around a
/// minute boundary so it must not fire), exec-then-secret sequences by eve.
pub fn attack_stream() -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut id = 0;
    let mut push = |events: &mut Vec<Vec<u8>>,
                    user: &str,
                    verb: &str,
                    res: &str,
                    sub: Option<&str>,
                    name: &str,
                    code: i32,
                    secs: i64| {
        id += 1;
        events.push(audit(id, user, verb, res, sub, name, code, secs));
    };
    for minute in 0..25i64 {
        for s in 0..60i64 {
            let t = minute * 60 + s;
            if s % 3 == 0 {
                let user = format!("dev{}", (t / 3) % 5);
                push(&mut events, &user, "get", "pods", None, "web", 200, t);
            }
            // Four bursts of 12 denials; the one at minute 11 straddles the
            // minute boundary (6 + 6), so no single window reaches 10.
            let burst = matches!(minute, 2 | 6 | 16 | 21) && (10..22).contains(&s)
                || (minute == 11 && s >= 54)
                || (minute == 12 && s < 6);
            if burst {
                push(&mut events, "mallory", "list", "secrets", None, "", 403, t);
            }
            if (minute, s) == (4, 30) || (minute, s) == (17, 5) {
                push(
                    &mut events,
                    "eve",
                    "create",
                    "pods",
                    Some("exec"),
                    "api-0",
                    200,
                    t,
                );
            }
            if (minute, s) == (9, 45) || (minute, s) == (22, 0) {
                push(
                    &mut events,
                    "eve",
                    "get",
                    "secrets",
                    None,
                    "db-password",
                    200,
                    t,
                );
            }
            // A secret read without a preceding exec, and one too late.
            if (minute, s) == (1, 0) || (minute, s) == (15, 40) {
                push(&mut events, "eve", "get", "secrets", None, "tls", 200, t);
            }
        }
    }
    events
}

/// The alert ids the library computes offline for the same input, sorted.
pub async fn offline_alert_ids(rules: &Path, events: &[Vec<u8>]) -> Vec<String> {
    offline_alert_ids_of(rules, &[(SourceKind::K8sAudit, events)]).await
}

/// The alert ids one detector raises over the events of each source, every
/// source read whole, in the order given.
pub async fn offline_alert_ids_of(
    rules: &Path,
    sources: &[(SourceKind, &[Vec<u8>])],
) -> Vec<String> {
    let engine = RuleEngine::compile(RulePack::load_dir(rules).unwrap().rule_set())
        .await
        .unwrap();
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let messages = sources
        .iter()
        .flat_map(|(source, events)| {
            events.iter().enumerate().map(|(i, p)| RawMessage {
                source: *source,
                payload: p.clone(),
                origin: Origin::File {
                    path: source.table_name().into(),
                    line: i as u64 + 1,
                },
                timestamp_ms: None,
                state_only: false,
            })
        })
        .collect();
    let mut out = detector.process(messages).await;
    out.alerts.extend(detector.finish().await.alerts);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let mut ids: Vec<String> = out.alerts.into_iter().map(|a| a.alert_id).collect();
    ids.sort();
    ids
}

pub fn alert_ids(records: &[(i64, String)]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|(_, payload)| {
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            (
                v["alert_id"].as_str().unwrap().to_string(),
                v["rule_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn count(ids: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.as_str()).or_default() += 1;
    }
    m
}

/// Counts the records a read_committed consumer sees on partition 0 of a
/// topic, reading on from where it got.
pub struct RecordCounter {
    consumer: rdkafka::consumer::BaseConsumer,
    seen: usize,
}

impl RecordCounter {
    pub fn new(addr: &str, topic: &str) -> RecordCounter {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("group.id", unique("counter"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        RecordCounter { consumer, seen: 0 }
    }

    /// Poll for `wait`; the number of records seen so far.
    pub fn count(&mut self, wait: Duration) -> usize {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if let Some(m) = self.consumer.poll(Duration::from_millis(20)) {
                m.unwrap();
                self.seen += 1;
            }
        }
        self.seen
    }
}

/// A killed member stays in its consumer group until its session times
/// out; a member joining before that can wait on it for a long time (seen
/// with tansu). So: a short session, and each restart comes after it has
/// expired, as a restarted pod would.
pub const SESSION: Duration = Duration::from_millis(3000);
pub const FAST_REJOIN: [(&str, &str); 2] = [
    ("VIGIL__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "3000"),
    ("VIGIL__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "500"),
];
