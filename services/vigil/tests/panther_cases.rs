//! The labelled Panther test cases (../shared/data/k8s-audit/
//! panther-rule-cases.jsonl): for every case whose Panther rule has a
//! counterpart in sql-rules/ (a `based_on: panther:<RuleID>` entry), the
//! counterpart fires exactly when the label says True.
//!
//! Per-event counterparts are checked by replaying the whole file through
//! the per-event rules. A correlation counterpart is the threshold form of a
//! Panther rule (Panther's `Threshold`: so many matching events per dedup
//! key before an alert), and Panther labels the single event that counts
//! toward the threshold. Such a counterpart is checked on a burst made from
//! the case: [`BURST`] copies of its event, each with its own `auditID` and
//! its own `objectRef.name` (distinct objects, for rules that count distinct
//! objects), all at the case's event time, evaluated alone and closed. A
//! case labelled True must make the counterpart fire on its burst; a case
//! labelled False must not, however many times it repeats.
//!
//! The match table is kept in docs/panther-cases.md. This test fails when
//! the table is stale; `VIGIL_BLESS=1 cargo test --test integration panther_cases`
//! rewrites it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::rules::{Rule, RuleEngine, RuleMode, RulePack, RuleSet};
use vigil::source::{Origin, RawMessage, SourceKind};

/// Cases Panther labels False only because its rule skips system principals
/// by name. Vigil's rules do not exclude a principal by name alone (an
/// exclusion names what a principal legitimately does), and each of these
/// is something a stolen or abused system credential does and the principal
/// itself never does: Vigil fires on them, on purpose. Each is checked: a
/// listed case Vigil stops firing on, or that Panther relabels, fails.
const DISAGREEMENTS: &[(u64, &str)] = &[
    (15, "the controller manager signs certificates; it never requests a client certificate"),
    (25, "no kube-system account binds cluster roles (also k8s.system_account_rbac_change)"),
    (33, "the CronJob controller creates Jobs, never CronJobs"),
    (39, "the DaemonSet controller creates pods, never DaemonSets"),
    (58, "a kube-system account streaming files out of a pod with tar (kubectl cp)"),
    (69, "an ownerless pod created in kube-system with a kube-system account's token"),
    (81, "an ownerless hostIPC pod created with a kube-system account's token"),
    (96, "an ownerless hostPath pod created with a kube-system account's token"),
    (103, "the Deployment controller creates ReplicaSets, never pods, and this pod has no owner"),
    (109, "no kube-system account creates cluster roles (also k8s.system_account_rbac_change)"),
    (116, "no kube-system account creates cluster roles (also k8s.system_account_rbac_change)"),
    (124, "no kube-system account creates cluster roles (also k8s.system_account_rbac_change)"),
    (131, "no kube-system account creates cluster roles (also k8s.system_account_rbac_change)"),
    (139, "a kube-system account refused a secret: probing with a stolen token"),
    (146, "the namespace controller reads one namespace at a time; a list of all namespaces' secrets is not its work"),
    (154, "the namespace controller listing every secret, and not as an informer (no resourceVersion=0)"),
    (155, "kube-state-metrics listing every secret, and not as an informer (no resourceVersion=0)"),
    (177, "a kube-system account exec'ing into a pod to read its service-account token"),
    (200, "no kube-system account edits system roles (also k8s.system_account_rbac_change)"),
];

/// Copies of a case's event in the burst a correlation counterpart sees:
/// above every threshold in the pack.
const BURST: usize = 50;

/// The burst for one labelled case (see the module doc).
fn burst(line: u64, event: &serde_json::Value) -> Vec<RawMessage> {
    (0..BURST)
        .map(|i| {
            let mut copy = event.clone();
            if let Some(object) = copy.as_object_mut() {
                let id = object
                    .get("auditID")
                    .and_then(|v| v.as_str())
                    .map_or(format!("panther-case-{line}"), str::to_string);
                object.insert("auditID".into(), format!("{id}-burst-{i}").into());
                if let Some(object_ref) =
                    object.get_mut("objectRef").and_then(|o| o.as_object_mut())
                {
                    let name = object_ref
                        .get("name")
                        .and_then(|v| v.as_str())
                        .unwrap_or("object")
                        .to_string();
                    object_ref.insert("name".into(), format!("{name}-burst-{i}").into());
                }
            }
            RawMessage {
                source: SourceKind::K8sAudit,
                payload: copy.to_string().into_bytes(),
                origin: Origin::File {
                    path: format!("panther-case-{line}-burst").into(),
                    line: i as u64 + 1,
                },
                timestamp_ms: None,
                state_only: false,
            }
        })
        .collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Case {
    line: u64,
    panther_rule: String,
    name: String,
    expected: bool,
}

fn cases() -> Vec<Case> {
    let path = repo().join("../shared/data/k8s-audit/panther-rule-cases.labels.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Case {
                line: f[0].parse().unwrap(),
                panther_rule: f[1].to_string(),
                name: f[2].to_string(),
                expected: match f[3] {
                    "True" => true,
                    "False" => false,
                    other => panic!("bad label {other}"),
                },
            }
        })
        .collect()
}

