//! The README's first command: `vigil run` with no Kafka configured runs
//! the embedded demo end to end and prints the alerts it produced.

use std::process::Command;

use vigil::alert::Alert;

#[test]
fn run_without_kafka_runs_the_embedded_demo() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.arg("run")
        .current_dir(crate::common::repo())
        .env("RUST_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIL") {
            cmd.env_remove(k);
        }
    }
    // Any free port: the default 9464 may be taken (another Vigil, another test).
    cmd.env("VIGIL__HTTP__LISTEN", "127.0.0.1:0");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let alerts: Vec<Alert> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(alerts.len() >= 10, "only {} alerts: {stderr}", alerts.len());
    // Alerts came back from the broker topic, with Kafka origins.
    assert!(alerts
        .iter()
        .all(|a| matches!(a.events[0].origin, vigil::source::Origin::Kafka { .. })));
    for source in ["k8s_audit", "tetragon"] {
        assert!(
            alerts.iter().any(|a| a.source.to_string() == source),
            "no {source} alert"
        );
    }
    // The two malformed sample lines are reported as dead letters.
    assert!(
        stderr.contains(&format!("→ {} alerts", alerts.len())),
        "{stderr}"
    );
    assert!(stderr.contains("2 dead letters"), "{stderr}");
    assert_eq!(stderr.matches("dead letter: ").count(), 2, "{stderr}");
}
