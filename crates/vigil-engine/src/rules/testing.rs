//! Rule test cases: `<rule>.tests.jsonl` beside each `<rule>.sql`.
//!
//! Each line is one case:
//! `{"name": "...", "fires": true, "events": [ <raw event>, ... ]}`.
//! A plain entry of `events` is decoded and evaluated exactly as if it had
//! arrived on the rule's source topic. An entry of the form
//! `{"$source": "tetragon", "$event": { <raw event> }}` arrives on the topic
//! of the named source instead (`k8s_audit`, `falco` or `tetragon`), so a
//! cross-source correlation rule can be tested with a mix of sources. An
//! object with a `$source` key is always read as that wrapper: it must have
//! exactly the two keys, or the case is invalid (no raw event of any source
//! has a `$source` key, so nothing is lost).
//!
//! The events of a case form one batch, in one partition (the test file):
//! nothing in a case is late, and the correlation windows are closed at the
//! end of each case. The case passes when the rule fires at least once
//! (`fires: true`) or not at all (`fires: false`), and, when the case gives
//! `"alerts": N`, raises exactly N alerts besides suppression summaries
//! (how a rule that folds repeats is tested). A case may fill lists for its
//! events, `"lists": {"allowed_images": ["docker.io/library/nginx"]}`: the
//! rule is then evaluated alone with those lists' items replaced (how a
//! site policy, empty as shipped, is tested). Every rule must have at least
//! one case of each kind: one that must fire and a near miss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::definitions::lists::Item;
use super::definitions::{Definitions, Location};
use super::exceptions::Exceptions;
use super::{Rule, RuleEngine, RuleErrors, RuleSet};
use crate::detect::Detector;
use crate::observe::NoMetrics;
use crate::source::{Origin, RawMessage, SourceKind};

/// Key of a case event that names its source (see the module doc).
const SOURCE_KEY: &str = "$source";
/// Key of the wrapped raw event beside [`SOURCE_KEY`].
const EVENT_KEY: &str = "$event";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIn {
    name: String,
    fires: bool,
    /// How many alerts the rule raises, not counting suppression
    /// summaries (for rules that fold repeated alerts).
    #[serde(default)]
    alerts: Option<usize>,
    /// Lists whose items this case replaces (a site policy's list, empty as
    /// shipped, filled for the case).
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
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

/// Why a case cannot be run: its result's detail is "invalid test case: "
/// and this.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// An entry of the case's `events` (`index` from 0).
    #[error("event {index}: {source}")]
    Event {
        index: usize,
        #[source]
        source: EventError,
    },
    /// The case fills a list the rule set does not define.
    #[error("unknown list {0:?}")]
    UnknownList(String),
    /// The rule does not compile with the case's lists (or its exceptions
    /// do not apply to it).
    #[error("{0}")]
    Rules(#[source] RuleErrors),
}

/// What is wrong with an entry `{"$source": .., "$event": ..}` of a case's
/// `events` (see the module doc).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("an event with \"$source\" may only have \"$source\" and \"$event\", not {0:?}")]
    ExtraKey(String),
    /// A name the source registry does not hold.
    #[error(transparent)]
    UnknownSource(vigil_sources::registry::UnknownSource),
    #[error("\"$source\" must be a source name, not {0}")]
    SourceNotAName(serde_json::Value),
    #[error("an event with \"$source\" needs \"$event\"")]
    NoEvent,
}

/// The source and raw payload of one entry of a case's `events`: a plain
/// event belongs to `default`; `{"$source": .., "$event": ..}` to the named
/// source.
fn case_event(
    entry: &serde_json::Value,
    default: SourceKind,
) -> Result<(SourceKind, Vec<u8>), EventError> {
    let Some(object) = entry.as_object().filter(|o| o.contains_key(SOURCE_KEY)) else {
        return Ok((default, entry.to_string().into_bytes()));
    };
    if let Some(extra) = object.keys().find(|k| *k != SOURCE_KEY && *k != EVENT_KEY) {
        return Err(EventError::ExtraKey(extra.clone()));
    }
    let source = match &object[SOURCE_KEY] {
        serde_json::Value::String(name) => {
            vigil_sources::registry::resolve(name).map_err(EventError::UnknownSource)?
        }
        other => return Err(EventError::SourceNotAName(other.clone())),
    };
    let event = object.get(EVENT_KEY).ok_or(EventError::NoEvent)?;
    Ok((source, event.to_string().into_bytes()))
}

/// Evaluate one case's events as one batch, then close every window and
/// suppression period, and forget the state.
async fn evaluate(detector: &mut Detector, messages: Vec<RawMessage>) -> crate::detect::Detections {
    let mut detections = detector.process(messages).await;
    let closing = detector.finish().await;
    detector.reset();
    detections.alerts.extend(closing.alerts);
    detections.dead_letters.extend(closing.dead_letters);
    detections.excepted.extend(closing.excepted);
    detections
}

