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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::attack::*;
use crate::common::*;
use rdkafka::mocking::MockCluster;

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
        produce(
            addr,
            &topics.audit,
            0,
            &events[stages[stage]..stages[stage + 1]],
        )
        .await;
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
                assert!(
                    Instant::now() < deadline,
                    "stage {stage}: no alert within 120 s; log:\n{}",
                    vigil.log_text()
                );
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
                    let got = alert_ids(&read_topic(
                        addr,
                        &topics.alerts,
                        usize::MAX,
                        Duration::from_secs(3),
                        Duration::ZERO,
                    ));
                    panic!(
                        "input not processed within 120 s: checkpoint at {processed:?} of {}, {have} of {expected} alerts: {got:?}; log:\n{}",
                        events.len(),
                        vigil.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let status = vigil.terminate();
            assert!(
                status.success(),
                "vigil exited with {status}; log:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
    }
    eprintln!("alerts visible at the two kills: {kills:?} of {expected}");
    read_topic(
        addr,
        &topics.alerts,
        usize::MAX,
        Duration::from_secs(5),
        Duration::ZERO,
    )
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
        assert!(
            Instant::now() < deadline,
            "checkpoint at {processed:?}, not {n}, after 120 s; log:\n{}",
            vigil.log_text()
        );
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
    for t in [
        &topics.audit,
        &topics.falco,
        &topics.tetragon,
        &topics.alerts,
        &topics.dead_letter,
        &topics.late_events,
        &topics.checkpoints,
        &topics.state,
    ] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let config = config_for(dir.path(), &topics, &addr, &rules);
    let env = [
        ("VIGIL__KAFKA__DELIVERY", "exactly_once"),
        ("VIGIL__KAFKA__TRANSACTIONAL_ID", "vigil-eos-test"),
        FAST_REJOIN[0],
        FAST_REJOIN[1],
    ];
    let records = run_with_kills(
        &addr,
        &topics,
        &config,
        &env,
        dir.path().join("vigil.log"),
        &events,
        expected.len(),
        KillAt::BetweenBatches,
    )
    .await;

    let mut got: Vec<String> = alert_ids(&records).into_iter().map(|(id, _)| id).collect();
    got.sort();
    let duplicates: Vec<_> = count(&got).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "duplicated alerts under exactly-once: {duplicates:?}"
    );
    assert_eq!(
        got, expected,
        "alerts topic (read_committed) differs from the offline evaluation"
    );
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
    assert_eq!(
        distinct, expected,
        "every expected alert, and nothing else, must be on the alerts topic"
    );
    eprintln!(
        "at-least-once: {} records for {} distinct alerts",
        got.len(),
        distinct.len()
    );
}
