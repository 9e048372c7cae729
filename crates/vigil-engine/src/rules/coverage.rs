//! ATT&CK coverage of a rule set (`vigil rules coverage`).
//!
//! The matrix (tactics and their techniques) is data:
//! `crates/vigil-engine/data/attack-containers.toml`, built into the binary as
//! [`Matrix::builtin`]. Coverage is computed from the rules' `-- mitre:`
//! header: a rule technique id covers a matrix entry when it is the entry's
//! id, a sub-technique of it, or its parent (see [`covers`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Rule;

/// The built-in matrix file.
pub const BUILTIN_MATRIX: &str = include_str!("../../data/attack-containers.toml");

/// An ATT&CK matrix: tactics in matrix order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub name: String,
    pub version: String,
    #[serde(rename = "tactic")]
    pub tactics: Vec<Tactic>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tactic {
    pub id: String,
    pub name: String,
    pub techniques: Vec<Technique>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Technique {
    pub id: String,
    pub name: String,
}

impl Matrix {
    /// The matrix shipped with Vigil (ATT&CK for Containers).
    pub fn builtin() -> Matrix {
        Matrix::parse(BUILTIN_MATRIX).expect("the built-in matrix parses (tested)")
    }

    /// Parse a matrix file.
    pub fn parse(text: &str) -> Result<Matrix, MatrixError> {
        let m: Matrix = toml::from_str(text).map_err(|source| MatrixError::Toml { source })?;
        for (tactic, t) in m
            .tactics
            .iter()
            .flat_map(|tactic| tactic.techniques.iter().map(move |t| (tactic, t)))
        {
            if !is_technique_id(&t.id) {
                return Err(MatrixError::TechniqueId {
                    id: t.id.clone(),
                    tactic: tactic.id.clone(),
                });
            }
        }
        Ok(m)
    }
}

/// Why a matrix file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// Not TOML, or not a matrix (unknown or missing keys).
    #[error("invalid matrix file: {source}")]
    Toml {
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "invalid technique id {id:?} under tactic {tactic} (expected e.g. T1609 or T1552.007)"
    )]
    TechniqueId { id: String, tactic: String },
}

fn is_technique_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, "000"));
    main.len() == 4 && sub.len() == 3 && main.chars().chain(sub.chars()).all(|c| c.is_ascii_digit())
}

/// Whether a rule's technique id `rule` covers the matrix entry `entry`:
/// the same id, a sub-technique of the entry (`T1552.007` covers `T1552`),
/// or the entry's parent (`T1098` covers `T1098.006`: a rule tagged with the
/// technique is taken to cover its container sub-technique).
pub fn covers(rule: &str, entry: &str) -> bool {
    let parent = |id: &str| id.split('.').next().unwrap_or(id).to_string();
    rule == entry
        || (rule.starts_with(entry) && rule.as_bytes().get(entry.len()) == Some(&b'.'))
        || (!rule.contains('.') && parent(entry) == rule)
}

/// Coverage of one matrix entry under one tactic.
#[derive(Debug, Clone, Serialize)]
pub struct TechniqueCoverage {
    pub id: String,
    pub name: String,
    /// Ids of the rules covering it, sorted.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TacticCoverage {
    pub id: String,
    pub name: String,
    pub techniques: Vec<TechniqueCoverage>,
}

/// The coverage report.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub matrix: String,
    pub version: String,
    pub rules: usize,
    pub tactics: Vec<TacticCoverage>,
    /// Distinct matrix techniques (a technique under several tactics counts once).
    pub techniques_total: usize,
    pub techniques_covered: usize,
    /// Distinct uncovered techniques, as `id name`, in matrix order.
    pub uncovered: Vec<String>,
    /// Technique ids used by rules that match no matrix entry (they may be
    /// enterprise techniques outside the containers matrix), with their rules.
    pub outside_matrix: Vec<TechniqueCoverage>,
}

/// Compute the coverage of `rules` on `matrix`.
pub fn coverage(matrix: &Matrix, rules: &[Rule]) -> Coverage {
    let mut tactics = Vec::new();
    let mut all: Vec<(String, String)> = Vec::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for tactic in &matrix.tactics {
        let mut techniques = Vec::new();
        for t in &tactic.techniques {
            let mut ids: Vec<String> = rules
                .iter()
                .filter(|r| r.meta.mitre.iter().any(|m| covers(m, &t.id)))
                .map(|r| r.meta.id.clone())
                .collect();
            ids.sort();
            if !all.iter().any(|(id, _)| *id == t.id) {
                all.push((t.id.clone(), t.name.clone()));
            }
            if !ids.is_empty() {
                covered.insert(t.id.clone());
            }
            techniques.push(TechniqueCoverage {
                id: t.id.clone(),
                name: t.name.clone(),
                rules: ids,
            });
        }
        tactics.push(TacticCoverage {
            id: tactic.id.clone(),
            name: tactic.name.clone(),
            techniques,
        });
    }
    let mut outside: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in rules {
        for m in &r.meta.mitre {
            if !all.iter().any(|(id, _)| covers(m, id)) {
                outside
                    .entry(m.clone())
                    .or_default()
                    .push(r.meta.id.clone());
            }
        }
    }
    Coverage {
        matrix: matrix.name.clone(),
        version: matrix.version.clone(),
        rules: rules.len(),
        tactics,
        techniques_total: all.len(),
        techniques_covered: covered.len(),
        uncovered: all
            .iter()
            .filter(|(id, _)| !covered.contains(id))
            .map(|(id, n)| format!("{id} {n}"))
            .collect(),
        outside_matrix: outside
            .into_iter()
            .map(|(id, mut rules)| {
                rules.sort();
                TechniqueCoverage {
                    id,
                    name: String::new(),
                    rules,
                }
            })
            .collect(),
    }
}

