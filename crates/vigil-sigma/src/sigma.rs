//! Sigma documents read from YAML: detection rules and correlation rules.
//!
//! Only what the importer compiles is kept; other keys (status, date,
//! related, fields, ...) are read past. Every construct the importer does not
//! compile is an error naming it, never dropped: a rule must not import with
//! part of its detection missing.

use yaml_serde::{Mapping, Value as Yaml};

use crate::condition::{self, Cond};
use crate::error::{Result, SigmaError};

/// A value of a detection item.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl Value {
    /// The value as Sigma compares it with a string: its text.
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
        }
    }
}

/// A value modifier (`field|contains|all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    Contains,
    StartsWith,
    EndsWith,
    All,
    Re,
    ReI,
    ReM,
    ReS,
    Cidr,
    Exists,
    Gt,
    Gte,
    Lt,
    Lte,
    Base64,
    Base64Offset,
    Windash,
    FieldRef,
    Expand,
    Cased,
}

impl Modifier {
    fn parse(field: &str, name: &str) -> Result<Modifier> {
        Ok(match name {
            "contains" => Modifier::Contains,
            "startswith" => Modifier::StartsWith,
            "endswith" => Modifier::EndsWith,
            "all" => Modifier::All,
            "re" => Modifier::Re,
            "i" => Modifier::ReI,
            "m" => Modifier::ReM,
            "s" => Modifier::ReS,
            "cidr" => Modifier::Cidr,
            "exists" => Modifier::Exists,
            "gt" => Modifier::Gt,
            "gte" => Modifier::Gte,
            "lt" => Modifier::Lt,
            "lte" => Modifier::Lte,
            "base64" => Modifier::Base64,
            "base64offset" => Modifier::Base64Offset,
            "windash" => Modifier::Windash,
            "fieldref" => Modifier::FieldRef,
            "expand" => Modifier::Expand,
            "cased" => Modifier::Cased,
            "utf16" | "utf16le" | "utf16be" | "wide" | "neq" | "minute" | "hour" | "day"
            | "week" | "month" | "year" => {
                return Err(SigmaError::BadModifier {
                    field: field.into(),
                    modifier: name.into(),
                    why: "not supported by the importer".into(),
                })
            }
            _ => {
                return Err(SigmaError::UnknownModifier {
                    field: field.into(),
                    modifier: name.into(),
                })
            }
        })
    }
}

/// One `field|modifiers: values` entry; a keyword search has no field.
/// Invariant: `values` is not empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub field: Option<String>,
    pub modifiers: Vec<Modifier>,
    pub values: Vec<Value>,
}

impl Item {
    pub fn has(&self, m: Modifier) -> bool {
        self.modifiers.contains(&m)
    }
    /// The item as written (`CommandLine|contains|all`), for messages.
    pub fn key(&self) -> String {
        self.field.clone().unwrap_or_else(|| "keywords".into())
    }
}

