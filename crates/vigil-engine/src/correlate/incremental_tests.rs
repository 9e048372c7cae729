//! Incremental evaluation: the same alerts as a full re-scan, for any
//! batching (generated inputs); the strategy chosen per rule; work per
//! batch independent of the retained window; bounds; restart. Fixed
//! examples of the same alerts across strategies are cases in
//! `tests/correlation/` (`alerts_name_at_most_max_alert_events_*`,
//! `a_delta_rescan_gives_the_alerts_of_a_plain_rescan`).

use proptest::prelude::*;
use serde_json::Value;

use super::tests::{
    audit, detector_and_metrics, detector_with, run, ts, Feed, SEQUENCE, THRESHOLD,
};
use super::{CorrelationSettings, RuleStrategy};
use crate::alert::Alert;
use crate::detect::Detector;
use crate::source::{RawMessage, SourceKind};

const DISTINCT_HOP: &str = "SELECT user_info.username AS username, count(DISTINCT object_ref.namespace) AS namespaces, \
     window_end FROM (SELECT *, unnest(hop_ends(event_time, INTERVAL '10 minutes', INTERVAL '5 minutes')) AS window_end \
                      FROM k8s_audit WHERE object_ref.resource = 'secrets') s \
     GROUP BY user_info.username, window_end HAVING count(DISTINCT object_ref.namespace) >= 2";

const SLIDING: &str = "SELECT username, n, window_end FROM ( \
     SELECT *, user_info.username AS username, event_time AS window_end, \
            count(*) OVER (PARTITION BY user_info.username ORDER BY event_time \
                           RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW) AS n \
     FROM k8s_audit WHERE response_status.code = 403) s WHERE n >= 3";

/// A sliding count whose frame also reads the 20 seconds after each row,
/// emitted when those are complete.
const SLIDING_AHEAD: &str = "SELECT username, n, window_end FROM ( \
     SELECT *, user_info.username AS username, event_time + INTERVAL '20 seconds' AS window_end, \
            count(*) OVER (PARTITION BY user_info.username ORDER BY event_time \
                           RANGE BETWEEN INTERVAL '30 seconds' PRECEDING AND INTERVAL '20 seconds' FOLLOWING) AS n \
     FROM k8s_audit WHERE response_status.code = 403) s WHERE n >= 3";

/// A sliding count per user in each namespace and in all namespaces, each
/// event counted under both through an unnest (as
/// `tetragon.shell_then_outbound_connect` files a connection under its
/// process and its parent).
const SLIDING_UNNESTED: &str = "SELECT username, ns, n, window_end FROM ( \
     SELECT *, event_time AS window_end, \
            count(*) OVER (PARTITION BY username, ns ORDER BY event_time \
                           RANGE BETWEEN INTERVAL '40 seconds' PRECEDING AND CURRENT ROW) AS n \
     FROM (SELECT *, user_info.username AS username, \
                  unnest(make_array(object_ref.namespace, '*')) AS ns \
           FROM k8s_audit WHERE response_status.code = 403) e) s WHERE n >= 3";

/// A sequence whose trigger rows are grouped (one alert per secret read,
/// naming every exec before it), like `k8s.rbac_change_then_workload`:
/// `window_end` is a GROUP BY column taken from the trigger scan.
const GROUPED_SEQUENCE: &str =
    "SELECT b.user_info.username AS username, count(*) AS execs, b.event_time AS window_end \
     FROM k8s_audit a JOIN k8s_audit b \
       ON a.user_info.username = b.user_info.username \
      AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes' \
     WHERE a.object_ref.subresource = 'exec' AND b.object_ref.resource = 'secrets' \
     GROUP BY b.__row, b.user_info.username, b.event_time";

/// Exec and secret read within 20 seconds of each other, either order,
/// like the cross-source rules: complete 20 seconds after the read
/// (`window_end` is the trigger's time shifted by a constant).
const EITHER_WAY: &str = "SELECT b.user_info.username AS username, count(*) AS execs, \
     b.event_time + INTERVAL '20 seconds' AS window_end \
     FROM k8s_audit a JOIN k8s_audit b \
       ON a.user_info.username = b.user_info.username \
      AND a.event_time >= b.event_time - INTERVAL '20 seconds' AND a.event_time <= b.event_time + INTERVAL '20 seconds' \
     WHERE a.object_ref.subresource = 'exec' AND b.object_ref.resource = 'secrets' \
     GROUP BY b.__row, b.user_info.username, b.event_time";