/// A detector of `rule` alone whose lists named in `lists` hold the given
/// items (written at `at`): how a case fills a site policy's list.
async fn with_lists(
    rule: &Rule,
    definitions: &Definitions,
    exceptions: &Exceptions,
    lists: &BTreeMap<String, Vec<String>>,
    at: &Location,
) -> Result<Detector, CaseError> {
    let mut definitions = definitions.clone();
    for (name, values) in lists {
        let list = definitions
            .lists
            .get_mut(name)
            .ok_or_else(|| CaseError::UnknownList(name.clone()))?;
        list.items = values
            .iter()
            .map(|v| Item {
                value: v.clone(),
                at: at.clone(),
            })
            .collect();
    }
    let set = RuleSet {
        rules: vec![rule.clone()],
        definitions: Arc::new(definitions),
    };
    let mut own = exceptions.clone();
    own.entries.retain(|e| e.rule == rule.meta.id);
    let engine = RuleEngine::compile(set)
        .await
        .and_then(|e| e.with_exceptions(own))
        .map_err(CaseError::Rules)?;
    Ok(Detector::new(
        engine,
        Default::default(),
        Arc::new(NoMetrics),
    ))
}

/// Path of the test file of a rule file.
pub fn tests_path(rule_path: &Path) -> PathBuf {
    rule_path.with_extension("tests.jsonl")
}

