//! Falco's Kubernetes audit trace files, labelled by Falco's own test suite
//! (tests/data/falco-traces/: the events of falcosecurity/falco
//! `test/trace_files/k8s_audit/*.json`, the labels of
//! `test/falco_k8s_audit_tests.yaml`; provenance in the README there). An
//! evaluation corpus independent of the project's own cases: real events
//! recorded on minikube by the Falco authors.
//!
//! A Falco rule's counterparts are the per-event rules of sql-rules/ whose
//! header says `based_on: falco:<Falco rule>`. For every label row whose
//! Falco rule has one, a counterpart fires on the row's event exactly when
//! Falco's suite expects its rule to. Correlation rules that cite a Falco
//! rule combine it with other evidence (a burst, a second event, another
//! source); they are listed in the report but not expected to fire on one
//! recorded event, so they are not scored. The row `(any)` is Falco's case
//! whose input is not an audit event (`{"kind": 0}`): no rule may fire on
//! it, and Vigil must dead-letter it.
//!
//! Some Falco cases load an extra local rules file (a site policy, column
//! `site_policy`). [`SITE_POLICIES`] says what each one is in Vigil: an
//! overlay this test writes into a temporary directory and loads over the
//! pack (`rules.overlays`), nothing (the policy changes Falco rules Vigil
//! does not have), or no equivalent (such rows are skipped and listed).
//!
//! Rows that do not match fail the test unless [`KNOWN_MISSES`] lists them,
//! and an entry there that no longer names a mismatching row fails it too,
//! so the table cannot go stale. The match table is kept in
//! docs/falco-traces.md: the test fails when it is stale, and
//! `VIGIL_BLESS=1 cargo test -p vigil --test integration falco_traces` rewrites it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::rules::{Layers, RuleEngine, RuleMode, RulePack, RuleSet};
use vigil::source::{Origin, SourceKind};

/// Label rows Vigil does not match today: (events.jsonl line, Falco rule,
/// why). `why` starts with `missed:` (Falco's suite expects an alert and no
/// counterpart fires) or `extra:` (Falco expects none and a counterpart
/// fires). An entry covers every scored row with its line, Falco rule and
/// direction; each of them must mismatch, and at least one must exist.
const KNOWN_MISSES: &[(u64, &str, &str)] = &[];

