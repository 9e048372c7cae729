//! The two stages of the repartitioned placement against one detector
//! over the same input.

use std::collections::BTreeSet;
use std::path::PathBuf;

use vigil_gen::{GenConfig, Generator, Rng};
use vigil_model::forward::partition_of_key;

use super::*;
use crate::decode::DecodeLimits;
use crate::rules::{RuleEngine, RuleMode, RulePack};

const REPARTITIONS: usize = 2;

async fn pack() -> RuleEngine {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    RuleEngine::compile(RulePack::load_dir(&rules).unwrap().rule_set())
        .await
        .unwrap()
}

fn detector(engine: RuleEngine) -> Detector {
    Detector::new(
        engine,
        DecodeLimits::default(),
        Arc::new(crate::observe::NoMetrics),
    )
}

/// How the first stage reads its partitions.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    /// Every batch holds events of every partition.
    Interleaved,
    /// A backlog read one partition after another (each partition whole
    /// before the next), as a consumer may.
    PartitionByPartition,
}

const SOURCE_PARTITIONS: i32 = 3;

/// Every source partition of [`batches`].
fn source_partitions() -> Vec<String> {
    vigil_gen::GENERATED
        .iter()
        .flat_map(|s| (0..SOURCE_PARTITIONS).map(move |p| format!("{}/{p}", s.table_name())))
        .collect()
}

/// Generated events with attacks, spread over three partitions per source
/// at random (by no correlation key), in batches of 500.
fn batches(reading: Reading) -> Vec<Vec<RawMessage>> {
    let config = GenConfig {
        attack_every: 30,
        ..Default::default()
    };
    let mut rng = Rng::new(7);
    let mut next_offset: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let messages: Vec<RawMessage> = Generator::new(config)
        .take(6000)
        .map(|e| {
            let mut m = e.raw_message();
            let topic = m.source.table_name().to_string();
            let partition = rng.below(SOURCE_PARTITIONS as u64) as i32;
            let offset = next_offset.entry((topic.clone(), partition)).or_default();
            m.origin = Origin::Kafka {
                topic: topic.into(),
                partition,
                offset: *offset,
            };
            *offset += 1;
            m
        })
        .collect();
    let mut messages = messages;
    if reading == Reading::PartitionByPartition {
        // Stable: each partition stays in offset order.
        messages.sort_by_key(|m| match &m.origin {
            Origin::Kafka { partition, .. } => *partition,
            Origin::File { .. } => 0,
        });
    }
    messages.chunks(500).map(<[RawMessage]>::to_vec).collect()
}

/// A record of repartition partition `partition` at `offset`.
fn record(partition: usize, offset: &mut i64, payload: Vec<u8>) -> RawMessage {
    let m = RawMessage {
        source: SourceKind::K8sAudit,
        payload,
        origin: Origin::Kafka {
            topic: "vigil-correlate".into(),
            partition: partition as i32,
            offset: *offset,
        },
        timestamp_ms: None,
        state_only: false,
    };
    *offset += 1;
    m
}

/// The first stage's output of a batch as repartition records, per
/// partition: the events by key, then a mark per source partition to every
/// partition.
fn repartition(out: &Detections, offsets: &mut [i64; REPARTITIONS]) -> Vec<Vec<RawMessage>> {
    let mut records = vec![Vec::new(); REPARTITIONS];
    for routed in &out.routed {
        let p = partition_of_key(&routed.key, REPARTITIONS as u32) as usize;
        let payload = routed.record.clone().into_bytes();
        records[p].push(record(p, &mut offsets[p], payload));
    }
    for (partition, t) in &out.marks {
        let mark = Forward::Mark {
            partition: partition.clone(),
            event_time_ns: *t,
        };
        for (p, into) in records.iter_mut().enumerate() {
            into.push(record(p, &mut offsets[p], mark.encode(b"")));
        }
    }
    records
}

type AlertKeys = BTreeSet<(String, String)>;

fn correlation_alerts(
    out: &Detections,
    correlation: &BTreeSet<String>,
    into: &mut Vec<(String, String)>,
) {
    into.extend(
        out.alerts
            .iter()
            .filter(|a| correlation.contains(&a.rule_id))
            .map(|a| (a.rule_id.clone(), a.alert_id.clone())),
    );
}

