//! First-seen state survives a restart through the state topic, against a
//! real broker: what one run saw is not new to the next, which does not
//! re-read the first run's events to know it.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

const RULE: &str = "-- id: test.first_exec
-- title: First exec into a namespace by a user
-- severity: medium
-- description: test rule
-- mitre: T1609
-- source: k8s_audit
-- author: test
-- based_on: vigil:test
-- first_seen: username, namespace
-- history: 1d
-- learning: 1s
SELECT user_info.username AS username, object_ref.namespace AS namespace
FROM k8s_audit
WHERE object_ref.subresource = 'exec'
";

fn event(id: u32, at: &str, subresource: Option<&str>, namespace: &str) -> Vec<u8> {
    let mut object = serde_json::json!({"resource": "pods", "namespace": namespace, "name": "web"});
    if let Some(s) = subresource {
        object["subresource"] = s.into();
    }
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
        "auditID": format!("00000000-0000-4000-8000-{id:012}"),
        "verb": if subresource.is_some() { "create" } else { "get" },
        "user": {"username": "alice@example.com"},
        "objectRef": object,
        "requestReceivedTimestamp": at, "stageTimestamp": at,
        "responseStatus": {"code": 200}
    })
    .to_string()
    .into_bytes()
}

/// The namespaces of the alerts on the topic, once `want` are there (and
/// a few seconds more, to catch extras).
fn alerted_namespaces(addr: &str, topic: &str, want: usize) -> Vec<String> {
    read_topic(
        addr,
        topic,
        want,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .into_iter()
    .map(|(_, payload)| {
        let alert: serde_json::Value = serde_json::from_str(&payload).unwrap();
        alert["fields"]["namespace"].as_str().unwrap().to_string()
    })
    .collect()
}

fn run_until_alerts(
    config: &Path,
    log: &Path,
    addr: &str,
    alerts_topic: &str,
    want: usize,
) -> Vec<String> {
    let vigil = Vigil::start(config, log.to_path_buf());
    let namespaces = alerted_namespaces(addr, alerts_topic, want);
    assert!(
        vigil.terminate().success(),
        "{}",
        std::fs::read_to_string(log).unwrap()
    );
    namespaces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_what_was_seen_without_reading_the_sources_again() {
    let addr = broker().addr.clone();
    let topics = Topics::new("firstseen");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("first_exec.sql"), RULE).unwrap();
    let config = topics.write_config_with(dir.path(), &addr, &rules, "");
    let log = dir.path().join("vigil.log");

    // Run 1: learning begins with the first event; an hour later alice's
    // first exec into dev is new.
    produce(
        &addr,
        &topics.audit,
        0,
        &[
            event(1, "2026-12-04T10:00:00Z", None, "dev"),
            event(2, "2026-12-04T11:00:00Z", Some("exec"), "dev"),
        ],
    )
    .await;
    assert_eq!(
        run_until_alerts(&config, &log, &addr, &topics.alerts, 1),
        ["dev"]
    );
    assert_eq!(
        committed_offset(&addr, &topics.group, &topics.audit),
        Some(2)
    );

    // Run 2 reads from offset 2 only. With the state restored, dev is
    // seen and prod is new. Without it, learning would begin again at
    // 12:00 and end a second later: both execs would be new.
    produce(
        &addr,
        &topics.audit,
        0,
        &[
            event(3, "2026-12-04T12:00:00Z", None, "dev"),
            event(4, "2026-12-04T12:00:10Z", Some("exec"), "dev"),
            event(5, "2026-12-04T12:00:10Z", Some("exec"), "prod"),
        ],
    )
    .await;
    let namespaces = run_until_alerts(&config, &log, &addr, &topics.alerts, 2);
    assert_eq!(
        namespaces,
        ["dev", "prod"],
        "one alert per run: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        committed_offset(&addr, &topics.group, &topics.audit),
        Some(5)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let restored = text
        .lines()
        .filter(|l| l.contains("first-seen state restored"))
        .collect::<Vec<_>>();
    assert_eq!(restored.len(), 2, "each run restores at start: {text}");
    // Run 2 restored run 1's record of when learning began and alice/dev.
    assert!(restored[1].contains("\"records\":2"), "{}", restored[1]);
}

/// With a spill directory and room for 10 combinations in memory, a
/// restart restores 30 combinations (most of them into the spill file) and
/// still knows each of them: only the new namespace alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_small_memory_bound_spills_and_stays_quiet_for_what_was_seen() {
    let addr = broker().addr.clone();
    let topics = Topics::new("firstseen-spill");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("first_exec.sql"), RULE).unwrap();
    let log = dir.path().join("vigil.log");
    let namespaces: Vec<String> = (0..30).map(|i| format!("ns-{i:02}")).collect();
    let execs = |first_id: u32, at: &str| -> Vec<Vec<u8>> {
        namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| event(first_id + i as u32, at, Some("exec"), ns))
            .collect()
    };

    // Run 1, in memory: thirty first execs an hour after learning began.
    let config = topics.write_config_with(dir.path(), &addr, &rules, "");
    let mut first = vec![event(1, "2026-12-04T10:00:00Z", None, "dev")];
    first.extend(execs(100, "2026-12-04T11:00:00Z"));
    produce(&addr, &topics.audit, 0, &first).await;
    let mut alerted = run_until_alerts(&config, &log, &addr, &topics.alerts, 30);
    alerted.sort();
    assert_eq!(alerted, namespaces);

    // Run 2 spills past 10 combinations: the same thirty again are seen,
    // the new namespace is new.
    let spill = dir.path().join("spill");
    let extra = format!(
        "\n[rules.first_seen]\nspill_dir = \"{}\"\nmemory_combinations = 10\n",
        spill.display()
    );
    let config = topics.write_config_with(dir.path(), &addr, &rules, &extra);
    let mut second = execs(200, "2026-12-04T12:00:00Z");
    second.push(event(300, "2026-12-04T12:00:10Z", Some("exec"), "fresh"));
    produce(&addr, &topics.audit, 0, &second).await;
    let all = run_until_alerts(&config, &log, &addr, &topics.alerts, 31);
    assert_eq!(
        all[30..],
        ["fresh".to_string()],
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(all.len(), 31);
    assert!(spill.join("first-seen.redb").exists());
}
