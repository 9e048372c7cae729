//! Rule test cases: `<rule>.tests.jsonl` beside each `<rule>.sql`.
//!
//! Each line is one case:
//! `{"name": "...", "fires": true, "events": [ <raw event>, ... ]}`.
//! The events are decoded and evaluated exactly as if they had arrived on
//! the rule's source topic; the case passes when the rule fires at least
//! once (`fires: true`) or not at all (`fires: false`). Every rule must have
//! at least one case of each kind: one that must fire and a near miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{Rule, RuleEngine};
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::source::{Origin, RawMessage};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIn {
    name: String,
    fires: bool,
    events: Vec<serde_json::Value>,
}

/// Outcome of one case (or of a rule-level check such as missing cases).
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub rule_id: String,
    pub file: PathBuf,
    pub line: usize,
    pub name: String,
    pub passed: bool,
    /// Why it failed.
    pub detail: String,
}

/// Path of the test file of a rule file.
pub fn tests_path(rule_path: &Path) -> PathBuf {
    rule_path.with_extension("tests.jsonl")
}

/// Run the test cases of every rule. `rules` must be the rules `engine`
/// was compiled from.
pub async fn run(rules: &[Rule], engine: RuleEngine) -> Vec<CaseResult> {
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let mut results = Vec::new();
    for rule in rules {
        let file = tests_path(&rule.path);
        let rule_level = |passed: bool, name: &str, detail: String| CaseResult {
            rule_id: rule.meta.id.clone(),
            file: file.clone(),
            line: 0,
            name: name.to_string(),
            passed,
            detail,
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                results.push(rule_level(false, "test file", format!("cannot read {}: {e}", file.display())));
                continue;
            }
        };
        let (mut firing, mut quiet) = (0, 0);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut result = CaseResult {
                rule_id: rule.meta.id.clone(),
                file: file.clone(),
                line: i + 1,
                name: String::new(),
                passed: false,
                detail: String::new(),
            };
            let case: CaseIn = match serde_json::from_str(line) {
                Ok(c) => c,
                Err(e) => {
                    result.name = "<unparseable case>".into();
                    result.detail = format!("invalid test case: {e}");
                    results.push(result);
                    continue;
                }
            };
            result.name = case.name.clone();
            if case.fires {
                firing += 1;
            } else {
                quiet += 1;
            }
            let messages = case
                .events
                .iter()
                .enumerate()
                .map(|(j, e)| RawMessage {
                    source: rule.meta.source,
                    payload: e.to_string().into_bytes(),
                    origin: Origin::File { path: file.display().to_string(), line: (i + 1) as u64 * 1000 + j as u64 },
                    timestamp_ms: None,
                    state_only: false,
                })
                .collect();
            let mut detections = detector.process(messages).await;
            let closing = detector.finish().await;
            detector.reset();
            detections.alerts.extend(closing.alerts);
            detections.dead_letters.extend(closing.dead_letters);
            if let Some(dl) = detections.dead_letters.first() {
                result.detail = format!("the case's events did not evaluate: {}", dl.reason);
                results.push(result);
                continue;
            }
            let fired = detections.alerts.iter().filter(|a| a.rule_id == rule.meta.id).count();
            result.passed = (fired > 0) == case.fires;
            if !result.passed {
                result.detail = if case.fires {
                    "expected the rule to fire; it did not".into()
                } else {
                    format!("expected no alert; the rule fired {fired} time(s)")
                };
            }
            results.push(result);
        }
        if firing == 0 {
            results.push(rule_level(false, "has a case that fires", "no case with \"fires\": true".into()));
        }
        if quiet == 0 {
            results.push(rule_level(false, "has a near miss", "no case with \"fires\": false".into()));
        }
    }
    results
}
