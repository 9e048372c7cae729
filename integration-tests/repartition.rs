//! `correlation.placement = "repartition"` against the real broker: the
//! audit topic has three partitions and events go to them round robin (by
//! no correlation key), so every burst and sequence is split over source
//! partitions and instances. The first stage forwards the events the
//! correlation rules use to the repartition topic by key; the second stage
//! (consumer group `<group>-correlate`) correlates each key where its
//! partition is assigned.
//!
//! - Three instances, one killed with SIGKILL mid-stream and a fourth
//!   added later: every expected alert is on the alerts topic, nothing
//!   else, a repeat only under the same id (at-least-once).
//! - One instance stopped with a sequence still open and started again:
//!   the source offsets were committed past the open window (correlation
//!   state no longer holds them back), the state is rebuilt from the
//!   repartition topic, and the sequence's alert still comes.
//!
//! - A cross-source rule (an exec joined with a Falco alert from the same
//!   pod) over two instances, the audit and Falco events spread over the
//!   partitions of their topics: both sides meet in the partition of the
//!   pod, and the alerts are those of one instance reading everything.
//!
//! - A per-event rule that folds a user's execs (`-- suppress`) over two
//!   instances, the user's execs spread over partitions both read: one
//!   first alert and one summary, as one instance raises, not a first
//!   alert per instance.
//!
//! - A first-seen rule over two instances, a user's execs spread over
//!   partitions both read: new once, as one instance judges; then, after
//!   both stop and a third starts, what they saw is restored from the
//!   state topic (the sources are not read again), so her next exec is
//!   not new and another user's is.
//!
//! Runs against the test broker (tansu by default, or
//! `VIGIL_TEST_BROKERS=host:port`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::attack::*;
use crate::common::*;

const SOURCE_PARTITIONS: i32 = 3;
const FALCO_PARTITIONS: i32 = 2;
const REPARTITIONS: i32 = 3;

/// This test's topics, the repartition topic among them, created.
async fn topics(name: &str) -> (Topics, String) {
    let addr = broker().addr.clone();
    let topics = Topics::new(name);
    let repartition = unique(&format!("{name}-repartition"));
    create_topics(
        &addr,
        &[
            (&topics.audit, SOURCE_PARTITIONS),
            (&topics.falco, FALCO_PARTITIONS),
            (&topics.tetragon, 1),
            (&topics.alerts, 1),
            (&topics.dead_letter, 1),
            (&topics.late_events, 1),
            (&topics.checkpoints, 1),
            // Fewer partitions than the repartition topic: a lane's state
            // goes to partition `p % 2`.
            (&topics.state, 2),
            (&repartition, REPARTITIONS),
        ],
    )
    .await;
    (topics, repartition)
}

/// The configuration; the repartition topic is set through the
/// environment ([`env`]).
fn config(dir: &Path, topics: &Topics, rules: &Path) -> std::path::PathBuf {
    config_idle(dir, topics, rules, 2000)
}

/// [`config`] with an idle timeout. Above the session timeout, a partition
/// that a rebalance leaves unread meanwhile keeps holding the watermark
/// (docs/operations.md#scaling).
fn config_idle(dir: &Path, topics: &Topics, rules: &Path, idle_ms: u64) -> std::path::PathBuf {
    topics.write_config_with(
        dir,
        &broker().addr,
        rules,
        &format!("\n[correlation]\nallowed_lateness_ms = 5000\nidle_timeout_ms = {idle_ms}\nplacement = \"repartition\"\n"),
    )
}

/// Produce `events` round robin over the audit partitions, counting from
/// `start` (so a stream produced in parts stays round robin).
async fn produce_round_robin(topic: &str, events: &[Vec<u8>], start: usize) {
    let addr = broker().addr.clone();
    for p in 0..SOURCE_PARTITIONS {
        let part: Vec<Vec<u8>> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + start) % SOURCE_PARTITIONS as usize == p as usize)
            .map(|(_, e)| e.clone())
            .collect();
        produce(&addr, topic, p, &part).await;
    }
}