/// The rule shapes together: two aggregations (incremental unless
/// disabled), three joins and three sliding windows (re-scanned; delta
/// re-scans unless disabled), sharing retained events.
fn rules() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        ("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD),
        ("t.distinct", "k8s_audit", "-- window: 10m\n", DISTINCT_HOP),
        ("t.seq", "k8s_audit", "-- window: 10m\n", SEQUENCE),
        (
            "t.seq_grouped",
            "k8s_audit",
            "-- window: 10m\n",
            GROUPED_SEQUENCE,
        ),
        ("t.either_way", "k8s_audit", "-- window: 1m\n", EITHER_WAY),
        ("t.sliding", "k8s_audit", "-- window: 1m\n", SLIDING),
        (
            "t.sliding_ahead",
            "k8s_audit",
            "-- window: 1m\n",
            SLIDING_AHEAD,
        ),
        (
            "t.sliding_unnested",
            "k8s_audit",
            "-- window: 1m\n",
            SLIDING_UNNESTED,
        ),
    ]
}

/// `optimised`: incremental aggregation and delta re-scans, against the
/// plain re-scan of every retained event.
fn settings(optimised: bool) -> CorrelationSettings {
    CorrelationSettings {
        allowed_lateness_ms: 10_000,
        max_alert_events: 3,
        incremental: optimised,
        delta_rescan: optimised,
        ..Default::default()
    }
}

/// What an alert says, comparable across runs (not `detected_at`).
fn summary(a: &Alert) -> (String, String, String, String, Vec<String>, Option<u64>) {
    (
        a.rule_id.clone(),
        a.event_time.clone(),
        a.alert_id.clone(),
        Value::Object(a.fields.clone()).to_string(),
        a.events.iter().map(|e| e.event_id.clone()).collect(),
        a.suppressed_count,
    )
}

/// Feed `messages` in batches of the given sizes (cycled), then finish.
async fn alerts_for(
    mut d: Detector,
    messages: &[RawMessage],
    sizes: &[usize],
) -> Vec<(String, String, String, String, Vec<String>, Option<u64>)> {
    let mut alerts = Vec::new();
    let mut rest = messages;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let out = d.process(rest[..n].to_vec()).await;
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        alerts.extend(out.alerts);
        rest = &rest[n..];
    }
    alerts.extend(d.finish().await.alerts);
    let mut out: Vec<_> = alerts.iter().map(summary).collect();
    out.sort();
    out
}

/// One generated event: partition, seconds after the partition's previous
/// event, seconds it arrives out of order (at most the allowed lateness,
/// so none is late whatever the batching), user, denied or not,
/// namespace, whether it reads a secret or execs into a pod.
type GenEvent = (i32, i64, i64, usize, bool, usize, u8);

