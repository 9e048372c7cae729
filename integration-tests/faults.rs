//! Faults against a real broker process: an output topic that does not
//! exist, broker outages (a TCP proxy between Vigil and the broker that is
//! cut and restored), Vigil killed with SIGKILL at random points, stops
//! that wait on a broker answering nothing or on undeliverable output, and
//! secrets in the configuration. Every test compares the alerts on the
//! alerts topic with the library's offline evaluation of the same input:
//! nothing may be lost, and duplicates (at-least-once) must carry the same
//! alert id and content.
//!
//! The comparison covers the per-event rules of the shipped pack. Through
//! Kafka, correlation windows close when the watermark passes them (or on
//! the idle tick), and events without a time of their own take the broker
//! timestamp, so correlation alerts differ from a file replay by design;
//! their crash consistency is tested in `crash_consistency.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::*;
use rand::{Rng, SeedableRng};
use vigil::alert::Alert;
use vigil::source::SourceKind;

fn is_event_rule(rule_id: &str) -> bool {
    static IDS: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| event_rules().rules.into_iter().map(|r| r.meta.id).collect())
        .contains(rule_id)
}

/// The offline evaluation of `inputs` by the per-event rules, as alert id
/// multisets.
struct Expected {
    /// Must be on the alerts topic: what the stream raises.
    required: BTreeMap<String, usize>,
    /// May be there too: the summaries of suppression periods still open
    /// at the end of input, which a quiet stream closes about a period
    /// (an hour) after its last event.
    at_end: BTreeSet<String>,
}

async fn offline_alert_ids(inputs: &[(SourceKind, &[Vec<u8>])]) -> Expected {
    let offline = offline_event_alerts(inputs).await;
    let mut required = BTreeMap::new();
    for a in offline.stream {
        *required.entry(a.alert_id).or_default() += 1;
    }
    let at_end = offline.at_end.into_iter().map(|a| a.alert_id).collect();
    Expected { required, at_end }
}

/// The sample streams: Kubernetes audit (Panther's labelled cases, many of
/// them attacks), Tetragon and Falco events.
fn samples() -> Vec<(SourceKind, Vec<Vec<u8>>)> {
    vec![
        (
            SourceKind::K8sAudit,
            lines(&shared_data("k8s-audit/panther-rule-cases.jsonl")),
        ),
        (
            SourceKind::Tetragon,
            lines(&shared_data("runtime/tetragon-book-events.jsonl")),
        ),
        (
            SourceKind::Falco,
            lines(&shared_data("runtime/falco-alerts-sample.jsonl")),
        ),
    ]
}

fn topic_of(topics: &Topics, source: SourceKind) -> &str {
    match source {
        SourceKind::K8sAudit => &topics.audit,
        SourceKind::Falco => &topics.falco,
        SourceKind::Tetragon => &topics.tetragon,
        other => panic!("no test topic for {other}"),
    }
}

/// Check the alerts read from the topic against the offline multiset:
/// every required alert is there (as often as expected, at least), nothing
/// else is, and an alert produced again (same rule, same triggering events
/// at the same origins) carries the same alert id every time.
fn assert_complete(got: &[Alert], expected: &Expected, log: &str) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids_of: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for a in got.iter().filter(|a| is_event_rule(&a.rule_id)) {
        *counts.entry(&a.alert_id).or_default() += 1;
        ids_of
            .entry(format!("{} {:?}", a.rule_id, a.events))
            .or_default()
            .insert(&a.alert_id);
    }
    for (what, ids) in &ids_of {
        assert_eq!(
            ids.len(),
            1,
            "one detection ({what}) was produced under several ids: {ids:?}"
        );
    }
    let missing: Vec<(&String, &usize)> = expected
        .required
        .iter()
        .filter(|(id, n)| counts.get(id.as_str()).copied().unwrap_or(0) < **n)
        .collect();
    let unexpected: Vec<&&str> = counts
        .keys()
        .filter(|id| !expected.required.contains_key(**id) && !expected.at_end.contains(**id))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{} alert id(s) missing: {missing:?}; {} unexpected: {unexpected:?}; log tail:\n{}",
        missing.len(),
        unexpected.len(),
        &log[log.len().saturating_sub(4000)..]
    );
}

