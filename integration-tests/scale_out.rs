//! Two instances in one consumer group, with `correlation.placement =
//! "leader"`, against the real broker: the audit topic has two partitions
//! and every user's events alternate between them, so each instance alone
//! sees half of every burst and sequence. The instance elected correlation
//! leader is killed with SIGKILL mid-stream; the other takes the lease,
//! rebuilds the correlation state from the leader's checkpoint and goes
//! on. Every expected alert (per-event and correlation) must be on the
//! alerts topic, nothing else, and a repeat only under the same id
//! (at-least-once).
//!
//! The election is by records on the lease topic (`leader::lease`), with
//! a 3 s lease timeout; the survivor also has to take over the killed
//! instance's source partitions in the consumer group, which against tansu
//! 0.6 happens only because it rejoins the group as a new member when it
//! sees a member gone (`kafka::membership`). Runs against the test broker
//! (tansu by default, or `VIGIL_TEST_BROKERS=host:port`).

use std::time::{Duration, Instant};

use crate::common::attack::*;
use crate::common::*;

/// Which of the two instances is the correlation leader, if any yet.
fn leader_of(a: &Vigil, b: &Vigil) -> Option<bool> {
    let leads = |v: &Vigil| v.log_text().contains("correlation leadership acquired");
    if leads(a) {
        Some(true)
    } else if leads(b) {
        Some(false)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn correlation_stays_complete_when_the_leader_of_two_instances_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let events = attack_stream();
    let expected = offline_alert_ids(&rules, &events).await;
    assert_eq!(expected.len(), 8, "{expected:?}");

    let addr = broker().addr.clone();
    let topics = Topics::new("scale");
    let lease = unique("scale-lease");
    create_topics(
        &addr,
        &[
            (&topics.audit, 2),
            (&topics.falco, 1),
            (&topics.tetragon, 1),
            (&topics.alerts, 1),
            (&topics.dead_letter, 1),
            (&topics.late_events, 1),
            (&topics.checkpoints, 1),
            (&topics.state, 1),
            (&lease, 1),
        ],
    )
    .await;
    let config = topics.write_config_with(
        dir.path(),
        &addr,
        &rules,
        "\n[correlation]\nallowed_lateness_ms = 5000\nidle_timeout_ms = 2000\nplacement = \"leader\"\n",
    );
    let env = [
        FAST_REJOIN[0],
        FAST_REJOIN[1],
        ("VIGIL__TOPICS__CORRELATION_LEASE", lease.as_str()),
        ("VIGIL__CORRELATION__LEASE_TIMEOUT_MS", "3000"),
    ];

    // Each user's events alternate between the two partitions.
    let (first, second) = events.split_at(events.len() / 2);
    let produce_split = |part: &[Vec<u8>], offset: usize| {
        let (p0, p1): (Vec<_>, Vec<_>) = part
            .iter()
            .enumerate()
            .partition(|(i, _)| (i + offset).is_multiple_of(2));
        (
            p0.into_iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            p1.into_iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        )
    };
    let (a0, a1) = produce_split(first, 0);
    produce(&addr, &topics.audit, 0, &a0).await;
    produce(&addr, &topics.audit, 1, &a1).await;

    let mut alerts = RecordCounter::new(&addr, &topics.alerts);
    let a = Vigil::start_with_env(&config, dir.path().join("a.log"), &env);
    let b = Vigil::start_with_env(&config, dir.path().join("b.log"), &env);
    // Wait for a leader and its first alert, then kill the leader.
    let deadline = Instant::now() + Duration::from_secs(120);
    let leader = loop {
        if let Some(l) = leader_of(&a, &b) {
            if alerts.count(Duration::from_millis(200)) > 0 {
                break l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader with alerts within 120 s; logs:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (killed, survivor) = if leader { (a, b) } else { (b, a) };
    let at_kill = alerts.count(Duration::ZERO);
    killed.kill();
    eprintln!(
        "killed the leader ({}) with {at_kill} of {} alerts visible",
        if leader { "a" } else { "b" },
        expected.len()
    );

    // The rest of the stream arrives while the lease moves.
    let (b0, b1) = produce_split(second, first.len());
    produce(&addr, &topics.audit, 0, &b0).await;
    produce(&addr, &topics.audit, 1, &b1).await;

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = alert_ids(&read_topic(
            &addr,
            &topics.alerts,
            usize::MAX,
            Duration::from_secs(2),
            Duration::ZERO,
        ));
        let mut distinct: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
        distinct.sort();
        distinct.dedup();
        if distinct == expected {
            break;
        }
        assert!(
            distinct.iter().all(|id| expected.contains(id)),
            "unexpected alerts: {got:?}; expected {expected:?}; survivor log:\n{}",
            survivor.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "alerts incomplete after 180 s: {got:?}; expected {expected:?}; logs:\n{}\n---\n{}",
            std::fs::read_to_string(dir.path().join("a.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        survivor
            .log_text()
            .contains("correlation leadership acquired"),
        "the survivor took over the lease"
    );
    let survivor_log = survivor.log_text();
    let status = survivor.terminate();
    assert!(status.success(), "survivor exited with {status}");
    let got = alert_ids(&read_topic(
        &addr,
        &topics.alerts,
        usize::MAX,
        Duration::from_secs(3),
        Duration::ZERO,
    ));
    eprintln!(
        "{} alert records for {} distinct expected alerts",
        got.len(),
        expected.len()
    );
    for line in survivor_log
        .lines()
        .filter(|l| l.contains("rejoining") || l.contains("claiming the lease"))
    {
        eprintln!("survivor: {line}");
    }
}
