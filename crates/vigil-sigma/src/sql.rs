//! A Sigma detection compiled to an SQL condition over a pipeline's table.
//!
//! Semantics kept from Sigma (and checked against an independent evaluator
//! in services/vigil/tests/sigma_import.rs):
//! - string values compare case-insensitively unless `|cased`; `*` and `?`
//!   are wildcards, `\*`, `\?` and `\\` their escapes;
//! - a field absent from the event (SQL NULL) matches nothing but `null`,
//!   and `not` of a detection that cannot match is true: every `not` is
//!   `NOT COALESCE(x, FALSE)`. So a condition outside a `not` may be NULL
//!   where Sigma says false (a WHERE keeps neither), and needs no
//!   `COALESCE` of its own: `cardinality(host_paths) > 0`, not
//!   `COALESCE(cardinality(host_paths), 0) > 0`, which costs per event;
//! - a list-valued field matches when one of its elements matches.

use base64::Engine as _;

use crate::condition::Cond;
use crate::error::{Result, SigmaError};
use crate::pipeline::{sql_str, FieldSpec, Kind, Pipeline};
use crate::sigma::{DetectionRule, Item, Modifier, Selection, Value};

/// The separator of a list's elements when they are matched as one string:
/// the ASCII unit separator, which no name, path or capability holds.
const SEP: u32 = 31;

/// The WHERE condition of `rule` (the pipeline's filter included).
pub fn detection_where(rule: &DetectionRule, p: &Pipeline) -> Result<String> {
    let cond = condition_sql(&rule.condition, rule, p)?;
    Ok(match &p.filter {
        Some(f) => format!("{f}\n  AND {cond}"),
        None => cond,
    })
}

/// The SQL of a condition over the rule's detections.
pub fn condition_sql(c: &Cond, rule: &DetectionRule, p: &Pipeline) -> Result<String> {
    Ok(match c {
        Cond::Ref(name) => {
            let (_, sel) = rule
                .detections
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| SigmaError::MissingSelection { name: name.clone() })?;
            selection_sql(sel, p).map_err(|e| match e {
                SigmaError::UnmappedField { .. } | SigmaError::NoKeywordColumns(_) => e,
                other => SigmaError::Selection {
                    name: name.clone(),
                    why: other.to_string(),
                },
            })?
        }
        Cond::And(a, b) => format!(
            "({} AND {})",
            condition_sql(a, rule, p)?,
            condition_sql(b, rule, p)?
        ),
        Cond::Or(a, b) => format!(
            "({} OR {})",
            condition_sql(a, rule, p)?,
            condition_sql(b, rule, p)?
        ),
        Cond::Not(a) => format!("NOT COALESCE({}, FALSE)", condition_sql(a, rule, p)?),
    })
}

fn selection_sql(sel: &Selection, p: &Pipeline) -> Result<String> {
    match sel {
        Selection::AllOf(items) => {
            let parts = items
                .iter()
                .map(|i| item_sql(i, p))
                .collect::<Result<Vec<_>>>()?;
            Ok(join(&parts, "AND"))
        }
        Selection::AnyOf(alts) => {
            let parts = alts
                .iter()
                .map(|s| selection_sql(s, p))
                .collect::<Result<Vec<_>>>()?;
            Ok(join(&parts, "OR"))
        }
    }
}

fn join(parts: &[String], op: &str) -> String {
    match parts {
        [one] => one.clone(),
        _ => format!("({})", parts.join(&format!(" {op} "))),
    }
}