/// Which rules' alerts a test compares.
#[derive(Clone, Copy)]
enum Compared {
    /// The correlation rules.
    Correlation,
    /// The per-event rules that fold their alerts (`-- suppress`).
    Folding,
}

/// The ids of the detector's rules of that kind.
fn rules_compared(detector: &Detector, compared: Compared) -> BTreeSet<String> {
    detector
        .engine()
        .rules()
        .filter(|r| match compared {
            Compared::Correlation => r.meta.mode == RuleMode::Correlation,
            Compared::Folding => r.meta.mode != RuleMode::Correlation && r.meta.suppress.is_some(),
        })
        .map(|r| r.meta.id.clone())
        .collect()
}

/// Run both stages; `redeliver` sends every batch's records to the second
/// stage twice (an at-least-once re-delivery of the source batch).
async fn two_stages(
    redeliver: bool,
    reading: Reading,
) -> (Vec<(String, String)>, [usize; REPARTITIONS]) {
    two_stages_of(redeliver, reading, 1, Compared::Correlation).await
}

/// Both stages, with `instances` first stages, instance `i` reading the
/// source partitions `p` with `p % instances == i`.
async fn two_stages_of(
    redeliver: bool,
    reading: Reading,
    instances: usize,
    compared: Compared,
) -> (Vec<(String, String)>, [usize; REPARTITIONS]) {
    let mut first = Vec::new();
    for _ in 0..instances {
        let mut stage = detector(pack().await.into_lanes().await.unwrap());
        stage.register_partitions(&source_partitions());
        first.push(stage);
    }
    let correlation = rules_compared(&first[0], compared);
    let mut second = Vec::new();
    for _ in 0..REPARTITIONS {
        second.push(detector(pack().await.into_lanes().await.unwrap()).reading_forwarded());
    }
    let mut offsets = [0i64; REPARTITIONS];
    let mut rows = [0usize; REPARTITIONS];
    let mut alerts = Vec::new();
    for batch in batches(reading) {
        for (i, stage) in first.iter_mut().enumerate() {
            let part: Vec<RawMessage> = batch
                .iter()
                .filter(|m| match &m.origin {
                    Origin::Kafka { partition, .. } => *partition as usize % instances == i,
                    Origin::File { .. } => i == 0,
                })
                .cloned()
                .collect();
            let out = stage.process(part).await;
            let times = if redeliver { 2 } else { 1 };
            for _ in 0..times {
                for (p, records) in repartition(&out, &mut offsets).into_iter().enumerate() {
                    rows[p] += records.len();
                    let input = second[p].decoder().decode_forwarded(records);
                    let out = second[p].evaluate(input).await;
                    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
                    correlation_alerts(&out, &correlation, &mut alerts);
                }
            }
            correlation_alerts(&out, &correlation, &mut alerts);
        }
    }
    for stage in &mut second {
        correlation_alerts(&stage.finish().await, &correlation, &mut alerts);
    }
    (alerts, rows)
}

async fn one_detector(reading: Reading) -> AlertKeys {
    one_detector_of(reading, Compared::Correlation).await
}

async fn one_detector_of(reading: Reading, compared: Compared) -> AlertKeys {
    let mut whole = detector(pack().await);
    whole.register_partitions(&source_partitions());
    let correlation = rules_compared(&whole, compared);
    let mut alerts = Vec::new();
    for batch in batches(reading) {
        correlation_alerts(&whole.process(batch).await, &correlation, &mut alerts);
    }
    correlation_alerts(&whole.finish().await, &correlation, &mut alerts);
    alerts.into_iter().collect()
}

#[tokio::test]
async fn two_stages_over_repartitioned_keys_raise_the_alerts_of_one_detector() {
    let expected = one_detector(Reading::Interleaved).await;
    let rules: BTreeSet<&String> = expected.iter().map(|(r, _)| r).collect();
    assert!(
        rules.len() >= 3,
        "the input must fire several correlation rules: {rules:?}"
    );
    let (alerts, rows) = two_stages(false, Reading::Interleaved).await;
    assert!(
        rows.iter().all(|&n| n > 0),
        "both repartition partitions hold events: {rows:?}"
    );
    let unique: AlertKeys = alerts.iter().cloned().collect();
    assert_eq!(unique.len(), alerts.len(), "no alert is raised twice");
    assert_eq!(unique, expected);
}