fn messages(events: &[GenEvent]) -> Vec<RawMessage> {
    let users = ["alice", "bob", "carol", "dave"];
    let namespaces = ["a", "b", "c"];
    let mut clock = [0i64; 2];
    let mut feed = Feed::new();
    // Both partitions deliver first at time 0, so later events within the
    // lateness of their partition are never late, whatever the batching.
    let mut out = Vec::new();
    for partition in 0..2 {
        out.extend(feed.msgs(
            SourceKind::K8sAudit,
            partition,
            &[audit(
                &format!("start{partition}"),
                "x",
                "get",
                "pods",
                None,
                "a",
                200,
                0,
            )],
        ));
    }
    for (n, &(partition, step, back, user, denied, ns, kind)) in events.iter().enumerate() {
        let p = partition as usize;
        clock[p] += step;
        let t = (clock[p] - back).max(0);
        let code = if denied { 403 } else { 200 };
        let line = match kind {
            0 => audit(
                &format!("e{n}"),
                users[user],
                "get",
                "secrets",
                None,
                namespaces[ns],
                code,
                t,
            ),
            1 => audit(
                &format!("e{n}"),
                users[user],
                "create",
                "pods",
                Some("exec"),
                namespaces[ns],
                101,
                t,
            ),
            _ => audit(
                &format!("e{n}"),
                users[user],
                "get",
                "pods",
                None,
                namespaces[ns],
                code,
                t,
            ),
        };
        out.extend(feed.msgs(SourceKind::K8sAudit, partition, &[line]));
    }
    out
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        0..2i32,
        0..25i64,
        0..=10i64,
        0..4usize,
        any::<bool>(),
        0..3usize,
        0..3u8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The incremental path gives exactly the alerts of the re-scan path
    /// (ids, fields, named events, window ends), and neither depends on
    /// how the input is cut into batches.
    #[test]
    fn incremental_and_rescan_agree_for_any_batching(
        events in proptest::collection::vec(gen_event(), 1..80),
        sizes in proptest::collection::vec(1..40usize, 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let msgs = messages(&events);
            let incremental = detector_with(&rules(), settings(true)).await;
            let strategies = incremental.engine().correlator().strategies();
            assert_eq!(strategies.iter().filter(|(_, s)| *s == RuleStrategy::Incremental).count(), 2, "{strategies:?}");
            assert_eq!(strategies.iter().filter(|(_, s)| *s == RuleStrategy::DeltaRescan).count(), 6, "{strategies:?}");
            let incremental = alerts_for(incremental, &msgs, &sizes).await;
            let rescan = alerts_for(detector_with(&rules(), settings(false)).await, &msgs, &sizes).await;
            prop_assert_eq!(&incremental, &rescan);
            let one_by_one = alerts_for(detector_with(&rules(), settings(true)).await, &msgs, &[1]).await;
            prop_assert_eq!(&incremental, &one_by_one);
            let all_at_once = alerts_for(detector_with(&rules(), settings(true)).await, &msgs, &[msgs.len()]).await;
            prop_assert_eq!(&incremental, &all_at_once);
            Ok::<(), TestCaseError>(())
        })?;
    }
}

