//! Which alerts an output takes: `[outputs.filter]`.

use serde::Deserialize;

use crate::alert::Alert;
use crate::rules::Severity;

/// Every condition set must hold; an empty filter takes every alert.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The least severity taken.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Rule ids taken: exact ids, or prefixes ending in `*`
    /// (`k8s.*`). Empty: every rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Tags: an alert carrying any of them is taken. Empty: any tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Filter {
    /// Whether the output takes `alert`.
    pub fn accepts(&self, alert: &Alert) -> bool {
        self.min_severity.is_none_or(|min| alert.severity >= min)
            && (self.rules.is_empty() || self.rules.iter().any(|r| rule_matches(r, &alert.rule_id)))
            && (self.tags.is_empty() || alert.tags.iter().any(|t| self.tags.contains(t)))
    }
}

fn rule_matches(pattern: &str, rule_id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => rule_id.starts_with(prefix),
        None => pattern == rule_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, severity: &str, tags: &str) -> Alert {
        let text = format!(
            "-- id: {rule}\n-- title: t\n-- severity: {severity}\n-- description: d\n-- mitre: T1609\n-- source: k8s_audit\n-- author: a\n-- based_on: vigil:t\n-- tags: {tags}\nSELECT 1"
        );
        let (meta, _) = vigil_model::rule::parse_header(&text).unwrap();
        Alert::new(&meta, 0, 0, Default::default(), Vec::new())
    }

    #[test]
    fn every_set_condition_must_hold() {
        let any = Filter::default();
        assert!(any.accepts(&alert("k8s.a", "info", "x")));
        let f: Filter = toml::from_str(
            "min_severity = \"high\"\nrules = [\"k8s.*\", \"falco.one\"]\ntags = [\"attack\"]",
        )
        .unwrap();
        assert!(f.accepts(&alert("k8s.a", "high", "attack, persistence")));
        assert!(f.accepts(&alert("falco.one", "critical", "attack")));
        assert!(!f.accepts(&alert("k8s.a", "medium", "attack")), "severity");
        assert!(!f.accepts(&alert("falco.two", "high", "attack")), "rule");
        assert!(!f.accepts(&alert("k8s.a", "high", "hygiene")), "tags");
    }

    #[test]
    fn an_unknown_filter_key_is_refused_by_name() {
        let e = toml::from_str::<Filter>("severity = \"high\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `severity`"), "{e}");
    }
}
