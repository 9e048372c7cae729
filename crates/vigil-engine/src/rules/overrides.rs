//! Rule overrides of a layer (`overrides.toml`): a site turns shipped rules
//! off or changes their severity without editing their files.
//!
//! ```toml
//! [rule."k8s.image_latest_tag"]
//! enabled = false
//! comment = "we pin digests in admission; the tag does not matter"
//!
//! [rule."k8s.pod_exec"]
//! severity = "high"
//! ```
//!
//! A rule named here must exist in this layer or an earlier one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::definitions::Location;
use super::{RuleError, Severity};

/// File name of a layer's overrides.
pub const FILE_NAME: &str = "overrides.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    rule: BTreeMap<String, Spanned<RuleIn>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleIn {
    enabled: Option<bool>,
    severity: Option<Spanned<String>>,
    #[allow(dead_code)] // documentation for the reader of the file
    comment: Option<String>,
}

/// What a layer changes about one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub rule: String,
    pub enabled: Option<bool>,
    pub severity: Option<Severity>,
    pub at: Location,
}

/// Parse a layer's overrides file.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Override>, Vec<RuleError>> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let file: FileIn = toml::from_str(text).map_err(|e| {
        vec![RuleError {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_of(s.start)),
            message: format!("invalid overrides file: {}", e.message()),
        }]
    })?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (rule, entry) in file.rule {
        let at = Location::new(path, line_of(entry.span().start));
        let entry = entry.into_inner();
        let severity = match entry.severity {
            None => None,
            Some(s) => match s.get_ref().parse::<Severity>() {
                Ok(v) => Some(v),
                Err(m) => {
                    errors.push(Location::new(path, line_of(s.span().start)).error(m));
                    continue;
                }
            },
        };
        if entry.enabled.is_none() && severity.is_none() {
            errors.push(at.error(format!(
                "the override of {rule:?} changes nothing: give enabled or severity"
            )));
            continue;
        }
        out.push(Override {
            rule,
            enabled: entry.enabled,
            severity,
            at,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
