//! Crash consistency of correlation alerts: the `vigil` process is killed
//! with SIGKILL in the middle of a correlated attack stream, restarted, and
//! the alerts topic is checked against the alerts the library computes
//! offline for the same input.
//!
//! * at-least-once (the default), against the real broker (tansu), killed
//!   mid-stream: every expected alert must be there; a repeat may only be a
//!   redelivery of the same alert (same id), and nothing unexpected may
//!   appear.
//! * exactly-once (`kafka.delivery = "exactly_once"`), against librdkafka's
//!   mock cluster, hosted by this test process on a real localhost port
//!   (tansu 0.6 rejects EndTxn, so it cannot run transactions): killed
//!   between transactions, restarted with the same transactional id; a
//!   consumer of the alerts topic must see every expected alert exactly
//!   once. The mock cluster cannot check a kill *inside* a transaction: its
//!   Fetch handler reports no aborted transactions and a last stable offset
//!   equal to the high watermark (rdkafka_mock_handlers.c), so records of
//!   an aborted transaction stay visible to read_committed consumers. That
//!   case needs a broker with full transaction support (Apache Kafka).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::rules::{load_dir, RuleEngine};
use vigil::source::{Origin, RawMessage, SourceKind};

/// Rules of this test: two correlation rules (a threshold in a tumbling
/// window, an ordered sequence) and one per-event rule. Kept here, not taken
/// from sql-rules/, so the expected alerts follow from this file alone.
fn write_rules(dir: &Path) -> PathBuf {
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

fn audit(id: usize, user: &str, verb: &str, resource: &str, sub: Option<&str>, name: &str, code: i32, secs: i64) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
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
fn attack_stream() -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut id = 0;
    let mut push = |events: &mut Vec<Vec<u8>>, user: &str, verb: &str, res: &str, sub: Option<&str>, name: &str, code: i32, secs: i64| {
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
                push(&mut events, "eve", "create", "pods", Some("exec"), "api-0", 200, t);
            }
            if (minute, s) == (9, 45) || (minute, s) == (22, 0) {
                push(&mut events, "eve", "get", "secrets", None, "db-password", 200, t);
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
async fn offline_alert_ids(rules: &Path, events: &[Vec<u8>]) -> Vec<String> {
    let engine = RuleEngine::compile(load_dir(rules).unwrap()).await.unwrap();
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let messages = events
        .iter()
        .enumerate()
        .map(|(i, p)| RawMessage {
            source: SourceKind::K8sAudit,
            payload: p.clone(),
            origin: Origin::File { path: "offline".into(), line: i as u64 + 1 },
            timestamp_ms: None,
            state_only: false,
        })
        .collect();
    let mut out = detector.process(messages).await;
    out.alerts.extend(detector.finish().await.alerts);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let mut ids: Vec<String> = out.alerts.into_iter().map(|a| a.alert_id).collect();
    ids.sort();
    ids
}

fn alert_ids(records: &[(i64, String)]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|(_, payload)| {
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            (v["alert_id"].as_str().unwrap().to_string(), v["rule_id"].as_str().unwrap().to_string())
        })
        .collect()
}

fn count(ids: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.as_str()).or_default() += 1;
    }
    m
}

/// When in a stage the process is killed.
#[derive(Clone, Copy, PartialEq)]
enum KillAt {
    /// As soon as an alert of the stage is visible: the stage's work is
    /// under way, the rest of it is not done.
    MidStream,
    /// Once every message of the stage was evaluated and committed.
    BetweenBatches,
}