/// A named detection: a map (every item holds), a list of maps (one of
/// them holds) or a keyword list (one of the keywords is found).
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    AllOf(Vec<Item>),
    AnyOf(Vec<Selection>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSource {
    pub product: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
}

impl std::fmt::Display for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("product", &self.product),
            ("category", &self.category),
            ("service", &self.service),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
        .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// What both kinds of Sigma document carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub title: String,
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: String,
    pub references: Vec<String>,
    pub author: Option<String>,
    pub tags: Vec<String>,
    pub level: Option<String>,
    pub falsepositives: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRule {
    pub meta: Meta,
    pub logsource: LogSource,
    /// Named detections, in file order.
    pub detections: Vec<(String, Selection)>,
    pub condition: Cond,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

/// The threshold of a correlation (`condition: {gte: 10}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Threshold {
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
    pub eq: Option<i64>,
    /// `value_count`: the field whose distinct values are counted.
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationRule {
    pub meta: Meta,
    pub kind: CorrelationType,
    /// Names or ids of the referenced rules, in order.
    pub rules: Vec<String>,
    pub group_by: Vec<String>,
    pub timespan_secs: u64,
    pub threshold: Threshold,
    /// alias -> (rule name -> field)
    pub aliases: Vec<(String, Vec<(String, String)>)>,
    pub generate: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    Detection(DetectionRule),
    Correlation(CorrelationRule),
}

impl Doc {
    pub fn meta(&self) -> &Meta {
        match self {
            Doc::Detection(r) => &r.meta,
            Doc::Correlation(r) => &r.meta,
        }
    }
}

/// Every YAML document of a file, each parsed as YAML (a syntax error
/// fails the whole file: the documents after it cannot be trusted).
pub fn yaml_documents(text: &str) -> Result<Vec<Yaml>> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for de in yaml_serde::Deserializer::from_str(text) {
        let doc = Yaml::deserialize(de).map_err(|e| SigmaError::Yaml(e.to_string()))?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// A title, id or name to name a document that failed, when it has one.
pub fn doc_label(doc: &Yaml) -> Option<String> {
    ["title", "name", "id"]
        .iter()
        .find_map(|k| doc.get(*k).and_then(Yaml::as_str).map(str::to_string))
}

/// Parse one YAML document as a Sigma detection or correlation rule.
pub fn parse_doc(doc: &Yaml) -> Result<Doc> {
    let map = doc
        .as_mapping()
        .ok_or_else(|| SigmaError::NotARule("the document is not a mapping".into()))?;
    if let Some(action) = map.get("action").and_then(Yaml::as_str) {
        return Err(SigmaError::Unsupported(format!(
            "rule collection action {action:?}"
        )));
    }
    if map.contains_key("filter") {
        return Err(SigmaError::Unsupported("Sigma filter (meta) rules".into()));
    }
    let meta = parse_meta(map)?;
    if let Some(c) = map.get("correlation") {
        return Ok(Doc::Correlation(parse_correlation(meta, c)?));
    }
    let detection = map
        .get("detection")
        .and_then(Yaml::as_mapping)
        .ok_or_else(|| SigmaError::NotARule("no detection mapping".into()))?;
    let logsource = parse_logsource(map.get("logsource"))?;
    let mut detections = Vec::new();
    let mut conditions = Vec::new();
    for (k, v) in detection {
        let name = k
            .as_str()
            .ok_or_else(|| SigmaError::NotARule("a detection name is not a string".into()))?;
        if name == "condition" {
            conditions = string_list(v).ok_or_else(|| SigmaError::Condition {
                condition: format!("{v:?}"),
                why: "not a string or list of strings".into(),
            })?;
            continue;
        }
        if name == "timeframe" {
            return Err(SigmaError::Unsupported(
                "detection timeframe (aggregations are deprecated; use a correlation rule)".into(),
            ));
        }
        let sel = parse_selection(name, v)?;
        detections.push((name.to_string(), sel));
    }
    if conditions.is_empty() {
        return Err(SigmaError::Condition {
            condition: String::new(),
            why: "the detection has no condition".into(),
        });
    }
    let names: Vec<&str> = detections.iter().map(|(n, _)| n.as_str()).collect();
    let mut parsed = Vec::new();
    for c in &conditions {
        parsed.push(condition::parse(c, &names)?);
    }
    let condition = parsed
        .into_iter()
        .reduce(|a, b| Cond::Or(Box::new(a), Box::new(b)))
        .expect("not empty");
    Ok(Doc::Detection(DetectionRule {
        meta,
        logsource,
        detections,
        condition,
    }))
}

fn parse_meta(map: &Mapping) -> Result<Meta> {
    let s = |k: &str| map.get(k).and_then(Yaml::as_str).map(str::to_string);
    let list = |k: &str| map.get(k).and_then(string_list).unwrap_or_default();
    let title = s("title").ok_or_else(|| SigmaError::NotARule("no title".into()))?;
    Ok(Meta {
        title,
        id: s("id"),
        name: s("name"),
        description: s("description").unwrap_or_default(),
        references: list("references"),
        author: s("author"),
        tags: list("tags"),
        level: s("level"),
        falsepositives: list("falsepositives"),
    })
}

fn parse_logsource(v: Option<&Yaml>) -> Result<LogSource> {
    let map = v
        .and_then(Yaml::as_mapping)
        .ok_or_else(|| SigmaError::NotARule("no logsource mapping".into()))?;
    let s = |k: &str| map.get(k).and_then(Yaml::as_str).map(str::to_string);
    Ok(LogSource {
        product: s("product"),
        category: s("category"),
        service: s("service"),
    })
}

/// A string, or a list of strings (other scalars as their text).
fn string_list(v: &Yaml) -> Option<Vec<String>> {
    match v {
        Yaml::String(s) => Some(vec![s.clone()]),
        Yaml::Sequence(seq) => seq
            .iter()
            .map(|x| scalar(x).map(|v| v.text()))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    }
}

fn scalar(v: &Yaml) -> Option<Value> {
    Some(match v {
        Yaml::String(s) => Value::Str(s.clone()),
        Yaml::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        _ => return None,
    })
}

fn parse_selection(name: &str, v: &Yaml) -> Result<Selection> {
    let bad = |why: &str| SigmaError::Selection {
        name: name.into(),
        why: why.into(),
    };
    match v {
        Yaml::Mapping(m) => Ok(Selection::AllOf(parse_map(m)?)),
        Yaml::Sequence(seq) if seq.iter().all(|x| x.is_mapping()) && !seq.is_empty() => {
            let alts = seq
                .iter()
                .map(|x| parse_map(x.as_mapping().expect("checked")).map(Selection::AllOf))
                .collect::<Result<Vec<_>>>()?;
            Ok(Selection::AnyOf(alts))
        }
        Yaml::Sequence(seq) => {
            let values = seq
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("a list mixing maps and keywords"))?;
            if values.is_empty() {
                return Err(bad("an empty list"));
            }
            Ok(Selection::AllOf(vec![Item {
                field: None,
                modifiers: vec![],
                values,
            }]))
        }
        other => match scalar(other) {
            Some(value) => Ok(Selection::AllOf(vec![Item {
                field: None,
                modifiers: vec![],
                values: vec![value],
            }])),
            None => Err(bad("not a map, list or keyword")),
        },
    }
}

fn parse_map(m: &Mapping) -> Result<Vec<Item>> {
    m.iter()
        .map(|(k, v)| {
            let key = k.as_str().ok_or_else(|| SigmaError::Selection {
                name: format!("{k:?}"),
                why: "a field name is not a string".into(),
            })?;
            parse_item(key, v)
        })
        .collect()
}

fn parse_item(key: &str, v: &Yaml) -> Result<Item> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    let modifiers = parts
        .map(|m| Modifier::parse(key, m))
        .collect::<Result<Vec<_>>>()?;
    let values = match v {
        Yaml::Sequence(seq) => seq
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SigmaError::BadValue {
                field: key.into(),
                why: "a list holding a map or list".into(),
            })?,
        other => vec![scalar(other).ok_or_else(|| SigmaError::BadValue {
            field: key.into(),
            why: "a map where a value was expected".into(),
        })?],
    };
    if values.is_empty() {
        return Err(SigmaError::BadValue {
            field: key.into(),
            why: "an empty list".into(),
        });
    }
    if modifiers.contains(&Modifier::All) && values.len() < 2 {
        // As pySigma and rsigma: `all` of one value is a mistake.
        return Err(SigmaError::BadModifier {
            field: key.into(),
            modifier: "all".into(),
            why: "needs more than one value".into(),
        });
    }
    Ok(Item {
        field: (!field.is_empty()).then(|| field.to_string()),
        modifiers,
        values,
    })
}