/// What each extra Falco rules file of the suite is in Vigil.
enum Policy {
    /// Files of an overlay directory (path inside it, text), and how they
    /// express the policy.
    Overlay(&'static [(&'static str, &'static str)], &'static str),
    /// Nothing to do in Vigil, and why.
    Nothing(&'static str),
    /// No Vigil equivalent: rows that need it are skipped. (Every policy
    /// of the suite has one today; a new one may not.)
    #[allow(dead_code)]
    NoEquivalent(&'static str),
}

const SITE_POLICIES: &[(&str, Policy)] = &[
    (
        "trust_nginx_container.yaml",
        Policy::Overlay(
            &[(
                "lists/site.toml",
                "[trusted_workload_images]\nappend = [\"docker.io/library/nginx\"]\n",
            )],
            "Falco appends `nginx` to falco_privileged_images, falco_hostnetwork_images and falco_sensitive_mount_images; the overlay appends `docker.io/library/nginx` (what image_repository() gives for `nginx`) to trusted_workload_images, Vigil's list of images trusted to run privileged or on the host",
        ),
    ),
    (
        "disallow_kactivity.yaml",
        Policy::Nothing(
            "turns off Falco's activity rules (the `K8s <object> Created/Deleted` rules, macro consider_activity_events) so that only the case's rule can fire; Vigil ships no such rules, so the base pack is the equivalent",
        ),
    ),
    (
        "allow_namespace_foo.yaml",
        Policy::Overlay(
            &[("lists/site.toml", "[allowed_namespaces]\nappend = [\"foo\"]\n")],
            "Falco appends `foo` to allowed_namespaces; the overlay appends it to Vigil's allowed_namespaces (a site policy list)",
        ),
    ),
    (
        "allow_user_some-user.yaml",
        Policy::Overlay(
            &[("lists/site.toml", "[allowed_users]\nappend = [\"some-user\"]\n")],
            "Falco appends `some-user` to allowed_k8s_users; the overlay appends it to Vigil's allowed_users (a site policy list)",
        ),
    ),
];

/// Falco's stock allowed_namespaces and allowed_k8s_users, which its
/// disallowed-namespace and disallowed-user rules read. Vigil's
/// equivalents (allowed_namespaces, allowed_users) ship empty, so that a
/// site states its own; every replay here starts from an overlay holding
/// Falco's, before the overlays of a row's policies.
const FALCO_STOCK_LISTS: &str = "[allowed_namespaces]\nitems = [\"kube-system\", \"kube-public\", \"default\"]\n\n\
[allowed_users]\nitems = [\"minikube\", \"minikube-user\", \"kubelet\", \"kops\", \"admin\", \"kube\", \"kube-proxy\", \"kube-apiserver-healthcheck\", \"kubernetes-admin\", \"vpa-recommender\", \"vpa-updater\", \"cluster-autoscaler\", \"cloud-controller-manager\"]\n";

/// Trace files whose content is not an audit event (Falco rejects them
/// too): their lines must be dead letters.
const NOT_AUDIT_EVENTS: &[&str] = &["fal_01_003.json"];

/// The label of a case that asserts no rule fires at all.
const ANY_RULE: &str = "(any)";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/falco-traces")
}

struct Row {
    line: u64,
    trace_file: String,
    case: String,
    falco_rule: String,
    expected: bool,
    site_policy: Vec<String>,
}

fn rows() -> Vec<Row> {
    let path = data().join("labels.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("line\ttrace_file\tfalco_case\tfalco_rule\texpected\tsite_policy")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "labels.tsv row {l:?}");
            Row {
                line: f[0].parse().unwrap(),
                trace_file: f[1].to_string(),
                case: f[2].to_string(),
                falco_rule: f[3].to_string(),
                expected: match f[4] {
                    "True" => true,
                    "False" => false,
                    other => panic!("bad label {other}"),
                },
                site_policy: f[5]
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect()
}

fn policy(name: &str) -> &'static Policy {
    SITE_POLICIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!("site policy {name} is not in SITE_POLICIES: say what it is in Vigil")
        })
}

/// What a replay of events.jsonl gave: line -> rule ids that fired on it,
/// and the dead-lettered lines.
struct Run {
    fired: BTreeMap<u64, BTreeSet<String>>,
    dead: BTreeSet<u64>,
}

