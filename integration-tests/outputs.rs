//! The outputs (issue 22) against real components: Vigil on the tansu
//! broker detects the Tetragon sample, and its outputs deliver the alerts
//! to Debian's Prometheus Alertmanager (read back from its API, grouped by
//! team), to a signed webhook on a local HTTP receiver (which refuses each
//! alert's first request, so every alert is retried), to a webhook that
//! refuses for good (dead letters), and to Kafka topics by team.
//!
//! Alertmanager is `prometheus-alertmanager` from PATH (Debian's package);
//! under CI (`CI` set, as `.ci/run` does) its absence is a failure, not a
//! skip. Every process a test starts ends with the test, also on a panic
//! (kill on drop, and the parent-death signal).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use vigil::alert::Alert;
use vigil::dead_letter::{DeadLetter, DeadLetterKind};
use vigil::outputs::webhook;

use crate::common::*;

const SECRET: &str = "test-hmac-key";

/// A running Alertmanager; killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prometheus-alertmanager` from PATH, or `None` (a failure under CI).
fn alertmanager_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus-alertmanager"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus-alertmanager is not on PATH, and CI is set: install Debian's prometheus-alertmanager package (.ci/run does)"
        );
        eprintln!(
            "note: prometheus-alertmanager not on PATH; the Alertmanager output test did not run"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start Alertmanager on a free port with one route grouping by `team`,
/// clustering off, and wait until it is ready.
fn start_alertmanager(binary: &Path) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: 'null'\n  group_by: ['team']\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let child = end_with_starting_thread(&mut Command::new(binary))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting prometheus-alertmanager");
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() || http_get(addr, "/-/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    am
}

/// What the local webhook receiver saw.
#[derive(Default)]
struct Received {
    /// Alert id -> requests for it (each checked for its signature).
    requests: BTreeMap<String, u32>,
    /// Alert ids delivered (answered 200).
    delivered: BTreeSet<String>,
    bad_signatures: u32,
    /// Alert ids whose `Idempotency-Key` was not the alert id.
    bad_keys: u32,
    /// A delivered body's enrichment object.
    enrichment: Option<Value>,
}

type Shared = Arc<Mutex<Received>>;

/// `/hook`: checks the signature, answers 503 to an alert's first request
/// and 200 to the next. `/gone`: always 410.
async fn hook(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-vigil-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut seen = seen.lock().unwrap();
    if !webhook::verify(SECRET.as_bytes(), &body, signature) {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let json: Value = serde_json::from_slice(&body).unwrap();
    let id = json["alert_id"].as_str().unwrap().to_string();
    if headers.get("idempotency-key").and_then(|v| v.to_str().ok()) != Some(id.as_str()) {
        seen.bad_keys += 1;
    }
    let n = seen.requests.entry(id.clone()).or_default();
    *n += 1;
    if *n == 1 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    seen.delivered.insert(id);
    seen.enrichment = Some(json["enrichment"].clone());
    StatusCode::OK
}

async fn start_receiver() -> (SocketAddr, Shared) {
    let seen = Shared::default();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .route("/gone", post(|| async { StatusCode::GONE }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// The rule overlay: a namespace → team lookup table.
fn team_overlay(dir: &Path) -> PathBuf {
    let overlay = dir.join("site");
    std::fs::create_dir_all(overlay.join("lookups")).unwrap();
    std::fs::write(
        overlay.join("lookups/namespace_teams.csv"),
        "namespace,team\ndefault,platform\ntenant-jobs,jobs\n",
    )
    .unwrap();
    overlay
}

fn team_of(namespace: Option<&str>) -> Option<&'static str> {
    match namespace {
        Some("default") => Some("platform"),
        Some("tenant-jobs") => Some("jobs"),
        _ => None,
    }
}

/// The Alertmanager labels Vigil should send for `alert`.
fn expected_labels(alert: &Alert) -> BTreeMap<String, String> {
    let namespace = alert.fields.get("namespace").and_then(Value::as_str);
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), alert.rule_id.clone()),
        ("severity".to_string(), alert.severity.to_string()),
        ("cluster".to_string(), "test-cluster".to_string()),
        ("mitre".to_string(), alert.mitre.join(",")),
    ]);
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        labels.insert("namespace".into(), ns.into());
    }
    if let Some(team) = team_of(namespace) {
        labels.insert("team".into(), team.into());
    }
    labels
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Read every record of `topic` so far (blocking reader off the runtime).
async fn read_all(addr: &str, topic: &str, want: usize, wait: Duration) -> Vec<String> {
    let (addr, topic) = (addr.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        read_topic(&addr, &topic, want, wait, Duration::from_millis(500))
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    })
    .await
    .unwrap()
}