#[tokio::test]
async fn counterpart_rules_fire_exactly_when_the_label_says_true() {
    let pack = RulePack::load_dir(&repo().join("sql-rules")).expect("rules load");
    let definitions = pack.definitions.clone();
    let rules = pack.rules;
    // panther rule id -> our rule ids
    let mut counterparts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rules {
        for b in &r.meta.based_on {
            if let Some(p) = b.strip_prefix("panther:") {
                counterparts
                    .entry(p.to_string())
                    .or_default()
                    .insert(r.meta.id.clone());
            }
        }
    }
    let (correlation, per_event): (Vec<Rule>, Vec<Rule>) = rules
        .into_iter()
        .partition(|r| r.meta.mode == RuleMode::Correlation);
    let correlation_ids: BTreeSet<String> = correlation.iter().map(|r| r.meta.id.clone()).collect();
    let set = |rules: Vec<Rule>| RuleSet {
        rules,
        definitions: definitions.clone(),
    };
    let engine = RuleEngine::compile(set(per_event))
        .await
        .expect("rules compile");
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let input = repo().join("../shared/data/k8s-audit/panther-rule-cases.jsonl");
    let mut alerts = Vec::new();
    let mut dead = Vec::new();
    vigil::replay::replay(
        &mut detector,
        SourceKind::K8sAudit,
        &input,
        64,
        &mut alerts,
        &mut dead,
    )
    .await
    .unwrap();
    assert!(
        dead.is_empty(),
        "dead letters: {}",
        String::from_utf8_lossy(&dead)
    );
    let input_lines: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let correlation_engine = RuleEngine::compile(set(correlation))
        .await
        .expect("correlation rules compile");
    let mut correlator = Detector::new(
        correlation_engine,
        Default::default(),
        Arc::new(Metrics::default()),
    );

    // line -> rule ids that fired on it
    let mut fired: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(alerts).unwrap().lines() {
        let alert: vigil::alert::Alert = serde_json::from_str(line).unwrap();
        for e in &alert.events {
            if let Origin::File { line, .. } = e.origin {
                fired.entry(line).or_default().insert(alert.rule_id.clone());
            }
        }
    }

    let mut table = format!(
        "# Panther labelled cases: Vigil's match table\n\n\
         Generated by `services/vigil/tests/panther_cases.rs` (`VIGIL_BLESS=1 cargo test -p vigil --test integration panther_cases` rewrites it).\n\
         Input: `../shared/data/k8s-audit/panther-rule-cases.jsonl` with its labels; each case is checked against the Vigil rules whose header says `based_on: panther:<RuleID>`. \
         Per-event rules are checked on the case's event itself. Correlation rules (the threshold forms of Panther rules with a `Threshold`) are checked on a burst of {BURST} copies of the case's event (each with its own `auditID` and `objectRef.name`, at the case's time): Panther labels the single event that counts toward its threshold, so a True case must make the correlation rule fire on its burst and a False case must not.\n\n",
    );
    let mut mismatches = Vec::new();
    let mut disagreed: BTreeSet<u64> = BTreeSet::new();
    // panther rule -> (cases, matching, deliberate disagreements)
    let mut summary: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut rows = String::new();
    let mut uncovered: BTreeSet<String> = BTreeSet::new();
    for case in cases() {
        let Some(ours) = counterparts.get(&case.panther_rule) else {
            uncovered.insert(case.panther_rule.clone());
            continue;
        };
        let mut on_line = fired.get(&case.line).cloned().unwrap_or_default();
        if ours.iter().any(|r| correlation_ids.contains(r)) {
            let event: serde_json::Value =
                serde_json::from_str(&input_lines[case.line as usize - 1]).unwrap();
            let mut out = correlator.process(burst(case.line, &event)).await;
            let closing = correlator.finish().await;
            correlator.reset();
            out.alerts.extend(closing.alerts);
            out.dead_letters.extend(closing.dead_letters);
            assert!(
                out.dead_letters.is_empty(),
                "line {}: dead letters for its burst: {:?}",
                case.line,
                out.dead_letters
            );
            on_line.extend(out.alerts.into_iter().map(|a| a.rule_id));
        }
        let did_fire = ours.iter().any(|r| on_line.contains(r));
        let ok = did_fire == case.expected;
        let disagreement = DISAGREEMENTS.iter().find(|(l, _)| *l == case.line);
        if disagreement.is_some() && !ok && !case.expected {
            disagreed.insert(case.line);
        }
        let e = summary.entry(case.panther_rule.clone()).or_default();
        e.0 += 1;
        match (ok, disagreement) {
            (true, None) => e.1 += 1,
            (false, Some(_)) if !case.expected => e.2 += 1,
            _ => mismatches.push(format!(
                "line {} {} {:?}: expected {}, fired {}{}",
                case.line,
                case.panther_rule,
                case.name,
                case.expected,
                did_fire,
                if disagreement.is_some() {
                    " (listed in DISAGREEMENTS)"
                } else {
                    ""
                }
            )),
        }
        let verdict = match disagreement {
            Some((_, why)) if !ok => format!("✗ on purpose: {why}"),
            _ if ok => "✓".to_string(),
            _ => "✗".to_string(),
        };
        rows.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            case.line,
            case.panther_rule,
            case.name.replace('|', "\\|"),
            ours.iter().cloned().collect::<Vec<_>>().join(", "),
            if case.expected { "fire" } else { "no" },
            verdict
        ));
    }
    let cases_checked: usize = summary.values().map(|(n, _, _)| n).sum();
    let cases_ok: usize = summary.values().map(|(_, k, _)| k).sum();
    let on_purpose: usize = summary.values().map(|(_, _, d)| d).sum();
    table.push_str(&format!(
        "**{cases_ok} of {cases_checked} cases match** across {} Panther rules with a Vigil counterpart; \
         every case labelled True fires. The other {on_purpose} are cases Panther labels False only because its rule skips \
         system principals by name (`system:serviceaccount:kube-system:*`, `system:kube-controller-manager`): \
         Vigil's rules exclude a principal only for what it legitimately does, and each of these is something \
         the principal never does and a stolen or abused credential does, so Vigil reports it on purpose \
         (the reason is in the last column; `DISAGREEMENTS` in the test pins them).\n\n",
        summary.len()
    ));
    table.push_str("| Panther rule | cases | match | reported on purpose |\n|---|---|---|---|\n");
    for (rule, (n, k, d)) in &summary {
        table.push_str(&format!("| {rule} | {n} | {k} | {d} |\n"));
    }
    table.push_str("\nPanther rules without a counterpart (not checked here): ");
    table.push_str(&uncovered.iter().cloned().collect::<Vec<_>>().join(", "));
    table.push_str("\n\n| line | Panther rule | case | Vigil rule(s) | label | match |\n|---|---|---|---|---|---|\n");
    table.push_str(&rows);

    let doc = repo().join("docs/panther-cases.md");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&doc, &table).unwrap();
    }
    let stale: Vec<u64> = DISAGREEMENTS
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| !disagreed.contains(l))
        .collect();
    assert!(
        stale.is_empty(),
        "DISAGREEMENTS lists cases that no longer disagree: {stale:?}"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        cases_checked >= 40,
        "only {cases_checked} labelled cases have a counterpart rule"
    );
    let current = std::fs::read_to_string(&doc).unwrap_or_default();
    assert_eq!(
        current, table,
        "docs/panther-cases.md is stale: rerun with VIGIL_BLESS=1"
    );
}