impl Coverage {
    /// The text report: per tactic, each technique with its rules (or
    /// `-- none --`), then the uncovered techniques and the total.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}): coverage by {} rules",
            self.matrix, self.version, self.rules
        );
        for tactic in &self.tactics {
            let n = tactic
                .techniques
                .iter()
                .filter(|t| !t.rules.is_empty())
                .count();
            let _ = writeln!(
                s,
                "\n{} {} ({n}/{} techniques)",
                tactic.id,
                tactic.name,
                tactic.techniques.len()
            );
            for t in &tactic.techniques {
                let mark = if t.rules.is_empty() { " " } else { "x" };
                let rules = if t.rules.is_empty() {
                    "-- none --".to_string()
                } else {
                    t.rules.join(", ")
                };
                let _ = writeln!(s, "  [{mark}] {:<10} {:<60} {rules}", t.id, t.name);
            }
        }
        let _ = writeln!(s, "\nuncovered techniques ({}):", self.uncovered.len());
        for u in &self.uncovered {
            let _ = writeln!(s, "  {u}");
        }
        if !self.outside_matrix.is_empty() {
            let _ = writeln!(s, "\nrule techniques outside this matrix:");
            for t in &self.outside_matrix {
                let _ = writeln!(s, "  {:<10} {}", t.id, t.rules.join(", "));
            }
        }
        let pct = if self.techniques_total == 0 {
            0.0
        } else {
            100.0 * self.techniques_covered as f64 / self.techniques_total as f64
        };
        let _ = writeln!(
            s,
            "\ntotal: {} of {} techniques covered ({pct:.0}%)",
            self.techniques_covered, self.techniques_total
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::rules::parse_rule;

    fn rule(id: &str, mitre: &str) -> Rule {
        let text = format!(
            "-- id: {id}\n-- title: T\n-- severity: low\n-- description: d\n-- mitre: {mitre}\n-- source: k8s_audit\n-- author: a\n-- based_on: vigil:test\nSELECT 1 FROM k8s_audit\n"
        );
        parse_rule(&PathBuf::from(format!("{id}.sql")), &text).unwrap()
    }

    const MATRIX: &str = r#"
name = "M"
version = "1"
[[tactic]]
id = "TA1"
name = "Execution"
techniques = [ { id = "T1609", name = "Admin command" }, { id = "T1053.007", name = "Orchestration job" } ]
[[tactic]]
id = "TA2"
name = "Credential Access"
techniques = [ { id = "T1552", name = "Unsecured Credentials" }, { id = "T1609", name = "Admin command" } ]
"#;

    #[test]
    fn technique_ids_match_exactly_by_sub_technique_or_by_parent() {
        assert!(covers("T1609", "T1609"));
        assert!(covers("T1552.007", "T1552"));
        assert!(covers("T1053", "T1053.007"));
        assert!(!covers("T1053.005", "T1053.007"));
        assert!(!covers("T160", "T1609"));
        assert!(!covers("T16090", "T1609"));
    }

    #[test]
    fn reports_rules_per_technique_uncovered_and_total() {
        let m = Matrix::parse(MATRIX).unwrap();
        let rules = vec![
            rule("r.exec", "T1609"),
            rule("r.token", "T1552.007, T1059"),
            rule("r.b", "T1609"),
        ];
        let c = coverage(&m, &rules);
        assert_eq!(c.tactics[0].techniques[0].rules, vec!["r.b", "r.exec"]);
        assert!(c.tactics[0].techniques[1].rules.is_empty());
        assert_eq!(c.tactics[1].techniques[0].rules, vec!["r.token"]);
        // T1609 is under two tactics but counts once.
        assert_eq!((c.techniques_covered, c.techniques_total), (2, 3));
        assert_eq!(c.uncovered, vec!["T1053.007 Orchestration job"]);
        assert_eq!(c.outside_matrix.len(), 1);
        assert_eq!(
            (
                c.outside_matrix[0].id.as_str(),
                c.outside_matrix[0].rules.clone()
            ),
            ("T1059", vec!["r.token".to_string()])
        );
        let text = c.render_text();
        assert!(
            text.contains("total: 2 of 3 techniques covered (67%)"),
            "{text}"
        );
        assert!(text.contains("TA1 Execution (1/2 techniques)"), "{text}");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["techniques_covered"], 2);
        assert_eq!(json["tactics"][1]["techniques"][0]["rules"][0], "r.token");
    }

    #[test]
    fn the_builtin_matrix_parses_and_rejects_bad_ids() {
        let m = Matrix::builtin();
        assert_eq!(m.tactics.len(), 9);
        assert!(m
            .tactics
            .iter()
            .any(|t| t.techniques.iter().any(|x| x.id == "T1611")));
        let bad = MATRIX.replace("T1609", "X1609");
        let err = Matrix::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("invalid technique id \"X1609\" under tactic TA"),
            "{err}"
        );
    }
}