fn outputs_config(am: &str, receiver: SocketAddr, team_topics: &str, overlay: &Path) -> String {
    format!(
        r#"
overlays = ["{overlay}"]

[routing]
start = "earliest"
cluster = "test-cluster"
team_lookup = "namespace_teams"

[[outputs]]
name = "alertmanager"
filter = {{ min_severity = "high" }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 200 }}
alertmanager = {{ url = "{am}", resolve_after_s = 3600 }}

[[outputs]]
name = "webhook"
filter = {{ rules = ["tetragon.shell_in_*"] }}
retry = {{ max_attempts = 3, initial_backoff_ms = 50, max_backoff_ms = 200 }}
webhook = {{ url = "http://{receiver}/hook", secret_env = "TEST_WEBHOOK_SECRET" }}

[[outputs]]
name = "gone-hook"
filter = {{ rules = ["tetragon.exec_from_temp_dir"] }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 200 }}
webhook = {{ url = "http://{receiver}/gone", secret = "another-key" }}

[[outputs]]
name = "by-team"
filter = {{ rules = ["tetragon.network_tool_in_container"] }}
kafka = {{ topic = "{team_topics}-{{team}}" }}

[[outputs]]
name = "by-severity"
filter = {{ min_severity = "critical" }}
kafka = {{ topic = "{team_topics}-sev-{{severity}}" }}
"#,
        overlay = overlay.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_alertmanager_by_team_a_signed_webhook_kafka_topics_and_dead_letters() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let am = start_alertmanager(&binary);
    let (receiver, seen) = start_receiver().await;
    let addr = broker().addr.clone();
    let topics = Topics::new("outputs");
    topics.create(&addr).await;
    let team_topics = unique("outputs-team");
    let jobs_topic = format!("{team_topics}-jobs");
    let critical_topic = format!("{team_topics}-sev-critical");
    create_topics(&addr, &[(&jobs_topic, 1), (&critical_topic, 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let overlay = team_overlay(dir.path());
    // The overlays key belongs to [rules]: the extra TOML continues it.
    let extra = outputs_config(&am.url, receiver, &team_topics, &overlay);
    let config = topics.write_config_with(dir.path(), &addr, &repo().join("sql-rules"), &extra);
    let vigil = Vigil::start_with_env(
        &config,
        dir.path().join("vigil.log"),
        &[("TEST_WEBHOOK_SECRET", SECRET)],
    );
    produce(
        &addr,
        &topics.tetragon,
        0,
        &lines(&repo().join("samples/tetragon.jsonl")),
    )
    .await;

    // Alertmanager: every label set of the high and critical alerts Vigil
    // raised, with their annotations.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (alerts, am_alerts) = loop {
        let alerts: Vec<Alert> = read_all(&addr, &topics.alerts, 1, Duration::from_secs(5))
            .await
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        let expected: BTreeSet<_> = alerts
            .iter()
            .filter(|a| a.severity >= vigil::rules::Severity::High)
            .map(expected_labels)
            .collect();
        let am_alerts = get_json(&format!("{}/api/v2/alerts", am.url)).await;
        let got: BTreeSet<_> = am_alerts
            .as_array()
            .unwrap()
            .iter()
            .map(|a| labels_of(&a["labels"]))
            .collect();
        if !expected.is_empty() && got == expected {
            break (alerts, am_alerts);
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager has {got:#?}\nexpected {expected:#?}\nvigil log:\n{}",
            vigil.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let by_id: BTreeMap<&str, &Alert> = alerts.iter().map(|a| (a.alert_id.as_str(), a)).collect();
    for a in am_alerts.as_array().unwrap() {
        let id = a["annotations"]["alert_id"].as_str().unwrap();
        let alert = by_id[id];
        assert_eq!(a["annotations"]["summary"], alert.rule_title.as_str());
        assert!(a["annotations"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        assert!(
            a["annotations"]["techniques"]
                .as_str()
                .unwrap()
                .contains(' '),
            "technique names next to ids: {a}"
        );
        assert_eq!(a["status"]["state"], "active", "{a}");
        assert!(a["endsAt"].as_str().unwrap() > a["startsAt"].as_str().unwrap());
    }

    // Grouping stays Alertmanager's: one group per team (and one for the
    // alerts no team owns), each holding exactly that team's alerts.
    let groups = get_json(&format!("{}/api/v2/alerts/groups", am.url)).await;
    let mut teams = BTreeMap::new();
    for g in groups.as_array().unwrap() {
        let team = g["labels"]["team"].as_str().unwrap_or("").to_string();
        for a in g["alerts"].as_array().unwrap() {
            assert_eq!(a["labels"]["team"].as_str().unwrap_or(""), team, "{g}");
        }
        teams.insert(team, g["alerts"].as_array().unwrap().len());
    }
    assert!(
        teams.contains_key("platform") && teams.contains_key("jobs"),
        "groups by team: {teams:?}"
    );

    // The webhook: every alert of its rules, each signed, retried once
    // (the receiver refuses first requests), keyed by its id.
    let wanted: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.rule_id.starts_with("tetragon.shell_in_"))
        .map(|a| a.alert_id.clone())
        .collect();
    assert!(!wanted.is_empty());
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().delivered != wanted {
        assert!(
            Instant::now() < deadline,
            "webhook got {:?}, want {wanted:?}",
            seen.lock().unwrap().delivered
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!((seen.bad_signatures, seen.bad_keys), (0, 0));
        assert!(
            seen.requests.values().all(|n| *n >= 2),
            "{:?}",
            seen.requests
        );
        let enrichment = seen.enrichment.as_ref().unwrap();
        assert_eq!(enrichment["cluster"], "test-cluster");
        assert!(
            enrichment["techniques"][0]["name"].is_string(),
            "{enrichment}"
        );
    }

    // The refusing webhook: its alerts are dead letters naming it.
    let refused: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.rule_id == "tetragon.exec_from_temp_dir")
        .map(|a| a.alert_id.clone())
        .collect();
    assert!(!refused.is_empty());
    // The topic also holds the sample's decode errors: read until the
    // output errors are there.
    let (a, t, want) = (addr.clone(), topics.dead_letter.clone(), refused.len());
    let dead: Vec<DeadLetter> = tokio::task::spawn_blocking(move || {
        read_topic_until(
            &a,
            &t,
            Duration::from_secs(60),
            Duration::from_millis(500),
            |read| {
                read.iter()
                    .filter(|(_, r)| r.contains("\"output_error\""))
                    .count()
                    >= want
            },
        )
    })
    .await
    .unwrap()
    .iter()
    .map(|(_, r)| serde_json::from_str(r).unwrap())
    .filter(|d: &DeadLetter| d.kind == DeadLetterKind::OutputError)
    .collect();
    let dead_ids: BTreeSet<String> = dead.iter().filter_map(|d| d.alert_id.clone()).collect();
    assert_eq!(dead_ids, refused);
    for d in &dead {
        assert_eq!(d.output.as_deref(), Some("gone-hook"));
        assert!(d.reason.contains("410"), "{}", d.reason);
        let alert: Alert = serde_json::from_str(d.payload.as_deref().unwrap()).unwrap();
        assert_eq!(Some(alert.alert_id), d.alert_id);
    }

    // Kafka by team: the tenant-jobs alerts of the rule on the jobs topic.
    let jobs: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.rule_id == "tetragon.network_tool_in_container")
        .map(|a| a.alert_id.clone())
        .collect();
    let copied: BTreeSet<String> =
        read_all(&addr, &jobs_topic, jobs.len(), Duration::from_secs(60))
            .await
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(r).unwrap()["alert_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
    assert_eq!(copied, jobs);
    // Kafka by severity: the critical alerts on the critical topic.
    let critical: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.severity == vigil::rules::Severity::Critical)
        .map(|a| a.alert_id.clone())
        .collect();
    assert!(!critical.is_empty());
    let copied: BTreeSet<String> = read_all(
        &addr,
        &critical_topic,
        critical.len(),
        Duration::from_secs(60),
    )
    .await
    .iter()
    .map(|r| {
        serde_json::from_str::<Value>(r).unwrap()["alert_id"]
            .as_str()
            .unwrap()
            .to_string()
    })
    .collect();
    assert!(
        critical.is_subset(&copied),
        "{critical:?} not all in {copied:?}"
    );

    // Metrics: sent, retried and failed per output.
    let (_, text) = http_get(vigil.http_addr(), "/metrics");
    let sample = |name: &str, output: &str| {
        metric(&text, &format!("{name}{{output=\"{output}\"}}")).unwrap_or(0.0)
    };
    assert!(
        sample("vigil_output_sent_total", "webhook") >= wanted.len() as f64,
        "{text}"
    );
    assert!(sample("vigil_output_retries_total", "webhook") >= wanted.len() as f64);
    assert_eq!(
        sample("vigil_output_failed_total", "gone-hook"),
        refused.len() as f64
    );
    assert!(sample("vigil_output_sent_total", "by-team") >= jobs.len() as f64);

    // Offsets: the outputs' own group commits past every alert it has
    // delivered (or dead-lettered).
    let group = format!("{}-outputs", topics.group);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, g, t) = (addr.clone(), group.clone(), topics.alerts.clone());
        let committed = tokio::task::spawn_blocking(move || committed_offset(&a, &g, &t))
            .await
            .unwrap();
        if committed.is_some_and(|c| c >= alerts.len() as i64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} committed {committed:?}, {} alerts read",
            alerts.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = vigil.terminate();
    assert!(status.success(), "{status:?}");
}

/// A configuration that cannot work is refused at start, naming its key.
#[test]
fn bad_output_configuration_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[outputs]]\nname = \"am\"\nalertmanager = { url = \"http://am:9093/api/v2/alerts\" }\n",
            "outputs[0].alertmanager.url",
        ),
        (
            "[[outputs]]\nname = \"am\"\nalertmanager = { url = \"am:9093\" }\n",
            "outputs[0].alertmanager.url",
        ),
        (
            "[[outputs]]\nname = \"hook\"\nwebhook = { url = \"https://hooks.example.com/x\" }\n",
            "outputs[0].webhook.secret",
        ),
        (
            "[[outputs]]\nname = \"hook\"\nwebhook = { url = \"https://hooks.example.com/x\", secret_env = \"VIGIL_TEST_UNSET_SECRET\" }\n",
            "outputs[0].webhook.secret",
        ),
        (
            "[[outputs]]\nname = \"am\"\nfilter = { severity = \"high\" }\nalertmanager = { url = \"http://am:9093\" }\n",
            "unknown field `severity`",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("VIGIL_TEST_UNSET_SECRET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(expected), "{text}\n{stderr}");
    }
}