/// Replay events.jsonl through the per-event rules of `layers`.
async fn run(layers: &Layers) -> Run {
    let pack = RulePack::load(layers).unwrap_or_else(|e| panic!("{e}"));
    let set = pack.rule_set();
    let per_event = RuleSet {
        rules: set
            .rules
            .into_iter()
            .filter(|r| r.meta.mode != RuleMode::Correlation)
            .collect(),
        definitions: set.definitions,
    };
    let engine = RuleEngine::compile(per_event)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .with_exceptions(pack.exceptions.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let mut alerts = Vec::new();
    let mut dead_out = Vec::new();
    vigil::replay::replay(
        &mut detector,
        SourceKind::K8sAudit,
        &data().join("events.jsonl"),
        64,
        &mut alerts,
        &mut dead_out,
    )
    .await
    .unwrap();
    let mut fired: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(alerts).unwrap().lines() {
        let alert: vigil::alert::Alert = serde_json::from_str(line).unwrap();
        for e in &alert.events {
            if let Origin::File { line, .. } = e.origin {
                fired.entry(line).or_default().insert(alert.rule_id.clone());
            }
        }
    }
    let mut dead = BTreeSet::new();
    for line in String::from_utf8(dead_out).unwrap().lines() {
        let d: vigil::dead_letter::DeadLetter = serde_json::from_str(line).unwrap();
        assert_eq!(
            d.kind,
            vigil::dead_letter::DeadLetterKind::DecodeError,
            "unexpected dead letter: {line}"
        );
        for o in d.origins {
            if let Origin::File { line, .. } = o {
                dead.insert(line);
            }
        }
    }
    Run { fired, dead }
}

/// The overlays a row needs (names of its policies that are overlays), or
/// why it is skipped.
fn overlays_of(row: &Row) -> Result<Vec<String>, String> {
    let mut overlays = Vec::new();
    for p in &row.site_policy {
        match policy(p) {
            Policy::Overlay(..) => overlays.push(p.clone()),
            Policy::Nothing(_) => {}
            Policy::NoEquivalent(why) => return Err(format!("{p}: {why}")),
        }
    }
    Ok(overlays)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[tokio::test]
async fn counterpart_rules_fire_exactly_when_falco_says() {
    let base = repo().join("sql-rules");
    let pack = RulePack::load_dir(&base).unwrap_or_else(|e| panic!("{e}"));
    // Falco rule -> our per-event rule ids; Falco rule -> correlation rule ids.
    let mut counterparts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut correlations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &pack.rules {
        for b in &r.meta.based_on {
            if let Some(f) = b.strip_prefix("falco:") {
                let map = if r.meta.mode == RuleMode::Correlation {
                    &mut correlations
                } else {
                    &mut counterparts
                };
                map.entry(f.to_string())
                    .or_default()
                    .insert(r.meta.id.clone());
            }
        }
    }
    let all_per_event: BTreeSet<String> = pack
        .rules
        .iter()
        .filter(|r| r.meta.mode != RuleMode::Correlation && r.meta.source == SourceKind::K8sAudit)
        .map(|r| r.meta.id.clone())
        .collect();

    let rows = rows();
    let input_lines = std::fs::read_to_string(data().join("events.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert!(rows.iter().all(|r| r.line >= 1 && r.line <= input_lines));

    // One replay per set of overlays the scored rows need.
    let mut runs: BTreeMap<Vec<String>, Run> = BTreeMap::new();
    let mut overlay_dirs = Vec::new();
    let needed: BTreeSet<Vec<String>> = std::iter::once(Vec::new())
        .chain(rows.iter().filter_map(|r| overlays_of(r).ok()))
        .collect();
    let stock = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(stock.path().join("lists")).unwrap();
    std::fs::write(
        stock.path().join("lists/falco-stock.toml"),
        FALCO_STOCK_LISTS,
    )
    .unwrap();
    for set in needed {
        // Falco's stock lists, then one overlay per policy, in order.
        let mut overlays = vec![stock.path().to_path_buf()];
        for name in &set {
            let Policy::Overlay(files, _) = policy(name) else {
                unreachable!()
            };
            let dir = tempfile::tempdir().unwrap();
            for (path, text) in files.iter() {
                let p = dir.path().join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, text).unwrap();
            }
            overlays.push(dir.path().to_path_buf());
            overlay_dirs.push(dir);
        }
        let layers = Layers {
            base: base.clone(),
            overlays,
            exceptions: None,
        };
        let run = run(&layers).await;
        runs.insert(set, run);
    }

    // Only what is not an audit event is dead-lettered, in every run.
    let not_events: BTreeSet<u64> = rows
        .iter()
        .filter(|r| NOT_AUDIT_EVENTS.contains(&r.trace_file.as_str()))
        .map(|r| r.line)
        .collect();
    for (set, run) in &runs {
        assert_eq!(
            run.dead, not_events,
            "dead-lettered lines (overlays {set:?}) are not exactly those of {NOT_AUDIT_EVENTS:?}"
        );
    }

    let mut problems = Vec::new();
    for (line, rule, why) in KNOWN_MISSES {
        if !why.starts_with("missed: ") && !why.starts_with("extra: ") {
            problems.push(format!(
                "KNOWN_MISSES ({line}, {rule:?}): the reason must start with `missed: ` or `extra: `"
            ));
        }
    }
    let known = |line: u64, rule: &str, expected: bool| {
        let direction = if expected { "missed: " } else { "extra: " };
        KNOWN_MISSES
            .iter()
            .find(|(l, r, why)| *l == line && *r == rule && why.starts_with(direction))
    };

    // Falco rule -> (rows, matching rows, known misses)
    let mut summary: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut uncovered: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut table_rows = String::new();
    // (line, rule, expected) -> whether each covered row matched
    let mut known_seen: BTreeMap<(u64, String, bool), Vec<bool>> = BTreeMap::new();
    for row in &rows {
        let ours: BTreeSet<String> = if row.falco_rule == ANY_RULE {
            all_per_event.clone()
        } else if let Some(c) = counterparts.get(&row.falco_rule) {
            c.clone()
        } else {
            *uncovered.entry(row.falco_rule.clone()).or_default() += 1;
            continue;
        };
        let overlays = match overlays_of(row) {
            Ok(o) => o,
            Err(why) => {
                skipped.push(format!(
                    "line {} `{}` ({}): {why}",
                    row.line, row.case, row.falco_rule
                ));
                continue;
            }
        };
        let run = &runs[&overlays];
        let on_line: Vec<String> = run
            .fired
            .get(&row.line)
            .map(|f| f.intersection(&ours).cloned().collect())
            .unwrap_or_default();
        let did_fire = !on_line.is_empty();
        let ok = did_fire == row.expected;
        let listed = known(row.line, &row.falco_rule, row.expected);
        if listed.is_some() {
            known_seen
                .entry((row.line, row.falco_rule.clone(), row.expected))
                .or_default()
                .push(ok);
        }
        let e = summary.entry(row.falco_rule.clone()).or_default();
        e.0 += 1;
        if ok {
            e.1 += 1;
        } else if listed.is_some() {
            e.2 += 1;
        } else {
            problems.push(format!(
                "line {} {} `{}` {:?} (site policy {:?}): expected {}, fired {:?}",
                row.line,
                row.trace_file,
                row.case,
                row.falco_rule,
                row.site_policy,
                row.expected,
                on_line
            ));
        }
        let ours_cell = if row.falco_rule == ANY_RULE {
            "every per-event k8s_audit rule".to_string()
        } else {
            ours.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        table_rows.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.line,
            cell(&row.trace_file),
            cell(&row.case),
            cell(&row.falco_rule),
            cell(&row.site_policy.join(", ")),
            cell(&ours_cell),
            if row.expected { "fire" } else { "no" },
            if did_fire {
                cell(&on_line.join(", "))
            } else {
                "-".to_string()
            },
            match (ok, listed) {
                (true, _) => "✓".to_string(),
                (false, Some((_, _, why))) => format!("✗ known: {}", cell(why)),
                (false, None) => "✗".to_string(),
            }
        ));
    }
    for (line, rule, why) in KNOWN_MISSES {
        let expected = why.starts_with("missed: ");
        match known_seen.get(&(*line, rule.to_string(), expected)) {
            None => problems.push(format!(
                "KNOWN_MISSES ({line}, {rule:?}, {why:?}) names no scored row: remove it"
            )),
            Some(oks) if oks.iter().any(|ok| *ok) => problems.push(format!(
                "KNOWN_MISSES ({line}, {rule:?}, {why:?}): a row it covers now matches: remove or split it"
            )),
            Some(_) => {}
        }
    }

    let checked: usize = summary.values().map(|s| s.0).sum();
    let matched: usize = summary.values().map(|s| s.1).sum();
    let known_n: usize = summary.values().map(|s| s.2).sum();
    let mut doc = String::from(
        "# Falco Kubernetes audit traces: Vigil's match table\n\n\
         Generated by `services/vigil/tests/falco_traces.rs` (`VIGIL_BLESS=1 cargo test -p vigil --test integration falco_traces` rewrites it).\n\
         Input: `services/vigil/tests/data/falco-traces/events.jsonl`, the events of Falco's Kubernetes audit trace files, with `labels.tsv`, the verdicts of Falco's own test suite (provenance in the README there). \
         Each label row is checked against the per-event Vigil rules whose header says `based_on: falco:<Falco rule>`: one of them fires on the row's event exactly when Falco's suite expects its rule to. \
         A `detect: False` case is labelled with the rule it is the negative case of; `(any)` labels Falco's case whose input is not an audit event, on which no rule may fire (and which Vigil must dead-letter). \
         Every replay starts from an overlay holding Falco's stock `allowed_namespaces` and `allowed_k8s_users` as Vigil's `allowed_namespaces` and `allowed_users` (site policy lists Vigil ships empty). \
         Rows with a site policy (an extra Falco rules file) are evaluated with its Vigil equivalent below, or skipped when it has none. \
         Known misses are listed in `KNOWN_MISSES` at the top of the test, with the reason.\n\n",
    );
    doc.push_str(&format!(
        "**{matched} of {checked} labelled trace cases match** across {} Falco rules with a Vigil counterpart ({known_n} known misses).\n\n",
        summary.len()
    ));
    doc.push_str(
        "| Falco rule | Vigil rule(s) | rows | match | known misses |\n|---|---|---|---|---|\n",
    );
    for (rule, (n, k, m)) in &summary {
        let ours = if rule == ANY_RULE {
            "every per-event k8s_audit rule".to_string()
        } else {
            counterparts[rule]
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        doc.push_str(&format!(
            "| {} | {} | {n} | {k} | {m} |\n",
            cell(rule),
            cell(&ours)
        ));
    }
    doc.push_str(
        "\nFalco rules of the labels without a per-event Vigil counterpart (rows not checked):\n\n",
    );
    for (rule, n) in &uncovered {
        match correlations.get(rule) {
            Some(c) => doc.push_str(&format!(
                "- {rule} ({n} rows): cited by correlation rule(s) {}, which need more than this one event\n",
                c.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            None => doc.push_str(&format!("- {rule} ({n} rows)\n")),
        }
    }
    doc.push_str(
        "\nSite policies (extra Falco rules files of the suite) and their Vigil equivalent:\n\n",
    );
    for (name, p) in SITE_POLICIES {
        match p {
            Policy::Overlay(files, how) => {
                let files: Vec<String> = files
                    .iter()
                    .map(|(path, text)| {
                        format!("`{path}`: `{}`", text.trim_end().replace('\n', "` / `"))
                    })
                    .collect();
                doc.push_str(&format!("- {name}: overlay {}. {how}\n", files.join("; ")));
            }
            Policy::Nothing(why) => doc.push_str(&format!("- {name}: none needed: {why}\n")),
            Policy::NoEquivalent(why) => doc.push_str(&format!(
                "- {name}: no Vigil equivalent, rows skipped: {why}\n"
            )),
        }
    }
    doc.push_str("\nRows skipped for a site policy without a Vigil equivalent: ");
    if skipped.is_empty() {
        doc.push_str(
            "none (the rows that need one belong to Falco rules without a counterpart).\n",
        );
    } else {
        doc.push('\n');
        for s in &skipped {
            doc.push_str(&format!("\n- {s}"));
        }
        doc.push('\n');
    }
    doc.push_str(
        "\n| line | trace file | Falco case | Falco rule | site policy | Vigil rule(s) | label | fired | match |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    doc.push_str(&table_rows);

    let path = repo().join("docs/falco-traces.md");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, &doc).unwrap();
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        checked >= 25,
        "only {checked} label rows have a Vigil counterpart"
    );
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        current, doc,
        "docs/falco-traces.md is stale: rerun with VIGIL_BLESS=1"
    );
}
