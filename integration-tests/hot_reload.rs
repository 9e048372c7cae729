//! Hot reload against a real broker: `vigil run` picks up an edited rules
//! directory while it runs, refuses an invalid set (keeping the running
//! one), and reloads on SIGHUP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use vigil::alert::Alert;

fn rule(id: &str, verb: &str) -> String {
    format!(
        "-- id: {id}\n-- title: {id}\n-- severity: low\n-- description: test\n-- mitre: T1609\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\n\
         SELECT user_info.username AS username FROM k8s_audit WHERE verb = '{verb}'\n"
    )
}

fn event(id: &str, verb: &str) -> Vec<u8> {
    format!(
        r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"alice"}},"objectRef":{{"resource":"pods","namespace":"ns","name":"p"}},"requestReceivedTimestamp":"2024-05-01T10:00:00Z"}}"#
    )
    .into_bytes()
}

/// Wait until the log has `count` lines containing `text` (a liveness bound, not a speed check).
fn wait_for_log(vigil: &Vigil, text: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while vigil.log_text().matches(text).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {count}× {text:?} in the log:\n{}",
            vigil.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alerts(addr: &str, topic: &str, want: usize) -> Vec<Alert> {
    read_topic(
        addr,
        topic,
        want,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .iter()
    .map(|(_, a)| serde_json::from_str(a).unwrap())
    .collect()
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors and deployment tools do: no half-written file is read.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn edited_rules_take_over_while_running_and_invalid_ones_are_refused() {
    let addr = broker().addr.clone();
    let topics = Topics::new("reload");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    write(&rules.join("delete.sql"), &rule("t.delete", "delete"));
    let config = topics.write_config_with(dir.path(), &addr, &rules, "");
    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    wait_for_log(&vigil, "pipeline started", 1);

    produce(
        &addr,
        &topics.audit,
        0,
        &[event("a", "delete"), event("b", "patch")],
    )
    .await;
    let got = alerts(&addr, &topics.alerts, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rule_id, "t.delete");

    // An invalid set: refused, the running rules stay.
    write(
        &rules.join("broken.sql"),
        &rule("t.broken", "x").replace("FROM k8s_audit", "FROM nowhere"),
    );
    wait_for_log(&vigil, "rule reload failed", 1);
    produce(&addr, &topics.audit, 0, &[event("c", "delete")]).await;
    let got = alerts(&addr, &topics.alerts, 2);
    assert_eq!(got.len(), 2, "the running rule must keep firing");
    assert_eq!(got[1].rule_id, "t.delete");

    // Fix it: a new rule for patch, the delete rule removed.
    std::fs::remove_file(rules.join("broken.sql")).unwrap();
    std::fs::remove_file(rules.join("delete.sql")).unwrap();
    write(&rules.join("patch.sql"), &rule("t.patch", "patch"));
    wait_for_log(&vigil, "new rule set compiled", 1);
    produce(
        &addr,
        &topics.audit,
        0,
        &[event("d", "delete"), event("e", "patch")],
    )
    .await;
    let got = alerts(&addr, &topics.alerts, 3);
    assert_eq!(got.len(), 3, "log:\n{}", vigil.log_text());
    assert_eq!(got[2].rule_id, "t.patch");
    assert_eq!(got[2].events[0].event_id, "e/ResponseComplete");
    wait_for_log(&vigil, "rules reloaded", 1);

    // SIGHUP reloads too.
    let pid = vigil_pid(&vigil);
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_for_log(&vigil, "new rule set compiled", 2);
    assert!(vigil.log_text().contains("SIGHUP"));

    let status = vigil.terminate();
    assert!(status.success());
}

fn vigil_pid(vigil: &Vigil) -> String {
    vigil.pid().to_string()
}
