//! Detection rules: SQL files with a metadata header, loaded from a
//! directory tree (`sql-rules/<source>/<rule>.sql`) together with the
//! lists, macros and lookup tables they share ([`definitions`]) and a
//! site's overlays ([`pack`]), planned once by the [`engine::RuleEngine`].

pub(crate) mod balance;
pub mod budget;
pub mod conjunction;
pub mod coverage;
pub mod cpu_time;
pub mod definitions;
pub(crate) mod duration_literal;
pub mod engine;
pub mod eq_literal;
pub mod exceptions;
pub(crate) mod fields_read;
pub mod first_seen;
pub mod fold;
pub mod forward_filter;
pub(crate) mod null_tests;
pub use vigil_model::rule as header;
pub(crate) mod or_literal;
pub mod overrides;
pub mod pack;
pub(crate) mod physical_plan;
pub(crate) mod projection;
pub(crate) mod regex_match;
pub(crate) mod slot;
pub mod testing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::sql::sqlparser::ast::Statement;

pub use engine::{RuleEngine, RuleFailure};
pub use header::{FirstSeenMeta, RuleMeta, RuleMode, Severity};
pub use pack::{Layers, RulePack, RuleSet};

/// One rule as read from its file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub meta: RuleMeta,
    /// The whole file. The header lines are SQL comments, so this is the
    /// query as written, and parser errors carry the file's line numbers.
    sql: String,
    pub path: PathBuf,
    /// A parse of `sql` left for the next use (`engine::unexpanded_query`),
    /// shared by the rule's clones: a replay parses every rule to find
    /// those that read its source, and its compilation of those takes that
    /// parse instead of parsing again. Taken, not kept: a pack's parsed
    /// statements would otherwise stay resident.
    parsed: Arc<Mutex<Option<Result<Statement, RuleError>>>>,
}

impl Rule {
    /// The rule file's text: its header and its query.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// A problem in one rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub path: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for RuleError {}

/// Every problem found while loading a rule set.
#[derive(Debug, Clone)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the rules:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// The line of the `-- source:` header, for errors about it.
fn source_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with("-- source:"))
        .map(|i| i + 1)
}

/// Parse one rule file's text.
pub fn parse_rule(path: &Path, text: &str) -> Result<Rule, Vec<RuleError>> {
    match header::parse_header(text) {
        Ok((meta, _body_line)) => match vigil_sources::registry::check(meta.source) {
            Ok(_) => Ok(Rule {
                meta,
                sql: text.to_string(),
                path: path.to_path_buf(),
                parsed: Arc::default(),
            }),
            Err(unknown) => Err(vec![RuleError {
                path: path.to_path_buf(),
                line: source_line(text),
                message: unknown.to_string(),
            }]),
        },
        Err(errors) => Err(errors
            .into_iter()
            .map(|e| RuleError {
                path: path.to_path_buf(),
                line: Some(e.line),
                message: e.message,
            })
            .collect()),
    }
}

/// Load and compile a rule set: every layer ([`RulePack::load`]), the
/// rules compiled with their definitions, then the exceptions checked
/// against the compiled rules.
pub async fn load_rule_set(
    layers: &Layers,
    correlation: crate::correlate::CorrelationSettings,
) -> Result<RuleEngine, RuleErrors> {
    load_rules_reading(layers, correlation, None).await
}

/// [`load_rule_set`] for the events of one source (`vigil replay`): a rule
/// whose query, lists and macros expanded, reads no table of `source` is
/// left out, with its exceptions. From such input it could raise nothing,
/// and planning it was a sixth of a replay's start-up (docs/benchmarks.md).
/// A rule whose query cannot be read is kept, so compiling it reports why.
pub async fn load_rule_set_for(
    layers: &Layers,
    correlation: crate::correlate::CorrelationSettings,
    source: vigil_model::source::SourceKind,
) -> Result<RuleEngine, RuleErrors> {
    load_rules_reading(layers, correlation, Some(source)).await
}

/// The pack's rules (those reading `source`, if given), compiled, with
/// their exceptions checked against them.
async fn load_rules_reading(
    layers: &Layers,
    correlation: crate::correlate::CorrelationSettings,
    source: Option<vigil_model::source::SourceKind>,
) -> Result<RuleEngine, RuleErrors> {
    let pack = RulePack::load(layers)?;
    let mut set = pack.rule_set();
    let mut exceptions = pack.exceptions;
    if let Some(source) = source {
        set.rules = engine::rules_reading(set.rules, &set.definitions, source);
        exceptions
            .entries
            .retain(|e| set.rules.iter().any(|r| r.meta.id == e.rule));
    }
    let engine = RuleEngine::compile_with(set, correlation).await?;
    warn_expired(&exceptions);
    engine.with_exceptions(exceptions)
}