fn parse_correlation(meta: Meta, c: &Yaml) -> Result<CorrelationRule> {
    let bad = |why: String| SigmaError::Correlation(why);
    let map = c
        .as_mapping()
        .ok_or_else(|| bad("`correlation` is not a mapping".into()))?;
    let kind = match map.get("type").and_then(Yaml::as_str) {
        Some("event_count") => CorrelationType::EventCount,
        Some("value_count") => CorrelationType::ValueCount,
        Some("temporal") => CorrelationType::Temporal,
        Some("temporal_ordered") => CorrelationType::TemporalOrdered,
        other => return Err(bad(format!("unknown or missing type {other:?}"))),
    };
    let rules = map
        .get("rules")
        .and_then(string_list)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("no `rules` list".into()))?;
    let group_by = map
        .get("group-by")
        .and_then(string_list)
        .unwrap_or_default();
    let timespan = map
        .get("timespan")
        .or_else(|| map.get("timeframe"))
        .and_then(|v| scalar(v).map(|s| s.text()))
        .ok_or_else(|| bad("no `timespan`".into()))?;
    let timespan_secs = parse_timespan(&timespan)?;
    let threshold = match map.get("condition") {
        None => Threshold::default(),
        Some(Yaml::Mapping(m)) => parse_threshold(m)?,
        Some(other) => return Err(bad(format!("condition {other:?} is not a mapping"))),
    };
    if matches!(
        kind,
        CorrelationType::EventCount | CorrelationType::ValueCount
    ) && [
        threshold.gt,
        threshold.gte,
        threshold.lt,
        threshold.lte,
        threshold.eq,
    ]
    .iter()
    .all(Option::is_none)
    {
        return Err(bad("an event_count or value_count needs a condition".into()));
    }
    if kind == CorrelationType::ValueCount && threshold.field.is_none() {
        return Err(bad("value_count needs `condition.field`".into()));
    }
    let aliases = match map.get("aliases") {
        None => vec![],
        Some(Yaml::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let alias = k.as_str().unwrap_or_default().to_string();
                let fields = v
                    .as_mapping()
                    .ok_or_else(|| bad(format!("alias {alias:?} is not a mapping")))?
                    .iter()
                    .map(|(r, f)| {
                        (
                            r.as_str().unwrap_or_default().to_string(),
                            f.as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                Ok((alias, fields))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => return Err(bad(format!("aliases {other:?} is not a mapping"))),
    };
    let generate = map.get("generate").and_then(Yaml::as_bool).unwrap_or(false);
    Ok(CorrelationRule {
        meta,
        kind,
        rules,
        group_by,
        timespan_secs,
        threshold,
        aliases,
        generate,
    })
}

fn parse_threshold(m: &Mapping) -> Result<Threshold> {
    let mut t = Threshold::default();
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let num = || {
            v.as_i64().ok_or_else(|| {
                SigmaError::Correlation(format!("condition {key}: {v:?} is not an integer"))
            })
        };
        match key {
            "gt" => t.gt = Some(num()?),
            "gte" => t.gte = Some(num()?),
            "lt" => t.lt = Some(num()?),
            "lte" => t.lte = Some(num()?),
            "eq" => t.eq = Some(num()?),
            "field" => t.field = v.as_str().map(str::to_string),
            "range" => {
                let text = v.as_str().map(str::to_string).unwrap_or_default();
                let (lo, hi) = text
                    .split_once("..")
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                    .ok_or_else(|| {
                        SigmaError::Correlation(format!("condition range {v:?}: expected N..M"))
                    })?;
                t.gte = Some(lo);
                t.lte = Some(hi);
            }
            other => {
                return Err(SigmaError::Correlation(format!(
                    "unknown condition operator {other:?}"
                )))
            }
        }
    }
    Ok(t)
}

/// A Sigma timespan (`30s`, `5m`, `1h`, `2d`, `1w`) in seconds; zero and
/// anything else is refused.
pub fn parse_timespan(s: &str) -> Result<u64> {
    let err = || SigmaError::Timespan(s.into());
    let t = s.trim();
    let unit = t.chars().last().ok_or_else(err)?;
    let n: u64 = t[..t.len() - unit.len_utf8()].parse().map_err(|_| err())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return Err(err()),
    };
    if n == 0 {
        return Err(err());
    }
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("10m"), Ok(600));
        assert_eq!(parse_timespan("1h"), Ok(3600));
        assert!(matches!(
            parse_timespan("ten minutes"),
            Err(SigmaError::Timespan(_))
        ));
        assert!(matches!(parse_timespan("0s"), Err(SigmaError::Timespan(_))));
        assert!(matches!(parse_timespan("5y"), Err(SigmaError::Timespan(_))));
    }

    #[test]
    fn items_and_modifiers() {
        let doc = &yaml_documents(
            "title: t\nlogsource: {product: linux}\ndetection:\n  sel:\n    a|contains|all: [x, y]\n    b: 5\n  kw: [foo]\n  condition: sel or kw\n",
        )
        .unwrap()[0];
        let Doc::Detection(r) = parse_doc(doc).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.detections[0].1,
            Selection::AllOf(vec![
                Item {
                    field: Some("a".into()),
                    modifiers: vec![Modifier::Contains, Modifier::All],
                    values: vec![Value::Str("x".into()), Value::Str("y".into())]
                },
                Item {
                    field: Some("b".into()),
                    modifiers: vec![],
                    values: vec![Value::Int(5)]
                }
            ])
        );
        assert!(matches!(&r.detections[1].1, Selection::AllOf(items) if items[0].field.is_none()));
    }

    #[test]
    fn unknown_modifier_names_it() {
        let doc = &yaml_documents(
            "title: t\nlogsource: {product: linux}\ndetection:\n  sel:\n    a|containz: x\n  condition: sel\n",
        )
        .unwrap()[0];
        assert_eq!(
            parse_doc(doc),
            Err(SigmaError::UnknownModifier {
                field: "a|containz".into(),
                modifier: "containz".into()
            })
        );
    }
}
