//! The noise report (docs/noise-report.md): the whole rule pack over the
//! sample data in ../shared/data: hits on the benign background (noise),
//! hits and misses on the labelled cases.
//!
//! This test fails when the report is stale; `VIGIL_BLESS=1 cargo test -p
//! vigil --test integration noise_report` rewrites it. It also checks that the example
//! site exceptions (docs/examples/exceptions-perfspec.toml) remove no hit
//! on a labelled attack case.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil::alert::Alert;
use vigil::detect::Detector;
use vigil::metrics::Metrics;
use vigil::replay::{replay_with, ReplayOptions, ReplaySummary};
use vigil::rules::{load_rule_set, Layers, Rule, Severity};
use vigil::source::{Origin, SourceKind};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data(rel: &str) -> PathBuf {
    repo().join("../shared/data").join(rel)
}

/// What was done about the noise (hand-written; keep it true when the
/// numbers above change).
const TUNING: &str = "
## Tuning

- `k8s.secret_access_denied`: every background alert is `kubernetes-admin` getting a Helm release secret that does not exist yet (404): Helm's existence check before it installs. The rule already ignores 404s from Helm's user agent, but this dataset was rebuilt from a CSV without user agents, so the SQL cannot tell. The rule is not loosened (Panther's labelled cases require a 404 from a user to fire); instead the site allow-list `docs/examples/exceptions-perfspec.toml` excepts `kubernetes-admin` for this rule, which removes them (column *after site exceptions*). The test checks that this file removes no hit on a labelled attack case.
- `k8s.admission_webhook_created` and `k8s.daemonset_created`: Helm installing cert-manager, ingress-nginx and the Prometheus stacks creates webhook configurations and node-exporter DaemonSets. These are the changes the rules exist to surface (medium and low: review, do not page); not tuned. A site that installs charts from a pipeline would except the pipeline's identity.
- `k8s.impersonation` fires on all of `audit2rbac-demo.jsonl`: that demo impersonates a user in every request. Expected.
- Tetragon: the book's introductory demos run a shell and `nc` and read sensitive files inside pods on purpose, so the rules fire on them (column *other labelled*); they are the behaviours the rules describe, not false positives.
";

const SITE_EXCEPTIONS: &str = "docs/examples/exceptions-perfspec.toml";

/// Alerts of one replay, by rule, with the input lines they name.
struct Run {
    summary: ReplaySummary,
    alerts: Vec<Alert>,
}

impl Run {
    fn hits(&self, rule: &str) -> usize {
        self.alerts.iter().filter(|a| a.rule_id == rule).count()
    }

    /// Input line -> rules that fired on it.
    fn by_line(&self) -> BTreeMap<u64, BTreeSet<String>> {
        let mut m: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for a in &self.alerts {
            for e in &a.events {
                if let Origin::File { line, .. } = e.origin {
                    m.entry(line).or_default().insert(a.rule_id.clone());
                }
            }
        }
        m
    }
}

async fn run(source: SourceKind, file: &str, exceptions: Option<&Path>) -> Run {
    let layers = Layers {
        exceptions: exceptions.map(Path::to_path_buf),
        ..Layers::dir(&repo().join("sql-rules"))
    };
    let engine = load_rule_set(&layers, Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let summary = replay_with(
        &mut detector,
        source,
        &data(file),
        ReplayOptions {
            batch_size: 500,
            ..ReplayOptions::default()
        },
        &mut out,
        &mut dead,
    )
    .await
    .unwrap();
    // Late events (the sample files are not strictly ordered by event time)
    // are reported, not errors; anything else is.
    let errors: Vec<&str> = std::str::from_utf8(&dead)
        .unwrap()
        .lines()
        .filter(|l| !l.contains(r#""kind":"late_event""#))
        .collect();
    assert!(errors.is_empty(), "{file}: dead letters: {errors:?}");
    let alerts = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run { summary, alerts }
}

/// Panther labels: line -> (panther rule id, case name, expected).
fn panther_labels() -> Vec<(u64, String, String, bool)> {
    let text = std::fs::read_to_string(data("k8s-audit/panther-rule-cases.labels.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].to_string(),
                f[3] == "True",
            )
        })
        .collect()
}

/// Tetragon book labels: line -> source file in the book.
fn book_labels() -> BTreeMap<u64, String> {
    let text = std::fs::read_to_string(data("runtime/tetragon-book-events.labels.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split_once('\t').unwrap())
        .map(|(a, b)| (a.parse().unwrap(), b.to_string()))
        .collect()
}

/// Book events from the chapter's attack walkthrough (reaching the host
/// namespace, persistence, post-exploitation); the others are the
/// introductory demos of event types and process lifecycles.
fn is_attack_scenario(file: &str) -> bool {
    file.contains("03_security_observability_events/")
}

/// The most frequent values of an alert field among `alerts`.
fn top_values(alerts: &[&Alert], field: &str, n: usize) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        let v = match a.fields.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => continue,
        };
        *counts.entry(v).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(n)
        .map(|(k, c)| format!("`{k}` ×{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn noise_report_is_current() {
    let rules: Vec<Rule> = vigil::rules::RulePack::load_dir(&repo().join("sql-rules"))
        .unwrap()
        .rules;
    let site = repo().join(SITE_EXCEPTIONS);

    // Benign background.
    let perfspec = run(
        SourceKind::K8sAudit,
        "k8s-audit/perfspec-background.jsonl",
        None,
    )
    .await;
    let perfspec_site = run(
        SourceKind::K8sAudit,
        "k8s-audit/perfspec-background.jsonl",
        Some(&site),
    )
    .await;
    let aks = run(SourceKind::K8sAudit, "k8s-audit/aks-system.jsonl", None).await;
    let tetra_test = run(
        SourceKind::Tetragon,
        "runtime/tetragon-testdata.jsonl",
        None,
    )
    .await;
    // Labelled cases.
    let panther = run(
        SourceKind::K8sAudit,
        "k8s-audit/panther-rule-cases.jsonl",
        None,
    )
    .await;
    let panther_site = run(
        SourceKind::K8sAudit,
        "k8s-audit/panther-rule-cases.jsonl",
        Some(&site),
    )
    .await;
    let book = run(
        SourceKind::Tetragon,
        "runtime/tetragon-book-events.jsonl",
        None,
    )
    .await;
    // Real activity without labels.
    let rbac = run(
        SourceKind::K8sAudit,
        "k8s-audit/audit2rbac-demo.jsonl",
        None,
    )
    .await;
    let falco = run(SourceKind::Falco, "runtime/falco-alerts-sample.jsonl", None).await;

    // Panther: our rule -> the Panther rules it is based on.
    let labels = panther_labels();
    let panther_fired = panther.by_line();
    let panther_site_fired = panther_site.by_line();
    let book_fired = book.by_line();
    let book_files = book_labels();

    // The example site exceptions must not remove a hit on a labelled case.
    let lost: Vec<String> = labels
        .iter()
        .filter(|(line, _, _, expected)| {
            *expected && panther_fired.get(line) != panther_site_fired.get(line)
        })
        .map(|(line, p, name, _)| format!("line {line} {p} {name:?}"))
        .collect();
    assert!(
        lost.is_empty(),
        "the site exceptions suppress labelled attack cases: {lost:?}"
    );

    let mut doc = String::new();
    let w = &mut doc;
    writeln!(w, "# Noise report: the rule pack over the sample data\n").unwrap();
    writeln!(
        w,
        "Generated by `services/vigil/tests/noise_report.rs`; regenerate with `VIGIL_BLESS=1 cargo test -p vigil --test integration noise_report` \
         (the test fails when this file is stale). Inputs are in `../shared/data` (see its README); every file is replayed \
         with the whole pack (`sql-rules/`, {} rules, and `sql-rules/exceptions.toml` if present) as `vigil replay` does.\n",
        rules.len()
    )
    .unwrap();
    writeln!(w, "- **Benign background** (noise): `k8s-audit/perfspec-background.jsonl` ({} events, a real cluster during Helm installs, metadata only: no bodies, no user agents), `k8s-audit/aks-system.jsonl` ({} AKS system events), `runtime/tetragon-testdata.jsonl` ({} process_exec events).", perfspec.summary.events, aks.summary.events, tetra_test.summary.events).unwrap();
    writeln!(w, "- **Labelled cases**: `k8s-audit/panther-rule-cases.jsonl` ({} events labelled with the Panther detection they should or should not trigger) and `runtime/tetragon-book-events.jsonl` ({} events of the Tetragon book, labelled by the book file they come from: the attack walkthrough of chapter 3 versus the introductory demos).", panther.summary.events, book.summary.events).unwrap();
    writeln!(w, "- **Unlabelled real activity**: `k8s-audit/audit2rbac-demo.jsonl` ({} events of a demo that impersonates users) and `runtime/falco-alerts-sample.jsonl` ({} Falco alerts).\n", rbac.summary.events, falco.summary.events).unwrap();
    writeln!(w, "Columns: *noise* = alerts on the benign background; *after site exceptions* = the same with `{SITE_EXCEPTIONS}` (an example allow-list for the perfspec cluster); *labelled hits / misses / false alarms* = for per-event rules based on a Panther rule (correlation rules need a burst of events, not one case: they are scored in panther-cases.md), its cases labelled true that the rule fired on / did not fire on, and its cases labelled false that it fired on; for Tetragon rules, book events of the attack walkthrough it fired on; *other* = alerts on other labelled cases (cases of other detections, or the book's introductory demos).\n").unwrap();

    // Correlation rules need many events where a labelled case is one: they
    // are scored on bursts of each case in panther-cases.md instead.
    let mut counterparts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rules
        .iter()
        .filter(|r| r.meta.mode != vigil::rules::header::RuleMode::Correlation)
    {
        for b in &r.meta.based_on {
            if let Some(p) = b.strip_prefix("panther:") {
                counterparts
                    .entry(r.meta.id.clone())
                    .or_default()
                    .insert(p.to_string());
            }
        }
    }

    writeln!(w, "| rule | severity | noise | after site exceptions | labelled hits | misses | false alarms | other labelled | audit2rbac | falco sample |").unwrap();
    writeln!(w, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    let (mut total_noise, mut total_site, mut total_hits, mut total_miss, mut total_fa) =
        (0, 0, 0, 0, 0);
    let mut noisy: Vec<(String, Severity, usize)> = Vec::new();
    for r in &rules {
        let id = &r.meta.id;
        let noise = perfspec.hits(id) + aks.hits(id) + tetra_test.hits(id);
        let site_noise = perfspec_site.hits(id) + aks.hits(id) + tetra_test.hits(id);
        let (mut hits, mut misses, mut false_alarms, mut other) = (0, 0, 0, 0);
        let ours = counterparts.get(id);
        for (line, p, _, expected) in &labels {
            let fired = panther_fired.get(line).is_some_and(|s| s.contains(id));
            if ours.is_some_and(|o| o.contains(p)) {
                match (expected, fired) {
                    (true, true) => hits += 1,
                    (true, false) => misses += 1,
                    (false, true) => false_alarms += 1,
                    (false, false) => {}
                }
            } else if fired {
                other += 1;
            }
        }
        for (line, file) in &book_files {
            if book_fired.get(line).is_some_and(|s| s.contains(id)) {
                if is_attack_scenario(file) {
                    hits += 1;
                } else {
                    other += 1;
                }
            }
        }
        let show_miss = if ours.is_some() {
            misses.to_string()
        } else {
            "–".into()
        };
        let show_fa = if ours.is_some() {
            false_alarms.to_string()
        } else {
            "–".into()
        };
        writeln!(
            w,
            "| `{id}` | {} | {noise} | {site_noise} | {hits} | {show_miss} | {show_fa} | {other} | {} | {} |",
            r.meta.severity,
            rbac.hits(id),
            falco.hits(id)
        )
        .unwrap();
        total_noise += noise;
        total_site += site_noise;
        total_hits += hits;
        total_miss += misses;
        total_fa += false_alarms;
        if noise > 0 {
            noisy.push((id.clone(), r.meta.severity, noise));
        }
    }
    writeln!(w, "| **total** | | **{total_noise}** | **{total_site}** | **{total_hits}** | **{total_miss}** | **{total_fa}** | | **{}** | **{}** |\n", rbac.summary.alerts(), falco.summary.alerts()).unwrap();

    writeln!(w, "## Noise on the benign background\n").unwrap();
    let background = [
        ("perfspec-background", &perfspec),
        ("aks-system", &aks),
        ("tetragon-testdata", &tetra_test),
    ];
    for (id, severity, n) in &noisy {
        writeln!(w, "### `{id}` ({severity}): {n} alerts\n").unwrap();
        for (name, run) in background {
            let alerts: Vec<&Alert> = run.alerts.iter().filter(|a| &a.rule_id == id).collect();
            if alerts.is_empty() {
                continue;
            }
            let mut fields: Vec<&String> = alerts[0].fields.keys().collect();
            fields.retain(|f| {
                alerts
                    .iter()
                    .any(|a| a.fields.get(*f).is_some_and(|v| !v.is_null()))
            });
            let detail: Vec<String> = fields
                .iter()
                .take(4)
                .map(|f| format!("{f}: {}", top_values(&alerts, f, 4)))
                .collect();
            writeln!(
                w,
                "- {name}: {} alerts; {}",
                alerts.len(),
                detail.join("; ")
            )
            .unwrap();
        }
        writeln!(w).unwrap();
    }

    writeln!(
        w,
        "## Tetragon book events\n\n| line | book file | rules fired |\n|---|---|---|"
    )
    .unwrap();
    for (line, file) in &book_files {
        let fired = book_fired.get(line).map(|s| {
            s.iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        writeln!(
            w,
            "| {line} | {} | {} |",
            file.trim_start_matches("03_chapter/"),
            fired.unwrap_or_default()
        )
        .unwrap();
    }
    let uncovered: BTreeSet<&String> = labels
        .iter()
        .filter(|(_, p, _, _)| !counterparts.values().any(|s| s.contains(p)))
        .map(|(_, p, _, _)| p)
        .collect();
    writeln!(
        w,
        "\nPanther detections in the labelled cases without a Vigil counterpart (not scored): {}.",
        uncovered
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    writeln!(
        w,
        "The case-by-case Panther table is [panther-cases.md](panther-cases.md)."
    )
    .unwrap();
    doc.push_str(TUNING);

    let path = repo().join("docs/noise-report.md");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, &doc).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        current, doc,
        "docs/noise-report.md is stale: rerun with VIGIL_BLESS=1"
    );
    assert_eq!(
        total_miss, 0,
        "a rule misses labelled cases of its Panther counterpart"
    );
}
