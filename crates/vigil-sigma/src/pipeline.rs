//! Pipelines: which Vigil table a Sigma logsource reads and how each Sigma
//! field maps to SQL over that table (pySigma's processing pipelines, kept
//! as YAML data: `crates/vigil-sigma/pipelines/*.yml`, built in; a user's
//! `--pipeline FILE` extends or overrides them).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Result, SigmaError};
use crate::sigma::LogSource;

/// The shipped pipelines, in the order they are tried.
const BUILTIN: [(&str, &str); 3] = [
    (
        "kubernetes_audit.yml",
        include_str!("../pipelines/kubernetes_audit.yml"),
    ),
    (
        "linux_process_creation.yml",
        include_str!("../pipelines/linux_process_creation.yml"),
    ),
    (
        "linux_network_connection.yml",
        include_str!("../pipelines/linux_network_connection.yml"),
    ),
];

/// What a field's SQL expression is, which decides how values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A string (Utf8).
    #[default]
    String,
    /// An integer: integer values compare as numbers, others as text.
    Int,
    /// A list of strings: a value matches when some element matches.
    List,
}

/// The mapping of one Sigma field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// SQL expression over the pipeline's table.
    pub sql: String,
    #[serde(default)]
    pub kind: Kind,
    /// The source only ever gives lower-case values here (audit verbs and
    /// resources): a case-insensitive comparison is then an exact one with
    /// the lower-cased value, without `lower()` per event.
    #[serde(default)]
    pub lowercase: bool,
    /// A list field computed from the event (pod_spec's lists, JSONPath
    /// values) is empty when the event does not have the field: an empty
    /// list is then absent for `exists` and `null`. A list column decoded
    /// from the event is NULL when absent and empty when the event has `[]`.
    #[serde(default)]
    pub empty_is_absent: bool,
    /// The field's path in the raw event as the source writes it, when
    /// there is one: documentation, and where the differential tests'
    /// oracle reads the field.
    #[serde(default)]
    pub event: Option<String>,
}

/// The logsource keys a pipeline requires; a key it leaves out may be
/// anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSourceSpec {
    pub product: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
}

/// One pipeline as written in YAML. Every key but `name` is optional so
/// that a user file can override part of a shipped pipeline by naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    pub description: Option<String>,
    pub logsource: Option<LogSourceSpec>,
    /// The Vigil table (rule header `source`).
    pub table: Option<String>,
    /// An SQL condition every rule of this logsource adds (the event type).
    pub filter: Option<String>,
    /// String columns a keyword search looks in.
    pub keywords: Option<Vec<String>>,
    /// The SELECT list of the imported rules.
    pub output: Option<Vec<String>>,
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// Sigma field prefixes that are JSON text columns: `requestObject` ->
    /// `request_object`; `requestObject.spec.hostNetwork` is then the value
    /// at `$.spec.hostNetwork` (a list kind: an array there is not crossed).
    #[serde(default)]
    pub json: BTreeMap<String, String>,
    /// Sigma field prefixes that are map columns: `annotations.KEY` ->
    /// `annotations['KEY']`.
    #[serde(default)]
    pub maps: BTreeMap<String, String>,
}

/// A complete pipeline (after merging), ready to map rules.
/// Invariant: `table` and `logsource` are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub name: String,
    pub logsource: LogSourceSpec,
    pub table: String,
    pub filter: Option<String>,
    pub keywords: Vec<String>,
    pub output: Vec<String>,
    pub fields: BTreeMap<String, FieldSpec>,
    pub json: BTreeMap<String, String>,
    pub maps: BTreeMap<String, String>,
}

impl Pipeline {
    /// How many logsource keys this pipeline fixes, when `ls` has all of
    /// them with the same values; None when it does not apply.
    fn matches(&self, ls: &LogSource) -> Option<usize> {
        let pairs = [
            (&self.logsource.product, &ls.product),
            (&self.logsource.category, &ls.category),
            (&self.logsource.service, &ls.service),
        ];
        let mut n = 0;
        for (want, have) in pairs {
            if let Some(w) = want {
                if have.as_deref() != Some(w.as_str()) {
                    return None;
                }
                n += 1;
            }
        }
        Some(n)
    }

    /// The SQL of Sigma field `name`, or why there is none.
    pub fn field(&self, name: &str) -> Result<FieldSpec> {
        if let Some(f) = self.fields.get(name) {
            return Ok(f.clone());
        }
        if let Some((prefix, rest)) = name.split_once('.') {
            if let Some(col) = self.json.get(prefix) {
                let path: String = rest
                    .split('.')
                    .map(|k| format!("['{}']", k.replace('\\', "\\\\").replace('\'', "\\'")))
                    .collect();
                return Ok(FieldSpec {
                    sql: format!("json_path_values({col}, {})", sql_str(&format!("${path}"))),
                    kind: Kind::List,
                    lowercase: false,
                    empty_is_absent: true,
                    event: Some(name.to_string()),
                });
            }
            if let Some(col) = self.maps.get(prefix) {
                return Ok(FieldSpec {
                    sql: format!("{col}[{}]", sql_str(rest)),
                    kind: Kind::String,
                    lowercase: false,
                    empty_is_absent: false,
                    event: Some(name.to_string()),
                });
            }
        }
        Err(SigmaError::UnmappedField {
            field: name.into(),
            pipeline: self.name.clone(),
        })
    }
}

/// An SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The pipelines in effect: the shipped ones, then the user's.
#[derive(Debug, Clone)]
pub struct Pipelines {
    pub all: Vec<Pipeline>,
}