/// The distinct alert ids on the alerts topic, and how many records.
fn alerts_on(topic: &str) -> (Vec<String>, usize) {
    let got = alert_ids(&read_topic(
        &broker().addr,
        topic,
        usize::MAX,
        Duration::from_secs(2),
        Duration::ZERO,
    ));
    let mut distinct: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
    distinct.sort();
    distinct.dedup();
    (distinct, got.len())
}

/// Wait until the alerts topic holds exactly `expected` (distinct ids);
/// fails on an unexpected alert or after `limit`.
async fn await_alerts(
    topic: &str,
    expected: &[String],
    limit: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let (distinct, records) = alerts_on(topic);
        assert!(
            distinct.iter().all(|id| expected.contains(id)),
            "unexpected alerts: {distinct:?}; expected {expected:?}; logs:\n{}",
            logs()
        );
        if distinct == expected {
            eprintln!(
                "{records} alert records for {} distinct alerts",
                expected.len()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "alerts incomplete after {limit:?}: {distinct:?}; expected {expected:?}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The environment of every instance. One record per produce batch:
/// tansu 0.6 delivers nothing when a consumer starts inside a batch of
/// several records (seen here: a fetch from offset 7 of a 12-record batch
/// returns none of 7..11), and the second stage resumes inside a batch
/// whenever an open window holds its committed offset back
/// (docs/reliability.md#tansu-fetching-from-inside-a-batch).
fn env(repartition: &str) -> Vec<(&'static str, String)> {
    vec![
        (FAST_REJOIN[0].0, "10000".to_string()),
        (FAST_REJOIN[1].0, FAST_REJOIN[1].1.to_string()),
        ("VIGIL__TOPICS__REPARTITION", repartition.to_string()),
        (
            "VIGIL__KAFKA__PROPERTIES__BATCH_NUM_MESSAGES",
            "1".to_string(),
        ),
    ]
}

fn start(config: &Path, log: std::path::PathBuf, env: &[(&'static str, String)]) -> Vigil {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Vigil::start_with_env(config, log, &env)
}

fn logs(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "--- {n}\n{}",
                std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_with_a_kill_and_an_add_raise_every_correlation_alert() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let events = attack_stream();
    let expected = offline_alert_ids(&rules, &events).await;
    assert_eq!(expected.len(), 8, "{expected:?}");
    let (topics, repartition) = topics("repart").await;
    // The killed instance's partitions are unread until its session (10 s)
    // expires: they must keep holding the watermark meanwhile.
    let config = config_idle(dir.path(), &topics, &rules, 15_000);
    let env = env(&repartition);

    let (first, second) = events.split_at(events.len() / 2);
    produce_round_robin(&topics.audit, first, 0).await;
    let mut alerts = RecordCounter::new(&broker().addr, &topics.alerts);
    let a = start(&config, dir.path().join("a.log"), &env);
    let b = start(&config, dir.path().join("b.log"), &env);
    let c = start(&config, dir.path().join("c.log"), &env);
    let deadline = Instant::now() + Duration::from_secs(120);
    while alerts.count(Duration::from_millis(200)) == 0 {
        assert!(
            Instant::now() < deadline,
            "no alert within 120 s; logs:\n{}",
            logs(dir.path(), &["a", "b", "c"])
        );
    }
    a.kill();
    eprintln!(
        "killed a with {} alerts visible",
        alerts.count(Duration::ZERO)
    );
    produce_round_robin(&topics.audit, second, first.len()).await;
    // A new instance joins after the killed one's session has expired.
    tokio::time::sleep(SESSION).await;
    let d = start(&config, dir.path().join("d.log"), &env);
    let addrs = [b.http_addr(), c.http_addr(), d.http_addr()];
    await_alerts(&topics.alerts, &expected, Duration::from_secs(180), || {
        let late = partition_records(&topics.late_events, 0);
        let dead = partition_records(&topics.dead_letter, 0);
        let forwarded: Vec<usize> = (0..REPARTITIONS)
            .map(|p| partition_records(&repartition, p).len())
            .collect();
        let metrics: Vec<String> = addrs
            .iter()
            .map(|a| {
                http_get(*a, "/metrics")
                    .1
                    .lines()
                    .filter(|l| l.starts_with("vigil_correlation") || l.starts_with("vigil_late") || l.starts_with("vigil_rule_eval"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        format!(
            "metrics:\n{}\nlate events {}: {:?}\ndead letters {}: {:?}\nrepartition records {forwarded:?}\n{}",
            metrics.join("\n---\n"),
            late.len(),
            late.iter().take(3).collect::<Vec<_>>(),
            dead.len(),
            dead.iter().take(3).collect::<Vec<_>>(),
            logs(dir.path(), &["a", "b", "c", "d"])
        )
    })
    .await;

    // Both stages ran in every instance, and the events were spread over
    // the repartition partitions by key, not read whole by one instance.
    for name in ["b", "c", "d"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        assert!(
            log.contains(r#""role":"Correlating""#),
            "{name} runs the second stage:\n{log}"
        );
    }
    // Every forwarded event is in the partition of its rule's key (the
    // user name, for both rules here), whichever instance forwarded it.
    let mut rows = 0;
    for p in 0..REPARTITIONS {
        for (_, record) in partition_records(&repartition, p) {
            let (header, message) = vigil::forward::Forward::decode(record.as_bytes()).unwrap();
            if let vigil::forward::Forward::Row { .. } = header {
                let event: serde_json::Value = serde_json::from_slice(message).unwrap();
                let user = event["user"]["username"].as_str().unwrap();
                let mut key = vec![1u8];
                key.extend((user.len() as u32).to_le_bytes());
                key.extend(user.as_bytes());
                assert_eq!(
                    vigil::forward::partition_of_key(&key, REPARTITIONS as u32),
                    p,
                    "{user}'s event is in the partition of its key"
                );
                rows += 1;
            }
        }
    }
    assert!(rows >= 60, "the correlated events were forwarded: {rows}");
    for s in [b, c, d] {
        let status = s.terminate();
        assert!(status.success(), "exited with {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_rebuilds_open_windows_from_the_repartition_topic_not_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let events = attack_stream();
    let expected = offline_alert_ids(&rules, &events).await;
    let (topics, repartition) = topics("repart-restart").await;
    let config = config(dir.path(), &topics, &rules);
    let env = env(&repartition);

    // Up to minute 6: eve's exec at 4:30 is in, her secret read at 9:45
    // (which completes the sequence) is not.
    let cut = events
        .iter()
        .position(|e| {
            let v: serde_json::Value = serde_json::from_slice(e).unwrap();
            v["stageTimestamp"].as_str().unwrap() >= "2026-01-01T00:06:00"
        })
        .expect("the stream reaches minute 6");
    let (first, second) = events.split_at(cut);
    produce_round_robin(&topics.audit, first, 0).await;
    let a = start(&config, dir.path().join("a.log"), &env);
    // The first stage commits every source partition to its end: no
    // correlation state holds the source offsets back.
    let ends: Vec<i64> = (0..SOURCE_PARTITIONS)
        .map(|p| (0..first.len()).filter(|i| i % 3 == p as usize).count() as i64)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed: Vec<Option<i64>> = (0..SOURCE_PARTITIONS)
            .map(|p| committed_offset_of(&topics.group, &topics.audit, p))
            .collect();
        if committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "source offsets not committed to the end ({committed:?} of {ends:?}); log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let the second stage take in what was forwarded, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = a.terminate();
    assert!(status.success(), "exited with {status}");
    // The open sequence holds a repartition partition's committed offset
    // back instead: the restart re-reads the sequence's exec from there.
    let correlate_group = format!("{}-correlate", topics.group);
    let held: Vec<(Option<i64>, i64)> = (0..REPARTITIONS)
        .map(|p| {
            let records = partition_records(&repartition, p);
            let end = records.last().map_or(0, |(o, _)| o + 1);
            (committed_offset_of(&correlate_group, &repartition, p), end)
        })
        .collect();
    eprintln!("repartition (committed, end) at stop: {held:?}");
    assert!(
        held.iter().any(|(_, end)| *end > 0),
        "events were forwarded: {held:?}"
    );
    assert!(
        held.iter().any(|(c, end)| c.unwrap_or(0) < *end),
        "an open window holds a repartition partition's committed offset back: {held:?}"
    );

    produce_round_robin(&topics.audit, second, first.len()).await;
    let b = start(&config, dir.path().join("b.log"), &env);
    await_alerts(&topics.alerts, &expected, Duration::from_secs(120), || {
        logs(dir.path(), &["a", "b"])
    })
    .await;
    // The restarted instance read only the new source messages, and
    // forwarded the ones its rules use.
    let metrics = http_get(b.http_addr(), "/metrics").1;
    let forwarded = metric(
        &metrics,
        "vigil_repartition_forwarded_total{rule=\"test.exec_then_secret\"}",
    );
    assert!(forwarded.is_some_and(|n| n >= 1.0), "{metrics}");
    let consumed = metric(
        &metrics,
        "vigil_messages_consumed_total{source=\"k8s_audit\"}",
    );
    assert_eq!(
        consumed,
        Some(second.len() as f64),
        "source messages read after the restart"
    );
    let status = b.terminate();
    assert!(status.success(), "exited with {status}");
}

/// The records of one partition of `topic` (offset, payload), read for
/// two seconds.
fn partition_records(topic: &str, partition: i32) -> Vec<(i64, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker().addr)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.push((m.offset(), payload));
        }
    }
    out
}

/// The committed offset of `group` on one partition.
fn committed_offset_of(group: &str, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker().addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .ok()?;
    match committed.find_partition(topic, partition)?.offset() {
        rdkafka::Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// A cross-source correlation rule, keyed by pod: an exec (audit) with a
/// Falco alert from the same pod within two minutes either side.
fn write_cross_source_rule(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules/k8s_audit");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("exec_with_falco.sql"),
        "-- id: test.exec_with_falco\n-- title: exec with a Falco alert in the pod\n-- severity: high\n\
         -- description: cross-source test rule\n-- mitre: T1609\n-- source: k8s_audit\n\
         -- author: Vigil tests\n-- based_on: vigil:cross-source-test\n-- mode: correlation\n-- window: 5m\n\
         SELECT e.username AS username, e.pod AS pod, array_agg(r.falco_rule) AS falco_rules,\n\
           e.event_time + INTERVAL '2 minutes' AS window_end\n\
         FROM (SELECT __row, event_time, user_info.username AS username, object_ref.name AS pod\n\
               FROM k8s_audit WHERE object_ref.subresource = 'exec') e\n\
         JOIN (SELECT __row, event_time, json_get_str(output_fields, 'k8s.pod.name') AS pod, rule AS falco_rule\n\
               FROM falco) r\n\
           ON r.pod = e.pod\n\
          AND r.event_time >= e.event_time - INTERVAL '2 minutes'\n\
          AND r.event_time <= e.event_time + INTERVAL '2 minutes'\n\
         GROUP BY e.__row, e.username, e.pod, e.event_time\n",
    )
    .unwrap();
    dir.join("rules")
}

/// A Falco alert about `pod` at `secs` past 2026-01-01.
fn falco(id: usize, pod: &str, secs: i64) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "hostname": "worker-1", "output": format!("{t}: Notice Terminal shell in container"),
        "priority": "Notice", "rule": "Terminal shell in container", "source": "syscall",
        "tags": ["container", "shell"], "time": t, "uuid": format!("falco-{id:05}"),
        "output_fields": {"k8s.ns.name": "prod", "k8s.pod.name": pod, "proc.cmdline": "sh -i"}
    })
    .to_string()
    .into_bytes()
}

/// Twenty minutes of event time: an exec into `pod-<i>` at minute `i` with
/// a Falco alert from it a minute later (a match) for even `i`, three
/// minutes later (a near miss) for odd `i`; background reads every 5 s.
fn exec_and_falco_stream() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut audit_events, mut falco_events) = (Vec::new(), Vec::new());
    let mut id = 0;
    for t in (0..20 * 60i64).step_by(5) {
        id += 1;
        audit_events.push(audit(id, "dev0", "get", "pods", None, "web", 200, t));
        if t % 60 == 0 && t < 10 * 60 {
            let i = t / 60;
            let pod = format!("pod-{i}");
            id += 1;
            audit_events.push(audit(
                id,
                "eve",
                "create",
                "pods",
                Some("exec"),
                &pod,
                200,
                t,
            ));
            let after = if i % 2 == 0 { 60 } else { 180 };
            falco_events.push((t + after, pod));
        }
        // Falco alerts in event-time order, within the audit stream's time.
        falco_events.sort();
    }
    let falco_events = falco_events
        .into_iter()
        .enumerate()
        .map(|(i, (t, pod))| falco(i, &pod, t))
        .collect();
    (audit_events, falco_events)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_source_rule_joins_sides_forwarded_by_different_instances() {
    use vigil::source::SourceKind;
    let dir = tempfile::tempdir().unwrap();
    let rules = write_cross_source_rule(dir.path());
    let (audit_events, falco_events) = exec_and_falco_stream();
    let expected = offline_alert_ids_of(
        &rules,
        &[
            (SourceKind::K8sAudit, audit_events.as_slice()),
            (SourceKind::Falco, falco_events.as_slice()),
        ],
    )
    .await;
    assert_eq!(expected.len(), 5, "one alert per even minute: {expected:?}");
    let (topics, repartition) = topics("repart-cross").await;
    // Both instances join at once: the rebalances leave partitions unread
    // for seconds, longer than `config`'s idle timeout on a busy machine.
    let config = config_idle(dir.path(), &topics, &rules, 15_000);
    let env = env(&repartition);

    produce_round_robin(&topics.audit, &audit_events, 0).await;
    let addr = broker().addr.clone();
    for p in 0..FALCO_PARTITIONS {
        let part: Vec<Vec<u8>> = falco_events
            .iter()
            .skip(p as usize)
            .step_by(FALCO_PARTITIONS as usize)
            .cloned()
            .collect();
        produce(&addr, &topics.falco, p, &part).await;
    }
    let a = start(&config, dir.path().join("a.log"), &env);
    let b = start(&config, dir.path().join("b.log"), &env);
    await_alerts(&topics.alerts, &expected, Duration::from_secs(120), || {
        let late = partition_records(&topics.late_events, 0);
        format!(
            "late events {}: {:?}\n{}",
            late.len(),
            late.iter().take(3).collect::<Vec<_>>(),
            logs(dir.path(), &["a", "b"])
        )
    })
    .await;
    // Both instances read forwarded events: neither correlated everything.
    let received: Vec<f64> = [&a, &b]
        .iter()
        .map(|v| {
            metric(
                &http_get(v.http_addr(), "/metrics").1,
                "vigil_repartition_received_total",
            )
            .unwrap_or(0.0)
        })
        .collect();
    let total: f64 = received.iter().sum();
    assert!(total > 0.0, "forwarded events were read: {received:?}");
    for status in [a.terminate(), b.terminate()] {
        assert!(status.success(), "exited with {status}");
    }
}

/// A per-event rule folding a user's execs for ten minutes.
fn write_folding_rule(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules/k8s_audit");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("exec_folded.sql"),
        "-- id: test.exec_folded\n-- title: exec, folded per user\n-- severity: high\n\
         -- description: folding test rule\n-- mitre: T1609\n-- source: k8s_audit\n\
         -- author: Vigil tests\n-- based_on: vigil:fold-test\n-- suppress: 10m\n-- suppress_key: username\n\
         SELECT user_info.username AS username, object_ref.name AS pod FROM k8s_audit\n\
         WHERE object_ref.subresource = 'exec'\n",
    )
    .unwrap();
    dir.join("rules")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suppression_key_read_by_two_instances_raises_one_first_alert() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_folding_rule(dir.path());
    // Twenty minutes of background reads every 5 s; eve's six execs in
    // the first three minutes (round robin: over every partition), and
    // mallory's exec after eve's period.
    let mut events = Vec::new();
    let mut id = 0;
    for t in (0..20 * 60i64).step_by(5) {
        id += 1;
        events.push(audit(id, "dev0", "get", "pods", None, "web", 200, t));
        let exec =
            |id, user: &str| audit(id, user, "create", "pods", Some("exec"), "web-1", 200, t);
        if t % 30 == 0 && t < 180 {
            id += 1;
            events.push(exec(id, "eve"));
        }
        if t == 15 * 60 {
            id += 1;
            events.push(exec(id, "mallory"));
        }
    }
    let expected = offline_alert_ids(&rules, &events).await;
    assert_eq!(
        expected.len(),
        3,
        "eve's first alert and summary, mallory's first alert: {expected:?}"
    );
    let (topics, repartition) = topics("repart-fold").await;
    let config = config_idle(dir.path(), &topics, &rules, 15_000);
    let env = env(&repartition);
    let a = start(&config, dir.path().join("a.log"), &env);
    let b = start(&config, dir.path().join("b.log"), &env);
    // Produced once both hold source partitions, so that each reads some
    // of eve's execs (a check that cannot fail otherwise passes quietly).
    await_both_assigned(dir.path()).await;
    produce_round_robin(&topics.audit, &events, 0).await;
    await_alerts(&topics.alerts, &expected, Duration::from_secs(120), || {
        logs(dir.path(), &["a", "b"])
    })
    .await;
    for status in [a.terminate(), b.terminate()] {
        assert!(status.success(), "exited with {status}");
    }
}

/// Until instances `a` and `b` both hold partitions (and a little more).
async fn await_both_assigned(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !["a", "b"].iter().all(|n| {
        std::fs::read_to_string(dir.join(format!("{n}.log")))
            .unwrap_or_default()
            .contains("partitions assigned")
    }) {
        assert!(Instant::now() < deadline, "{}", logs(dir, &["a", "b"]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// What an instance logs when it has restored the state of repartition
/// partitions assigned to it.
const RESTORED: &str = "state of assigned partitions restored";

/// Until `group`'s committed offset of every partition of `topic` is at
/// the partition's end.
async fn await_committed_to_the_end(group: &str, topic: &str, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let behind: Vec<(i32, Option<i64>, i64)> = (0..REPARTITIONS)
            .map(|p| {
                let end = partition_records(topic, p).last().map_or(0, |(o, _)| o + 1);
                (p, committed_offset_of(group, topic, p), end)
            })
            .filter(|(_, committed, end)| *committed != Some(*end))
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "(partition, committed, end) not at the end: {behind:?}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A first-seen rule: a user's first exec in a day, after a second of
/// learning.
fn write_first_seen_rule(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules/k8s_audit");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("first_exec.sql"),
        "-- id: test.first_exec\n-- title: a user's first exec\n-- severity: high\n\
         -- description: first-seen test rule\n-- mitre: T1609\n-- source: k8s_audit\n\
         -- author: Vigil tests\n-- based_on: vigil:first-seen-test\n\
         -- first_seen: username\n-- history: 1d\n-- learning: 1s\n\
         SELECT user_info.username AS username, object_ref.name AS pod FROM k8s_audit\n\
         WHERE object_ref.subresource = 'exec'\n",
    )
    .unwrap();
    dir.join("rules")
}

/// Background reads every 5 s over `[from, to)` seconds, and the execs
/// `(user, second)`.
fn reads_and_execs(from: i64, to: i64, execs: &[(&str, i64)], id: &mut usize) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    for t in (from..to).step_by(5) {
        *id += 1;
        events.push(audit(*id, "dev0", "get", "pods", None, "web", 200, t));
        for (user, _) in execs.iter().filter(|(_, at)| *at == t) {
            *id += 1;
            events.push(audit(
                *id,
                user,
                "create",
                "pods",
                Some("exec"),
                "web-1",
                200,
                t,
            ));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_seen_combination_is_new_once_across_instances_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_first_seen_rule(dir.path());
    let mut id = 0;
    // Eve execs every 30 s from minute 2 to 5 (round robin: in every
    // partition), mallory at minute 8; after the restart eve again and
    // trudy for the first time.
    let eve: Vec<(&str, i64)> = (120..300).step_by(30).map(|t| ("eve", t)).collect();
    let before = reads_and_execs(
        0,
        600,
        &[eve.as_slice(), &[("mallory", 480)]].concat(),
        &mut id,
    );
    let between = reads_and_execs(600, 660, &[], &mut id);
    let after = reads_and_execs(660, 900, &[("eve", 700), ("trudy", 710)], &mut id);
    let expected_before = offline_alert_ids(&rules, &before).await;
    assert_eq!(
        expected_before.len(),
        2,
        "eve's and mallory's first execs: {expected_before:?}"
    );
    let all = [before.clone(), between.clone(), after.clone()].concat();
    let expected_all = offline_alert_ids(&rules, &all).await;
    assert_eq!(expected_all.len(), 3, "and trudy's: {expected_all:?}");

    let (topics, repartition) = topics("repart-first-seen").await;
    let config = config_idle(dir.path(), &topics, &rules, 15_000);
    let env = env(&repartition);
    let a = start(&config, dir.path().join("a.log"), &env);
    let b = start(&config, dir.path().join("b.log"), &env);
    await_both_assigned(dir.path()).await;
    produce_round_robin(&topics.audit, &before, 0).await;
    await_alerts(
        &topics.alerts,
        &expected_before,
        Duration::from_secs(120),
        || logs(dir.path(), &["a", "b"]),
    )
    .await;
    // b stops; a takes its repartition partitions over and restores their
    // state. (One member at a time: tansu 0.6 left a group that two
    // members left at once without an assignment for the next.)
    let restores = |v: &Vigil| v.log_text().matches(RESTORED).count();
    let restored_by_a = restores(&a);
    let status = b.terminate();
    assert!(status.success(), "exited with {status}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while restores(&a) == restored_by_a {
        assert!(
            Instant::now() < deadline,
            "{}",
            logs(dir.path(), &["a", "b"])
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // More reads, so that the second stage commits past eve's execs: a
    // restart does not re-read them, and only the state topic knows her.
    produce_round_robin(&topics.audit, &between, before.len()).await;
    await_committed_to_the_end(&format!("{}-correlate", topics.group), &repartition, || {
        logs(dir.path(), &["a", "b"])
    })
    .await;
    let status = a.terminate();
    assert!(status.success(), "exited with {status}");

    produce_round_robin(&topics.audit, &after, before.len() + between.len()).await;
    let c = start(&config, dir.path().join("c.log"), &env);
    await_alerts(
        &topics.alerts,
        &expected_all,
        Duration::from_secs(120),
        || logs(dir.path(), &["a", "b", "c"]),
    )
    .await;
    // Eve's exec after the restart was judged against the restored state:
    // the restarted instance read only the new source messages.
    let metrics = http_get(c.http_addr(), "/metrics").1;
    let consumed = metric(
        &metrics,
        "vigil_messages_consumed_total{source=\"k8s_audit\"}",
    );
    assert_eq!(
        consumed,
        Some(after.len() as f64),
        "source messages read after the restart"
    );
    assert!(c.log_text().contains(RESTORED), "{}", c.log_text());
    let status = c.terminate();
    assert!(status.success(), "exited with {status}");
}