#[tokio::test]
async fn a_redelivered_source_batch_is_not_counted_twice() {
    let expected = one_detector(Reading::Interleaved).await;
    let (alerts, _) = two_stages(true, Reading::Interleaved).await;
    let unique: AlertKeys = alerts.iter().cloned().collect();
    assert_eq!(unique.len(), alerts.len(), "no alert is raised twice");
    assert_eq!(unique, expected);
}

/// The first stage announces every source partition to the lanes, so a
/// partition read after another's whole backlog still holds their
/// watermark back, as in one detector that knows its partitions; without
/// the announcement its events are late and alerts are lost.
#[tokio::test]
async fn a_backlog_read_partition_by_partition_loses_no_alert() {
    let expected = one_detector(Reading::PartitionByPartition).await;
    let interleaved = one_detector(Reading::Interleaved).await;
    assert_eq!(
        expected
            .symmetric_difference(&interleaved)
            .collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "one detector that knows its partitions is not affected by the order"
    );
    let (alerts, _) = two_stages(false, Reading::PartitionByPartition).await;
    let unique: AlertKeys = alerts.iter().cloned().collect();
    assert_eq!(unique, expected);
}

/// Per-event rules that fold their alerts raise, over two first-stage
/// instances, the alerts one detector raises over the same stream (in
/// event-time order): each alert is forwarded by suppression key, so one
/// fold lane sees every alert of a key, in event-time order. Folded per
/// instance, a key read by both would raise its first alert twice.
#[tokio::test]
async fn two_instances_fold_per_event_alerts_as_one_detector_does() {
    let expected = one_detector_of(Reading::Interleaved, Compared::Folding).await;
    let (alerts, _) = two_stages_of(true, Reading::Interleaved, 2, Compared::Folding).await;
    assert!(!expected.is_empty(), "the input must fire folding rules");
    let unique: AlertKeys = alerts.iter().cloned().collect();
    assert_eq!(unique.len(), alerts.len(), "no alert is raised twice");
    assert_eq!(unique, expected);
}

/// A per-event rule that folds a user's execs for ten minutes.
fn fold_rule() -> crate::rules::Rule {
    crate::rules::parse_rule(
        std::path::Path::new("exec_folded.sql"),
        "-- id: test.exec_folded\n-- title: t\n-- severity: high\n-- description: d\n-- mitre: T1609\n\
         -- source: k8s_audit\n-- author: tests\n-- based_on: vigil:test\n-- suppress: 10m\n-- suppress_key: username\n\
         SELECT user_info.username AS username FROM k8s_audit WHERE object_ref.subresource = 'exec'\n",
    )
    .unwrap()
}

/// Eve's execs (source partition, seconds): the first two are read by
/// different instances, the later one first; the last is past the
/// period.
fn execs() -> Vec<RawMessage> {
    [(1, 60), (0, 120), (0, 180), (1, 900)]
        .into_iter()
        .enumerate()
        .map(|(i, (partition, secs))| RawMessage {
            source: SourceKind::K8sAudit,
            payload: audit_event(i, "eve", "create", "pods", Some("exec"), secs),
            origin: Origin::Kafka {
                topic: "audit".into(),
                partition,
                offset: i as i64,
            },
            timestamp_ms: None,
            state_only: false,
        })
        .collect()
}

fn folded(alerts: &[crate::alert::Alert]) -> BTreeSet<(String, Option<u64>)> {
    alerts
        .iter()
        .map(|a| (a.alert_id.clone(), a.suppressed_count))
        .collect()
}