#[tokio::test]
async fn each_rule_shape_gets_its_strategy_and_the_reason_when_an_aggregation_is_rescanned() {
    let not_windowed =
        "SELECT user_info.username AS username, count(*) AS n, max(event_time) AS window_end \
         FROM k8s_audit GROUP BY user_info.username HAVING count(*) > 5";
    let top = format!("{THRESHOLD} ORDER BY denied DESC LIMIT 1");
    // window_end from the side a LEFT JOIN null-extends: filtering it would
    // turn matched rows into unmatched ones, so no delta re-scan.
    let outer = "SELECT a.user_info.username AS username, b.event_time AS window_end \
         FROM k8s_audit b LEFT JOIN k8s_audit a ON a.user_info.username = b.user_info.username \
          AND a.event_time < b.event_time WHERE b.object_ref.resource = 'secrets'";
    let outer_preserved = outer.replace(
        "k8s_audit b LEFT JOIN k8s_audit a",
        "k8s_audit a RIGHT JOIN k8s_audit b",
    );
    let outer_other_side =
        outer.replace("b.event_time AS window_end", "a.event_time AS window_end");
    let shifted = SEQUENCE.replace(
        "b.event_time AS window_end",
        "b.event_time + INTERVAL '1 minute' AS window_end",
    );
    let sliding_rows = SLIDING.replace(
        "RANGE BETWEEN INTERVAL '60 seconds' PRECEDING",
        "ROWS BETWEEN 5 PRECEDING",
    );
    let sliding_unbounded = SLIDING.replace(
        "RANGE BETWEEN INTERVAL '60 seconds' PRECEDING",
        "RANGE BETWEEN UNBOUNDED PRECEDING",
    );
    let row_number = SLIDING.replace(
        "count(*) OVER (PARTITION BY user_info.username ORDER BY event_time \
                           RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW)",
        "row_number() OVER (PARTITION BY user_info.username ORDER BY event_time)",
    );
    let sliding_desc = SLIDING.replace(
        "ORDER BY event_time \
                           RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW",
        "ORDER BY event_time DESC \
                           RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW",
    );
    for variant in [
        &sliding_rows,
        &sliding_unbounded,
        &row_number,
        &sliding_desc,
    ] {
        assert_ne!(variant, SLIDING);
    }
    let computed = SEQUENCE.replace(
        "b.event_time AS window_end",
        "date_trunc('minute', b.event_time) AS window_end",
    );
    // The shapes of the generated-input test, and those that stay re-scans.
    let mut shapes = rules();
    shapes.extend([
        (
            "t.sliding_rows",
            "k8s_audit",
            "-- window: 1m\n",
            sliding_rows.as_str(),
        ),
        (
            "t.sliding_unbounded",
            "k8s_audit",
            "-- window: 1m\n",
            &sliding_unbounded,
        ),
        ("t.row_number", "k8s_audit", "-- window: 1m\n", &row_number),
        (
            "t.sliding_desc",
            "k8s_audit",
            "-- window: 1m\n",
            &sliding_desc,
        ),
        ("t.max", "k8s_audit", "-- window: 1m\n", not_windowed),
        ("t.top", "k8s_audit", "-- window: 1m\n", &top),
        ("t.outer", "k8s_audit", "-- window: 10m\n", outer),
        (
            "t.outer_preserved",
            "k8s_audit",
            "-- window: 10m\n",
            &outer_preserved,
        ),
        (
            "t.outer_other_side",
            "k8s_audit",
            "-- window: 10m\n",
            &outer_other_side,
        ),
        ("t.shifted", "k8s_audit", "-- window: 10m\n", &shifted),
        ("t.computed", "k8s_audit", "-- window: 10m\n", &computed),
    ]);
    let d = detector_with(&shapes, CorrelationSettings::default()).await;
    let s: std::collections::BTreeMap<String, RuleStrategy> =
        d.engine().correlator().strategies().into_iter().collect();
    assert_eq!(s["t.threshold"], RuleStrategy::Incremental);
    assert_eq!(s["t.distinct"], RuleStrategy::Incremental);
    // window_end is the trigger scan's event_time: through a join, through
    // a GROUP BY column, through the preserved side of an outer join.
    assert_eq!(s["t.seq"], RuleStrategy::DeltaRescan);
    assert_eq!(s["t.seq_grouped"], RuleStrategy::DeltaRescan);
    assert_eq!(s["t.outer"], RuleStrategy::DeltaRescan);
    assert_eq!(s["t.outer_preserved"], RuleStrategy::DeltaRescan);
    // ... or shifted by a constant.
    assert_eq!(s["t.shifted"], RuleStrategy::DeltaRescan);
    // ... or through window functions over RANGE frames of the trigger
    // rows' time.
    assert_eq!(s["t.sliding"], RuleStrategy::DeltaRescan);
    assert_eq!(s["t.sliding_ahead"], RuleStrategy::DeltaRescan);
    assert_eq!(s["t.sliding_unnested"], RuleStrategy::DeltaRescan);
    // Window functions that read rows at any distance, window_end from
    // the null-extended side of an outer join, or computed otherwise:
    // every retained event is read.
    for rule in [
        "t.sliding_rows",
        "t.sliding_unbounded",
        "t.row_number",
        "t.sliding_desc",
    ] {
        assert_eq!(s[rule], RuleStrategy::Rescan(None), "{rule}");
    }
    assert_eq!(s["t.outer_other_side"], RuleStrategy::Rescan(None));
    assert_eq!(s["t.computed"], RuleStrategy::Rescan(None));
    let RuleStrategy::Rescan(Some(reason)) = &s["t.max"] else {
        panic!("{:?}", s["t.max"])
    };
    assert!(reason.contains("window_end"), "{reason}");
    let RuleStrategy::Rescan(Some(reason)) = &s["t.top"] else {
        panic!("{:?}", s["t.top"])
    };
    assert!(reason.contains("LIMIT"), "{reason}");
}

