//! `vigil gen` against a real broker: it produces exactly the stream it
//! writes to a file, to the configured source topics, and `vigil run` over
//! those topics raises exactly the alerts its manifest announces.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use vigil::alert::Alert;

const GEN_ARGS: [&str; 10] = [
    "--count",
    "900",
    "--rate",
    "0",
    "--seed",
    "3",
    "--attack-every",
    "100",
    "--start",
    "2026-03-01T12:00:00Z",
];

fn gen(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("gen")
        .args(GEN_ARGS)
        .args(args)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running vigil gen");
    assert!(
        out.status.success(),
        "vigil gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_events_reach_the_source_topics_and_raise_the_announced_alerts() {
    let addr = broker().addr.clone();
    let topics = Topics::new("gen");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.write_config(dir.path(), &addr);
    let (to_kafka, to_file) = (
        dir.path().join("kafka-manifest.jsonl"),
        dir.path().join("file-manifest.jsonl"),
    );
    let file = dir.path().join("events.jsonl");

    gen(&[
        "--config",
        config.to_str().unwrap(),
        "--manifest",
        to_kafka.to_str().unwrap(),
    ]);
    gen(&[
        "--out",
        file.to_str().unwrap(),
        "--manifest",
        to_file.to_str().unwrap(),
    ]);
    let announced = manifest(&to_kafka);
    assert_eq!(
        announced,
        manifest(&to_file),
        "the same options give the same attacks, wherever the events go"
    );
    assert_eq!(announced.len(), 9);

    // Every generated event is on its source topic, at the offset the
    // manifest gives for the attacks.
    let mut on_topics = Vec::new();
    for (source, topic) in [
        ("k8s_audit", &topics.audit),
        ("falco", &topics.falco),
        ("tetragon", &topics.tetragon),
    ] {
        let records = read_topic(
            &addr,
            topic,
            1,
            Duration::from_secs(30),
            Duration::from_secs(2),
        );
        for a in announced.iter().filter(|a| a["source"] == source) {
            let (_, payload) = records
                .iter()
                .find(|(o, _)| *o == a["source_index"].as_i64().unwrap())
                .expect("attack offset");
            assert!(
                payload.contains(a["event_id"].as_str().unwrap().split('/').next().unwrap()),
                "{a} at its offset"
            );
        }
        on_topics.extend(records.into_iter().map(|(_, p)| p));
    }
    let mut in_file: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(in_file.len(), 900);
    in_file.sort();
    on_topics.sort();
    assert_eq!(on_topics, in_file);

    // The pipeline over those topics: the announced alerts, no others.
    let expected: BTreeSet<(String, String)> = announced
        .iter()
        .flat_map(|a| {
            a["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.as_str().unwrap().to_owned(),
                        a["event_id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    let alerts = read_topic(
        &addr,
        &topics.alerts,
        expected.len(),
        Duration::from_secs(90),
        Duration::from_secs(3),
    );
    let status = vigil.terminate();
    assert!(status.success());
    let got: BTreeSet<(String, String)> = alerts
        .iter()
        .map(|(_, json)| {
            let a: Alert = serde_json::from_str(json).unwrap();
            (a.rule_id, a.events[0].event_id.clone())
        })
        .collect();
    assert_eq!(alerts.len(), got.len(), "no duplicate alerts");
    assert_eq!(got, expected);
}
