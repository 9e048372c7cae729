//! The Sigma importer (`vigil rules import sigma`, crates/vigil-sigma) end
//! to end: imported rules plan in the engine, and each imported per-event
//! rule matches exactly the events an independent Sigma evaluator (rsigma,
//! the evaluator of scripts/bench-peers.sh) matches with the same rule.
//!
//! The oracle reads the raw events; the imported rules read Vigil's
//! decoded columns. The pipeline's `event` paths say where each mapped
//! field is in the raw event, so the oracle's copy of each rule names those
//! paths; a field computed from several (CommandLine: Tetragon's binary and
//! arguments) is added to the oracle's event as the pipeline defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::rules::{Rule, RuleEngine, RuleMode, RulePack, RuleSet};
use vigil::source::{Origin, SourceKind};
use vigil_sigma::pipeline::{Pipeline, Pipelines};
use yaml_serde::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared(rel: &str) -> PathBuf {
    repo().join("../shared").join(rel)
}

/// (rule id, line of the input file)
type Matches = BTreeSet<(String, u64)>;

/// The rules of `dir` (recursively) that read `source`, per-event only.
fn rules_of(dir: &Path, source: SourceKind) -> Vec<Rule> {
    vigil::rules::load_dir(dir)
        .expect("imported rules load")
        .into_iter()
        .filter(|r| r.meta.source == source && r.meta.mode == RuleMode::Event)
        .collect()
}

async fn engine(rules: Vec<Rule>) -> RuleEngine {
    let pack = RulePack::load_dir(&repo().join("sql-rules")).expect("pack loads");
    RuleEngine::compile(RuleSet {
        rules,
        definitions: pack.definitions,
    })
    .await
    .expect("imported rules compile")
}

/// What the rules match over `input`, one event a line.
async fn vigil_matches(rules: Vec<Rule>, source: SourceKind, input: &Path) -> Matches {
    let mut detector = Detector::new(
        engine(rules).await,
        Default::default(),
        Arc::new(Metrics::default()),
    );
    let (mut alerts, mut dead) = (Vec::new(), Vec::new());
    vigil::replay::replay(&mut detector, source, input, 256, &mut alerts, &mut dead)
        .await
        .expect("replay");
    assert!(
        dead.is_empty(),
        "dead letters: {}",
        String::from_utf8_lossy(&dead)
    );
    let mut out = Matches::new();
    for line in String::from_utf8(alerts).unwrap().lines() {
        let alert: vigil::alert::Alert = serde_json::from_str(line).unwrap();
        for e in &alert.events {
            if let Origin::File { line, .. } = e.origin {
                out.insert((alert.rule_id.clone(), line));
            }
        }
    }
    out
}