fn warn_expired(exceptions: &exceptions::Exceptions) {
    let expired: Vec<String> = exceptions
        .expired(crate::detect::now_ns())
        .map(|e| e.location.clone())
        .collect();
    if !expired.is_empty() {
        tracing::warn!(entries = ?expired, "expired exceptions no longer apply: remove them");
    }
}

/// [`load_rule_set`] split in two engines for `correlation.placement =
/// "leader"`: the per-event rules (run by every instance) and the
/// correlation rules (run by the leader). The exceptions are checked
/// against the whole set and apply in both.
pub async fn load_split_rule_set(
    layers: &Layers,
    correlation: crate::correlate::CorrelationSettings,
) -> Result<(RuleEngine, RuleEngine), RuleErrors> {
    let whole = load_rule_set(layers, correlation.clone()).await?;
    let set = RulePack::load(layers)?.rule_set();
    let (event_rules, correlation_rules): (Vec<Rule>, Vec<Rule>) = set
        .rules
        .into_iter()
        .partition(|r| r.meta.mode != RuleMode::Correlation);
    let part = |rules: Vec<Rule>| RuleSet {
        rules,
        definitions: set.definitions.clone(),
    };
    let mut per_event = RuleEngine::compile_with(part(event_rules), correlation.clone()).await?;
    let mut correlating = RuleEngine::compile_with(part(correlation_rules), correlation).await?;
    per_event.set_exceptions_unchecked(whole.exceptions().clone());
    correlating.set_exceptions_unchecked(whole.exceptions().clone());
    Ok((per_event, correlating))
}

/// Read every rule file under `dir` (recursively, in path order), not
/// counting the macros under `dir/macros/`.
///
/// Checks headers and that rule ids are unique; SQL is checked when the
/// rules are compiled by the engine. An empty directory is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, RuleErrors> {
    let (rules, mut errors) = rules_in(dir);
    if rules.is_empty() && errors.is_empty() {
        errors.push(RuleError {
            path: dir.to_path_buf(),
            line: None,
            message: "no .sql rule files found".into(),
        });
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(RuleErrors(errors))
    }
}

/// The rules of one directory and the problems found reading them.
pub(crate) fn rules_in(dir: &Path) -> (Vec<Rule>, Vec<RuleError>) {
    let mut files = Vec::new();
    if let Err(e) = collect_sql_files(dir, &dir.join(definitions::MACROS_DIR), &mut files) {
        return (
            Vec::new(),
            vec![RuleError {
                path: dir.to_path_buf(),
                line: None,
                message: format!("cannot read: {e}"),
            }],
        );
    }
    files.sort();
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(RuleError {
                    path,
                    line: None,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse_rule(&path, &text) {
            Ok(rule) => {
                if let Some(other) = rules.iter().find(|r| r.meta.id == rule.meta.id) {
                    errors.push(RuleError {
                        path: path.clone(),
                        line: None,
                        message: format!(
                            "rule id {:?} is also used by {}",
                            rule.meta.id,
                            other.path.display()
                        ),
                    });
                    continue;
                }
                rules.push(rule);
            }
            Err(e) => errors.extend(e),
        }
    }
    (rules, errors)
}

fn collect_sql_files(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path == skip {
            continue;
        }
        // Hidden entries are skipped: a Kubernetes ConfigMap volume holds
        // each file three times (`name` -> `..data/name` ->
        // `..<timestamp>/name`); only the visible one is the rule.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            collect_sql_files(&path, skip, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod load_tests {
    use super::*;

    /// A Kubernetes ConfigMap volume: visible symlinks into `..data`, itself
    /// a symlink to a timestamped directory.
    #[cfg(unix)]
    #[test]
    fn loads_a_configmap_volume_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("..2026_01_01_00_00_00.000000001");
        std::fs::create_dir(&real).unwrap();
        let text = "-- id: t.one\n-- title: t\n-- severity: low\n-- description: t\n-- mitre: T1609\n-- source: k8s_audit\n-- author: t\n-- based_on: vigil:test\nSELECT verb FROM k8s_audit\n";
        std::fs::write(real.join("one.sql"), text).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("..data/one.sql"),
            dir.path().join("one.sql"),
        )
        .unwrap();
        let rules = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].path, dir.path().join("one.sql"));
    }
}