/// The per-event rules of the pack, compiled, reading audit messages as
/// `format`.
async fn per_event_detector(format: vigil::decode::envelope::AuditFormat) -> Detector {
    let pack = RulePack::load_dir(&repo().join("sql-rules")).expect("rules load");
    let set = RuleSet {
        rules: pack
            .rules
            .into_iter()
            .filter(|r| r.meta.mode != RuleMode::Correlation)
            .collect(),
        definitions: pack.definitions,
    };
    let engine = RuleEngine::compile(set).await.expect("rules compile");
    Detector::new(engine, Default::default(), Arc::new(Metrics::default()))
        .with_audit_format(format)
}

/// Replay `file` (../shared/data/k8s-audit/) read as `format`: the alerts,
/// and the dead letters' lines.
async fn replay_as(
    format: vigil::decode::envelope::AuditFormat,
    file: &str,
) -> (Vec<vigil::alert::Alert>, Vec<String>) {
    replay_path_as(format, &repo().join("../shared/data/k8s-audit").join(file)).await
}

/// [`replay_as`] for a file anywhere.
async fn replay_path_as(
    format: vigil::decode::envelope::AuditFormat,
    input: &Path,
) -> (Vec<vigil::alert::Alert>, Vec<String>) {
    let mut detector = per_event_detector(format).await;
    let (mut alerts, mut dead) = (Vec::new(), Vec::new());
    vigil::replay::replay(
        &mut detector,
        SourceKind::K8sAudit,
        input,
        64,
        &mut alerts,
        &mut dead,
    )
    .await
    .unwrap();
    let alerts = String::from_utf8(alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dead = String::from_utf8(dead)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (alerts, dead)
}

/// The EKS events of Panther's cases, in a CloudWatch Logs subscription
/// message: the rules raise the same alerts (rule and fields) as on the
/// bare events, and every event labelled True for a Panther rule with a
/// per-event counterpart raises one (threshold counterparts are checked on
/// bursts above).
#[tokio::test]
async fn eks_cloudwatch_messages_fire_as_their_bare_events() {
    use vigil::decode::envelope::AuditFormat;
    let (wrapped, dead) =
        replay_as(AuditFormat::EksCloudwatch, "eks-cloudwatch-messages.jsonl").await;
    assert!(dead.is_empty(), "{dead:?}");
    let labels = std::fs::read_to_string(
        repo().join("../shared/data/k8s-audit/eks-cloudwatch-messages.labels.tsv"),
    )
    .unwrap();
    let bare_lines: Vec<String> =
        std::fs::read_to_string(repo().join("../shared/data/k8s-audit/panther-rule-cases.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    // The bare events, in the message's order, as their own file.
    let dir = tempfile::tempdir().unwrap();
    let bare_file = dir.path().join("bare.jsonl");
    let mut bare_text = String::new();
    let mut labelled_true = Vec::new();
    let per_event_counterparts: BTreeSet<String> = RulePack::load_dir(&repo().join("sql-rules"))
        .unwrap()
        .rules
        .iter()
        .filter(|r| r.meta.mode != RuleMode::Correlation)
        .flat_map(|r| {
            r.meta
                .based_on
                .iter()
                .filter_map(|b| b.strip_prefix("panther:"))
                .map(str::to_string)
        })
        .collect();
    for (i, l) in labels.lines().skip(1).enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f[1].parse::<usize>().unwrap(), i, "labels in message order");
        bare_text.push_str(&bare_lines[f[2].parse::<usize>().unwrap() - 1]);
        bare_text.push('\n');
        if f[5] == "True" && per_event_counterparts.contains(f[3]) {
            labelled_true.push(i as u64 + 1);
        }
    }
    std::fs::write(&bare_file, bare_text).unwrap();
    let (bare, _) = replay_path_as(AuditFormat::Native, &bare_file).await;
    let what = |alerts: &[vigil::alert::Alert]| {
        let mut v: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a.rule_id,
                    serde_json::Value::Object(a.fields.clone())
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(what(&wrapped), what(&bare));
    let fired_lines: BTreeSet<u64> = bare
        .iter()
        .flat_map(|a| a.events.iter())
        .filter_map(|e| match e.origin {
            Origin::File { line, .. } => Some(line),
            _ => None,
        })
        .collect();
    for line in &labelled_true {
        assert!(
            fired_lines.contains(line),
            "logEvents[{}] is labelled True",
            line - 1
        );
    }
    assert!(labelled_true.len() >= 6, "{labelled_true:?}");
}

/// AKS's diagnostic-settings messages decode to the same events as the
/// bare capture of the same cluster.
#[tokio::test]
async fn aks_event_hubs_messages_decode_to_their_bare_events() {
    use vigil::decode::envelope::AuditFormat;
    use vigil::source::RawMessage;
    let read = |file: &str| -> Vec<RawMessage> {
        std::fs::read_to_string(repo().join("../shared/data/k8s-audit").join(file))
            .unwrap()
            .lines()
            .take(if file.starts_with("aks-eventhubs") {
                1
            } else {
                usize::MAX
            })
            .enumerate()
            .map(|(i, l)| RawMessage {
                source: SourceKind::K8sAudit,
                payload: l.as_bytes().to_vec(),
                origin: Origin::File {
                    path: file.into(),
                    line: i as u64 + 1,
                },
                timestamp_ms: None,
                state_only: false,
            })
            .collect()
    };
    let decoded = |format, mut messages: Vec<RawMessage>| {
        for m in &mut messages {
            if let Some(native) = vigil::decode::envelope::unwrap(format, &m.payload, 1 << 20) {
                m.payload = native.expect("the envelope unwraps");
            }
        }
        let d = vigil::decode::decode(
            SourceKind::K8sAudit,
            &messages,
            Default::default(),
            vigil::detect::now_ns(),
        );
        assert!(d.failures.is_empty(), "{:?}", d.failures);
        d.batch
    };
    let wrapped = decoded(
        AuditFormat::AksEventHubs,
        read("aks-eventhubs-messages.jsonl"),
    );
    let bare = decoded(AuditFormat::Native, read("aks-system.jsonl"));
    assert_eq!(wrapped.num_rows(), 22);
    // every column but the raw event text, which differs in its whitespace
    for name in [
        "event_time",
        "verb",
        "user_info",
        "object_ref",
        "source_ips",
        "response_status",
        "request_object",
    ] {
        let i = bare.schema().index_of(name).unwrap();
        assert_eq!(wrapped.column(i), bare.column(i), "column {name}");
    }
}

/// Panther's GKE cases of its unified Kubernetes rules (lines 26-59 of
/// panther-gke-cases.jsonl), as Cloud Logging delivers them: the per-event
/// counterparts fire exactly when the label says True, but for the
/// deliberate disagreements listed.
#[tokio::test]
async fn gke_cloud_logging_cases_fire_as_labelled() {
    use vigil::decode::envelope::AuditFormat;
    let (alerts, dead) = replay_as(AuditFormat::GkeCloudLogging, "panther-gke-cases.jsonl").await;
    // lines 6-7 hold only `operation` and Panther's enrichment: no LogEntry
    let dead_lines: Vec<u64> = dead
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["origins"][0]["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(dead_lines, [6, 7], "{dead:?}");
    let mut fired: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in &alerts {
        for e in &a.events {
            if let Origin::File { line, .. } = e.origin {
                fired.entry(line).or_default().insert(a.rule_id.clone());
            }
        }
    }
    let pack = RulePack::load_dir(&repo().join("sql-rules")).unwrap();
    let labels = std::fs::read_to_string(
        repo().join("../shared/data/k8s-audit/panther-gke-cases.labels.tsv"),
    )
    .unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for l in labels.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        let line: u64 = f[0].parse().unwrap();
        let ours: BTreeSet<&str> = pack
            .rules
            .iter()
            .filter(|r| r.meta.mode != RuleMode::Correlation)
            .filter(|r| {
                r.meta
                    .based_on
                    .iter()
                    .any(|b| b.strip_prefix("panther:") == Some(f[1]))
            })
            .map(|r| r.meta.id.as_str())
            .collect();
        if ours.is_empty() {
            continue;
        }
        checked += 1;
        let did = fired
            .get(&line)
            .is_some_and(|s| s.iter().any(|r| ours.contains(r.as_str())));
        let disagreement = GKE_DISAGREEMENTS.iter().any(|(l, _)| *l == line);
        if did != (f[3] == "True") && !(disagreement && did) {
            mismatches.push(format!(
                "line {line} {} {:?}: expected {}, fired {:?}",
                f[1],
                f[2],
                f[3],
                fired.get(&line)
            ));
        }
        if disagreement {
            assert!(
                did,
                "GKE_DISAGREEMENTS line {line} no longer fires: remove it"
            );
        }
    }
    assert!(checked >= 25, "{checked} cases checked");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// GKE cases Panther labels False that Vigil fires on, on purpose (see
/// [`DISAGREEMENTS`]).
const GKE_DISAGREEMENTS: &[(u64, &str)] = &[(
    28,
    "an anonymous list of componentstatuses is access to a resource, whatever user agent (GoogleHC) the caller sends",
)];