/// Run the test cases of every rule. `rules` must be the rules `engine`
/// was compiled from.
pub async fn run(rules: &[Rule], engine: RuleEngine) -> Vec<CaseResult> {
    let definitions = engine.definitions().clone();
    let exceptions = engine.exceptions().clone();
    let mut detector = Detector::new(engine, Default::default(), Arc::new(NoMetrics));
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
                results.push(rule_level(
                    false,
                    "test file",
                    format!("cannot read {}: {e}", file.display()),
                ));
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
            let messages: Result<Vec<RawMessage>, CaseError> = case
                .events
                .iter()
                .enumerate()
                .map(|(j, e)| {
                    let (source, payload) = case_event(e, rule.meta.source)
                        .map_err(|source| CaseError::Event { index: j, source })?;
                    Ok(RawMessage {
                        source,
                        payload,
                        origin: Origin::File {
                            path: file.display().to_string().into(),
                            line: (i + 1) as u64 * 1000 + j as u64,
                        },
                        timestamp_ms: None,
                        state_only: false,
                    })
                })
                .collect();
            let messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    result.detail = format!("invalid test case: {e}");
                    results.push(result);
                    continue;
                }
            };
            let at = Location::new(&file, i + 1);
            let detections = if case.lists.is_empty() {
                evaluate(&mut detector, messages).await
            } else {
                match with_lists(rule, &definitions, &exceptions, &case.lists, &at).await {
                    Ok(mut own) => evaluate(&mut own, messages).await,
                    Err(e) => {
                        result.detail = format!("invalid test case: {e}");
                        results.push(result);
                        continue;
                    }
                }
            };
            if let Some(dl) = detections.dead_letters.first() {
                result.detail = format!("the case's events did not evaluate: {}", dl.reason);
                results.push(result);
                continue;
            }
            let fired = detections
                .alerts
                .iter()
                .filter(|a| a.rule_id == rule.meta.id)
                .count();
            let raised = detections
                .alerts
                .iter()
                .filter(|a| a.rule_id == rule.meta.id && a.suppressed_count.is_none())
                .count();
            result.passed = (fired > 0) == case.fires;
            if let Some(expected) = case.alerts.filter(|n| result.passed && *n != raised) {
                result.passed = false;
                result.detail = format!(
                    "expected {expected} alert(s) besides suppression summaries; the rule raised {raised}"
                );
            } else if !result.passed {
                let excepted: Vec<&str> = detections
                    .excepted
                    .iter()
                    .filter(|e| e.rule_id == rule.meta.id)
                    .map(|e| e.exception.as_str())
                    .collect();
                result.detail = if case.fires && !excepted.is_empty() {
                    format!("expected the rule to fire; it matched but the exception at {} suppressed it", excepted.join(", "))
                } else if case.fires {
                    "expected the rule to fire; it did not".into()
                } else {
                    format!("expected no alert; the rule fired {fired} time(s)")
                };
            }
            results.push(result);
        }
        if firing == 0 {
            results.push(rule_level(
                false,
                "has a case that fires",
                "no case with \"fires\": true".into(),
            ));
        }
        if quiet == 0 {
            results.push(rule_level(
                false,
                "has a near miss",
                "no case with \"fires\": false".into(),
            ));
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load_rule_set;

    const RULE: &str = "-- id: t.exec\n-- title: T\n-- severity: high\n-- description: d\n-- mitre: T1609\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\nSELECT user_info.username AS username, object_ref.namespace AS namespace FROM k8s_audit WHERE object_ref.subresource = 'exec'\n";

    fn exec_by(user: &str, ns: &str) -> String {
        format!(
            r#"{{"kind":"Event","auditID":"{user}-{ns}","stage":"ResponseComplete","verb":"create","user":{{"username":"{user}"}},"objectRef":{{"resource":"pods","subresource":"exec","namespace":"{ns}","name":"p"}},"requestReceivedTimestamp":"2024-05-01T10:00:00Z"}}"#
        )
    }

    fn case(name: &str, fires: bool, user: &str, ns: &str) -> String {
        format!(
            r#"{{"name":"{name}","fires":{fires},"events":[{}]}}"#,
            exec_by(user, ns)
        )
    }

    /// A rules directory with one rule, its cases and an exceptions file.
    fn dir(cases: &[String], exceptions: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("exec.sql"), RULE).unwrap();
        std::fs::write(d.path().join("exec.tests.jsonl"), cases.join("\n")).unwrap();
        std::fs::write(d.path().join("exceptions.toml"), exceptions).unwrap();
        d
    }

    const EXCEPT_CI: &str = "[[exception]]\nrule = \"t.exec\"\nfield = \"namespace\"\nvalues = [\"ci\"]\ncomment = \"CI runners exec into build pods\"\n";

    async fn run_dir(d: &tempfile::TempDir) -> Vec<CaseResult> {
        let engine = load_rule_set(&crate::rules::Layers::dir(d.path()), Default::default())
            .await
            .unwrap();
        let rules = crate::rules::load_dir(d.path()).unwrap();
        run(&rules, engine).await
    }

    #[tokio::test]
    async fn a_case_suppressed_by_an_exception_does_not_fire() {
        let d = dir(
            &[
                case("alice in prod", true, "alice", "prod"),
                case("CI exec is allow-listed", false, "ci-bot", "ci"),
            ],
            EXCEPT_CI,
        );
        let results = run_dir(&d).await;
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.passed), "{results:?}");
    }

    #[tokio::test]
    async fn a_firing_case_an_exception_suppresses_fails_and_names_the_exception() {
        let d = dir(
            &[
                case("CI exec should fire", true, "ci-bot", "ci"),
                case("near miss", false, "x", "ci"),
            ],
            EXCEPT_CI,
        );
        let results = run_dir(&d).await;
        let failed: Vec<&CaseResult> = results.iter().filter(|r| !r.passed).collect();
        assert_eq!(failed.len(), 1, "{results:?}");
        let expected = format!(
            "the exception at {}:1 suppressed it",
            d.path().join("exceptions.toml").display()
        );
        assert!(failed[0].detail.contains(&expected), "{}", failed[0].detail);
    }

    #[tokio::test]
    async fn exceptions_for_unknown_rules_or_columns_stop_the_load() {
        let d = dir(
            &[],
            "[[exception]]\nrule = \"t.exec\"\nfield = \"image\"\nvalues = [\"x\"]\n",
        );
        let err = load_rule_set(&crate::rules::Layers::dir(d.path()), Default::default())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("exceptions.toml:3: rule \"t.exec\" has no output column \"image\" (its columns: username, namespace)"), "{err}");
        let d = dir(
            &[],
            "[[exception]]\nrule = \"t.nope\"\nfield = \"namespace\"\nvalues = [\"x\"]\n",
        );
        let err = load_rule_set(&crate::rules::Layers::dir(d.path()), Default::default())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("exceptions.toml:2: exception for unknown rule \"t.nope\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn excepted_alerts_are_counted_in_the_metrics() {
        let d = dir(&[], EXCEPT_CI);
        let engine = load_rule_set(&crate::rules::Layers::dir(d.path()), Default::default())
            .await
            .unwrap();
        let metrics = Arc::new(crate::observe::CountingMetrics::default());
        let mut detector = Detector::new(engine, Default::default(), metrics.clone());
        let messages = [("alice", "prod"), ("ci-bot", "ci"), ("bob", "ci")]
            .iter()
            .enumerate()
            .map(|(i, (u, n))| RawMessage {
                source: crate::source::SourceKind::K8sAudit,
                payload: exec_by(u, n).into_bytes(),
                origin: Origin::File {
                    path: "x".into(),
                    line: i as u64 + 1,
                },
                timestamp_ms: None,
                state_only: false,
            })
            .collect();
        let out = detector.process(messages).await;
        assert_eq!(out.alerts.len(), 1);
        assert_eq!(out.alerts[0].fields["username"], "alice");
        assert_eq!(out.excepted.len(), 2);
        assert_eq!(
            crate::observe::CountingMetrics::get(&metrics.alerts_excepted),
            2
        );
    }
}

