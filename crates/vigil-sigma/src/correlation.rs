//! Sigma correlation rules compiled to Vigil correlation SQL
//! (docs/rules.md, "Correlation rules"):
//!
//! - `event_count`, `value_count`: a threshold per group in tumbling windows
//!   of the timespan (`GROUP BY <group>, tumble_end(...)` with `HAVING`);
//!   incremental in the engine. Sigma's windows slide: a burst that
//!   straddles a window boundary is counted in two windows (docs/sigma.md).
//! - `temporal`: every referenced rule matched in one window of the group
//!   (the co-occurrence form, `HAVING bool_or(<rule 1>) AND ...`).
//! - `temporal_ordered`: the rules matched in order within the timespan: a
//!   join of the last rule's events (the trigger, `window_end` its time)
//!   with the group's earlier events of each other rule, each before the
//!   next; a delta re-scan.
//!
//! The rule declares its key (`-- key:`): the group-by expressions.

use crate::error::{Result, SigmaError};
use crate::pipeline::{Kind, Pipeline};
use crate::sigma::{CorrelationRule, CorrelationType, DetectionRule, Threshold};
use crate::sql;

/// A compiled correlation: header additions and the SELECT.
pub struct Compiled {
    pub sql: String,
    /// `(key, value)` header lines: mode, window, key.
    pub header: Vec<(&'static str, String)>,
}

/// One referenced rule: how it is named in the correlation, its condition.
struct Part<'a> {
    names: Vec<&'a str>,
    cond: String,
}