/// Produce the stream in three stages; after each of the first two, start
/// Vigil and kill it with SIGKILL at `kill_at`; then run it to the end of
/// the input and stop it. Returns what a read_committed consumer reads from
/// the alerts topic.
#[allow(clippy::too_many_arguments)]
async fn run_with_kills(
    addr: &str,
    topics: &Topics,
    config: &Path,
    env: &[(&str, &str)],
    log: PathBuf,
    events: &[Vec<u8>],
    expected: usize,
    kill_at: KillAt,
) -> Vec<(i64, String)> {
    let stages = [0, events.len() * 2 / 5, events.len() * 3 / 4, events.len()];
    let mut kills = Vec::new();
    let mut alerts = RecordCounter::new(addr, &topics.alerts);
    for stage in 0..3 {
        produce(addr, &topics.audit, 0, &events[stages[stage]..stages[stage + 1]]).await;
        alerts.count(Duration::from_millis(500));
        let vigil = Vigil::start_with_env(config, log.clone(), env);
        if stage < 2 && kill_at == KillAt::BetweenBatches {
            wait_until_processed(addr, topics, stages[stage + 1], &vigil).await;
            // The idle tick may still close windows (idle_timeout_ms = 2000):
            // wait until nothing new appears for 4 s.
            let mut seen = alerts.count(Duration::from_millis(500));
            loop {
                let now = alerts.count(Duration::from_secs(4));
                if now == seen {
                    break;
                }
                seen = now;
            }
            kills.push(seen);
            eprintln!("stage {stage}: killing between batches with {seen} alerts visible");
            vigil.kill();
            std::thread::sleep(SESSION + Duration::from_millis(500));
        } else if stage < 2 {
            // Kill as soon as the stage's work is visibly under way: a fixed
            // sleep would race the machine's speed.
            // Counted before this start: the restarted process may publish
            // its first alerts within milliseconds.
            let before = alerts.count(Duration::ZERO);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let now = alerts.count(Duration::from_millis(50));
                if now > before {
                    kills.push(now);
                    break;
                }
                assert!(Instant::now() < deadline, "stage {stage}: no alert within 120 s; log:\n{}", vigil.log_text());
            }
            vigil.kill();
            std::thread::sleep(SESSION + Duration::from_millis(500));
        } else {
            // Run until every input message was evaluated, then stop cleanly.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let processed = latest_checkpoint(addr, &topics.checkpoints, &topics.group)
                    .and_then(|cp| cp.processed.get(&format!("{}/0", topics.audit)).copied());
                let have = alerts.count(Duration::from_millis(300));
                if processed == Some(events.len() as i64) && have >= expected {
                    break;
                }
                if Instant::now() > deadline {
                    let got = alert_ids(&read_topic(addr, &topics.alerts, usize::MAX, Duration::from_secs(3), Duration::ZERO));
                    panic!(
                        "input not processed within 120 s: checkpoint at {processed:?} of {}, {have} of {expected} alerts: {got:?}; log:\n{}",
                        events.len(),
                        vigil.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let status = vigil.terminate();
            assert!(status.success(), "vigil exited with {status}; log:\n{}", std::fs::read_to_string(&log).unwrap());
        }
    }
    eprintln!("alerts visible at the two kills: {kills:?} of {expected}");
    read_topic(addr, &topics.alerts, usize::MAX, Duration::from_secs(5), Duration::ZERO)
}

/// Counts the records a read_committed consumer sees on partition 0 of a
/// topic, reading on from where it got.
struct RecordCounter {
    consumer: rdkafka::consumer::BaseConsumer,
    seen: usize,
}

impl RecordCounter {
    fn new(addr: &str, topic: &str) -> RecordCounter {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("group.id", unique("counter"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
        consumer.assign(&list).unwrap();
        RecordCounter { consumer, seen: 0 }
    }

    /// Poll for `wait`; the number of records seen so far.
    fn count(&mut self, wait: Duration) -> usize {
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

/// Wait until the checkpoint says the first `n` messages were evaluated.
async fn wait_until_processed(addr: &str, topics: &Topics, n: usize, vigil: &Vigil) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let processed = latest_checkpoint(addr, &topics.checkpoints, &topics.group)
            .and_then(|cp| cp.processed.get(&format!("{}/0", topics.audit)).copied());
        if processed == Some(n as i64) {
            return;
        }
        assert!(Instant::now() < deadline, "checkpoint at {processed:?}, not {n}, after 120 s; log:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config_for(dir: &Path, topics: &Topics, addr: &str, rules: &Path) -> PathBuf {
    // Small batches so a stage takes many batches (transactions); a short
    // idle timeout so the last windows close on the wall-clock tick; a short
    // session timeout so a restarted member is not kept waiting for the
    // killed one's session to expire.
    topics.write_config_with(
        dir,
        addr,
        rules,
        "\n[correlation]\nallowed_lateness_ms = 5000\nidle_timeout_ms = 2000\n",
    )
}

/// A killed member stays in its consumer group until its session times
/// out; a member joining before that can wait on it for a long time (seen
/// with tansu). So: a short session, and each restart comes after it has
/// expired, as a restarted pod would.
const SESSION: Duration = Duration::from_millis(3000);
const FAST_REJOIN: [(&str, &str); 2] = [
    ("VIGIL__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "3000"),
    ("VIGIL__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "500"),
];

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_correlation_alerts_across_sigkill_between_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let events = attack_stream();
    let expected = offline_alert_ids(&rules, &events).await;
    // The stream is built to fire 4 bursts, 2 sequences and 2 execs.
    assert_eq!(expected.len(), 8, "{expected:?}");

    let cluster = MockCluster::new(1).unwrap();
    let addr = cluster.bootstrap_servers();
    let topics = Topics::new("eos");
    for t in [&topics.audit, &topics.falco, &topics.tetragon, &topics.alerts, &topics.dead_letter, &topics.late_events, &topics.checkpoints] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let config = config_for(dir.path(), &topics, &addr, &rules);
    let env = [
        ("VIGIL__KAFKA__DELIVERY", "exactly_once"),
        ("VIGIL__KAFKA__TRANSACTIONAL_ID", "vigil-eos-test"),
        FAST_REJOIN[0],
        FAST_REJOIN[1],
    ];
    let records =
        run_with_kills(&addr, &topics, &config, &env, dir.path().join("vigil.log"), &events, expected.len(), KillAt::BetweenBatches)
            .await;

    let mut got: Vec<String> = alert_ids(&records).into_iter().map(|(id, _)| id).collect();
    got.sort();
    let duplicates: Vec<_> = count(&got).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated alerts under exactly-once: {duplicates:?}");
    assert_eq!(got, expected, "alerts topic (read_committed) differs from the offline evaluation");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_correlation_alerts_across_sigkill_mid_stream_on_the_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let events = attack_stream();
    let expected = offline_alert_ids(&rules, &events).await;
    assert_eq!(expected.len(), 8, "{expected:?}");

    let addr = broker().addr.clone();
    let topics = Topics::new("alo");
    topics.create(&addr).await;
    let config = config_for(dir.path(), &topics, &addr, &rules);
    let records = run_with_kills(
        &addr,
        &topics,
        &config,
        &FAST_REJOIN,
        dir.path().join("vigil.log"),
        &events,
        expected.len(),
        KillAt::MidStream,
    )
    .await;

    let got: Vec<String> = alert_ids(&records).into_iter().map(|(id, _)| id).collect();
    let mut distinct: Vec<String> = count(&got).into_keys().map(str::to_string).collect();
    distinct.sort();
    assert_eq!(distinct, expected, "every expected alert, and nothing else, must be on the alerts topic");
    eprintln!("at-least-once: {} records for {} distinct alerts", got.len(), distinct.len());
}