/// A suppression key whose events two first-stage instances read, the
/// later event first, raises the alerts of one detector reading them in
/// event-time order: one first alert, one summary.
#[tokio::test]
async fn a_key_read_by_two_instances_is_folded_once() {
    let mut whole = detector(RuleEngine::compile(vec![fold_rule()]).await.unwrap());
    let mut expected = whole.process(execs()).await.alerts;
    expected.extend(whole.finish().await.alerts);
    let expected = folded(&expected);
    let summaries: Vec<Option<u64>> = expected.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        summaries.iter().filter(|n| **n == Some(2)).count(),
        1,
        "two first alerts and a summary of two: {expected:?}"
    );
    assert_eq!(summaries.len(), 3, "{expected:?}");

    let stage = || async {
        let engine = RuleEngine::compile(vec![fold_rule()]).await.unwrap();
        let mut d = detector(engine.into_lanes().await.unwrap());
        d.register_partitions(&["audit/0".to_string(), "audit/1".to_string()]);
        d
    };
    let (mut reads_0, mut reads_1) = (stage().await, stage().await);
    let engine = RuleEngine::compile(vec![fold_rule()]).await.unwrap();
    let mut second = detector(engine.into_lanes().await.unwrap()).reading_forwarded();
    let mut offsets = [0i64; REPARTITIONS];
    let mut alerts = Vec::new();
    let (p0, p1): (Vec<RawMessage>, Vec<RawMessage>) = execs()
        .into_iter()
        .partition(|m| matches!(m.origin, Origin::Kafka { partition: 0, .. }));
    for (first, part) in [(&mut reads_0, p0), (&mut reads_1, p1)] {
        let out = first.process(part).await;
        alerts.extend(out.alerts.clone());
        for records in repartition(&out, &mut offsets) {
            let input = second.decoder().decode_forwarded(records);
            alerts.extend(second.evaluate(input).await.alerts);
        }
    }
    alerts.extend(second.finish().await.alerts);
    assert_eq!(folded(&alerts), expected);
}

/// An audit event of `user` at `secs` after the epoch of the test.
fn audit_event(
    id: usize,
    user: &str,
    verb: &str,
    resource: &str,
    sub: Option<&str>,
    secs: i64,
) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": format!("evt-{id:05}"),
        "stage": "ResponseComplete", "verb": verb, "user": {"username": user},
        "objectRef": {"resource": resource, "subresource": sub, "namespace": "prod", "name": "x", "apiVersion": "v1"},
        "responseStatus": {"code": 200}, "requestReceivedTimestamp": t, "stageTimestamp": t
    })
    .to_string()
    .into_bytes()
}

/// A sequence rule: an exec, then a secret read by the same user within 10
/// minutes.
fn sequence_rule() -> crate::rules::Rule {
    crate::rules::parse_rule(
        std::path::Path::new("exec_then_secret.sql"),
        "-- id: test.exec_then_secret\n-- title: t\n-- severity: high\n-- description: d\n-- mitre: T1110\n\
         -- source: k8s_audit\n-- author: tests\n-- based_on: vigil:test\n-- mode: correlation\n-- window: 10m\n\
         SELECT a.user_info.username AS username, b.event_time AS window_end\n\
         FROM k8s_audit a JOIN k8s_audit b\n\
           ON a.user_info.username = b.user_info.username\n\
          AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes'\n\
         WHERE a.object_ref.subresource = 'exec' AND b.object_ref.resource = 'secrets' AND b.verb = 'get'\n",
    )
    .unwrap()
}

#[tokio::test]
async fn a_lane_holds_the_repartition_offsets_of_an_open_sequence() {
    let rule = sequence_rule();
    let engine = RuleEngine::compile(vec![rule])
        .await
        .unwrap()
        .into_lanes()
        .await
        .unwrap();
    let mut second = detector(engine).reading_forwarded();
    let mut offset = 0;
    let marks = |secs: i64, offset: &mut i64| {
        let t = (1_767_225_600 + secs) * 1_000_000_000;
        (0..3)
            .map(|p| {
                record(
                    0,
                    offset,
                    Forward::Mark {
                        partition: format!("audit/{p}"),
                        event_time_ns: t,
                    }
                    .encode(b""),
                )
            })
            .collect::<Vec<_>>()
    };
    let tls = audit_event(1, "eve", "get", "secrets", None, 60);
    let exec = audit_event(2, "eve", "create", "pods", Some("exec"), 270);
    let mut batch = vec![
        sequence_row(&tls, 0, &mut offset),
        sequence_row(&exec, 1, &mut offset),
    ];
    batch.extend(marks(280, &mut offset));
    second
        .evaluate(second.decoder().decode_forwarded(batch))
        .await;
    assert_eq!(
        second
            .engine()
            .retained_offsets()
            .get(&("vigil-correlate".to_string(), 0)),
        Some(&0)
    );
    let batch = marks(360, &mut offset);
    second
        .evaluate(second.decoder().decode_forwarded(batch))
        .await;
    assert_eq!(
        second
            .engine()
            .retained_offsets()
            .get(&("vigil-correlate".to_string(), 0)),
        Some(&0),
        "the exec is held while its sequence can still complete"
    );
}

