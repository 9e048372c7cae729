//! The rule tools through the `vigil` binary: replay's end when its reader
//! goes away, its summary and time bounds, and `rules coverage --format json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.current_dir(repo()).env("RUST_LOG", "warn");
    c
}

const PANTHER: &str = "../shared/data/k8s-audit/panther-rule-cases.jsonl";

#[test]
fn replay_piped_into_head_ends_quietly() {
    // About 2 MB of alerts: far more than a pipe buffers, so the replay is
    // still writing when the reader goes away.
    let mut child = vigil()
        .args(["replay", "--source", "k8s_audit", "--batch-size", "50", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(repo().join(PANTHER)).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        for _ in 0..20 {
            if stdin.write_all(&input).is_err() {
                break; // the replay stopped reading: expected
            }
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"schema_version\""), "{first}");
    drop(out); // like `head -1` exiting
    let result = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        result.status
    );
    assert!(
        stderr.contains("alert output closed by its reader: the replay stopped early"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

#[test]
fn replay_summary_only_reports_the_events_skipped_by_time_bounds() {
    let out = vigil()
        .args([
            "replay",
            "--source",
            "k8s_audit",
            "--summary-only",
            "--from",
            "2023-01-27T18:30:00Z",
            "--to",
            "2023-01-27T18:31:00Z",
            "../shared/data/k8s-audit/perfspec-background.jsonl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    // Evaluated + skipped = every line, and some of each.
    let n = |label: &str| -> u64 {
        let before = first.split(label).next().unwrap();
        before
            .rsplit(", ")
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (lines, evaluated, skipped) = (
        n(" lines"),
        n(" events evaluated"),
        n(" outside the time bounds"),
    );
    assert_eq!(evaluated + skipped, lines, "{first}");
    assert!(evaluated > 0 && skipped > 0, "{first}");
    assert!(
        stdout.contains(
            "event time seen: 2023-01-27T18:28:08.127428Z .. 2023-01-27T18:32:12.473826Z"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("schema_version"),
        "--summary-only prints no alerts"
    );

    let bad = vigil()
        .args([
            "replay",
            "--source",
            "k8s_audit",
            "--from",
            "2024-01-02T00:00:00Z",
            "--to",
            "2024-01-01T00:00:00Z",
            PANTHER,
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from must be before --to"));
}

#[test]
fn coverage_json_lists_the_rules_per_technique() {
    let out = vigil()
        .args(["rules", "coverage", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = vigil::rules::RulePack::load_dir(&repo().join("sql-rules"))
        .unwrap()
        .rules;
    assert_eq!(report["rules"], rules.len());
    let mut covered = std::collections::BTreeSet::new();
    for tactic in report["tactics"].as_array().unwrap() {
        for t in tactic["techniques"].as_array().unwrap() {
            for r in t["rules"].as_array().unwrap() {
                let rule = rules
                    .iter()
                    .find(|x| x.meta.id == r.as_str().unwrap())
                    .expect("a listed rule exists");
                let id = t["id"].as_str().unwrap();
                assert!(
                    rule.meta
                        .mitre
                        .iter()
                        .any(|m| vigil::rules::coverage::covers(m, id)),
                    "{} does not cover {id}",
                    rule.meta.id
                );
                covered.insert(id.to_string());
            }
        }
    }
    assert_eq!(report["techniques_covered"], covered.len());
    let uncovered = report["uncovered"].as_array().unwrap().len();
    assert_eq!(
        report["techniques_total"].as_u64().unwrap() as usize,
        covered.len() + uncovered
    );
}
