//! The metadata header of a rule file.
//!
//! A rule file starts with SQL line comments of the form `-- key: value`.
//! The header ends at the first line that is not a comment. List values are
//! comma separated. A comment line indented by at least two spaces after
//! `--` continues the previous key's value (for long descriptions).
//!
//! ```sql
//! -- id: k8s_audit.pod_exec
//! -- title: Exec into a pod
//! -- severity: high
//! -- description: A user opened a shell in a running container.
//! -- mitre: T1609
//! -- source: k8s_audit
//! -- tags: attack, execution
//! -- author: Vigil
//! -- references: https://attack.mitre.org/techniques/T1609/
//! -- based_on: panther:Kubernetes.Pod.Exec, falco:Attach/Exec Pod
//! SELECT ... FROM k8s_audit WHERE ...
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::SourceKind;

/// How bad an alert is. Ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = HeaderValueError;
    fn from_str(s: &str) -> Result<Self, HeaderValueError> {
        match s {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(HeaderValueError::Severity {
                value: other.to_string(),
            }),
        }
    }
}

/// A header value (or an override's) that cannot be read; `value` is the
/// text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderValueError {
    #[error("invalid severity {value:?}: expected info, low, medium, high or critical")]
    Severity { value: String },
    #[error("invalid duration {value:?}: {problem}")]
    Duration {
        value: String,
        problem: DurationProblem,
    },
}

/// What is wrong with a duration (see [`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationProblem {
    /// No number before the unit (or one too large for 64 bits).
    #[error("expected e.g. 30s, 5m, 1h")]
    NotANumber,
    #[error("unit must be ms, s, m, h or d")]
    UnknownUnit,
    #[error("must be positive")]
    Zero,
    /// Longer than [`MAX_DURATION`]: no window or period needs it, and
    /// event-time arithmetic in nanoseconds must not overflow.
    #[error("must be at most 366d")]
    TooLong,
}

/// The longest duration a header may give (366 days).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// The message alone, for callers that collect messages as text (rule
/// and override errors).
impl From<HeaderValueError> for String {
    fn from(e: HeaderValueError) -> String {
        e.to_string()
    }
}

/// How a rule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// A filter/projection over single events: every output row is one alert
    /// about the one event it came from.
    Event,
    /// A query over the events retained for `window` (aggregates per key
    /// and window, self-joins for sequences, cross-source joins). Output
    /// rows carry a `window_end`; each is emitted once, when the watermark
    /// passes it. See docs/rules.md.
    Correlation,
}

/// The parsed header of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMeta {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub description: String,
    /// MITRE ATT&CK technique ids, e.g. `T1609` or `T1552.007`.
    pub mitre: Vec<String>,
    pub source: SourceKind,
    pub mode: RuleMode,
    pub tags: Vec<String>,
    pub author: String,
    pub references: Vec<String>,
    /// What a responder does about the alert: a URL or a short text
    /// (`-- runbook:`); carried to the outputs (Alertmanager's `runbook`
    /// annotation, the console), not into the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The public rules this one was based on, as `corpus:name`
    /// (`panther:Kubernetes.Pod.Exec`, `falco:Attach/Exec Pod`, `sigma:...`).
    pub based_on: Vec<String>,
    /// Correlation rules: the longest span, in event time, from the first
    /// event that can contribute to an output row to that row's
    /// `window_end`. Events are retained this long past the watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// After an alert, further alerts with the same `suppress_key` values
    /// within this event-time period are folded into a count (and, for
    /// per-event rules, into the events a summary alert names) instead of
    /// being emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Duration>,
    /// Output columns whose values identify "the same ongoing detection"
    /// for suppression. Empty with `suppress` set: the rule as a whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppress_key: Vec<String>,
    /// A correlation rule's declared key (`-- key: <table>: <expr>, ...;
    /// <table>: ...`), for a rule whose key the engine cannot derive from
    /// its SQL. The engine parses the expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A per-event rule that alerts only on a value combination not seen
    /// within a history window (`-- first_seen: <output columns>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<FirstSeenMeta>,
}

/// The first-seen ("new terms") part of a per-event rule's header.
///
/// ```sql
/// -- first_seen: username, namespace
/// -- history: 14d
/// -- learning: 7d
/// ```
///
/// A row of the rule raises an alert only when the combination of its
/// `columns` has not been seen in the `history` before its event, and
/// only once the rule has observed `learning` of event time (by default,
/// its whole `history`): before that every combination would be new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstSeenMeta {
    /// Output columns whose values form the combination.
    pub columns: Vec<String>,
    pub history: Duration,
    pub learning: Duration,
}

