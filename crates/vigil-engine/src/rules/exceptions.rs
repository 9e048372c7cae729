//! Exceptions (allow-lists): alerts a rule must not raise, kept in a file
//! beside the rules instead of in their SQL, like Falco exceptions.
//!
//! The file (`rules.exceptions`, by default `exceptions.toml` in the rules
//! directory) holds `[[exception]]` entries:
//!
//! ```toml
//! [[exception]]
//! rule = "k8s.secret_access_denied"      # a rule id
//! field = "username"                     # an output column of that rule
//! values = ["system:serviceaccount:monitoring:prometheus"]  # exact matches
//! prefixes = ["system:serviceaccount:ci-"]                  # optional
//! globs = ["*-controller"]               # optional; `*` any run, `?` one character
//! comment = "Prometheus probes secrets it may not read"      # optional
//! expires = "2027-01-01"                 # optional: date or RFC 3339 time
//! ```
//!
//! An output row of the rule whose `field` value matches any of the values,
//! prefixes or globs makes no alert: it is counted (metric
//! `alerts_excepted`) instead. Strings, numbers and booleans are compared by
//! their text; null, lists and objects never match. An entry stops applying
//! at `expires` (wall-clock time). Every entry is checked when the rules are
//! loaded: unknown keys, unknown rule ids, columns the rule does not output,
//! and entries with nothing to match are errors with the file's line.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use super::{RuleError, RuleErrors};
use crate::functions::lists::glob_match;

/// File name of the exceptions file inside a rules directory.
pub const DEFAULT_FILE_NAME: &str = "exceptions.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    exception: Vec<Spanned<EntryIn>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    rule: Spanned<String>,
    field: Spanned<String>,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    globs: Vec<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    expires: Option<Spanned<String>>,
}

/// One exception entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    pub rule: String,
    pub field: String,
    pub values: Vec<String>,
    pub prefixes: Vec<String>,
    pub globs: Vec<String>,
    pub comment: Option<String>,
    /// Nanoseconds since the epoch; the entry applies before this time.
    pub expires_ns: Option<i64>,
    /// Where the entry is: `file:line`.
    pub location: String,
    file: PathBuf,
    line: usize,
    rule_line: usize,
    field_line: usize,
}

impl Exception {
    /// Whether the entry applies at `now_ns` to a row with these output fields.
    pub fn matches(&self, fields: &Map<String, Value>, now_ns: i64) -> bool {
        if self.expires_ns.is_some_and(|e| now_ns >= e) {
            return false;
        }
        let text = match fields.get(&self.field) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => return false,
        };
        self.values.contains(&text)
            || self.prefixes.iter().any(|p| text.starts_with(p.as_str()))
            || self
                .globs
                .iter()
                .any(|g| glob_match(g.as_bytes(), text.as_bytes()))
    }
}

/// The exceptions of a rule set.
#[derive(Debug, Clone, Default)]
pub struct Exceptions {
    /// The files they were read from (the pack's, then each overlay's).
    pub paths: Vec<PathBuf>,
    pub entries: Vec<Exception>,
}

/// An alert an exception suppressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excepted {
    pub rule_id: String,
    /// The exception's `file:line`.
    pub exception: String,
}

impl Exceptions {
    /// No exceptions.
    pub fn none() -> Exceptions {
        Exceptions::default()
    }