/// One `field|modifiers: values` item.
fn item_sql(item: &Item, p: &Pipeline) -> Result<String> {
    let Some(field) = &item.field else {
        return keywords_sql(item, p);
    };
    let spec = p.field(field)?;
    let bad = |modifier: &str, why: &str| SigmaError::BadModifier {
        field: item.key(),
        modifier: modifier.into(),
        why: why.into(),
    };
    if item.has(Modifier::Exists) {
        return exists_sql(item, &spec);
    }
    if item.has(Modifier::FieldRef) {
        return fieldref_sql(item, &spec, p);
    }
    if let Some(op) = numeric_op(item) {
        return numeric_sql(item, &spec, op);
    }
    if item.has(Modifier::Cidr) {
        if spec.kind == Kind::List {
            return Err(bad("cidr", "not supported on a list field"));
        }
        return cidr_sql(item, &spec);
    }
    if item.has(Modifier::Re) {
        if spec.kind == Kind::List {
            return Err(bad("re", "not supported on a list field"));
        }
        return regex_sql(item, &spec);
    }
    if item.has(Modifier::Expand) {
        return expand_sql(item, &spec);
    }
    for m in [Modifier::ReI, Modifier::ReM, Modifier::ReS] {
        if item.has(m) {
            return Err(bad("i/m/s", "regular-expression flags need |re"));
        }
    }
    let mut parts = Vec::new();
    if item.values.contains(&Value::Null) {
        parts.push(null_sql(&spec));
    }
    let values: Vec<&Value> = item.values.iter().filter(|v| **v != Value::Null).collect();
    if !values.is_empty() {
        parts.push(string_match(item, &spec, &values)?);
    }
    Ok(join(
        &parts,
        if item.has(Modifier::All) { "AND" } else { "OR" },
    ))
}

fn null_sql(spec: &FieldSpec) -> String {
    if spec.empty_is_absent {
        format!("COALESCE(cardinality({}), 0) = 0", spec.sql)
    } else {
        format!("{} IS NULL", spec.sql)
    }
}

fn exists_sql(item: &Item, spec: &FieldSpec) -> Result<String> {
    let want = match item.values.as_slice() {
        [Value::Bool(b)] => *b,
        [Value::Str(s)] if s == "true" || s == "false" => s == "true",
        _ => {
            return Err(SigmaError::BadValue {
                field: item.key(),
                why: "exists takes true or false".into(),
            })
        }
    };
    Ok(match (spec.empty_is_absent, want) {
        (true, true) => format!("cardinality({}) > 0", spec.sql),
        (true, false) => format!("COALESCE(cardinality({}), 0) = 0", spec.sql),
        (false, true) => format!("{} IS NOT NULL", spec.sql),
        (false, false) => format!("{} IS NULL", spec.sql),
    })
}