/// Parse a duration such as `500ms`, `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, HeaderValueError> {
    let s = s.trim();
    let error = |problem| HeaderValueError::Duration {
        value: s.to_string(),
        problem,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| error(DurationProblem::NotANumber))?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(error(DurationProblem::UnknownUnit)),
    };
    let d = n
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| error(DurationProblem::TooLong))?;
    if d.is_zero() {
        return Err(error(DurationProblem::Zero));
    }
    Ok(d)
}

/// A problem in a header, with its 1-based line in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    pub line: usize,
    pub message: String,
}

const REQUIRED: [&str; 8] = [
    "id",
    "title",
    "severity",
    "description",
    "mitre",
    "source",
    "author",
    "based_on",
];
const OPTIONAL: [&str; 11] = [
    "tags",
    "references",
    "runbook",
    "mode",
    "window",
    "suppress",
    "suppress_key",
    "key",
    "first_seen",
    "history",
    "learning",
];

/// The `-- key: value` lines at the top of a file: each known key's 1-based
/// line and value (continuation lines joined), the 1-based line of the first
/// line after the header, and the problems found (unknown or repeated keys,
/// missing `required` keys). Shared by rule and macro files.
pub struct CommentHeader<'k> {
    pub values: BTreeMap<&'k str, (usize, String)>,
    pub body_line: usize,
    pub errors: Vec<HeaderError>,
}