/// The oracle's copy of a Sigma rule: every mapped field renamed to its
/// path in the raw event.
fn oracle_yaml(doc: &Yaml, p: &Pipeline) -> Yaml {
    let mut doc = doc.clone();
    let rename = |m: &yaml_serde::Mapping| -> yaml_serde::Mapping {
        m.iter()
            .map(|(k, v)| {
                let key = k.as_str().unwrap_or_default();
                let (field, mods) = key.split_once('|').map_or((key, ""), |(f, m)| (f, m));
                let event = p
                    .field(field)
                    .ok()
                    .and_then(|f| f.event)
                    .unwrap_or(field.to_string());
                let key = if mods.is_empty() {
                    event
                } else {
                    format!("{event}|{mods}")
                };
                (Yaml::String(key), v.clone())
            })
            .collect()
    };
    if let Some(det) = doc.get_mut("detection").and_then(Yaml::as_mapping_mut) {
        for (_, sel) in det.iter_mut() {
            match sel {
                Yaml::Mapping(m) => *m = rename(m),
                Yaml::Sequence(seq) => {
                    for item in seq.iter_mut() {
                        if let Yaml::Mapping(m) = item {
                            *m = rename(m);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    doc
}

/// An rsigma engine holding the oracle copies of the Sigma rules that
/// imported as per-event rules (`ids`: the Vigil ids imported).
fn oracle(files: &[PathBuf], ids: &BTreeSet<String>) -> rsigma_eval::Engine {
    let pipelines = Pipelines::builtin();
    let mut engine = rsigma_eval::Engine::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for doc in vigil_sigma::sigma::yaml_documents(&text).unwrap() {
            let Ok(vigil_sigma::sigma::Doc::Detection(rule)) = vigil_sigma::sigma::parse_doc(&doc)
            else {
                continue;
            };
            if !ids.contains(&vigil_sigma::render::rule_id(&rule.meta, "")) {
                continue;
            }
            let p = pipelines.for_logsource(&rule.logsource).unwrap();
            let yaml = yaml_serde::to_string(&oracle_yaml(&doc, p)).unwrap();
            let collection = rsigma_parser::parse_sigma_yaml(&yaml).expect("rsigma parses");
            engine.add_collection(&collection).expect("rsigma compiles");
        }
    }
    engine
}

/// The Sigma fields the pipelines compute from several event fields, as
/// the pipelines define them; None for an event outside the logsource.
type Augment = fn(serde_json::Value) -> Option<serde_json::Value>;

fn audit_event(v: serde_json::Value) -> Option<serde_json::Value> {
    Some(v)
}

/// A Tetragon process_exec with CommandLine and ParentCommandLine
/// (`concat_ws(' ', binary, arguments)`).
fn tetragon_exec(mut v: serde_json::Value) -> Option<serde_json::Value> {
    let exec = v.get("process_exec")?.clone();
    let line = |p: &serde_json::Value| {
        let parts: Vec<&str> = ["binary", "arguments"]
            .iter()
            .filter_map(|k| p.get(*k).and_then(|x| x.as_str()))
            .collect();
        (!parts.is_empty()).then(|| serde_json::Value::from(parts.join(" ")))
    };
    let obj = v.as_object_mut()?;
    if let Some(c) = exec.get("process").and_then(line) {
        obj.insert("CommandLine".into(), c);
    }
    if let Some(c) = exec.get("parent").and_then(line) {
        obj.insert("ParentCommandLine".into(), c);
    }
    Some(v)
}

fn oracle_matches(engine: &rsigma_eval::Engine, input: &Path, augment: Augment) -> Matches {
    let mut out = Matches::new();
    for (i, line) in std::fs::read_to_string(input).unwrap().lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(event) = augment(serde_json::from_str(line).unwrap()) else {
            continue;
        };
        for r in engine.evaluate(&rsigma_eval::JsonEvent::borrow(&event)) {
            let id = r.header.rule_id.clone().expect("rules have ids");
            out.insert((format!("sigma.{id}"), i as u64 + 1));
        }
    }
    out
}

/// Import `sources` into a fresh directory.
fn import(sources: &[PathBuf]) -> (tempfile::TempDir, vigil_sigma::Report) {
    let out = tempfile::tempdir().unwrap();
    let report = vigil_sigma::import(sources, out.path(), &Pipelines::builtin()).unwrap();
    (out, report)
}

fn imported_ids(report: &vigil_sigma::Report) -> BTreeSet<String> {
    report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            vigil_sigma::Outcome::Imported { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Generated events of one source (`vigil gen`, attacks injected) as a
/// JSON-lines file.
fn generated(source: SourceKind, count: usize, dir: &Path) -> PathBuf {
    let mut config = vigil_gen::GenConfig::single(source);
    config.attack_every = 200;
    let text: String = vigil_gen::Generator::new(config)
        .take(count)
        .map(|e| format!("{}\n", String::from_utf8(e.payload).unwrap()))
        .collect();
    let path = dir.join(format!("{source}.jsonl"));
    std::fs::write(&path, text).unwrap();
    path
}

fn diff(vigil: &Matches, oracle: &Matches) -> String {
    let only_vigil: Vec<_> = vigil.difference(oracle).take(10).collect();
    let only_oracle: Vec<_> = oracle.difference(vigil).take(10).collect();
    format!("only Vigil: {only_vigil:?}\nonly rsigma: {only_oracle:?}")
}

#[tokio::test]
async fn kubernetes_audit_rules_import_16_of_16_plan_and_reimport_identically() {
    let src = vec![shared("reference/rules/sigma-kubernetes-audit")];
    let (out, report) = import(&src);
    assert_eq!(
        (report.imported(), report.total()),
        (16, 16),
        "{:#?}",
        report.lines()
    );
    let rules = rules_of(out.path(), SourceKind::K8sAudit);
    assert_eq!(rules.len(), 16);
    engine(rules).await;
    // Re-importing gives the same bytes.
    let (again, _) = import(&src);
    let read = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(d.join("k8s_audit"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(read(out.path()), read(again.path()));
}

#[tokio::test]
async fn imported_audit_rules_match_what_rsigma_matches() {
    let src = vec![shared("reference/rules/sigma-kubernetes-audit")];
    let (out, report) = import(&src);
    let files = vigil_sigma::input_files(&src).unwrap();
    let oracle = oracle(&files, &imported_ids(&report));
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [
        shared("data/k8s-audit/panther-rule-cases.jsonl"),
        shared("data/k8s-audit/perfspec-background.jsonl"),
        shared("data/k8s-audit/audit2rbac-demo.jsonl"),
        shared("data/k8s-audit/aks-system.jsonl"),
        generated(SourceKind::K8sAudit, 20_000, tmp.path()),
    ];
    for input in &inputs {
        let ours = vigil_matches(
            rules_of(out.path(), SourceKind::K8sAudit),
            SourceKind::K8sAudit,
            input,
        )
        .await;
        let theirs = oracle_matches(&oracle, input, audit_event);
        eprintln!("{}: {} matches", input.display(), ours.len());
        assert_eq!(
            ours,
            theirs,
            "{}:\n{}",
            input.display(),
            diff(&ours, &theirs)
        );
    }
}

#[tokio::test]
async fn imported_linux_process_rules_match_what_rsigma_matches() {
    let src = vec![shared("reference/rules/sigma-linux/process_creation")];
    let (out, report) = import(&src);
    let files = vigil_sigma::input_files(&src).unwrap();
    let oracle = oracle(&files, &imported_ids(&report));
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [
        shared("data/runtime/tetragon-book-events.jsonl"),
        shared("data/runtime/tetragon-testdata.jsonl"),
        generated(SourceKind::Tetragon, 20_000, tmp.path()),
    ];
    let mut total = 0;
    for input in &inputs {
        let ours = vigil_matches(
            rules_of(out.path(), SourceKind::Tetragon),
            SourceKind::Tetragon,
            input,
        )
        .await;
        let theirs = oracle_matches(&oracle, input, tetragon_exec);
        eprintln!("{}: {} matches", input.display(), ours.len());
        total += ours.len();
        assert_eq!(
            ours,
            theirs,
            "{}:\n{}",
            input.display(),
            diff(&ours, &theirs)
        );
    }
    assert!(
        total > 0,
        "no imported Linux rule matched any event: the comparison says nothing"
    );
}

/// Random Sigma detections over audit fields (values drawn from what the
/// labelled cases hold, so that rules match some events and miss others),
/// imported and compared with rsigma over the labelled and audit2rbac
/// events.
mod generated_detections {
    use super::*;
    use proptest::prelude::*;

    /// (field, values, is the field a list, is it an integer)
    const FIELDS: &[(&str, &[&str], bool, bool)] = &[
        (
            "verb",
            &[
                "get", "list", "create", "delete", "patch", "watch", "CREATE", "*te",
            ],
            false,
            false,
        ),
        (
            "objectRef.resource",
            &[
                "pods",
                "secrets",
                "configmaps",
                "clusterrolebindings",
                "Pods",
                "*s",
            ],
            false,
            false,
        ),
        (
            "objectRef.namespace",
            &["kube-system", "default", "prod", "kube*", "?efault"],
            false,
            false,
        ),
        (
            "objectRef.subresource",
            &["exec", "log", "status"],
            false,
            false,
        ),
        (
            "user.username",
            &[
                "system:anonymous",
                "kubernetes-admin",
                "system:serviceaccount:*",
                "*admin*",
                "Admin",
            ],
            false,
            false,
        ),
        (
            "userAgent",
            &["kubectl", "Mozilla", "curl", "?ubectl*", "Go-http-client"],
            false,
            false,
        ),
        (
            "requestURI",
            &["/api/v1", "secrets", "exec", "/apis/", "watch=true"],
            false,
            false,
        ),
        (
            "user.groups",
            &[
                "system:authenticated",
                "system:masters",
                "system:nodes",
                "system:*",
                "System:Authenticated",
            ],
            true,
            false,
        ),
        (
            "sourceIPs",
            &["10.0.0.1", "127.0.0.1", "192.168.*", "*.1"],
            true,
            false,
        ),
        (
            "responseStatus.code",
            &["200", "201", "401", "403", "404"],
            false,
            true,
        ),
    ];

    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    fn unwild<'a>(values: &[&'a str]) -> Vec<&'a str> {
        values
            .iter()
            .map(|v| v.trim_matches(['*', '?']))
            .filter(|v| !v.contains(['*', '?']))
            .chain(std::iter::once("x"))
            .collect()
    }

    /// One `field|modifiers: values` line.
    fn item() -> impl Strategy<Value = String> {
        (
            0..FIELDS.len(),
            0usize..10,
            prop::collection::vec(0usize..8, 1..4),
        )
            .prop_map(|(f, m, picks)| {
                let (field, vocab, list, int) = FIELDS[f];
                let values: Vec<&str> = picks.iter().map(|i| vocab[i % vocab.len()]).collect();
                let list_of = |vs: &[String]| format!("[{}]", vs.join(", "));
                let plain = |vs: &[&str]| -> Vec<String> {
                    vs.iter()
                        .map(|v| if int { v.to_string() } else { quote(v) })
                        .collect()
                };
                match (m, int) {
                    (0, true) => format!("{field}|gte: {}", values[0]),
                    (1, true) => format!("{field}|lt: {}", values[0]),
                    (2, true) => format!("{field}: {}", quote(values[0])),
                    (3, true) => format!("{field}|exists: true"),
                    (_, true) => format!("{field}: {}", list_of(&plain(&values))),
                    (0, _) => format!("{field}|contains: {}", list_of(&plain(&values))),
                    // No wildcards inside startswith/endswith values: rsigma
                    // 0.23 anchors those the wrong way round (`startswith:
                    // '*.1'` becomes /.*\.1$/), see docs/sigma.md.
                    (1, _) => format!("{field}|startswith: {}", list_of(&plain(&unwild(&values)))),
                    (2, _) => format!("{field}|endswith: {}", list_of(&plain(&unwild(&values)))),
                    (3, _) if values.len() > 1 => {
                        format!("{field}|contains|all: {}", list_of(&plain(&values)))
                    }
                    (4, _) => format!("{field}|cased: {}", list_of(&plain(&values))),
                    (5, _) if !list => format!(
                        "{field}|re: {}",
                        quote(&format!("^{}", values[0].replace(['*', '?'], "")))
                    ),
                    (6, _) => format!("{field}|exists: {}", values.len().is_multiple_of(2)),
                    (7, _) if !list => format!("{field}: null"),
                    _ => format!("{field}: {}", list_of(&plain(&values))),
                }
            })
    }

    fn selection() -> impl Strategy<Value = Vec<String>> {
        // One item per key: a YAML mapping cannot repeat a key.
        prop::collection::vec(item(), 1..4).prop_map(|items| {
            let mut seen = BTreeSet::new();
            items
                .into_iter()
                .filter(|i| seen.insert(i.split(": ").next().unwrap_or_default().to_string()))
                .collect()
        })
    }

    fn condition(names: usize) -> impl Strategy<Value = String> {
        let leaf = (0..names).prop_map(|i| format!("sel_{i}")).boxed();
        let tree = leaf.prop_recursive(3, 8, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
                inner.prop_map(|a| format!("not {a}")),
            ]
        });
        prop_oneof![
            4 => tree,
            1 => Just("1 of sel_*".to_string()),
            1 => Just("all of them".to_string()),
            1 => Just("not 1 of them".to_string()),
        ]
    }

    fn rule(n: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(selection(), 1..4).prop_flat_map(move |sels| {
            let names = sels.len();
            condition(names).prop_map(move |cond| {
                let mut text = format!(
                    "title: generated {n}\nid: 00000000-0000-4000-8000-{n:012}\nlogsource:\n  product: kubernetes\n  service: audit\ndetection:\n"
                );
                for (i, items) in sels.iter().enumerate() {
                    text.push_str(&format!("  sel_{i}:\n"));
                    for it in items {
                        text.push_str(&format!("    {it}\n"));
                    }
                }
                text.push_str(&format!("  condition: {cond}\nlevel: low\n"));
                text
            })
        })
    }

    fn rules() -> impl Strategy<Value = Vec<String>> {
        (0..30usize).map(rule).collect::<Vec<_>>()
    }

    proptest! {
        // 4 cases of 30 rules: a few seconds; SIGMA_PROPTEST_CASES=N for more.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("SIGMA_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn generated_detections_match_what_rsigma_matches(texts in rules()) {
            let dir = tempfile::tempdir().unwrap();
            for (i, t) in texts.iter().enumerate() {
                std::fs::write(dir.path().join(format!("r{i:02}.yml")), t).unwrap();
            }
            let src = vec![dir.path().to_path_buf()];
            let (out, report) = import(&src);
            prop_assert_eq!(report.imported(), report.total(), "{:#?}", report.lines());
            let files = vigil_sigma::input_files(&src).unwrap();
            let oracle = oracle(&files, &imported_ids(&report));
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for input in [
                shared("data/k8s-audit/panther-rule-cases.jsonl"),
                shared("data/k8s-audit/audit2rbac-demo.jsonl"),
            ] {
                let ours = runtime.block_on(vigil_matches(rules_of(out.path(), SourceKind::K8sAudit), SourceKind::K8sAudit, &input));
                let theirs = oracle_matches(&oracle, &input, audit_event);
                let bad: BTreeSet<&String> = ours.symmetric_difference(&theirs).map(|(r, _)| r).collect();
                let shown: Vec<&String> = texts.iter().filter(|t| bad.iter().any(|b| t.contains(&b["sigma.".len()..]))).take(2).collect();
                prop_assert!(ours == theirs, "{}:\n{}\nrules:\n{}", input.display(), diff(&ours, &theirs), shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n---\n"));
            }
        }
    }
}

/// Sigma correlations: each of the four types imports, plans in the engine,
/// fires on its scenario and stays silent on a near miss.
mod correlations {
    use super::*;
    use vigil::source::RawMessage;

    const RULES: &str = r#"
title: Exec into a pod
name: pod_exec
id: 6e0a3f53-0000-4000-8000-000000000001
logsource: {product: kubernetes, service: audit}
detection:
  sel:
    verb: create
    objectRef.resource: pods
    objectRef.subresource: exec
  condition: sel
level: medium
---
title: Secrets listed
name: secret_list
id: 6e0a3f53-0000-4000-8000-000000000002
logsource: {product: kubernetes, service: audit}
detection:
  sel:
    verb: list
    objectRef.resource: secrets
  condition: sel
level: low
---
title: Secret read
name: secret_get
id: 6e0a3f53-0000-4000-8000-000000000003
logsource: {product: kubernetes, service: audit}
detection:
  sel:
    verb: get
    objectRef.resource: secrets
  condition: sel
level: low
---
title: Many secret lists
id: 6e0a3f53-0000-4000-8000-000000000011
correlation:
  type: event_count
  rules: [secret_list]
  group-by: [user.username]
  timespan: 1m
  condition: {gte: 5}
level: high
---
title: Many distinct secrets read
id: 6e0a3f53-0000-4000-8000-000000000012
correlation:
  type: value_count
  rules: [secret_get]
  group-by: [user.username]
  timespan: 5m
  condition: {field: objectRef.name, gte: 3}
level: high
---
title: Exec and secret list
id: 6e0a3f53-0000-4000-8000-000000000013
correlation:
  type: temporal
  rules: [pod_exec, secret_list]
  group-by: [user.username]
  timespan: 10m
level: high
---
title: Exec then secret list
id: 6e0a3f53-0000-4000-8000-000000000014
correlation:
  type: temporal_ordered
  rules: [pod_exec, secret_list]
  group-by: [user.username]
  timespan: 10m
level: high
"#;

    /// An audit event: `what` is exec, list or get; `at` seconds after
    /// 2026-01-05T10:00:00Z.
    fn event(n: usize, user: &str, what: &str, name: &str, at: u32) -> RawMessage {
        let (verb, resource, sub) = match what {
            "exec" => ("create", "pods", Some("exec")),
            "list" => ("list", "secrets", None),
            _ => ("get", "secrets", None),
        };
        let mut object_ref =
            serde_json::json!({"resource": resource, "namespace": "prod", "name": name});
        if let Some(s) = sub {
            object_ref["subresource"] = s.into();
        }
        let e = serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": format!("case-{n}"), "stage": "ResponseComplete", "verb": verb,
            "user": {"username": user}, "objectRef": object_ref,
            "requestReceivedTimestamp": format!("2026-01-05T10:{:02}:{:02}Z", at / 60, at % 60),
            "responseStatus": {"code": 200}
        });
        RawMessage {
            source: SourceKind::K8sAudit,
            payload: e.to_string().into_bytes(),
            origin: Origin::File {
                path: "case".into(),
                line: n as u64 + 1,
            },
            timestamp_ms: None,
            state_only: false,
        }
    }

    fn events(spec: &[(&str, &str, &str, u32)]) -> Vec<RawMessage> {
        spec.iter()
            .enumerate()
            .map(|(n, (u, w, name, at))| event(n, u, w, name, *at))
            .collect()
    }

    async fn fired(detector: &mut Detector, input: Vec<RawMessage>) -> BTreeSet<String> {
        let mut out = detector.process(input).await;
        let closing = detector.finish().await;
        detector.reset();
        out.alerts.extend(closing.alerts);
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        out.alerts.into_iter().map(|a| a.rule_id).collect()
    }

    /// (name, events as (user, what, name, second), rule, fires)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str, &'a str, u32)>, String, bool);

    #[tokio::test]
    async fn each_correlation_type_fires_on_its_scenario_and_not_on_a_near_miss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
        let (out, report) = import(&[dir.path().to_path_buf()]);
        assert_eq!(
            (report.imported(), report.total()),
            (7, 7),
            "{:#?}",
            report.lines()
        );
        let rules = vigil::rules::load_dir(out.path()).unwrap();
        assert_eq!(
            rules.len(),
            4,
            "the detections are part of the correlations (generate: false)"
        );
        assert!(rules.iter().all(|r| r.meta.mode == RuleMode::Correlation));
        let mut detector = Detector::new(
            engine(rules).await,
            Default::default(),
            Arc::new(Metrics::default()),
        );
        let id = |n: u32| format!("sigma.6e0a3f53-0000-4000-8000-0000000000{n}");
        let five_lists: Vec<_> = (0..5).map(|i| ("alice", "list", "s", 5 + i * 5)).collect();
        let cases: Vec<Case> = vec![
            ("5 lists in a minute", five_lists.clone(), id(11), true),
            (
                "4 lists in a minute",
                five_lists[..4].to_vec(),
                id(11),
                false,
            ),
            (
                "5 lists by two users",
                five_lists
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (if i % 2 == 0 { "alice" } else { "bob" }, e.1, e.2, e.3))
                    .collect(),
                id(11),
                false,
            ),
            (
                "3 distinct secrets read",
                vec![
                    ("alice", "get", "a", 10),
                    ("alice", "get", "b", 20),
                    ("alice", "get", "c", 30),
                ],
                id(12),
                true,
            ),
            (
                "3 reads of 2 secrets",
                vec![
                    ("alice", "get", "a", 10),
                    ("alice", "get", "b", 20),
                    ("alice", "get", "a", 30),
                ],
                id(12),
                false,
            ),
            (
                "list then exec",
                vec![("alice", "list", "s", 10), ("alice", "exec", "p", 70)],
                id(13),
                true,
            ),
            (
                "exec and list by two users",
                vec![("alice", "exec", "p", 10), ("bob", "list", "s", 70)],
                id(13),
                false,
            ),
            (
                "exec then list",
                vec![("alice", "exec", "p", 10), ("alice", "list", "s", 70)],
                id(14),
                true,
            ),
            (
                "list then exec, wrong order",
                vec![("alice", "list", "s", 10), ("alice", "exec", "p", 70)],
                id(14),
                false,
            ),
            (
                "exec then list 11 minutes later",
                vec![("alice", "exec", "p", 10), ("alice", "list", "s", 670)],
                id(14),
                false,
            ),
        ];
        for (name, spec, rule, fires) in cases {
            let got = fired(&mut detector, events(&spec)).await;
            assert_eq!(got.contains(&rule), fires, "{name}: {rule} fired: {got:?}");
        }
    }
}

/// `vigil rules import sigma`'s lines and exit codes: 0 when all imported,
/// 1 when some were skipped, 2 on a usage error.
#[test]
fn the_command_reports_each_rule_and_exits_by_outcome() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["rules", "import", "sigma"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let k8s = shared("reference/rules/sigma-kubernetes-audit");
    let (code, stdout) = run(&[k8s.to_str().unwrap(), "--out", dir]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.ends_with("imported 16 of 16 Sigma rules\n"),
        "{stdout}"
    );
    let linux = shared("reference/rules/sigma-linux");
    let (code, stdout) = run(&[linux.to_str().unwrap(), "--out", dir]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("skipped "), "{stdout}");
    assert!(
        stdout.ends_with("imported 122 of 127 Sigma rules\n"),
        "{stdout}"
    );
    assert_eq!(run(&["--out", dir]).0, Some(2), "no source");
    assert_eq!(
        run(&["/nonexistent", "--out", dir]).0,
        Some(2),
        "missing source"
    );
    assert_eq!(
        run(&[
            k8s.to_str().unwrap(),
            "--out",
            dir,
            "--pipeline",
            "/nonexistent"
        ])
        .0,
        Some(2),
        "missing pipeline"
    );
}