    /// Read an exceptions file.
    pub fn load(path: &Path) -> Result<Exceptions, RuleErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RuleErrors(vec![RuleError {
                path: path.to_path_buf(),
                line: None,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(path, &text)
    }

    /// The exceptions of a rules directory: `<dir>/exceptions.toml` if it
    /// exists, else none.
    pub fn load_for_dir(dir: &Path) -> Result<Exceptions, RuleErrors> {
        let path = dir.join(DEFAULT_FILE_NAME);
        if path.is_file() {
            Self::load(&path)
        } else {
            Ok(Exceptions::none())
        }
    }

    /// Parse the text of an exceptions file (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Exceptions, RuleErrors> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let err = |line: Option<usize>, message: String| RuleError {
            path: path.to_path_buf(),
            line,
            message,
        };
        let file: FileIn = toml::from_str(text).map_err(|e| {
            RuleErrors(vec![err(
                e.span().map(|s| line_of(s.start)),
                format!("invalid exceptions file: {}", e.message()),
            )])
        })?;
        let mut errors = Vec::new();
        let mut entries = Vec::new();
        for spanned in file.exception {
            let line = line_of(spanned.span().start);
            let e = spanned.into_inner();
            if e.values.is_empty() && e.prefixes.is_empty() && e.globs.is_empty() {
                errors.push(err(
                    Some(line),
                    "exception has no values, prefixes or globs: it would match nothing".into(),
                ));
            }
            if e.prefixes
                .iter()
                .chain(&e.globs)
                .any(|p| p.is_empty() || p == "*")
            {
                errors.push(err(
                    Some(line),
                    "an empty prefix or a bare \"*\" glob would except every alert of the rule: disable the rule instead".into(),
                ));
            }
            let expires_ns = match &e.expires {
                None => None,
                Some(s) => match parse_expiry(s.get_ref()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errors.push(err(Some(line_of(s.span().start)), e.to_string()));
                        None
                    }
                },
            };
            entries.push(Exception {
                rule_line: line_of(e.rule.span().start),
                field_line: line_of(e.field.span().start),
                rule: e.rule.into_inner(),
                field: e.field.into_inner(),
                values: e.values,
                prefixes: e.prefixes,
                globs: e.globs,
                comment: e.comment,
                expires_ns,
                location: format!("{}:{line}", path.display()),
                file: path.to_path_buf(),
                line,
            });
        }
        if errors.is_empty() {
            Ok(Exceptions {
                paths: vec![path.to_path_buf()],
                entries,
            })
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// Check every entry against the loaded rules: `columns(rule_id)` gives
    /// the output columns of a rule, `None` for an unknown rule.
    pub fn validate(
        &self,
        columns: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Result<(), RuleErrors> {
        let mut errors = Vec::new();
        for e in &self.entries {
            let path = e.file.clone();
            match columns(&e.rule) {
                None => errors.push(RuleError {
                    path: path.clone(),
                    line: Some(e.rule_line),
                    message: format!("exception for unknown rule {:?}", e.rule),
                }),
                Some(cols) if !cols.contains(&e.field) => errors.push(RuleError {
                    path: path.clone(),
                    line: Some(e.field_line),
                    message: format!(
                        "rule {:?} has no output column {:?} (its columns: {})",
                        e.rule,
                        e.field,
                        cols.join(", ")
                    ),
                }),
                Some(_) => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// Add the entries of another file (a later layer's).
    pub fn extend(&mut self, other: Exceptions) {
        self.paths.extend(other.paths);
        self.entries.extend(other.entries);
    }

    /// The first entry that suppresses an alert of `rule_id` with `fields` at `now_ns`.
    pub fn matching(
        &self,
        rule_id: &str,
        fields: &Map<String, Value>,
        now_ns: i64,
    ) -> Option<&Exception> {
        self.entries
            .iter()
            .find(|e| e.rule == rule_id && e.matches(fields, now_ns))
    }

    /// Entries already expired at `now_ns` (reported at load: they do nothing).
    pub fn expired(&self, now_ns: i64) -> impl Iterator<Item = &Exception> {
        self.entries
            .iter()
            .filter(move |e| e.expires_ns.is_some_and(|t| now_ns >= t))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why an entry's `expires` was refused (reported at its line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(
        "invalid expires {value:?}: expected a date (2027-01-01) or an RFC 3339 time: {source}"
    )]
    Format {
        value: String,
        /// Why it is not an RFC 3339 time (the date form was tried first).
        #[source]
        source: chrono::ParseError,
    },
    /// Outside the nanosecond timestamps of event times (1677 to 2262).
    #[error("expires {value:?} is out of range")]
    OutOfRange { value: String },
}

/// `2027-01-01` (midnight UTC) or an RFC 3339 time.
fn parse_expiry(s: &str) -> Result<i64, ExpiryError> {
    let t = match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc(),
        Err(_) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|source| ExpiryError::Format {
                value: s.to_string(),
                source,
            })?
            .with_timezone(&chrono::Utc),
    };
    t.timestamp_nanos_opt()
        .ok_or_else(|| ExpiryError::OutOfRange {
            value: s.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const FILE: &str = r#"# allow-list
[[exception]]
rule = "r.one"
field = "username"
values = ["alice"]
prefixes = ["system:serviceaccount:ci-"]
comment = "known"

[[exception]]
rule = "r.one"
field = "code"
globs = ["40?", "*-x-*"]
expires = "2030-01-01"
"#;

    fn parsed() -> Exceptions {
        Exceptions::parse(Path::new("exc.toml"), FILE).unwrap()
    }

    #[test]
    fn matches_exact_prefix_and_glob_values_of_the_named_column_only() {
        let e = parsed();
        let now = 0;
        assert_eq!(
            e.matching("r.one", &fields(json!({"username": "alice"})), now)
                .unwrap()
                .location,
            "exc.toml:2"
        );
        assert!(e
            .matching("r.one", &fields(json!({"username": "alice2"})), now)
            .is_none());
        assert!(e
            .matching(
                "r.one",
                &fields(json!({"username": "system:serviceaccount:ci-runner:x"})),
                now
            )
            .is_some());
        assert!(
            e.matching("r.two", &fields(json!({"username": "alice"})), now)
                .is_none(),
            "other rule"
        );
        assert!(
            e.matching("r.one", &fields(json!({"user": "alice"})), now)
                .is_none(),
            "other column"
        );
        // Numbers compare by their text; globs.
        assert_eq!(
            e.matching("r.one", &fields(json!({"code": 403})), now)
                .unwrap()
                .location,
            "exc.toml:9"
        );
        assert!(e
            .matching("r.one", &fields(json!({"code": 500})), now)
            .is_none());
        assert!(e
            .matching("r.one", &fields(json!({"code": "a-x-b"})), now)
            .is_some());
        // Null and lists never match.
        assert!(e
            .matching("r.one", &fields(json!({"username": null})), now)
            .is_none());
        assert!(e
            .matching("r.one", &fields(json!({"username": ["alice"]})), now)
            .is_none());
    }

    #[test]
    fn an_expired_entry_no_longer_applies() {
        let e = parsed();
        let after = parse_expiry("2030-01-01T00:00:00Z").unwrap();
        assert!(e
            .matching("r.one", &fields(json!({"code": 403})), after - 1)
            .is_some());
        assert!(e
            .matching("r.one", &fields(json!({"code": 403})), after)
            .is_none());
        assert_eq!(e.expired(after).count(), 1);
    }

    #[test]
    fn validation_names_unknown_rules_and_columns_with_their_lines() {
        let e = parsed();
        let err = e
            .validate(|id| (id == "r.one").then(|| vec!["username".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "exc.toml:11: rule \"r.one\" has no output column \"code\" (its columns: username)"
            ),
            "{err}"
        );
        let err = e.validate(|_| None).unwrap_err().to_string();
        assert!(
            err.contains("exc.toml:3: exception for unknown rule \"r.one\""),
            "{err}"
        );
        assert!(e
            .validate(|_| Some(vec!["username".into(), "code".into()]))
            .is_ok());
    }

    #[test]
    fn malformed_files_are_errors_with_lines() {
        let err = |text: &str| {
            Exceptions::parse(Path::new("x.toml"), text)
                .unwrap_err()
                .to_string()
        };
        assert!(err("[[exception]]\nrule = \"r\"\nfield = \"f\"\n")
            .contains("x.toml:1: exception has no values"));
        assert!(
            err("[[exception]]\nrule = \"r\"\nfield = \"f\"\nvalue = [\"a\"]\n")
                .contains("x.toml:4:")
        );
        assert!(
            err("[[exception]]\nrule = \"r\"\nfield = \"f\"\nglobs = [\"*\"]\n")
                .contains("every alert")
        );
        assert!(err(
            "[[exception]]\nrule = \"r\"\nfield = \"f\"\nvalues = [\"a\"]\nexpires = \"soon\"\n"
        )
        .contains("x.toml:5: invalid expires"));
    }
}