/// An incremental rule works on each batch as it arrives (its partial
/// aggregation and the merge into its state), not only when a window
/// closes: that work is a run of the rule, with its CPU time, in the
/// rule's metrics.
#[tokio::test]
async fn an_incremental_rules_work_on_a_batch_counts_in_its_runs_and_cpu_time() {
    let (mut d, metrics) = detector_and_metrics(
        &[("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)],
        0,
    )
    .await;
    let strategies = d.engine().correlator().strategies();
    assert_eq!(strategies[0].1, RuleStrategy::Incremental);
    let mut f = Feed::new();
    // 400 refusals of 10 users within the first 40 seconds: the minute
    // stays open, so no run emits.
    let lines: Vec<String> = (0..400)
        .map(|i| {
            let user = format!("u{}", i % 10);
            audit(
                &format!("e{i}"),
                &user,
                "get",
                "pods",
                None,
                "ns",
                403,
                i / 10,
            )
        })
        .collect();
    let (alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
    assert!(alerts.is_empty());
    let (runs, matches) = metrics.rule("t.threshold");
    assert!(runs >= 1 && matches == 0, "{runs} runs, {matches} rows");
    assert!(
        metrics.cpu("t.threshold") > std::time::Duration::ZERO,
        "the batch's aggregation is not in the rule's CPU time"
    );
}

/// Rows fed to DataFusion per batch, for 100 batches of 20 events of 5
/// users all in one open one-hour window.
async fn work_per_batch(incremental: bool) -> Vec<u64> {
    let hourly = THRESHOLD.replace("INTERVAL '1 minute'", "INTERVAL '1 hour'");
    let mut d = detector_with(
        &[("t.hourly", "k8s_audit", "-- window: 1h\n", &hourly)],
        CorrelationSettings {
            allowed_lateness_ms: 0,
            incremental,
            ..Default::default()
        },
    )
    .await;
    let users = ["u0", "u1", "u2", "u3", "u4"];
    let mut f = Feed::new();
    let mut work = Vec::new();
    for b in 0..100i64 {
        let lines: Vec<String> = (0..20)
            .map(|i| {
                audit(
                    &format!("{b}-{i}"),
                    users[(i % 5) as usize],
                    "get",
                    "pods",
                    None,
                    "ns",
                    403,
                    b * 25 + i,
                )
            })
            .collect();
        let before = d.engine().correlator().stats().rows_evaluated;
        let (alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
        assert!(alerts.is_empty(), "the hour is still open");
        work.push(d.engine().correlator().stats().rows_evaluated - before);
    }
    work
}

#[tokio::test]
async fn evaluation_work_per_batch_does_not_grow_with_the_retained_window() {
    let incremental = work_per_batch(true).await;
    let rescan = work_per_batch(false).await;
    // Incremental: the 20 new events, plus every 16th batch a merge of the
    // window's state rows (at most 5 users x 16 batches).
    assert!(
        incremental.iter().all(|&w| (20..=20 + 5 * 16).contains(&w)),
        "{incremental:?}"
    );
    let early: u64 = incremental[..20].iter().sum();
    let late: u64 = incremental[80..].iter().sum();
    assert!(
        late <= early + 5 * 16,
        "work grew: first 20 batches {early} rows, last 20 {late}"
    );
    // The re-scan reads every retained event on every batch.
    assert_eq!(rescan[0], 20);
    assert_eq!(rescan[99], 2000);
}

#[tokio::test]
async fn state_beyond_max_state_rows_evicts_the_window_that_ends_first_and_counts_it() {
    let every_user = THRESHOLD.replace("HAVING count(*) >= 3", "HAVING count(*) >= 1");
    let mut d = detector_with(
        &[("t.every", "k8s_audit", "-- window: 1m\n", &every_user)],
        CorrelationSettings {
            allowed_lateness_ms: 600_000,
            max_state_rows: 10,
            ..Default::default()
        },
    )
    .await;
    let mut f = Feed::new();
    let users = |secs: i64| -> Vec<String> {
        (0..8)
            .map(|u| {
                audit(
                    &format!("{secs}-{u}"),
                    &format!("user{u}"),
                    "get",
                    "pods",
                    None,
                    "ns",
                    403,
                    secs,
                )
            })
            .collect()
    };
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &users(10))).await;
    assert_eq!(d.engine().correlator().stats().state_rows, 8);
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &users(70))).await;
    let stats = d.engine().correlator().stats();
    assert_eq!(
        stats.evicted_state_rows, 8,
        "the window ending at 60 is evicted whole"
    );
    assert_eq!(stats.state_rows, 8);
    let alerts = d.finish().await.alerts;
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    assert!(
        alerts.iter().all(|a| a.event_time == ts(120)),
        "alerts of the evicted window are lost"
    );
}