/// Cases whose events come from other sources (`$source` wrappers).
#[cfg(test)]
mod source_wrapper_tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::rules::parse_rule;

    /// An audit exec into prod/web-1 followed by a Tetragon shell in a pod.
    const CROSS_SOURCE: &str = "-- id: t.cross\n-- title: t\n-- severity: high\n-- description: t\n-- mitre: T1609\n\
        -- source: k8s_audit\n-- author: t\n-- based_on: vigil:test\n-- mode: correlation\n-- window: 1m\n\
        SELECT a.user_info.username AS username, t.event_time AS window_end \
        FROM k8s_audit a JOIN tetragon t \
          ON a.object_ref.namespace = t.process.pod.namespace AND a.object_ref.name = t.process.pod.name \
         AND t.event_time >= a.event_time AND t.event_time <= a.event_time + INTERVAL '1 minute' \
        WHERE a.object_ref.subresource = 'exec' AND t.event_type = 'process_exec'";

    fn exec() -> serde_json::Value {
        json!({"kind": "Event", "auditID": "x", "stage": "ResponseStarted", "verb": "create",
               "user": {"username": "mallory"},
               "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "prod", "name": "web-1"},
               "requestReceivedTimestamp": "2024-01-01T00:00:00Z"})
    }

    fn shell(pod: &str) -> serde_json::Value {
        json!({"process_exec": {"process": {"exec_id": format!("e-{pod}"), "binary": "/bin/sh",
               "pod": {"namespace": "prod", "name": pod}}},
               "node_name": "n", "time": "2024-01-01T00:00:05Z"})
    }

    async fn run_cases(dir: &Path, cases: &[serde_json::Value]) -> Vec<CaseResult> {
        let path = dir.join("cross.sql");
        std::fs::write(&path, CROSS_SOURCE).unwrap();
        let lines: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
        std::fs::write(tests_path(&path), lines.join("\n")).unwrap();
        let rules = vec![parse_rule(&path, CROSS_SOURCE).unwrap()];
        let engine = RuleEngine::compile(rules.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        run(&rules, engine).await
    }

    #[tokio::test]
    async fn events_may_name_another_source_for_cross_source_rules() {
        let dir = tempfile::tempdir().unwrap();
        let results = run_cases(
            dir.path(),
            &[
                json!({"name": "exec then shell in that pod", "fires": true,
                       "events": [exec(), {"$source": "tetragon", "$event": shell("web-1")}]}),
                json!({"name": "shell in another pod", "fires": false,
                       "events": [exec(), {"$source": "tetragon", "$event": shell("web-2")}]}),
                json!({"name": "the wrapper may name the rule's own source too", "fires": true,
                       "events": [{"$source": "tetragon", "$event": shell("web-1")},
                                  {"$source": "k8s_audit", "$event": exec()}]}),
            ],
        )
        .await;
        assert_eq!(results.len(), 3, "{results:?}");
        assert!(results.iter().all(|r| r.passed), "{results:?}");
    }

    #[tokio::test]
    async fn an_unwrapped_event_of_another_source_is_read_as_the_rules_source() {
        let dir = tempfile::tempdir().unwrap();
        // Without the wrapper the Tetragon event arrives on the audit topic,
        // where it is not an audit event: the case cannot pass.
        let results = run_cases(
            dir.path(),
            &[json!({"name": "unwrapped", "fires": true, "events": [exec(), shell("web-1")]})],
        )
        .await;
        let case = results.iter().find(|r| r.name == "unwrapped").unwrap();
        assert!(!case.passed);
        assert!(case.detail.contains("did not evaluate"), "{}", case.detail);
    }

    #[tokio::test]
    async fn malformed_source_wrappers_are_invalid_cases() {
        let dir = tempfile::tempdir().unwrap();
        let results = run_cases(
            dir.path(),
            &[
                json!({"name": "unknown source", "fires": true, "events": [{"$source": "syslog", "$event": shell("web-1")}]}),
                json!({"name": "no event", "fires": false, "events": [{"$source": "tetragon"}]}),
                json!({"name": "extra key", "fires": false,
                       "events": [{"$source": "tetragon", "$event": shell("web-1"), "time": "x"}]}),
            ],
        )
        .await;
        for (name, expected) in [
            ("unknown source", "unknown source \"syslog\""),
            ("no event", "needs \"$event\""),
            ("extra key", "not \"time\""),
        ] {
            let case = results
                .iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("{name}: {results:?}"));
            assert!(!case.passed, "{name}");
            assert!(
                case.detail.starts_with("invalid test case: event 0: "),
                "{name}: {}",
                case.detail
            );
            assert!(case.detail.contains(expected), "{name}: {}", case.detail);
        }
    }
}