/// The sequence rule, its alerts suppressed for an hour per user.
fn suppressed_sequence_rule() -> crate::rules::Rule {
    let mut rule = sequence_rule();
    rule.meta.suppress = Some(std::time::Duration::from_secs(3600));
    rule.meta.suppress_key = vec!["username".into()];
    rule
}

/// A repartition record (partition 0) forwarding audit message `m`, first
/// consumed at offset `from` of `audit/0`, for the sequence rule.
fn sequence_row(m: &[u8], from: i64, offset: &mut i64) -> RawMessage {
    let header = Forward::Row {
        rule: "test.exec_then_secret".into(),
        source: "k8s_audit".into(),
        from: Origin::Kafka {
            topic: "audit".into(),
            partition: 0,
            offset: from,
        },
        item: 0,
        timestamp_ms: None,
    };
    record(0, offset, header.encode(m))
}

/// A mark at `secs` for `audit/0`, in repartition partition 0.
fn mark_at(secs: i64, offset: &mut i64) -> RawMessage {
    let mark = Forward::Mark {
        partition: "audit/0".into(),
        event_time_ns: (1_767_225_600 + secs) * 1_000_000_000,
    };
    record(0, offset, mark.encode(b""))
}

/// A partition that moves to another instance keeps its correlation
/// rule's suppression periods: the open period holds the committed offset
/// at the events of its first alert, and the new holder re-reads from
/// there and emits those windows again only to rebuild the period. So a
/// second match for the same user within the hour folds into a summary,
/// as in one detector, instead of raising a second first alert.
#[tokio::test]
async fn a_moved_partition_keeps_its_correlation_suppression() {
    let events = [
        audit_event(1, "eve", "create", "pods", Some("exec"), 60),
        audit_event(2, "eve", "get", "secrets", None, 120),
        audit_event(3, "eve", "create", "pods", Some("exec"), 1100),
        audit_event(4, "eve", "get", "secrets", None, 1160),
    ];
    let engine = || async {
        RuleEngine::compile(vec![suppressed_sequence_rule()])
            .await
            .unwrap()
    };
    let mut whole = detector(engine().await);
    let messages = events
        .iter()
        .enumerate()
        .map(|(i, e)| RawMessage {
            source: SourceKind::K8sAudit,
            payload: e.clone(),
            origin: Origin::Kafka {
                topic: "audit".into(),
                partition: 0,
                offset: i as i64,
            },
            timestamp_ms: None,
            state_only: false,
        })
        .collect();
    let mut expected = whole.process(messages).await.alerts;
    expected.extend(whole.finish().await.alerts);
    let expected = folded(&expected);
    let counts: BTreeSet<Option<u64>> = expected.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, BTreeSet::from([None, Some(1)]), "{expected:?}");

    // The first holder raises the first alert, and its watermark passes
    // the events' retention (a window of 10 minutes).
    let mut offset = 0;
    let mut records = vec![
        sequence_row(&events[0], 0, &mut offset),
        sequence_row(&events[1], 1, &mut offset),
        mark_at(1000, &mut offset),
    ];
    let mut first = detector(engine().await.into_lanes().await.unwrap()).reading_forwarded();
    let out = first
        .evaluate(first.decoder().decode_forwarded(records.clone()))
        .await;
    let mut alerts = out.alerts;
    assert_eq!(alerts.len(), 1, "the first alert: {alerts:?}");
    let lanes = first.engine().lanes().unwrap();
    let committed = lanes
        .retained_offsets()
        .get(&("vigil-correlate".to_string(), 0))
        .copied()
        .unwrap_or(offset);
    assert_eq!(committed, 0, "the open period holds its events");
    let emitted = lanes.emitted_by_partition();

    // The partition moves: its next holder re-reads from the committed
    // offset, then reads the second match.
    let mut next = detector(engine().await.into_lanes().await.unwrap()).reading_forwarded();
    next.assigned(emitted);
    records.extend([
        sequence_row(&events[2], 2, &mut offset),
        sequence_row(&events[3], 3, &mut offset),
        mark_at(1300, &mut offset),
    ]);
    let reread = records[committed as usize..].to_vec();
    alerts.extend(
        next.evaluate(next.decoder().decode_forwarded(reread))
            .await
            .alerts,
    );
    alerts.extend(next.finish().await.alerts);
    assert_eq!(folded(&alerts), expected);
}

