//! The shipped rule pack (sql-rules/): every rule loads, plans, and passes
//! its own test cases, with at least one firing case and one near miss.

use std::path::Path;

use vigil::rules::{testing, RuleEngine, RulePack};
use vigil::source::SourceKind;

#[tokio::test]
async fn every_shipped_rule_passes_its_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    let pack = RulePack::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let rules = pack.rules.clone();
    let engine = RuleEngine::compile(pack.rule_set())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.len() >= 15, "the pack has {} rules", rules.len());
    for source in SourceKind::ALL {
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
