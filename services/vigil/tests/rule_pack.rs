//! The shipped rule pack (sql-rules/): every rule loads, plans, and passes
//! its own test cases, with at least one firing case and one near miss.

use std::path::Path;

use vigil::rules::{testing, RuleEngine, RulePack};

#[tokio::test]
async fn every_shipped_rule_passes_its_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    let pack = RulePack::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let rules = pack.rules.clone();
    let engine = RuleEngine::compile(pack.rule_set())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.len() >= 15, "the pack has {} rules", rules.len());
    for source in vigil::registry::kinds() {
        assert!(
            rules.iter().any(|r| r.meta.source == source),
            "no rule reads {source}"
        );
    }
    let results = testing::run(&rules, engine).await;
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "{} {:?} ({}:{}): {}",
                r.rule_id,
                r.name,
                r.file.display(),
                r.line,
                r.detail
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing rule test(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(results.len() >= 2 * rules.len());
}

/// Every list, macro and lookup table the pack ships is used by a rule.
#[tokio::test]
async fn every_shipped_definition_is_used() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    let pack = RulePack::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(pack.definitions.lists.len() >= 10 && pack.definitions.macros.len() >= 10);
    let engine = RuleEngine::compile(pack.rule_set())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let unused = engine.unused_definitions();
    assert!(unused.is_empty(), "{unused:#?}");
}

/// The example site overlay (docs/examples/site-overlay) loads over the
/// pack, changes what it says it changes, and its own rule passes its cases.
#[tokio::test]
async fn the_example_site_overlay_applies_over_the_pack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let layers = vigil::rules::Layers {
        overlays: vec![root.join("docs/examples/site-overlay")],
        ..vigil::rules::Layers::dir(&root.join("sql-rules"))
    };
    let pack = RulePack::load(&layers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pack.disabled
            .iter()
            .map(|r| r.meta.id.as_str())
            .collect::<Vec<_>>(),
        ["k8s.image_latest_tag"]
    );
    let pod_exec = pack
        .rules
        .iter()
        .find(|r| r.meta.id == "k8s.pod_exec")
        .unwrap();
    assert_eq!(pod_exec.meta.severity, vigil::rules::Severity::High);
    let registries: Vec<&str> = pack.definitions.lists["approved_registries"]
        .items
        .iter()
        .map(|i| i.value.as_str())
        .collect();
    assert!(!registries.contains(&"docker.io"), "{registries:?}");
    assert!(pack.definitions.lists["trusted_workload_images"]
        .items
        .iter()
        .any(|i| i.value == "docker.io/datadog/agent"));
    let site_rules: Vec<vigil::rules::Rule> = pack
        .rules
        .iter()
        .filter(|r| r.meta.id.starts_with("site."))
        .cloned()
        .collect();
    assert_eq!(site_rules.len(), 1);
    let engine = RuleEngine::compile(pack.rule_set())
        .await
        .and_then(|e| e.with_exceptions(pack.exceptions.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        engine.unused_definitions().is_empty(),
        "{:?}",
        engine.unused_definitions()
    );
    let results = testing::run(&site_rules, engine).await;
    assert!(
        results.len() >= 4 && results.iter().all(|r| r.passed),
        "{results:#?}"
    );
}