impl<'k> CommentHeader<'k> {
    pub fn parse(text: &str, required: &[&'k str], optional: &[&'k str]) -> CommentHeader<'k> {
        let mut values: BTreeMap<&'k str, (usize, String)> = BTreeMap::new();
        let mut errors = Vec::new();
        let mut last_key: Option<&'k str> = None;
        let mut body_line = text.lines().count() + 1;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let trimmed = line.trim();
            let Some(comment) = trimmed.strip_prefix("--") else {
                if trimmed.is_empty() {
                    continue;
                }
                body_line = lineno;
                break;
            };
            if comment.trim().is_empty() {
                last_key = None;
                continue;
            }
            if comment.starts_with("   ") || comment.starts_with('\t') {
                if let Some(key) = last_key {
                    let entry = values.get_mut(key).expect("last key was inserted");
                    entry.1.push(' ');
                    entry.1.push_str(comment.trim());
                    continue;
                }
            }
            let Some((key, value)) = comment.split_once(':') else {
                last_key = None;
                continue; // a free-form comment inside the header
            };
            let key = key.trim();
            let Some(known) = required.iter().chain(optional.iter()).find(|k| **k == key) else {
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                    errors.push(HeaderError {
                        line: lineno,
                        message: format!("unknown header key {key:?}"),
                    });
                }
                last_key = None;
                continue;
            };
            if values.contains_key(known) {
                errors.push(HeaderError {
                    line: lineno,
                    message: format!("header key {key:?} given twice"),
                });
            }
            values.insert(*known, (lineno, value.trim().to_string()));
            last_key = Some(*known);
        }
        for key in required {
            if !values.contains_key(key) {
                errors.push(HeaderError {
                    line: 1,
                    message: format!("missing required header key {key:?}"),
                });
            }
        }
        CommentHeader {
            values,
            body_line,
            errors,
        }
    }

    /// The value of `key`, empty when absent.
    pub fn get(&self, key: &str) -> String {
        self.values
            .get(key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The line of `key`, 1 when absent.
    pub fn line_of(&self, key: &str) -> usize {
        self.values.get(key).map(|(l, _)| *l).unwrap_or(1)
    }

    /// The comma-separated items of `key`.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Parse the header at the top of `text`.
///
/// Returns the metadata and the 1-based line of the first line after the
/// header, or every problem found.
pub fn parse_header(text: &str) -> Result<(RuleMeta, usize), Vec<HeaderError>> {
    let header = CommentHeader::parse(text, &REQUIRED, &OPTIONAL);
    let CommentHeader {
        ref values,
        body_line,
        ..
    } = header;
    let mut errors = header.errors.clone();
    let get = |k: &str| header.get(k);
    let line_of = |k: &str| header.line_of(k);
    let list = |k: &str| header.list(k);

    let id = get("id");
    if values.contains_key("id")
        && (id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        errors.push(HeaderError {
            line: line_of("id"),
            message: format!("invalid rule id {id:?}: use letters, digits, '.', '_' and '-'"),
        });
    }
    for key in ["title", "description", "author"] {
        if values.contains_key(key) && get(key).is_empty() {
            errors.push(HeaderError {
                line: line_of(key),
                message: format!("header key {key:?} is empty"),
            });
        }
    }
    let severity = match get("severity").parse::<Severity>() {
        Ok(s) => Some(s),
        Err(e) => {
            if values.contains_key("severity") {
                errors.push(HeaderError {
                    line: line_of("severity"),
                    message: e.to_string(),
                });
            }
            None
        }
    };
    let source = match get("source").parse::<SourceKind>() {
        Ok(s) => Some(s),
        Err(e) => {
            if values.contains_key("source") {
                errors.push(HeaderError {
                    line: line_of("source"),
                    message: e.to_string(),
                });
            }
            None
        }
    };
    let mode = match get("mode").as_str() {
        "" | "event" => RuleMode::Event,
        "correlation" => RuleMode::Correlation,
        other => {
            errors.push(HeaderError {
                line: line_of("mode"),
                message: format!("invalid mode {other:?}: expected event or correlation"),
            });
            RuleMode::Event
        }
    };
    let window = header_duration(&header, "window", &mut errors);
    let suppress = header_duration(&header, "suppress", &mut errors);
    match mode {
        RuleMode::Correlation if window.is_none() && !values.contains_key("window") => errors.push(HeaderError {
            line: line_of("mode"),
            message: "a correlation rule needs a window (e.g. `-- window: 10m`): how long events are retained".into(),
        }),
        RuleMode::Event if values.contains_key("window") => errors.push(HeaderError {
            line: line_of("window"),
            message: "window applies to correlation rules (`-- mode: correlation`)".into(),
        }),
        _ => {}
    }
    let key = Some(get("key")).filter(|k| !k.trim().is_empty());
    if key.is_some() && mode != RuleMode::Correlation {
        errors.push(HeaderError {
            line: line_of("key"),
            message: "key applies to correlation rules (`-- mode: correlation`)".into(),
        });
    }
    let first_seen = first_seen_meta(&header, mode, &mut errors);
    let suppress_key = list("suppress_key");
    if !suppress_key.is_empty() && suppress.is_none() {
        errors.push(HeaderError {
            line: line_of("suppress_key"),
            message: "suppress_key needs suppress".into(),
        });
    }
    // `none`: the rule maps to no technique, said on purpose (an imported
    // Sigma rule tagged with tactics only); an empty value is a mistake.
    let mitre = match list("mitre").as_slice() {
        [none] if none == "none" => vec![],
        _ => list("mitre"),
    };
    if values.contains_key("mitre") && mitre.is_empty() && get("mitre") != "none" {
        errors.push(HeaderError {
            line: line_of("mitre"),
            message: "mitre lists no technique (write `none` for a rule that maps to none)".into(),
        });
    }
    for t in &mitre {
        if !is_attack_id(t) {
            errors.push(HeaderError {
                line: line_of("mitre"),
                message: format!(
                    "invalid MITRE ATT&CK technique id {t:?}: expected T1234 or T1234.567"
                ),
            });
        }
    }
    let based_on = list("based_on");
    for b in &based_on {
        let corpus = b.split_once(':').map(|(c, _)| c);
        if !matches!(
            corpus,
            Some("panther" | "falco" | "sigma" | "vigil" | "elastic" | "mitre")
        ) {
            errors.push(HeaderError {
                line: line_of("based_on"),
                message: format!(
                    "based_on entry {b:?} must be corpus:name with corpus one of panther, falco, sigma, elastic, mitre, vigil"
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let meta = RuleMeta {
        id,
        title: get("title"),
        severity: severity.expect("checked above"),
        description: get("description"),
        mitre,
        source: source.expect("checked above"),
        mode,
        tags: list("tags"),
        author: get("author"),
        references: list("references"),
        runbook: Some(get("runbook")).filter(|r| !r.is_empty()),
        based_on,
        window,
        suppress,
        suppress_key,
        key,
        first_seen,
    };
    Ok((meta, body_line))
}

/// The duration under `key`, `None` when absent or invalid (then noted in
/// `errors`).
fn header_duration(
    header: &CommentHeader,
    key: &str,
    errors: &mut Vec<HeaderError>,
) -> Option<Duration> {
    if !header.values.contains_key(key) {
        return None;
    }
    match parse_duration(&header.get(key)) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(HeaderError {
                line: header.line_of(key),
                message: format!("{key}: {e}"),
            });
            None
        }
    }
}

/// The `first_seen`, `history` and `learning` keys: all or none of the
/// first two, on a per-event rule.
fn first_seen_meta(
    header: &CommentHeader,
    mode: RuleMode,
    errors: &mut Vec<HeaderError>,
) -> Option<FirstSeenMeta> {
    let given = |k: &str| header.values.contains_key(k);
    if !given("first_seen") {
        for key in ["history", "learning"] {
            if given(key) {
                errors.push(HeaderError {
                    line: header.line_of(key),
                    message: format!(
                        "{key} applies to first-seen rules (`-- first_seen: <columns>`)"
                    ),
                });
            }
        }
        return None;
    }
    let line = header.line_of("first_seen");
    let columns = header.list("first_seen");
    let mut fail = |message: String| errors.push(HeaderError { line, message });
    if mode != RuleMode::Event {
        fail("first_seen applies to per-event rules (no `-- mode: correlation`)".into());
    }
    if columns.is_empty() {
        fail("first_seen names no output column".into());
    }
    if !given("history") {
        fail("a first-seen rule needs a history (e.g. `-- history: 14d`): how long a combination counts as seen".into());
    }
    if given("suppress") {
        fail("first_seen and suppress do not combine: a first-seen rule raises one alert per new combination already".into());
    }
    let history = header_duration(header, "history", errors)?;
    let learning = header_duration(header, "learning", errors).unwrap_or(history);
    (mode == RuleMode::Event && !columns.is_empty() && !given("suppress")).then_some(
        FirstSeenMeta {
            columns,
            history,
            learning,
        },
    )
}

/// `T` followed by four digits, optionally `.` and three digits.
fn is_attack_id(s: &str) -> bool {
    let b = s.as_bytes();
    let technique = b.len() >= 5 && b[0] == b'T' && b[1..5].iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => technique,
        9 => technique && b[5] == b'.' && b[6..9].iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "-- id: k8s.pod_exec\n-- title: Exec into pod\n-- severity: high\n-- description: A shell\n--    in a pod.\n-- mitre: T1609, T1552.007\n-- source: k8s_audit\n-- tags: a, b\n-- author: Vigil\n-- based_on: panther:Kubernetes.Pod.Exec, falco:Attach/Exec Pod\n\nSELECT 1 FROM k8s_audit\n";

    #[test]
    fn the_runbook_header_is_optional_and_kept() {
        let base = "-- id: t.r\n-- title: t\n-- severity: high\n-- description: d\n-- mitre: T1609\n-- source: k8s_audit\n-- author: a\n-- based_on: vigil:t\n";
        let (meta, _) = parse_header(&format!("{base}SELECT 1")).unwrap();
        assert_eq!(meta.runbook, None);
        let (meta, _) = parse_header(&format!(
            "{base}-- runbook: https://runbooks.example.com/pod-exec\nSELECT 1"
        ))
        .unwrap();
        assert_eq!(
            meta.runbook.as_deref(),
            Some("https://runbooks.example.com/pod-exec")
        );
    }

    #[test]
    fn parses_a_complete_header() {
        let (meta, body) = parse_header(GOOD).unwrap();
        assert_eq!(meta.id, "k8s.pod_exec");
        assert_eq!(meta.severity, Severity::High);
        assert_eq!(meta.description, "A shell in a pod.");
        assert_eq!(meta.mitre, vec!["T1609", "T1552.007"]);
        assert_eq!(meta.source, SourceKind::K8sAudit);
        assert_eq!(meta.tags, vec!["a", "b"]);
        assert_eq!(
            meta.based_on,
            vec!["panther:Kubernetes.Pod.Exec", "falco:Attach/Exec Pod"]
        );
        assert_eq!(body, 12);
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = GOOD
            .replace("high", "urgent")
            .replace("T1609,", "X1609,")
            .replace("-- author: Vigil\n", "");
        let errors = parse_header(&text).unwrap_err();
        let messages: Vec<_> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert!(
            messages
                .iter()
                .any(|(l, m)| *l == 3 && m.contains("invalid severity \"urgent\"")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|(l, m)| *l == 6 && m.contains("\"X1609\"")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|(_, m)| m.contains("missing required header key \"author\"")),
            "{messages:?}"
        );
    }

    #[test]
    fn mitre_none_is_no_technique_but_empty_is_refused() {
        let none = GOOD.replace("-- mitre: T1609, T1552.007", "-- mitre: none");
        assert!(parse_header(&none).unwrap().0.mitre.is_empty());
        let empty = GOOD.replace("-- mitre: T1609, T1552.007", "-- mitre:");
        assert!(parse_header(&empty).is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_based_on() {
        let text = GOOD
            .replace("-- tags: a, b", "-- tagz: a")
            .replace("panther:", "splunk:");
        let errors = parse_header(&text).unwrap_err();
        assert!(errors
            .iter()
            .any(|e| e.message.contains("unknown header key \"tagz\"")));
        assert!(errors
            .iter()
            .any(|e| e.message.contains("splunk:Kubernetes.Pod.Exec")));
    }

    #[test]
    fn correlation_headers_need_a_window() {
        let text = GOOD.replace(
            "-- tags: a, b",
            "-- mode: correlation\n-- window: 10m\n-- suppress: 1h\n-- suppress_key: user",
        );
        let (meta, _) = parse_header(&text).unwrap();
        assert_eq!(meta.mode, RuleMode::Correlation);
        assert_eq!(meta.window, Some(Duration::from_secs(600)));
        assert_eq!(meta.suppress, Some(Duration::from_secs(3600)));
        assert_eq!(meta.suppress_key, vec!["user"]);
        let errors =
            parse_header(&GOOD.replace("-- tags: a, b", "-- mode: correlation")).unwrap_err();
        assert!(errors[0].message.contains("needs a window"));
        let errors = parse_header(&GOOD.replace("-- tags: a, b", "-- window: 5m")).unwrap_err();
        assert!(errors[0].message.contains("correlation rules"));
        let errors = parse_header(&GOOD.replace(
            "-- tags: a, b",
            "-- mode: correlation\n-- window: 5 minutes",
        ))
        .unwrap_err();
        assert!(errors[0].message.contains("unit must be"), "{errors:?}");
    }

    #[test]
    fn first_seen_headers() {
        let text = GOOD.replace(
            "-- tags: a, b",
            "-- first_seen: user, namespace\n-- history: 14d\n-- learning: 2d",
        );
        let (meta, _) = parse_header(&text).unwrap();
        let first_seen = meta.first_seen.unwrap();
        assert_eq!(first_seen.columns, vec!["user", "namespace"]);
        assert_eq!(first_seen.history, Duration::from_secs(14 * 86_400));
        assert_eq!(first_seen.learning, Duration::from_secs(2 * 86_400));
        // Learning defaults to the whole history.
        let text = GOOD.replace("-- tags: a, b", "-- first_seen: user\n-- history: 3d");
        let (meta, _) = parse_header(&text).unwrap();
        assert_eq!(
            meta.first_seen.unwrap().learning,
            Duration::from_secs(3 * 86_400)
        );
        let message = |replacement: &str| {
            let errors = parse_header(&GOOD.replace("-- tags: a, b", replacement)).unwrap_err();
            errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert!(message("-- first_seen: user").contains("needs a history"));
        assert!(message("-- history: 14d").contains("applies to first-seen rules"));
        assert!(
            message("-- first_seen: user\n-- history: 1d\n-- suppress: 1h")
                .contains("do not combine")
        );
        assert!(message(
            "-- first_seen: user\n-- history: 1d\n-- mode: correlation\n-- window: 1m"
        )
        .contains("per-event rules"));
        assert!(message("-- first_seen: user\n-- history: 400d").contains("at most 366d"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        let zero = parse_duration("0s").unwrap_err();
        assert_eq!(
            zero,
            HeaderValueError::Duration {
                value: "0s".into(),
                problem: DurationProblem::Zero
            }
        );
        assert_eq!(
            zero.to_string(),
            "invalid duration \"0s\": must be positive"
        );
        assert_eq!(
            parse_duration(" m ").unwrap_err().to_string(),
            "invalid duration \"m\": expected e.g. 30s, 5m, 1h"
        );
        assert_eq!(
            parse_duration("5 minutes").unwrap_err().to_string(),
            "invalid duration \"5 minutes\": unit must be ms, s, m, h or d"
        );
        // Beyond the bound, and beyond u64 milliseconds: an error, not an
        // overflow (a rule file must never crash the service).
        assert_eq!(parse_duration("366d").unwrap(), MAX_DURATION);
        for long in ["367d", "999999999999999d", "18446744073709551615h"] {
            assert_eq!(
                parse_duration(long).unwrap_err().to_string(),
                format!("invalid duration \"{long}\": must be at most 366d")
            );
        }
        assert_eq!(
            "urgent".parse::<Severity>().unwrap_err().to_string(),
            "invalid severity \"urgent\": expected info, low, medium, high or critical"
        );
    }

    #[test]
    fn attack_ids() {
        assert!(is_attack_id("T1609"));
        assert!(is_attack_id("T1552.007"));
        assert!(!is_attack_id("T160"));
        assert!(!is_attack_id("T1552.07"));
        assert!(!is_attack_id("TA0001"));
    }
}