#[tokio::test]
async fn a_restart_rebuilds_incremental_state_from_the_retained_offsets() {
    let e = |id: &str, s: i64| audit(id, "alice", "get", "pods", None, "ns", 403, s);
    let first = vec![
        e("a0", 10),
        audit("ok", "bob", "get", "pods", None, "ns", 200, 11),
        e("a1", 12),
    ];
    let second = vec![
        e("a2", 20),
        audit("later", "carol", "get", "pods", None, "ns", 200, 61),
    ];
    let rules = [("t.threshold", "k8s_audit", "-- window: 1m\n", THRESHOLD)];
    let settings = |_| CorrelationSettings {
        allowed_lateness_ms: 0,
        ..Default::default()
    };

    // Uninterrupted.
    let mut d = detector_with(&rules, settings(true)).await;
    let mut f = Feed::new();
    run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &first)).await;
    // Offsets 1..=3: the window holds the events at offsets 1 and 3.
    let retained = d.engine().correlator().retained_offsets();
    assert_eq!(
        retained.into_iter().collect::<Vec<_>>(),
        vec![(("k8s_audit".to_string(), 0), 1)]
    );
    let (expected, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &second)).await;
    assert_eq!(expected.len(), 1);
    assert!(
        d.engine().correlator().retained_offsets().is_empty(),
        "the emitted window holds no offsets"
    );

    // Crash after the first batch: a new process re-reads it (state only)
    // from the committed offset, then reads on.
    let mut d = detector_with(&rules, settings(true)).await;
    let mut f = Feed::new();
    let mut reread = f.msgs(SourceKind::K8sAudit, 0, &first);
    for m in &mut reread {
        m.state_only = true;
    }
    let (alerts, dead) = run(&mut d, reread).await;
    assert!(alerts.is_empty() && dead.is_empty());
    let (alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &second)).await;
    assert_eq!(
        alerts.iter().map(summary).collect::<Vec<_>>(),
        expected.iter().map(summary).collect::<Vec<_>>()
    );
}

