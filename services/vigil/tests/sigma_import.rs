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
    let mut detector = Detector::new(engine(rules).await, Default::default(), Arc::new(Metrics::default()));
    let (mut alerts, mut dead) = (Vec::new(), Vec::new());
    vigil::replay::replay(&mut detector, source, input, 256, &mut alerts, &mut dead)
        .await
        .expect("replay");
    assert!(dead.is_empty(), "dead letters: {}", String::from_utf8_lossy(&dead));
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
                let event = p.field(field).ok().and_then(|f| f.event).unwrap_or(field.to_string());
                let key = if mods.is_empty() { event } else { format!("{event}|{mods}") };
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
            let Ok(vigil_sigma::sigma::Doc::Detection(rule)) = vigil_sigma::sigma::parse_doc(&doc) else {
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
    assert_eq!((report.imported(), report.total()), (16, 16), "{:#?}", report.lines());
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
                (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
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
        let ours = vigil_matches(rules_of(out.path(), SourceKind::K8sAudit), SourceKind::K8sAudit, input).await;
        let theirs = oracle_matches(&oracle, input, audit_event);
        eprintln!("{}: {} matches", input.display(), ours.len());
        assert_eq!(ours, theirs, "{}:\n{}", input.display(), diff(&ours, &theirs));
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
        let ours = vigil_matches(rules_of(out.path(), SourceKind::Tetragon), SourceKind::Tetragon, input).await;
        let theirs = oracle_matches(&oracle, input, tetragon_exec);
        eprintln!("{}: {} matches", input.display(), ours.len());
        total += ours.len();
        assert_eq!(ours, theirs, "{}:\n{}", input.display(), diff(&ours, &theirs));
    }
    assert!(total > 0, "no imported Linux rule matched any event: the comparison says nothing");
}
