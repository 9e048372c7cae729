//! Detection rules: SQL files with a metadata header, loaded from a
//! directory tree (`sql-rules/<source>/<rule>.sql`), planned once by the
//! [`engine::RuleEngine`].

pub mod engine;
pub(crate) mod null_free;
pub mod header;
pub(crate) mod slot;
pub mod testing;

use std::fmt;
use std::path::{Path, PathBuf};

pub use engine::{RuleEngine, RuleFailure};
pub use header::{RuleMeta, RuleMode, Severity};

/// One rule as read from its file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub meta: RuleMeta,
    /// The whole file. The header lines are SQL comments, so this is the
    /// query as written, and parser errors carry the file's line numbers.
    pub sql: String,
    pub path: PathBuf,
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

/// Parse one rule file's text.
pub fn parse_rule(path: &Path, text: &str) -> Result<Rule, Vec<RuleError>> {
    match header::parse_header(text) {
        Ok((meta, _body_line)) => Ok(Rule { meta, sql: text.to_string(), path: path.to_path_buf() }),
        Err(errors) => Err(errors
            .into_iter()
            .map(|e| RuleError { path: path.to_path_buf(), line: Some(e.line), message: e.message })
            .collect()),
    }
}

/// Read every `*.sql` file under `dir` (recursively, in path order).
///
/// Checks headers and that rule ids are unique; SQL is checked when the
/// rules are compiled by the engine.
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, RuleErrors> {
    let mut files = Vec::new();
    collect_sql_files(dir, &mut files).map_err(|e| {
        RuleErrors(vec![RuleError { path: dir.to_path_buf(), line: None, message: format!("cannot read: {e}") }])
    })?;
    files.sort();
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(RuleError { path, line: None, message: format!("cannot read: {e}") });
                continue;
            }
        };
        match parse_rule(&path, &text) {
            Ok(rule) => {
                if let Some(other) = rules.iter().find(|r| r.meta.id == rule.meta.id) {
                    errors.push(RuleError {
                        path: path.clone(),
                        line: None,
                        message: format!("rule id {:?} is also used by {}", rule.meta.id, other.path.display()),
                    });
                }
                rules.push(rule);
            }
            Err(e) => errors.extend(e),
        }
    }
    if rules.is_empty() && errors.is_empty() {
        errors.push(RuleError { path: dir.to_path_buf(), line: None, message: "no .sql rule files found".into() });
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(RuleErrors(errors))
    }
}

fn collect_sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_sql_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}