/// Read the alerts topic until it holds every expected alert (or `timeout`).
fn read_until_complete(
    addr: &str,
    topic: &str,
    expected: &Expected,
    timeout: Duration,
) -> Vec<Alert> {
    let want: usize = expected.required.values().sum();
    let deadline = Instant::now() + timeout;
    loop {
        let alerts: Vec<Alert> = read_payloads(
            addr,
            topic,
            want,
            Duration::from_secs(5),
            Duration::from_millis(500),
        )
        .iter()
        .map(|p| serde_json::from_str(p).expect("alerts are JSON"))
        .collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &alerts {
            *counts.entry(&a.alert_id).or_default() += 1;
        }
        let complete = expected
            .required
            .iter()
            .all(|(id, n)| counts.get(id.as_str()).copied().unwrap_or(0) >= *n);
        if complete || Instant::now() >= deadline {
            return alerts;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_for_log(vigil: &Vigil, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if vigil.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn wait_for_commit(
    addr: &str,
    group: &str,
    topic: &str,
    offset: i64,
    timeout: Duration,
) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let committed = committed_offset(addr, group, topic);
        if committed.is_some_and(|c| c >= offset) || Instant::now() >= deadline {
            return committed;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every topic of `topics` but the alerts topic (tansu does not
/// auto-create topics).
async fn create_all_but_alerts(addr: &str, topics: &Topics) {
    create_topics(
        addr,
        &[
            (&topics.audit, 1),
            (&topics.falco, 1),
            (&topics.tetragon, 1),
            (&topics.dead_letter, 1),
            (&topics.late_events, 1),
            (&topics.checkpoints, 1),
            (&topics.state, 1),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_alerts_topic_pauses_consumption_until_it_exists() {
    let addr = broker().addr.clone();
    let topics = Topics::new("noalerts");
    create_all_but_alerts(&addr, &topics).await;
    let dir = tempfile::tempdir().unwrap();
    // librdkafka fails records for an unknown topic after this long
    // (default 30 s); each failure is retried by Vigil.
    let extra = "\n[kafka.properties]\n\"topic.metadata.propagation.max.ms\" = \"1000\"\n";
    let config = topics.write_config_with(dir.path(), &addr, &repo().join("sql-rules"), extra);
    let audit = lines(&shared_data("k8s-audit/panther-rule-cases.jsonl"));
    produce(&addr, &topics.audit, 0, &audit).await;
    let expected = offline_alert_ids(&[(SourceKind::K8sAudit, &audit)]).await;
    assert!(!expected.required.is_empty());

    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    // The log says why nothing progresses.
    assert!(
        wait_for_log(
            &vigil,
            "output not delivered; consumption paused",
            Duration::from_secs(90)
        ),
        "no back-pressure log line; log:\n{}",
        vigil.log_text()
    );
    let log = vigil.log_text();
    assert!(log.contains("producing to Kafka failed; retrying"), "{log}");
    // Nothing committed, no checkpoint, for as long as the output is not
    // delivered; and nothing beyond the blocked batch was consumed.
    for _ in 0..3 {
        assert_eq!(
            committed_offset(&addr, &topics.group, &topics.audit),
            None,
            "committed past undelivered output"
        );
        assert!(latest_checkpoint(&addr, &topics.checkpoints, &topics.group).is_none());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(vigil.log_text().matches("batch done").count(), 0);

    // The topic appears: every alert arrives and the offsets advance.
    create_topics(&addr, &[(&topics.alerts, 1)]).await;
    let got = read_until_complete(&addr, &topics.alerts, &expected, Duration::from_secs(120));
    assert_complete(&got, &expected, &vigil.log_text());
    let committed = wait_for_commit(
        &addr,
        &topics.group,
        &topics.audit,
        audit.len() as i64,
        Duration::from_secs(60),
    );
    assert!(
        committed.is_some(),
        "offsets never committed after the topic appeared"
    );
    let cp = latest_checkpoint(&addr, &topics.checkpoints, &topics.group)
        .expect("a checkpoint after delivery");
    assert_eq!(
        cp.processed[&format!("{}/0", topics.audit)],
        audit.len() as i64
    );
    let status = vigil.terminate();
    assert!(status.success(), "vigil exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outages_lose_no_event_and_no_alert() {
    // A broker of this test's own, reachable only through the proxy: it
    // advertises the proxy's address, so every connection goes through it.
    let proxy_port = unused_port();
    let broker_port = unused_port();
    let _broker = DedicatedBroker::start(broker_port, &format!("127.0.0.1:{proxy_port}"));
    let proxy = TcpProxy::start(proxy_port, &format!("127.0.0.1:{broker_port}"));
    let addr = proxy.addr.clone();
    await_broker(&addr);

    let topics = Topics::new("outage");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.write_config_with(
        dir.path(),
        &addr,
        &repo().join("sql-rules"),
        // Small batches: the outages hit the middle of the stream.
        "",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_events = 100", "max_events = 10");
    std::fs::write(&config, text).unwrap();

    let inputs = samples();
    let as_slices: Vec<(SourceKind, &[Vec<u8>])> =
        inputs.iter().map(|(s, p)| (*s, p.as_slice())).collect();
    let expected = offline_alert_ids(&as_slices).await;
    let (audit_first, audit_rest) = inputs[0].1.split_at(inputs[0].1.len() / 2);
    produce(&addr, &topics.audit, 0, audit_first).await;

    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    let first = read_payloads(
        &addr,
        &topics.alerts,
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    );
    assert!(
        !first.is_empty(),
        "no alert before the outage; log:\n{}",
        vigil.log_text()
    );

    // Outage 1, in the middle of the first half.
    proxy.cut();
    std::thread::sleep(Duration::from_secs(6));
    proxy.restore();

    // More input, then outage 2 while it is being processed.
    produce(&addr, &topics.audit, 0, audit_rest).await;
    for (source, payloads) in &inputs[1..] {
        produce(&addr, topic_of(&topics, *source), 0, payloads).await;
    }
    std::thread::sleep(Duration::from_millis(500));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(4));
    proxy.restore();

    let got = read_until_complete(&addr, &topics.alerts, &expected, Duration::from_secs(150));
    assert_complete(&got, &expected, &vigil.log_text());
    // Every message was consumed and committed (none skipped): the
    // checkpoint's processed offsets reach the end of each source topic.
    for (source, _) in &inputs {
        let topic = topic_of(&topics, *source);
        assert!(
            wait_for_commit(&addr, &topics.group, topic, 0, Duration::from_secs(60)).is_some(),
            "nothing committed on {topic}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cp =
            latest_checkpoint(&addr, &topics.checkpoints, &topics.group).expect("a checkpoint");
        let done = inputs.iter().all(|(s, p)| {
            cp.processed.get(&format!("{}/0", topic_of(&topics, *s))) == Some(&(p.len() as i64))
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint never covered all input: {:?}",
            cp.processed
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        vigil.log_text().contains("Kafka consumer error")
            || vigil.log_text().contains("producing to Kafka failed"),
        "the outage left no trace in the log"
    );
    let status = vigil.terminate();
    assert!(status.success(), "vigil exited with {status}");
}

/// Logging that shows each batch (`batch done`).
const DEBUG_PIPELINE: &[(&str, &str)] = &[(
    "RUST_LOG",
    "info,vigil::pipeline=debug,librdkafka=warn,rdkafka=warn",
)];

/// Kill Vigil with SIGKILL at `iterations` seeded random points of a
/// stream of known attacks, then let a last instance finish: every
/// expected alert must be on the alerts topic. Returns (alerts read,
/// distinct ids, duplicates).
async fn kill_at_random_points(seed: u64, iterations: usize) -> (usize, usize, usize) {
    let addr = broker().addr.clone();
    let topics = Topics::new(&format!("kill{seed}"));
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    // A killed member stays in the consumer group until its session times
    // out; tansu drops it when the next member joins after that, but one
    // joining before keeps the dead member's partitions unassigned. So a
    // short session, and each restart waits for it (as a Kubernetes
    // restart back-off would): docs/reliability.md.
    const SESSION: Duration = Duration::from_millis(3000);
    let extra = format!(
        "\n[kafka.properties]\n\"session.timeout.ms\" = \"{}\"\n\"heartbeat.interval.ms\" = \"500\"\n",
        SESSION.as_millis()
    );
    let config = topics.write_config_with(dir.path(), &addr, &repo().join("sql-rules"), &extra);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_events = 100", "max_events = 10");
    std::fs::write(&config, text).unwrap();

    // The samples several times over (twice for 10 runs): enough input that
    // every run is killed in the middle of the stream.
    let copies = (iterations / 5).max(2);
    let inputs: Vec<(SourceKind, Vec<Vec<u8>>)> = samples()
        .into_iter()
        .map(|(s, p)| {
            (
                s,
                p.iter().cycle().take(p.len() * copies).cloned().collect(),
            )
        })
        .collect();
    let as_slices: Vec<(SourceKind, &[Vec<u8>])> =
        inputs.iter().map(|(s, p)| (*s, p.as_slice())).collect();
    let expected = offline_alert_ids(&as_slices).await;
    assert!(expected.required.len() >= 10);
    for (source, payloads) in &inputs {
        produce(&addr, topic_of(&topics, *source), 0, payloads).await;
    }

    // Kill points: a third at a random time after start (during start-up,
    // the group join, or processing), the rest a random time after the
    // run's first batch (mid-stream: between produce, checkpoint, commit).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in 0..iterations {
        let mut vigil = Vigil::start_with_env(
            &config,
            dir.path().join(format!("vigil-{i}.log")),
            DEBUG_PIPELINE,
        );
        let point = if rng.random_bool(1.0 / 3.0) {
            let after = Duration::from_millis(rng.random_range(100..3000));
            std::thread::sleep(after);
            format!("{after:?} after start")
        } else {
            let after = Duration::from_millis(rng.random_range(0..400));
            assert!(
                wait_for_log(&vigil, "batch done", Duration::from_secs(90)),
                "run {i} processed nothing; log:\n{}",
                vigil.log_text()
            );
            std::thread::sleep(after);
            format!("{after:?} after the first batch")
        };
        assert!(
            vigil.is_running(),
            "vigil exited on its own; log:\n{}",
            vigil.log_text()
        );
        let batches = vigil.log_text().matches("batch done").count();
        vigil.kill();
        eprintln!("run {i}: killed {point}, {batches} batches done");
        std::thread::sleep(SESSION + Duration::from_millis(500));
    }
    let vigil = Vigil::start_with_env(&config, dir.path().join("vigil-final.log"), DEBUG_PIPELINE);
    let started = Instant::now();
    let got = read_until_complete(&addr, &topics.alerts, &expected, Duration::from_secs(120));
    eprintln!("final run: complete after {:?}", started.elapsed());
    assert_complete(&got, &expected, &vigil.log_text());
    let status = vigil.terminate();
    assert!(status.success(), "vigil exited with {status}");
    let distinct: BTreeSet<&str> = got.iter().map(|a| a.alert_id.as_str()).collect();
    let expected_total: usize = expected.required.values().sum();
    (got.len(), distinct.len(), got.len() - expected_total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_no_alert() {
    let n = std::env::var("VIGIL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (alerts, distinct, duplicates) = kill_at_random_points(0x5eed_0001, n).await;
    eprintln!(
        "sigkill x10: {alerts} alerts read, {distinct} distinct ids, {duplicates} duplicates"
    );
}

/// The soak variant: `VIGIL_SOAK_ROUNDS` rounds (default 5) of 20 kills
/// each, with different seeds. Results: docs/reliability.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sigkill_soak() {
    let rounds: u64 = std::env::var("VIGIL_SOAK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for round in 0..rounds {
        let (alerts, distinct, duplicates) = kill_at_random_points(0x50ac_0000 + round, 20).await;
        eprintln!("soak round {round}: 20 kills, {alerts} alerts read, {distinct} distinct ids, {duplicates} duplicates, none missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_the_configuration_never_reach_the_logs() {
    const FILE_SECRET: &str = "file-secret-5f1c9a7e";
    const ENV_SECRET: &str = "env-secret-0b33d2aa";
    let addr = broker().addr.clone();
    let topics = Topics::new("secrets");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("\n[kafka.properties]\n\"sasl.password\" = \"{FILE_SECRET}\"\n\"sasl.username\" = \"vigil-user\"\n");
    let config = topics.write_config_with(dir.path(), &addr, &repo().join("sql-rules"), &extra);
    let audit = lines(&shared_data("k8s-audit/panther-rule-cases.jsonl"));
    produce(&addr, &topics.audit, 0, &audit[..40]).await;
    produce(&addr, &topics.audit, 0, &[b"{not json".to_vec()]).await;

    // Everything at debug level, librdkafka's own debug output included.
    let vigil = Vigil::start_with_env(
        &config,
        dir.path().join("vigil.log"),
        &[
            ("RUST_LOG", "debug"),
            ("VIGIL__KAFKA__PROPERTIES__SSL_KEY_PASSWORD", ENV_SECRET),
            ("VIGIL__KAFKA__PROPERTIES__DEBUG", "conf,broker,security"),
        ],
    );
    let dead = read_payloads(
        &addr,
        &topics.dead_letter,
        1,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(dead.len(), 1, "log:\n{}", vigil.log_text());
    let log_path = vigil.log.clone();
    let status = vigil.terminate();
    assert!(status.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains("pipeline stopped"),
        "the run did not complete: {log}"
    );
    assert!(
        log.len() > 10_000,
        "debug logging was not on ({} bytes)",
        log.len()
    );
    // librdkafka's `conf` debug context dumps the client configuration:
    // the secret properties were set and their names are in the log.
    assert!(
        log.contains("Client configuration:"),
        "no configuration dump in the log"
    );
    let dumped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONF") && l.contains("password"))
        .collect();
    eprintln!("password lines of the configuration dump: {dumped:#?}");
    assert!(
        !dumped.is_empty(),
        "the secret properties never reached librdkafka"
    );
    for secret in [FILE_SECRET, ENV_SECRET] {
        assert!(!log.contains(secret), "secret {secret} found in the log");
    }
    // Output topics do not carry them either.
    for topic in [&topics.alerts, &topics.dead_letter, &topics.checkpoints] {
        for p in read_payloads(
            &addr,
            topic,
            usize::MAX,
            Duration::from_secs(2),
            Duration::ZERO,
        ) {
            assert!(
                !p.contains(FILE_SECRET) && !p.contains(ENV_SECRET),
                "secret in {topic}"
            );
        }
    }

    // A configuration error names the property, never its value.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[kafka]\nbrokers = \"{addr}\"\n[kafka.properties]\n\"sasl.password\" = \"{FILE_SECRET}\"\n\"acks\" = \"0\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(&bad)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("kafka.properties.acks"), "{text}");
    assert!(!text.contains(FILE_SECRET), "{text}");
}

/// A process a test starts ends with the thread that started it, whatever
/// ends that thread (the shared broker's thread lives as long as the test
/// binary): no test leaves a broker or an instance behind.
#[test]
fn a_process_a_test_starts_ends_with_its_thread() {
    let pid = std::thread::spawn(|| {
        let child = end_with_starting_thread(&mut std::process::Command::new("sleep"))
            .arg("600")
            .spawn()
            .unwrap();
        let pid = child.id();
        std::mem::forget(child); // no Drop: only the thread's end may stop it
        pid
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: u32| {
        // A killed child stays a zombie until reaped: not running.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
            .unwrap_or(false)
    };
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(pid),
        "sleep {pid} outlived the thread that started it"
    );
}

/// One audit event with four attacker-sized fields (240 KB each, within
/// the input limits) makes an alert of over 700 KB. With the
/// producer's `message.max.bytes` lowered to 30,000 and the record limit
/// under it, the alert is cut to fit and marked, and the events after it
/// are still detected: the pipeline does not stall on the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_sized_event_cannot_stall_delivery() {
    let addr = broker().addr.clone();
    let topics = Topics::new("huge");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "\n[limits]\nmax_record_bytes = 20000\n\n[kafka.properties]\n\"message.max.bytes\" = \"30000\"\n";
    let config = topics.write_config_with(dir.path(), &addr, &repo().join("sql-rules"), extra);
    let big = |c: char| c.to_string().repeat(240_000);
    let event = |id: &str, agent: &str, uri: &str, user: &str, name: &str| {
        serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": id,
            "stage": "ResponseComplete", "verb": "get", "requestURI": uri,
            "user": {"username": user}, "sourceIPs": ["203.0.113.10"], "userAgent": agent,
            "objectRef": {"resource": "secrets", "namespace": "prod", "name": name},
            "responseStatus": {"code": 200},
            "requestReceivedTimestamp": "2026-01-01T00:00:00Z"
        })
        .to_string()
        .into_bytes()
    };
    let huge = event(
        "huge-1",
        &format!("peirates/{}", big('a')),
        &format!("/api/v1/namespaces/prod/secrets/{}", big('b')),
        &big('u'),
        &big('n'),
    );
    // Under librdkafka's default message.max.bytes, so the test can produce it.
    assert!(
        huge.len() > 960_000 && huge.len() < 1_000_000,
        "{}",
        huge.len()
    );
    let after = event(
        "after-1",
        "peirates/1.1.13",
        "/api/v1/namespaces/prod/secrets/db",
        "eve",
        "db",
    );
    produce(&addr, &topics.audit, 0, &[huge, after]).await;

    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    let alerts = read_payloads(
        &addr,
        &topics.alerts,
        2,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let mut by_event: BTreeMap<String, Alert> = BTreeMap::new();
    for payload in &alerts {
        assert!(
            payload.len() <= 20_000,
            "a record of {} bytes",
            payload.len()
        );
        let alert: Alert = serde_json::from_str(payload).unwrap();
        if alert.rule_id == "k8s.offensive_tool_user_agent" {
            by_event.insert(alert.events[0].event_id.clone(), alert);
        }
    }
    let cut = by_event.get("huge-1/ResponseComplete").unwrap_or_else(|| {
        panic!(
            "no alert for the huge event: {alerts:?}\nlog:\n{}",
            vigil.log_text()
        )
    });
    let truncated = cut.truncated.as_ref().expect("the cut is marked");
    assert!(truncated["user_agent"] > 240_000, "{truncated:?}");
    assert!(cut.fields["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("peirates/aaa"));
    let whole = by_event
        .get("after-1/ResponseComplete")
        .expect("the event after it is detected too");
    assert!(whole.truncated.is_none());
    assert_eq!(whole.fields["user_agent"], "peirates/1.1.13");
    // Visible in the metrics: the cut alerts (every rule that selected the
    // huge fields), none replaced.
    let (status, text) = http_get(vigil.http_addr(), "/metrics");
    assert_eq!(status, 200);
    let cut = metric(&text, "vigil_records_cut_total{record=\"alert\"}").unwrap_or(0.0);
    assert!(cut >= 1.0, "{text}");
    assert_eq!(
        metric(&text, "vigil_records_cut_total{record=\"alert_replaced\"}"),
        None
    );
}

/// A stop request ends Vigil in bounded time when the broker, still
/// connected, answers nothing (its process suspended): each wait of the
/// stop on the broker ends with a timeout (the consumer's leave with
/// librdkafka's request timeout, an offset commit after 30 s), not on the
/// broker's answer. Everything read was delivered and checkpointed before,
/// so nothing is lost by not leaving the group cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_ends_vigil_while_the_broker_answers_nothing() {
    let port = unused_port();
    let broker = DedicatedBroker::start(port, &format!("127.0.0.1:{port}"));
    let addr = broker.listen_addr.clone();
    await_broker(&addr);

    let topics = Topics::new("unreachable");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.write_config(dir.path(), &addr);
    let audit = &samples()[0].1;
    produce(&addr, &topics.audit, 0, audit).await;
    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    // Evaluated, delivered and checkpointed (the committed offset itself
    // stays at the earliest event correlation windows retain).
    let key = format!("{}/0", topics.audit);
    let deadline = Instant::now() + Duration::from_secs(90);
    while latest_checkpoint(&addr, &topics.checkpoints, &topics.group)
        .and_then(|cp| cp.processed.get(&key).copied())
        != Some(audit.len() as i64)
    {
        assert!(
            Instant::now() < deadline,
            "the input was not processed; log:\n{}",
            vigil.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    broker.freeze();
    let log = vigil.log.clone();
    let status = vigil.terminate_within(Duration::from_secs(45));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "vigil exited with {status}; log:\n{text}");
    assert!(text.contains("pipeline stopped"), "{text}");
}

/// A stop that cannot finish says what it waits for, and ends: here the
/// delivery of a batch whose alerts topic does not exist (librdkafka waits
/// 30 s for an unknown topic to appear before failing a record, and Vigil
/// retries). 20 s after the stop request it gives up, without committing,
/// and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stop_reports_what_it_waits_for() {
    let addr = broker().addr.clone();
    let topics = Topics::new("slowstop");
    create_all_but_alerts(&addr, &topics).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.write_config(dir.path(), &addr);
    let audit = lines(&shared_data("k8s-audit/panther-rule-cases.jsonl"));
    produce(&addr, &topics.audit, 0, &audit).await;
    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    assert!(
        wait_for_log(&vigil, "partitions assigned", Duration::from_secs(60)),
        "{}",
        vigil.log_text()
    );
    // The first batch is being delivered: its first attempt waits until
    // 30 s after the start for the topic to appear.
    std::thread::sleep(Duration::from_secs(3));
    let pid = vigil.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_for_log(&vigil, "still stopping", Duration::from_secs(25)),
        "no report of the slow stop; log:\n{}",
        vigil.log_text()
    );
    let report = vigil
        .log_text()
        .lines()
        .find(|l| l.contains("still stopping"))
        .map(str::to_string)
        .unwrap();
    assert!(
        report.contains("producing a batch's alerts, checkpoint and state"),
        "{report}"
    );
    let mut vigil = vigil;
    let deadline = Instant::now() + Duration::from_secs(35);
    let status = loop {
        if let Some(status) = vigil.exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 45 s after SIGTERM; log:\n{}",
            vigil.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = vigil.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("not delivered within 20 s of the stop request"),
        "{log}"
    );
    // Nothing was committed: the batch is read again after a restart.
    assert_eq!(committed_offset(&addr, &topics.group, &topics.audit), None);
}