fn fieldref_sql(item: &Item, spec: &FieldSpec, p: &Pipeline) -> Result<String> {
    if spec.kind == Kind::List {
        return Err(SigmaError::BadModifier {
            field: item.key(),
            modifier: "fieldref".into(),
            why: "not supported on a list field".into(),
        });
    }
    let parts = item
        .values
        .iter()
        .map(|v| {
            let other = p.field(&v.text())?;
            if other.kind == Kind::List {
                return Err(SigmaError::BadModifier {
                    field: item.key(),
                    modifier: "fieldref".into(),
                    why: "refers to a list field".into(),
                });
            }
            let (a, b) = (text_of(spec), text_of(&other));
            Ok(if item.has(Modifier::Cased) {
                format!("{a} = {b}")
            } else {
                format!("lower({a}) = lower({b})")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join(
        &parts,
        if item.has(Modifier::All) { "AND" } else { "OR" },
    ))
}

/// A field as text: integers cast, strings as they are.
fn text_of(spec: &FieldSpec) -> String {
    match spec.kind {
        Kind::Int => format!("CAST({} AS VARCHAR)", spec.sql),
        _ => spec.sql.clone(),
    }
}

fn numeric_op(item: &Item) -> Option<&'static str> {
    [
        (Modifier::Gt, ">"),
        (Modifier::Gte, ">="),
        (Modifier::Lt, "<"),
        (Modifier::Lte, "<="),
    ]
    .iter()
    .find(|(m, _)| item.has(*m))
    .map(|(_, op)| *op)
}

fn numeric_sql(item: &Item, spec: &FieldSpec, op: &str) -> Result<String> {
    let col = match spec.kind {
        Kind::Int => spec.sql.clone(),
        Kind::String => format!("TRY_CAST({} AS DOUBLE)", spec.sql),
        Kind::List => {
            return Err(SigmaError::BadModifier {
                field: item.key(),
                modifier: op.into(),
                why: "not supported on a list field".into(),
            })
        }
    };
    let parts = item
        .values
        .iter()
        .map(|v| match v {
            Value::Int(i) => Ok(format!("{col} {op} {i}")),
            Value::Float(f) => Ok(format!("{col} {op} {f:?}")),
            Value::Str(s) if s.parse::<f64>().is_ok_and(f64::is_finite) => {
                Ok(format!("{col} {op} {s}"))
            }
            _ => Err(SigmaError::BadValue {
                field: item.key(),
                why: format!("{:?} is not a number", v.text()),
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join(
        &parts,
        if item.has(Modifier::All) { "AND" } else { "OR" },
    ))
}

fn cidr_sql(item: &Item, spec: &FieldSpec) -> Result<String> {
    let nets: Vec<String> = item.values.iter().map(|v| sql_str(&v.text())).collect();
    if item.has(Modifier::All) {
        let parts: Vec<String> = nets
            .iter()
            .map(|n| format!("COALESCE(cidr_contains({n}, {}), FALSE)", spec.sql))
            .collect();
        return Ok(join(&parts, "AND"));
    }
    Ok(match nets.as_slice() {
        [one] => format!("COALESCE(cidr_contains({one}, {}), FALSE)", spec.sql),
        _ => format!(
            "COALESCE(cidr_contains(make_array({}), {}), FALSE)",
            nets.join(", "),
            spec.sql
        ),
    })
}

fn regex_sql(item: &Item, spec: &FieldSpec) -> Result<String> {
    let flags: String = [
        (Modifier::ReI, 'i'),
        (Modifier::ReM, 'm'),
        (Modifier::ReS, 's'),
    ]
    .iter()
    .filter(|(m, _)| item.has(*m))
    .map(|(_, c)| *c)
    .collect();
    let col = text_of(spec);
    let parts: Vec<String> = item
        .values
        .iter()
        .map(|v| {
            let pattern = if flags.is_empty() {
                v.text()
            } else {
                format!("(?{flags}){}", v.text())
            };
            format!("regexp_like({col}, {})", sql_str(&pattern))
        })
        .collect();
    Ok(join(
        &parts,
        if item.has(Modifier::All) { "AND" } else { "OR" },
    ))
}

/// `|expand`: a whole-value `%name%` placeholder is the Vigil list `name`
/// (sql-rules/lists, or a site overlay's lists), matched as `in_list` does:
/// exact items and globs, case-sensitive.
fn expand_sql(item: &Item, spec: &FieldSpec) -> Result<String> {
    let parts = item
        .values
        .iter()
        .map(|v| {
            let t = v.text();
            let name = t
                .strip_prefix('%')
                .and_then(|s| s.strip_suffix('%'))
                .filter(|n| {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .ok_or_else(|| SigmaError::BadPlaceholder(t.clone()))?;
            Ok(match spec.kind {
                Kind::List => format!("any_in_list({}, {})", spec.sql, sql_str(name)),
                _ => format!("in_list({}, {})", text_of(spec), sql_str(name)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join(
        &parts,
        if item.has(Modifier::All) { "AND" } else { "OR" },
    ))
}

/// A piece of a Sigma string value.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    /// `*`: any run of characters.
    Any,
    /// `?`: one character.
    One,
}

/// A value with wildcards: its pieces.
fn wildcards(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                lit.push(chars.next().expect("peeked"))
            }
            '*' | '?' => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(if c == '*' { Piece::Any } else { Piece::One });
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

/// The patterns a value stands for, after `windash` and `base64`
/// expansion and `contains`/`startswith`/`endswith`.
fn patterns(item: &Item, v: &Value) -> Result<Vec<Vec<Piece>>> {
    let mut texts = vec![v.text()];
    if item.has(Modifier::Windash) {
        texts = texts.iter().flat_map(|t| windash(t)).collect();
        if texts.len() > 5usize.pow(6) {
            return Err(SigmaError::BadModifier {
                field: item.key(),
                modifier: "windash".into(),
                why: "too many dashes".into(),
            });
        }
    }
    let mut out: Vec<Vec<Piece>> = if item.has(Modifier::Base64Offset) {
        texts
            .iter()
            .flat_map(|t| base64_offsets(t.as_bytes()))
            .map(|t| vec![Piece::Lit(t)])
            .collect()
    } else if item.has(Modifier::Base64) {
        let engine = base64::engine::general_purpose::STANDARD;
        texts
            .iter()
            .map(|t| vec![Piece::Lit(engine.encode(t.as_bytes()))])
            .collect()
    } else if matches!(v, Value::Str(_)) {
        texts.iter().map(|t| wildcards(t)).collect()
    } else {
        texts.into_iter().map(|t| vec![Piece::Lit(t)]).collect()
    };
    let head = item.has(Modifier::Contains) || item.has(Modifier::EndsWith);
    let tail = item.has(Modifier::Contains) || item.has(Modifier::StartsWith);
    for p in &mut out {
        if head && p.first() != Some(&Piece::Any) {
            p.insert(0, Piece::Any);
        }
        if tail && p.last() != Some(&Piece::Any) {
            p.push(Piece::Any);
        }
    }
    Ok(out)
}

/// Every way of writing `s` with each `-` replaced by one of the dashes
/// Windows command lines accept (Sigma's `windash`).
fn windash(s: &str) -> Vec<String> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    let mut out = vec![String::new()];
    for c in s.chars() {
        if c == '-' {
            out = out
                .iter()
                .flat_map(|prefix| DASHES.iter().map(move |d| format!("{prefix}{d}")))
                .collect();
        } else {
            for p in &mut out {
                p.push(c);
            }
        }
    }
    out
}

/// The three base64 forms of `value` at byte offsets 0, 1 and 2 of an
/// encoded stream, without the characters the neighbouring bytes decide
/// (Sigma's `base64offset`).
fn base64_offsets(value: &[u8]) -> Vec<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    (0..3usize)
        .filter_map(|offset| {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(value);
            let encoded = engine.encode(&padded);
            let start = (offset * 4).div_ceil(3);
            let trimmed = encoded.trim_end_matches('=');
            // The last character is decided by the bytes after the value
            // unless the value ends on a 3-byte boundary.
            let end = match (offset + value.len()) % 3 {
                0 => trimmed.len(),
                _ => trimmed.len() - 1,
            };
            (start < end).then(|| trimmed[start..end].to_string())
        })
        .collect()
}

/// String matching of the values of an item (no special modifiers).
fn string_match(item: &Item, spec: &FieldSpec, values: &[&Value]) -> Result<String> {
    let all = item.has(Modifier::All);
    // Integers compare as numbers where both sides are.
    if spec.kind == Kind::Int
        && !has_string_op(item)
        && values.iter().all(|v| matches!(v, Value::Int(_)))
    {
        let nums: Vec<String> = values.iter().map(|v| v.text()).collect();
        return Ok(equality(&spec.sql, &nums, all));
    }
    let cased =
        item.has(Modifier::Cased) || item.has(Modifier::Base64) || item.has(Modifier::Base64Offset);
    let mut pats = Vec::new();
    for v in values {
        pats.extend(patterns(item, v)?);
    }
    if !cased {
        for p in &mut pats {
            for piece in p.iter_mut() {
                if let Piece::Lit(s) = piece {
                    *s = s.to_lowercase();
                }
            }
        }
    }
    match spec.kind {
        Kind::List => Ok(list_match(&spec.sql, cased || spec.lowercase, &pats, all)),
        Kind::String | Kind::Int => {
            let col = text_of(spec);
            let lowercase = spec.lowercase || spec.kind == Kind::Int;
            let expr = if cased || lowercase {
                col
            } else {
                format!("lower({col})")
            };
            Ok(scalar_match(&expr, &pats, all))
        }
    }
}

fn has_string_op(item: &Item) -> bool {
    [
        Modifier::Contains,
        Modifier::StartsWith,
        Modifier::EndsWith,
        Modifier::Windash,
        Modifier::Base64,
        Modifier::Base64Offset,
    ]
    .iter()
    .any(|m| item.has(*m))
}

fn literal(p: &[Piece]) -> Option<String> {
    match p {
        [] => Some(String::new()),
        [Piece::Lit(s)] => Some(s.clone()),
        _ => None,
    }
}

/// `expr = v` / `expr IN (...)` (or every one with `all`); `values` are SQL.
fn equality(expr: &str, values: &[String], all: bool) -> String {
    match values {
        [one] => format!("{expr} = {one}"),
        _ if all => join(
            &values
                .iter()
                .map(|v| format!("{expr} = {v}"))
                .collect::<Vec<_>>(),
            "AND",
        ),
        _ => format!("{expr} IN ({})", values.join(", ")),
    }
}

fn scalar_match(expr: &str, pats: &[Vec<Piece>], all: bool) -> String {
    let mut exact = Vec::new();
    let mut likes = Vec::new();
    for p in pats {
        match literal(p) {
            Some(s) => exact.push(sql_str(&s)),
            None => likes.push(format!("{expr} LIKE {}", sql_str(&like_pattern(p)))),
        }
    }
    let mut parts = Vec::new();
    if !exact.is_empty() {
        parts.push(equality(expr, &exact, all));
    }
    parts.extend(likes);
    join(&parts, if all { "AND" } else { "OR" })
}

/// A LIKE pattern (backslash is LIKE's escape character in DataFusion).
fn like_pattern(p: &[Piece]) -> String {
    p.iter()
        .map(|piece| match piece {
            Piece::Any => "%".to_string(),
            Piece::One => "_".to_string(),
            Piece::Lit(s) => s
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_"),
        })
        .collect()
}

/// Some element of the list `col` matches. Exact, case-sensitive values
/// use `array_has`; the rest a regular expression over the elements joined
/// by [`SEP`], each pattern anchored at element boundaries.
fn list_match(col: &str, exact_case: bool, pats: &[Vec<Piece>], all: bool) -> String {
    // `*` alone: some element, whatever it is.
    if pats
        .iter()
        .any(|p| p.iter().all(|piece| *piece == Piece::Any))
        && !all
    {
        return format!("cardinality({col}) > 0");
    }
    let literals: Option<Vec<String>> = pats.iter().map(|p| literal(p)).collect();
    if let (true, Some(lits)) = (exact_case, &literals) {
        let lits: Vec<String> = lits.iter().map(|s| sql_str(s)).collect();
        return match lits.as_slice() {
            [one] => format!("array_has({col}, {one})"),
            _ if all => join(
                &lits
                    .iter()
                    .map(|l| format!("array_has({col}, {l})"))
                    .collect::<Vec<_>>(),
                "AND",
            ),
            _ => format!("array_has_any({col}, make_array({}))", lits.join(", ")),
        };
    }
    let flags = if exact_case { "" } else { "(?i)" };
    let regex = |ps: &[&Vec<Piece>]| {
        let alts: Vec<String> = ps.iter().map(|p| regex_pattern(p)).collect();
        format!(
            "(cardinality({col}) > 0 AND regexp_like(array_to_string({col}, chr({SEP})), {}))",
            sql_str(&format!(
                "{flags}(?:^|\\x1f)(?:{})(?:\\x1f|$)",
                alts.join("|")
            ))
        )
    };
    if all {
        let parts: Vec<String> = pats.iter().map(|p| regex(&[p])).collect();
        join(&parts, "AND")
    } else {
        regex(&pats.iter().collect::<Vec<_>>())
    }
}

fn regex_pattern(p: &[Piece]) -> String {
    p.iter()
        .map(|piece| match piece {
            Piece::Any => "[^\\x1f]*".to_string(),
            Piece::One => "[^\\x1f]".to_string(),
            Piece::Lit(s) => regex_escape(s),
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A keyword search: some keyword column contains the value.
fn keywords_sql(item: &Item, p: &Pipeline) -> Result<String> {
    if p.keywords.is_empty() {
        return Err(SigmaError::NoKeywordColumns(p.name.clone()));
    }
    if let Some(m) = item.modifiers.first() {
        return Err(SigmaError::BadModifier {
            field: item.key(),
            modifier: format!("{m:?}").to_lowercase(),
            why: "modifiers on keyword lists are not supported".into(),
        });
    }
    let contains = Item {
        field: Some("keywords".into()),
        modifiers: vec![Modifier::Contains],
        values: item.values.clone(),
    };
    let parts = p
        .keywords
        .iter()
        .map(|col| {
            let spec = FieldSpec {
                sql: col.clone(),
                kind: Kind::String,
                lowercase: false,
                empty_is_absent: false,
                event: None,
            };
            let values: Vec<&Value> = contains.values.iter().collect();
            string_match(&contains, &spec, &values)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join(&parts, "OR"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipelines;
    use crate::sigma::{parse_doc, yaml_documents, Doc};

    fn compile(detection: &str) -> Result<String> {
        let text = format!(
            "title: t\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n{detection}"
        );
        let Doc::Detection(r) = parse_doc(&yaml_documents(&text).unwrap()[0])? else {
            panic!()
        };
        let p = Pipelines::builtin();
        detection_where(&r, p.for_logsource(&r.logsource).unwrap())
    }

    #[test]
    fn lists_are_or_fields_are_and() {
        assert_eq!(
            compile("  sel:\n    verb: [create, UPDATE]\n    objectRef.resource: pods\n  condition: sel\n")
                .unwrap(),
            "(verb IN ('create', 'update') AND object_ref.resource = 'pods')"
        );
    }

    #[test]
    fn case_insensitive_wildcards_and_modifiers() {
        assert_eq!(
            compile("  sel:\n    userAgent|contains: ['Trufflehog', '50%']\n  condition: sel\n")
                .unwrap(),
            "(lower(user_agent) LIKE '%trufflehog%' OR lower(user_agent) LIKE '%50\\%%')"
        );
        assert_eq!(
            compile("  sel:\n    userAgent|startswith|cased: 'kube*ctl?'\n  condition: sel\n")
                .unwrap(),
            "user_agent LIKE 'kube%ctl_%'"
        );
        assert_eq!(
            compile("  sel:\n    userAgent|re|i: '^kube'\n  condition: sel\n").unwrap(),
            "regexp_like(user_agent, '(?i)^kube')"
        );
    }

    #[test]
    fn not_is_two_valued() {
        assert_eq!(
            compile("  a:\n    verb: get\n  b:\n    userAgent: null\n  condition: a and not b\n")
                .unwrap(),
            "(verb = 'get' AND NOT COALESCE(user_agent IS NULL, FALSE))"
        );
    }

    #[test]
    fn lists_match_any_element() {
        assert_eq!(
            compile("  sel:\n    hostPath: '*'\n  condition: sel\n").unwrap(),
            "cardinality(pod_spec.host_paths) > 0"
        );
        assert_eq!(
            compile("  sel:\n    hostPath|endswith: '/Docker.sock'\n  condition: sel\n").unwrap(),
            "(cardinality(pod_spec.host_paths) > 0 AND regexp_like(array_to_string(pod_spec.host_paths, chr(31)), '(?i)(?:^|\\x1f)(?:[^\\x1f]*/docker\\.sock)(?:\\x1f|$)'))"
        );
        assert_eq!(
            compile("  sel:\n    user.groups|cased: 'system:masters'\n  condition: sel\n").unwrap(),
            "array_has(user_info.groups, 'system:masters')"
        );
    }

    #[test]
    fn integers_and_text() {
        assert_eq!(
            compile("  sel:\n    responseStatus.code: [401, 403]\n  condition: sel\n").unwrap(),
            "response_status.code IN (401, 403)"
        );
        assert_eq!(
            compile("  sel:\n    responseStatus.code: 'ALLOW'\n  condition: sel\n").unwrap(),
            "CAST(response_status.code AS VARCHAR) = 'allow'"
        );
        assert_eq!(
            compile("  sel:\n    responseStatus.code|gte: 400\n  condition: sel\n").unwrap(),
            "response_status.code >= 400"
        );
    }

    #[test]
    fn unmapped_field_is_an_error() {
        assert_eq!(
            compile("  sel:\n    Image: x\n  condition: sel\n"),
            Err(SigmaError::UnmappedField {
                field: "Image".into(),
                pipeline: "kubernetes/audit".into()
            })
        );
    }

    #[test]
    fn windash_and_base64offset() {
        assert_eq!(windash("-a").len(), 5);
        assert!(windash("-a-b").contains(&"/a\u{2013}b".to_string()));
        // pySigma's documented example: base64offset of "/bin/sh".
        let mut got = base64_offsets(b"/bin/sh");
        got.sort();
        let mut want = ["L2Jpbi9za", "9iaW4vc2", "vYmluL3No"];
        want.sort();
        assert_eq!(got, want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
}
