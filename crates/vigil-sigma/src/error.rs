//! What can go wrong importing Sigma rules.

/// Why a Sigma rule (or a whole input file, or a pipeline) cannot be
/// imported. Each message names the construct; [`crate::Skipped`] adds the
/// file and the rule.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SigmaError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("not a Sigma rule: {0}")]
    NotARule(String),
    #[error("unknown modifier {modifier:?} on {field:?}")]
    UnknownModifier { field: String, modifier: String },
    #[error("modifier {modifier:?} on {field:?}: {why}")]
    BadModifier {
        field: String,
        modifier: String,
        why: String,
    },
    #[error("value of {field:?}: {why}")]
    BadValue { field: String, why: String },
    #[error("condition {condition:?}: {why}")]
    Condition { condition: String, why: String },
    #[error("condition names {name:?}, which is not a detection of the rule")]
    MissingSelection { name: String },
    #[error("selection {name:?}: {why}")]
    Selection { name: String, why: String },
    #[error("no pipeline maps logsource {0}")]
    UnmappedLogsource(String),
    #[error("field {field:?} has no mapping in pipeline {pipeline}")]
    UnmappedField { field: String, pipeline: String },
    #[error("keyword search: pipeline {0} names no keyword columns")]
    NoKeywordColumns(String),
    #[error("placeholder %{0}% of modifier expand names no list: only whole-value placeholders are supported")]
    BadPlaceholder(String),
    #[error("correlation names rule {0:?}, which is not in the input")]
    UnknownRuleRef(String),
    #[error("unparseable timespan {0:?}: expected a number and s, m, h or d (e.g. 10m)")]
    Timespan(String),
    #[error("correlation: {0}")]
    Correlation(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("pipeline {file}: {why}")]
    Pipeline { file: String, why: String },
    #[error("{path}: {why}")]
    Io { path: String, why: String },
}

pub type Result<T, E = SigmaError> = std::result::Result<T, E>;