impl Pipelines {
    /// The shipped pipelines.
    pub fn builtin() -> Pipelines {
        let mut specs = Vec::new();
        for (file, text) in BUILTIN {
            specs.extend(parse_specs(file, text).expect("shipped pipelines parse (tested)"));
        }
        Pipelines::from_specs(specs).expect("shipped pipelines are complete (tested)")
    }

    /// The shipped pipelines with `text` (the file `file`) applied: a
    /// pipeline with a shipped name replaces the keys it gives and adds or
    /// replaces fields; another name is a new pipeline, tried first.
    pub fn with_user(file: &str, text: &str) -> Result<Pipelines> {
        let mut specs = Vec::new();
        for (f, t) in BUILTIN {
            specs.extend(parse_specs(f, t)?);
        }
        for user in parse_specs(file, text)? {
            match specs.iter_mut().find(|s| s.name == user.name) {
                Some(base) => merge(base, user),
                None => specs.insert(0, user),
            }
        }
        Pipelines::from_specs(specs).map_err(|why| SigmaError::Pipeline {
            file: file.into(),
            why,
        })
    }

    fn from_specs(specs: Vec<PipelineSpec>) -> std::result::Result<Pipelines, String> {
        let all = specs
            .into_iter()
            .map(|s| {
                let missing = |k: &str| format!("pipeline {:?} has no {k}", s.name);
                Ok(Pipeline {
                    logsource: s.logsource.clone().ok_or_else(|| missing("logsource"))?,
                    table: s.table.clone().ok_or_else(|| missing("table"))?,
                    filter: s.filter.clone(),
                    keywords: s.keywords.clone().unwrap_or_default(),
                    output: s.output.clone().ok_or_else(|| missing("output"))?,
                    fields: s.fields.clone(),
                    json: s.json.clone(),
                    maps: s.maps.clone(),
                    name: s.name,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(Pipelines { all })
    }

    /// The pipeline for a rule's logsource: of those that apply, the one
    /// fixing the most keys (the first of equals).
    pub fn for_logsource(&self, ls: &LogSource) -> Result<&Pipeline> {
        let mut best: Option<(usize, &Pipeline)> = None;
        for p in &self.all {
            if let Some(n) = p.matches(ls) {
                if n > 0 && best.is_none_or(|(b, _)| n > b) {
                    best = Some((n, p));
                }
            }
        }
        best.map(|(_, p)| p)
            .ok_or_else(|| SigmaError::UnmappedLogsource(ls.to_string()))
    }
}

fn parse_specs(file: &str, text: &str) -> Result<Vec<PipelineSpec>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for de in yaml_serde::Deserializer::from_str(text) {
        let spec = PipelineSpec::deserialize(de).map_err(|e| SigmaError::Pipeline {
            file: file.into(),
            why: e.to_string(),
        })?;
        out.push(spec);
    }
    Ok(out)
}

fn merge(base: &mut PipelineSpec, user: PipelineSpec) {
    macro_rules! take {
        ($($f:ident),*) => { $( if user.$f.is_some() { base.$f = user.$f; } )* };
    }
    take!(description, logsource, table, filter, keywords, output);
    base.fields.extend(user.fields);
    base.json.extend(user.json);
    base.maps.extend(user.maps);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pipelines_load_and_pick_by_logsource() {
        let p = Pipelines::builtin();
        let ls = LogSource {
            product: Some("kubernetes".into()),
            category: Some("application".into()),
            service: Some("audit".into()),
        };
        assert_eq!(p.for_logsource(&ls).unwrap().table, "k8s_audit");
        let ls = LogSource {
            product: Some("linux".into()),
            category: Some("process_creation".into()),
            service: None,
        };
        assert_eq!(p.for_logsource(&ls).unwrap().name, "linux/process_creation");
        let ls = LogSource {
            product: Some("windows".into()),
            ..Default::default()
        };
        assert!(matches!(
            p.for_logsource(&ls),
            Err(SigmaError::UnmappedLogsource(_))
        ));
    }

    #[test]
    fn json_and_map_prefixes() {
        let p = Pipelines::builtin();
        let k8s = p.all.iter().find(|p| p.table == "k8s_audit").unwrap();
        assert_eq!(
            k8s.field("requestObject.spec.hostNetwork").unwrap().sql,
            "json_path_values(request_object, '$[''spec''][''hostNetwork'']')"
        );
        assert_eq!(
            k8s.field("annotations.authorization.k8s.io/decision")
                .unwrap()
                .sql,
            "annotations['authorization.k8s.io/decision']"
        );
        assert!(matches!(
            k8s.field("nope"),
            Err(SigmaError::UnmappedField { .. })
        ));
    }

    #[test]
    fn user_pipeline_overrides_and_is_strict() {
        let p = Pipelines::with_user(
            "site.yml",
            "name: kubernetes/audit\nfields:\n  verb: {sql: upper(verb)}\n",
        )
        .unwrap();
        let k8s = p.all.iter().find(|p| p.table == "k8s_audit").unwrap();
        assert_eq!(k8s.field("verb").unwrap().sql, "upper(verb)");
        assert!(k8s.field("userAgent").is_ok());
        let err = Pipelines::with_user("site.yml", "name: x\nfieldz: {}\n").unwrap_err();
        assert!(err.to_string().contains("fieldz"), "{err}");
        let err = Pipelines::with_user("site.yml", "name: x\nfields: {}\n").unwrap_err();
        assert!(err.to_string().contains("has no logsource"), "{err}");
    }
}