/// Compile `corr` over the referenced detection rules `refs` (in the order
/// `corr.rules` names them), all mapped by `p`.
pub fn compile(corr: &CorrelationRule, refs: &[&DetectionRule], p: &Pipeline) -> Result<Compiled> {
    if corr.group_by.is_empty() {
        return Err(SigmaError::Correlation(
            "no group-by: a cluster-wide correlation has no key to split by (docs/rules.md, correlation keys)".into(),
        ));
    }
    let parts = refs
        .iter()
        .map(|r| {
            Ok(Part {
                names: [r.meta.name.as_deref(), r.meta.id.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect(),
                cond: sql::condition_sql(&r.condition, r, p)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let span = format!("INTERVAL '{} seconds'", corr.timespan_secs);
    let window = format!("{}s", corr.timespan_secs);
    let groups = corr
        .group_by
        .iter()
        .map(|g| group_exprs(corr, g, &parts, p))
        .collect::<Result<Vec<_>>>()?;
    let sql = match corr.kind {
        CorrelationType::EventCount | CorrelationType::ValueCount => {
            threshold_sql(corr, &parts, &groups, &span, p)?
        }
        CorrelationType::Temporal => temporal_sql(corr, &parts, &groups, &span, p)?,
        CorrelationType::TemporalOrdered => ordered_sql(corr, &parts, &groups, &span, p)?,
    };
    let key: Vec<String> = groups.iter().map(|g| g.single_scan.clone()).collect();
    Ok(Compiled {
        sql,
        header: vec![
            ("mode", "correlation".into()),
            ("window", window),
            ("key", format!("{}: {}", p.table, key.join(", "))),
        ],
    })
}

/// A group-by field: its output name, its expression per referenced rule
/// (aliases), and one expression for a scan of all of them.
struct Group {
    name: String,
    per_rule: Vec<String>,
    single_scan: String,
}

fn group_exprs(corr: &CorrelationRule, g: &str, parts: &[Part<'_>], p: &Pipeline) -> Result<Group> {
    let alias = corr.aliases.iter().find(|(a, _)| a == g);
    let per_rule = parts
        .iter()
        .map(|part| {
            let field = match alias {
                None => g.to_string(),
                Some((_, map)) => map
                    .iter()
                    .find(|(rule, _)| part.names.contains(&rule.as_str()))
                    .map(|(_, f)| f.clone())
                    .ok_or_else(|| {
                        SigmaError::Correlation(format!(
                            "alias {g:?} names no field for rule {:?}",
                            part.names.first().unwrap_or(&"?")
                        ))
                    })?,
            };
            let spec = p.field(&field)?;
            if spec.kind == Kind::List {
                return Err(SigmaError::Correlation(format!(
                    "group-by field {field:?} is a list"
                )));
            }
            Ok(spec.sql)
        })
        .collect::<Result<Vec<_>>>()?;
    let single_scan = if per_rule.iter().all(|e| *e == per_rule[0]) {
        per_rule[0].clone()
    } else {
        let arms: Vec<String> = parts
            .iter()
            .zip(&per_rule)
            .map(|(part, e)| format!("WHEN {} THEN {e}", part.cond))
            .collect();
        format!("CASE {} END", arms.join(" "))
    };
    Ok(Group {
        name: column_name(g),
        per_rule,
        single_scan,
    })
}

/// An output column name for a Sigma field (`user.username` -> `user_username`).
fn column_name(field: &str) -> String {
    let s: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with("__") {
        format!("g_{s}")
    } else {
        s
    }
}

fn with_filter(p: &Pipeline, cond: String) -> String {
    match &p.filter {
        Some(f) => format!("{f} AND {cond}"),
        None => cond,
    }
}

fn any_rule(parts: &[Part<'_>]) -> String {
    let conds: Vec<String> = parts.iter().map(|p| p.cond.clone()).collect();
    if conds.len() == 1 {
        conds[0].clone()
    } else {
        format!("({})", conds.join(" OR "))
    }
}

fn threshold_having(t: &Threshold, agg: &str) -> Result<String> {
    let mut parts = Vec::new();
    for (v, op) in [
        (t.gt, ">"),
        (t.gte, ">="),
        (t.lt, "<"),
        (t.lte, "<="),
        (t.eq, "="),
    ] {
        if let Some(n) = v {
            parts.push(format!("{agg} {op} {n}"));
        }
    }
    if parts.is_empty() {
        return Err(SigmaError::Correlation("no condition".into()));
    }
    Ok(parts.join(" AND "))
}

fn threshold_sql(
    corr: &CorrelationRule,
    parts: &[Part<'_>],
    groups: &[Group],
    span: &str,
    p: &Pipeline,
) -> Result<String> {
    let (agg, label) = match corr.kind {
        CorrelationType::ValueCount => {
            let field = corr.threshold.field.as_deref().expect("checked at parse");
            let spec = p.field(field)?;
            if spec.kind == Kind::List {
                return Err(SigmaError::Correlation(format!(
                    "value_count field {field:?} is a list"
                )));
            }
            (format!("count(DISTINCT {})", spec.sql), "value_count")
        }
        _ => ("count(*)".to_string(), "event_count"),
    };
    let having = threshold_having(&corr.threshold, &agg)?;
    let tumble = format!("tumble_end(event_time, {span})");
    let select: Vec<String> = groups
        .iter()
        .map(|g| format!("  {} AS {}", g.single_scan, g.name))
        .chain([
            format!("  {agg} AS {label}"),
            "  min(event_time) AS first_seen".into(),
            format!("  {tumble} AS window_end"),
        ])
        .collect();
    let group_by: Vec<String> = groups
        .iter()
        .map(|g| g.single_scan.clone())
        .chain([tumble.clone()])
        .collect();
    Ok(format!(
        "SELECT\n{}\nFROM {}\nWHERE {}\nGROUP BY {}\nHAVING {having}\n",
        select.join(",\n"),
        p.table,
        with_filter(p, any_rule(parts)),
        group_by.join(", ")
    ))
}

fn temporal_sql(
    corr: &CorrelationRule,
    parts: &[Part<'_>],
    groups: &[Group],
    span: &str,
    p: &Pipeline,
) -> Result<String> {
    if corr.threshold != Threshold::default() {
        return Err(SigmaError::Correlation(
            "a condition on a temporal correlation is not supported".into(),
        ));
    }
    let tumble = format!("tumble_end(event_time, {span})");
    let select: Vec<String> = groups
        .iter()
        .map(|g| format!("  {} AS {}", g.single_scan, g.name))
        .chain([
            "  count(*) AS events".into(),
            "  min(event_time) AS first_seen".into(),
            format!("  {tumble} AS window_end"),
        ])
        .collect();
    let group_by: Vec<String> = groups
        .iter()
        .map(|g| g.single_scan.clone())
        .chain([tumble.clone()])
        .collect();
    let having: Vec<String> = parts
        .iter()
        .map(|part| format!("bool_or(COALESCE({}, FALSE))", part.cond))
        .collect();
    Ok(format!(
        "SELECT\n{}\nFROM {}\nWHERE {}\nGROUP BY {}\nHAVING {}\n",
        select.join(",\n"),
        p.table,
        with_filter(p, any_rule(parts)),
        group_by.join(", "),
        having.join("\n   AND ")
    ))
}

fn ordered_sql(
    corr: &CorrelationRule,
    parts: &[Part<'_>],
    groups: &[Group],
    span: &str,
    p: &Pipeline,
) -> Result<String> {
    if corr.threshold != Threshold::default() {
        return Err(SigmaError::Correlation(
            "a condition on a temporal_ordered correlation is not supported".into(),
        ));
    }
    if parts.len() < 2 {
        return Err(SigmaError::Correlation(
            "temporal_ordered needs at least two rules".into(),
        ));
    }
    // s0 .. s{n-1} in rule order; the last is the trigger.
    let n = parts.len();
    let sub = |i: usize| {
        let cols: Vec<String> = groups
            .iter()
            .map(|g| format!("{} AS {}", g.per_rule[i], g.name))
            .collect();
        format!(
            "(\n  SELECT __row, event_time, {}\n  FROM {}\n  WHERE {}\n) s{i}",
            cols.join(", "),
            p.table,
            with_filter(p, parts[i].cond.clone())
        )
    };
    let t = n - 1;
    let mut from = sub(t);
    for i in (0..t).rev() {
        let mut on: Vec<String> = groups
            .iter()
            .map(|g| format!("s{i}.{0} = s{t}.{0}", g.name))
            .collect();
        on.push(format!("s{i}.event_time < s{}.event_time", i + 1));
        on.push(format!("s{i}.event_time >= s{t}.event_time - {span}"));
        from.push_str(&format!("\nJOIN {}\n  ON {}", sub(i), on.join("\n AND ")));
    }
    let keys: Vec<String> = groups.iter().map(|g| format!("s{t}.{}", g.name)).collect();
    let select: Vec<String> = groups
        .iter()
        .map(|g| format!("  s{t}.{0} AS {0}", g.name))
        .chain([
            "  min(s0.event_time) AS first_seen".into(),
            format!("  s{t}.event_time AS window_end"),
        ])
        .collect();
    Ok(format!(
        "SELECT\n{}\nFROM {from}\nGROUP BY s{t}.__row, {}, s{t}.event_time\n",
        select.join(",\n"),
        keys.join(", ")
    ))
}