/// Peak memory of the correlation state with one million distinct keys in
/// one window (docs/rules.md, "State size"). Run with
/// `cargo test -p vigil --lib state_size -- --ignored --nocapture`;
/// `VIGIL_STATE_SIZE_EVENTS` (default 1000000) and
/// `VIGIL_STATE_SIZE_INCREMENTAL=false` (re-scan) vary it. Peak RSS is
/// process-wide: run one configuration per process.
#[tokio::test]
#[ignore]
async fn state_size_with_a_million_distinct_keys() {
    let events: usize = std::env::var("VIGIL_STATE_SIZE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let incremental = std::env::var("VIGIL_STATE_SIZE_INCREMENTAL")
        .map(|v| v != "false")
        .unwrap_or(true);
    let hourly = THRESHOLD.replace("INTERVAL '1 minute'", "INTERVAL '1 hour'");
    let mut d = detector_with(
        &[("t.hourly", "k8s_audit", "-- window: 1h\n", &hourly)],
        CorrelationSettings {
            allowed_lateness_ms: 0,
            incremental,
            ..Default::default()
        },
    )
    .await;
    let status = |key: &str| -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = status("VmHWM:");
    let mut f = Feed::new();
    let batch = 10_000;
    for start in (0..events).step_by(batch) {
        let lines: Vec<String> = (start..(start + batch).min(events))
            .map(|i| {
                audit(
                    &format!("e{i}"),
                    &format!("user-{i}"),
                    "get",
                    "pods",
                    None,
                    "ns",
                    403,
                    (i / 1000) as i64,
                )
            })
            .collect();
        let (alerts, _) = run(&mut d, f.msgs(SourceKind::K8sAudit, 0, &lines)).await;
        assert!(alerts.is_empty());
    }
    let stats = d.engine().correlator().stats();
    println!(
        "state size: incremental={incremental} events={events} retained_events={} state_rows={} event_identities={} \
         VmHWM before={before} kB after={} kB VmRSS={} kB",
        stats.retained_events,
        stats.state_rows,
        stats.event_identities,
        status("VmHWM:"),
        status("VmRSS:"),
    );
}

#[tokio::test]
async fn a_rescan_rule_is_not_run_again_when_no_event_was_retained_for_it() {
    // A plain re-scan: a delta re-scan reads only the triggers due, so it
    // has no undue rows to keep.
    let mut d = detector_with(
        &[("t.seq", "k8s_audit", "-- window: 10m\n", SEQUENCE)],
        CorrelationSettings {
            allowed_lateness_ms: 0,
            delta_rescan: false,
            ..Default::default()
        },
    )
    .await;
    let mut f = Feed::new();
    let mut msgs = f.msgs(
        SourceKind::K8sAudit,
        0,
        &[
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
            audit("s1", "mallory", "get", "secrets", None, "prod", 200, 20),
        ],
    );
    // Partition 1 holds the watermark at 5: the sequence (window_end 20) is found but not due.
    msgs.extend(f.msgs(
        SourceKind::K8sAudit,
        1,
        &[audit("p1", "nobody", "get", "pods", None, "prod", 200, 5)],
    ));
    let (alerts, _) = run(&mut d, msgs).await;
    assert!(alerts.is_empty());
    let work = d.engine().correlator().stats().rows_evaluated;
    assert_eq!(work, 2, "one run over the two retained events");
    // Events no rule retains move the watermark past 20 (to 25): the row
    // found by the last run is emitted without running the join again.
    let mut later = f.msgs(
        SourceKind::K8sAudit,
        1,
        &[audit("p2", "nobody", "get", "pods", None, "prod", 200, 30)],
    );
    later.extend(f.msgs(
        SourceKind::K8sAudit,
        0,
        &[audit("q1", "nobody", "get", "pods", None, "prod", 200, 25)],
    ));
    let (alerts, _) = run(&mut d, later).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].events.len(), 2);
    assert_eq!(d.engine().correlator().stats().rows_evaluated, work);
    // A retained event makes the next emission run the join again.
    run(
        &mut d,
        f.msgs(
            SourceKind::K8sAudit,
            0,
            &[audit("s2", "bob", "get", "secrets", None, "prod", 200, 40)],
        ),
    )
    .await;
    assert_eq!(
        d.engine().correlator().stats().watermark,
        Some((super::tests::T0 + 30) * 1_000_000_000)
    );
    assert_eq!(d.engine().correlator().stats().rows_evaluated, work + 3);
}

#[tokio::test]
async fn only_the_events_a_rescan_rule_can_use_are_retained() {
    // An incremental rule reading every event, beside a sequence reading
    // exec and secret records: the other events are aggregated, not kept.
    let every_event = "SELECT user_info.username AS username, count(*) AS n, \
         tumble_end(event_time, INTERVAL '1 hour') AS window_end FROM k8s_audit \
         GROUP BY user_info.username, tumble_end(event_time, INTERVAL '1 hour') HAVING count(*) > 1000";
    let rules = [
        ("t.every", "k8s_audit", "-- window: 1h\n", every_event),
        ("t.seq", "k8s_audit", "-- window: 10m\n", SEQUENCE),
    ];
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
        audit("e2", "mallory", "get", "pods", None, "prod", 200, 1),
        audit("e3", "alice", "list", "deployments", None, "prod", 200, 2),
        audit("e4", "mallory", "get", "secrets", None, "prod", 200, 3),
    ];
    let mut retained = Vec::new();
    for optimised in [true, false] {
        let mut d = detector_with(&rules, settings(optimised)).await;
        let (_, dead) = run(&mut d, Feed::new().msgs(SourceKind::K8sAudit, 0, &lines)).await;
        assert!(dead.is_empty(), "{dead:?}");
        retained.push(d.engine().correlator().stats().retained_events);
    }
    // The sequence's scans keep e1 (the exec) and e4 (the secret read).
    assert_eq!(
        retained[0], 2,
        "incremental aggregation on: only the sequence's events are retained"
    );
    assert_eq!(
        retained[1], 4,
        "every rule re-scanned: the unfiltered rule needs every event"
    );
}