#[tokio::test]
async fn an_unreadable_repartition_record_is_a_dead_letter_with_the_reason() {
    let second = detector(pack().await.into_lanes().await.unwrap()).reading_forwarded();
    let mut offset = 0;
    let records = vec![
        record(0, &mut offset, b"not a header".to_vec()),
        record(
            0,
            &mut offset,
            b"{\"kind\":\"row\",\"rule\":\"x\"}\n{}".to_vec(),
        ),
    ];
    let input = second.decoder().decode(records);
    let reasons: Vec<String> = input
        .out
        .dead_letters
        .iter()
        .map(|d| d.reason.clone())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("no header line"), "{reasons:?}");
    assert!(
        reasons[1].contains("header of a repartition record is invalid"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn an_assignment_drops_the_state_of_partitions_no_longer_owned_and_restores_new_ones() {
    let engine = RuleEngine::compile(vec![sequence_rule()])
        .await
        .unwrap()
        .into_lanes()
        .await
        .unwrap();
    let mut second = detector(engine).reading_forwarded();
    let mut offset = 0;
    let exec = audit_event(1, "eve", "create", "pods", Some("exec"), 270);
    let input = second
        .decoder()
        .decode(vec![sequence_row(&exec, 0, &mut offset)]);
    second.evaluate(input).await;
    let owned = ("vigil-correlate".to_string(), 0);
    assert!(second.engine().retained_offsets().contains_key(&owned));
    let emitted = BTreeMap::from([("test.exec_then_secret".to_string(), 42)]);
    second.assigned(BTreeMap::from([(
        "vigil-correlate/1".to_string(),
        emitted.clone(),
    )]));
    assert!(
        second.engine().retained_offsets().is_empty(),
        "partition 0 moved away: its state is dropped"
    );
    assert_eq!(
        second.engine().lanes().unwrap().emitted_by_partition(),
        BTreeMap::from([("vigil-correlate/1".to_string(), emitted)]),
        "partition 1 keeps what was emitted for it until its lanes emit more"
    );
}

/// A first-seen rule: a user's first exec in a day, after a minute of
/// learning.
fn first_seen_rule() -> crate::rules::Rule {
    crate::rules::parse_rule(
        std::path::Path::new("first_exec.sql"),
        "-- id: test.first_exec\n-- title: t\n-- severity: high\n-- description: d\n-- mitre: T1609\n\
         -- source: k8s_audit\n-- author: tests\n-- based_on: vigil:test\n-- first_seen: username\n-- history: 1d\n-- learning: 1m\n\
         SELECT user_info.username AS username FROM k8s_audit WHERE object_ref.subresource = 'exec'\n",
    )
    .unwrap()
}

/// Execs (source partition, user, seconds).
fn first_execs(of: &[(i32, &str, i64)], offset: usize) -> Vec<RawMessage> {
    of.iter()
        .enumerate()
        .map(|(i, (partition, user, secs))| RawMessage {
            source: SourceKind::K8sAudit,
            payload: audit_event(offset + i, user, "create", "pods", Some("exec"), *secs),
            origin: Origin::Kafka {
                topic: "audit".into(),
                partition: *partition,
                offset: (offset + i) as i64,
            },
            timestamp_ms: None,
            state_only: false,
        })
        .collect()
}

/// Each reader's first event starts its learning. Eve's first exec is at
/// 100 s in partition 0; the reader of partitions 0 and 2 reads her exec
/// at 110 s first, and the other reader her exec at 120 s, both past
/// their learning.
const EXECS: [(i32, &str, i64); 5] = [
    (1, "carol", 0),
    (1, "eve", 120),
    (2, "eve", 110),
    (0, "bob", 0),
    (0, "eve", 100),
];

async fn first_seen_stage() -> Detector {
    let engine = RuleEngine::compile(vec![first_seen_rule()]).await.unwrap();
    let mut d = detector(engine.into_lanes().await.unwrap());
    d.register_partitions(&["audit/0", "audit/1", "audit/2"].map(String::from));
    d
}

async fn first_seen_second_stage() -> Detector {
    let engine = RuleEngine::compile(vec![first_seen_rule()]).await.unwrap();
    let mut lanes = engine.into_lanes().await.unwrap();
    let metas = lanes.rules().map(|r| r.meta.clone()).collect();
    lanes.lanes_mut().unwrap().fold_alerts_of(metas);
    detector(lanes).reading_forwarded()
}

fn event_ids(alerts: &[crate::alert::Alert]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a.events[0].event_id.clone())
        .collect()
}

/// A combination two first-stage instances both see after their learning
/// (each would call it new) is new once, at its earliest event, as in one
/// detector; a second stage made again from the changelogged state does
/// not raise it again when it re-reads it.
#[tokio::test]
async fn a_combination_seen_by_two_instances_is_new_once_and_stays_seen_after_a_move() {
    let mut whole = detector(RuleEngine::compile(vec![first_seen_rule()]).await.unwrap());
    let mut in_time_order = first_execs(&EXECS, 0);
    in_time_order.sort_by_key(|m| {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        v["stageTimestamp"].as_str().unwrap().to_string()
    });
    let expected = event_ids(&whole.process(in_time_order).await.alerts);
    assert_eq!(
        expected,
        vec!["evt-00004/ResponseComplete".to_string()],
        "eve at 100 s"
    );

    let (mut reads_0, mut reads_1) = (first_seen_stage().await, first_seen_stage().await);
    let mut second = first_seen_second_stage().await;
    let mut offsets = [0i64; REPARTITIONS];
    let (mut alerts, mut changes, mut records) = (Vec::new(), Vec::new(), Vec::new());
    // The later execs are read and forwarded first.
    let (p1, p02): (Vec<RawMessage>, Vec<RawMessage>) = first_execs(&EXECS, 0)
        .into_iter()
        .partition(|m| matches!(m.origin, Origin::Kafka { partition: 1, .. }));
    for (first, part) in [(&mut reads_1, p1), (&mut reads_0, p02)] {
        let out = first.process(part).await;
        assert!(out.alerts.is_empty(), "the first stage judges nothing");
        assert!(out.state_changes.is_empty(), "nor persists its filter");
        for part in repartition(&out, &mut offsets) {
            records.push(part.clone());
            let mut out = second
                .evaluate(second.decoder().decode_forwarded(part))
                .await;
            alerts.append(&mut out.alerts);
            changes.append(&mut out.state_changes);
        }
    }
    let mut out = second.finish().await;
    alerts.append(&mut out.alerts);
    assert_eq!(event_ids(&alerts), expected);
    changes.extend(second.engine.take_first_seen_changes());
    assert!(changes.iter().all(|c| c.partition.is_some()), "{changes:?}");

    // The partitions move to a new second stage, which restores their
    // state, re-reads their records and then reads dave's first exec.
    let mut moved = first_seen_second_stage().await;
    for c in changes {
        let p = c.partition.unwrap();
        assert!(moved.restore_lane_first_seen(("vigil-correlate", p), &c.rule, c.changes));
    }
    let mut again = Vec::new();
    for part in records {
        again.extend(
            moved
                .evaluate(moved.decoder().decode_forwarded(part))
                .await
                .alerts,
        );
    }
    let out = reads_0.process(first_execs(&[(0, "dave", 300)], 10)).await;
    for part in repartition(&out, &mut offsets) {
        again.extend(
            moved
                .evaluate(moved.decoder().decode_forwarded(part))
                .await
                .alerts,
        );
    }
    again.extend(moved.finish().await.alerts);
    assert_eq!(
        event_ids(&again),
        vec!["evt-00010/ResponseComplete".to_string()]
    );
}

/// A repartition partition assigned to a second stage hears of every
/// source partition at once, whatever announcements it re-reads: a row of
/// a source partition that has sent no mark yet is not late because
/// another's marks have moved on.
#[tokio::test]
async fn a_newly_assigned_partition_waits_for_source_partitions_not_heard_of() {
    let row = |upstream: i32, secs: i64, offset: &mut i64| {
        let header = Forward::Row {
            rule: "test.exec_then_secret".into(),
            source: "k8s_audit".into(),
            from: Origin::Kafka {
                topic: "audit".into(),
                partition: upstream,
                offset: 0,
            },
            item: 0,
            timestamp_ms: None,
        };
        let exec = audit_event(secs as usize, "eve", "create", "pods", Some("exec"), secs);
        record(0, offset, header.encode(&exec))
    };
    for announced in [false, true] {
        let engine = RuleEngine::compile(vec![sequence_rule()]).await.unwrap();
        let mut second = detector(engine.into_lanes().await.unwrap()).reading_forwarded();
        let partition = "vigil-correlate/0".to_string();
        let new = second.assigned(BTreeMap::from([(partition.clone(), BTreeMap::new())]));
        assert_eq!(new, vec![partition.clone()]);
        if announced {
            second.announce_upstream_to(&new, &["audit/0".into(), "audit/1".into()]);
        }
        // audit/0 delivers up to 1,000 s; then an exec read from audit/1,
        // at 60 s.
        let mut offset = 0;
        let first = vec![row(0, 999, &mut offset), mark_at(1000, &mut offset)];
        let mut out = second
            .evaluate(second.decoder().decode_forwarded(first))
            .await;
        let later = vec![row(1, 60, &mut offset)];
        let more = second
            .evaluate(second.decoder().decode_forwarded(later))
            .await;
        out.dead_letters.extend(more.dead_letters);
        let late = out
            .dead_letters
            .iter()
            .filter(|d| d.to_json().contains("late_event"))
            .count();
        assert_eq!(late, usize::from(!announced), "announced: {announced}");
    }
}

/// With a spill store, a first stage's forwarding filter holds no more
/// combinations than the state keeps in memory: past it, it forgets and
/// forwards again (more records, the same verdicts downstream).
#[tokio::test]
async fn a_first_stage_filter_is_bounded_by_the_first_seen_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::rules::first_seen::FirstSeenStorage {
        max_entries: 10_000,
        spill: Some(crate::rules::first_seen::SpillStorage {
            store: vigil_state::SpillStore::create(dir.path(), 1 << 20).unwrap(),
            memory_entries: 10,
        }),
    };
    let forwarded_rows = |out: &Detections| out.routed.len();
    let users: Vec<String> = (0..40).map(|i| format!("user-{i:02}")).collect();
    let execs = |secs: i64, offset: usize| {
        let of: Vec<(i32, &str, i64)> = users.iter().map(|u| (0, u.as_str(), secs)).collect();
        first_execs(&of, offset)
    };
    for (bounded, expected_again) in [(false, 0), (true, 1)] {
        let mut engine = RuleEngine::compile(vec![first_seen_rule()]).await.unwrap();
        if bounded {
            engine.set_first_seen_storage(storage.clone());
        }
        let mut first = detector(engine.into_lanes().await.unwrap());
        first.register_partitions(&["audit/0".to_string()]);
        let out = first.process(execs(0, 0)).await;
        assert_eq!(forwarded_rows(&out), 40);
        // The same users a second later: a filter that remembers all 40
        // forwards none; one bounded to 10 has forgotten the first ones.
        let again = forwarded_rows(&first.process(execs(1, 40)).await);
        assert_eq!(again.min(1), expected_again, "forwarded again: {again}");
    }
}
