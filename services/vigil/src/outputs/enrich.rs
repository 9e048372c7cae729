//! Enrichment before routing: the owning team (a lookup table of the rule
//! pack, namespace → team), the cluster's name, the rule's description and
//! runbook, and ATT&CK technique names.
//!
//! Read once at start from the same rule layers the engine loads; a rule
//! hot reload does not change it (restart to pick up a new team table).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::alert::Alert;
use crate::rules::{Layers, RulePack};

use super::OutputsError;

/// The ATT&CK techniques the shipped pack names, `id,name` (Enterprise
/// ATT&CK v16 names).
const TECHNIQUES_CSV: &str = include_str!("attack_techniques.csv");

/// The column of the team lookup table that names the team.
pub const TEAM_COLUMN: &str = "team";

/// One ATT&CK technique: its id and, when known, its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Technique {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What enrichment adds to an alert (the `enrichment` object of the
/// outputs' JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Enrichment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The alert's `fields.namespace`, when it is a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    pub techniques: Vec<Technique>,
}

/// An alert as read from the alerts topic, with its enrichment.
#[derive(Debug, Clone)]
pub struct Routed {
    pub alert: Alert,
    /// The record as read (the payload of an `output_error` dead letter).
    pub raw: String,
    pub enrichment: Enrichment,
}

/// The JSON the webhook and Kafka outputs send: the alert's fields and an
/// `enrichment` object.
#[derive(Serialize)]
struct RoutedJson<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    enrichment: &'a Enrichment,
}

impl Routed {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&RoutedJson {
            alert: &self.alert,
            enrichment: &self.enrichment,
        })
        .expect("alerts serialize")
    }
}

/// A rule's text the alert does not carry.
#[derive(Debug, Clone, Default)]
struct RuleText {
    description: String,
    runbook: Option<String>,
}

/// Adds [`Enrichment`] to alerts.
#[derive(Debug, Clone, Default)]
pub struct Enricher {
    cluster: Option<String>,
    teams: HashMap<String, String>,
    rules: HashMap<String, RuleText>,
    techniques: Arc<BTreeMap<String, String>>,
}

impl Enricher {
    /// Read the rule pack of `layers`: its rules' descriptions and
    /// runbooks, and the lookup table `team_lookup` (`""`: none), which must
    /// have a `team` column.
    pub fn load(
        layers: &Layers,
        cluster: &str,
        team_lookup: &str,
    ) -> Result<Enricher, OutputsError> {
        let pack = RulePack::load(layers).map_err(|e| OutputsError::RulePack(e.to_string()))?;
        let mut teams = HashMap::new();
        if !team_lookup.is_empty() {
            let table = pack.definitions.lookups.get(team_lookup).ok_or_else(|| {
                OutputsError::Config {
                    key: "routing.team_lookup".into(),
                    why: format!(
                        "no lookup table {team_lookup:?} in the rule layers (lookups/{team_lookup}.csv)"
                    ),
                }
            })?;
            let column = table
                .value_column(TEAM_COLUMN)
                .ok_or_else(|| OutputsError::Config {
                    key: "routing.team_lookup".into(),
                    why: format!("the lookup table {team_lookup:?} has no {TEAM_COLUMN:?} column"),
                })?;
            teams = table
                .rows
                .iter()
                .map(|(namespace, values)| (namespace.clone(), values[column].clone()))
                .collect();
        }
        let rules = pack
            .rules
            .iter()
            .map(|r| {
                let text = RuleText {
                    description: r.meta.description.clone(),
                    runbook: r.meta.runbook.clone(),
                };
                (r.meta.id.clone(), text)
            })
            .collect();
        Ok(Enricher {
            cluster: Some(cluster.to_string()).filter(|c| !c.is_empty()),
            teams,
            rules,
            techniques: Arc::new(technique_names()),
        })
    }

    /// The alert with its enrichment.
    pub fn enrich(&self, alert: Alert, raw: String) -> Routed {
        let namespace = alert
            .fields
            .get("namespace")
            .and_then(|v| v.as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let team = namespace.as_ref().and_then(|n| self.teams.get(n)).cloned();
        let rule = self.rules.get(&alert.rule_id);
        let enrichment = Enrichment {
            cluster: self.cluster.clone(),
            namespace,
            team,
            rule_description: rule.map(|r| r.description.clone()),
            runbook: rule.and_then(|r| r.runbook.clone()),
            techniques: alert
                .mitre
                .iter()
                .map(|id| Technique {
                    id: id.clone(),
                    name: self.techniques.get(id).cloned(),
                })
                .collect(),
        };
        Routed {
            alert,
            raw,
            enrichment,
        }
    }
}

/// The shipped technique table, id → name.
pub fn technique_names() -> BTreeMap<String, String> {
    TECHNIQUES_CSV
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(','))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pack_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules")
    }

    /// Every technique the shipped rules name has a name in the table.
    #[test]
    fn the_technique_table_names_every_technique_of_the_pack() {
        let pack = RulePack::load(&Layers::dir(&pack_dir())).unwrap();
        let names = technique_names();
        let missing: Vec<&String> = pack
            .rules
            .iter()
            .flat_map(|r| &r.meta.mitre)
            .filter(|id| !names.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "add to attack_techniques.csv: {missing:?}"
        );
        assert_eq!(names["T1609"], "Container Administration Command");
    }

    #[test]
    fn team_comes_from_the_lookup_table_of_an_overlay() {
        let overlay = tempfile::tempdir().unwrap();
        std::fs::create_dir(overlay.path().join("lookups")).unwrap();
        std::fs::write(
            overlay.path().join("lookups/namespace_teams.csv"),
            "namespace,team\npayments,payments-sre\n",
        )
        .unwrap();
        let layers = Layers {
            overlays: vec![overlay.path().to_path_buf()],
            ..Layers::dir(&pack_dir())
        };
        let enricher = Enricher::load(&layers, "prod-eu-1", "namespace_teams").unwrap();
        let pack = RulePack::load(&Layers::dir(&pack_dir())).unwrap();
        let meta = &pack.rules[0].meta;
        let fields = serde_json::json!({"namespace": "payments"});
        let alert = Alert::new(meta, 0, 0, fields.as_object().unwrap().clone(), Vec::new());
        let routed = enricher.enrich(alert.clone(), alert.to_json());
        let e = &routed.enrichment;
        assert_eq!(e.team.as_deref(), Some("payments-sre"));
        assert_eq!(e.cluster.as_deref(), Some("prod-eu-1"));
        assert_eq!(
            e.rule_description.as_deref(),
            Some(meta.description.as_str())
        );
        assert!(e.techniques.iter().all(|t| t.name.is_some()));
        let json: serde_json::Value = serde_json::from_str(&routed.to_json()).unwrap();
        assert_eq!(json["alert_id"], alert.alert_id);
        assert_eq!(json["enrichment"]["team"], "payments-sre");

        let e = Enricher::load(&layers, "", "no_such_table").unwrap_err();
        assert!(e.to_string().contains("routing.team_lookup"), "{e}");
    }
}
