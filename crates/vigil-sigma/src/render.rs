//! Vigil rule files: the `-- key: value` header (docs/rules.md) and the SQL.

use crate::sigma::Meta;

/// Header values besides the Sigma metadata.
pub struct Extra<'a> {
    pub id: &'a str,
    pub source: &'a str,
    /// Header lines after `based_on` (mode, window, ...), as `(key, value)`.
    pub more: Vec<(&'static str, String)>,
}

/// The Vigil rule id of a Sigma rule: `sigma.<id>`, else `sigma.<name>`.
/// Characters a rule id cannot hold become `_`.
pub fn rule_id(meta: &Meta, fallback: &str) -> String {
    let raw = meta
        .id
        .as_deref()
        .or(meta.name.as_deref())
        .unwrap_or(fallback);
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("sigma.{clean}")
}

/// The severity of a Sigma `level`.
pub fn severity(level: Option<&str>) -> &'static str {
    match level {
        Some("informational") => "info",
        Some("low") => "low",
        Some("high") => "high",
        Some("critical") => "critical",
        _ => "medium",
    }
}

/// ATT&CK technique ids of the `attack.tNNNN[.NNN]` tags, or `none`.
pub fn mitre(tags: &[String]) -> String {
    let ids: Vec<String> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .filter(|t| {
            let b = t.as_bytes();
            (b.len() == 4 || (b.len() == 8 && b[4] == b'.'))
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| i == 4 || c.is_ascii_digit())
        })
        .map(|t| format!("T{t}"))
        .collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// One line of header text: whitespace runs (newlines included) folded to
/// one space, commas in list items escaped so the list stays a list.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description, then the false positives, wrapped into continuation
/// lines (`--    `) of at most about 78 columns.
fn description(meta: &Meta) -> String {
    let mut text = one_line(&meta.description);
    if text.is_empty() {
        text = one_line(&meta.title);
    }
    if !meta.falsepositives.is_empty() {
        let fps: Vec<String> = meta.falsepositives.iter().map(|f| one_line(f)).collect();
        let fps = fps.join("; ");
        let stop = if fps.ends_with(['.', '!', '?']) {
            ""
        } else {
            "."
        };
        text.push_str(&format!(" False positives: {fps}{stop}"));
    }
    let mut lines = vec![String::from("-- description:")];
    for word in text.split(' ') {
        let last = lines.last_mut().expect("one line");
        if last.len() + word.len() + 1 > 78 && last.len() > 8 {
            lines.push(format!("--    {word}"));
        } else {
            last.push(' ');
            last.push_str(word);
        }
    }
    lines.join("\n")
}

/// The whole rule file.
pub fn rule_file(meta: &Meta, extra: &Extra<'_>, based_on: &str, sql: &str) -> String {
    let tags: Vec<String> = std::iter::once("sigma".to_string())
        .chain(
            meta.tags
                .iter()
                .filter(|t| !t.starts_with("attack.t") || mitre(std::slice::from_ref(t)) == "none")
                .map(|t| t.replace(',', " ")),
        )
        .collect();
    let refs: Vec<String> = meta
        .references
        .iter()
        .map(|r| one_line(r).replace(',', "%2C"))
        .collect();
    let mut out = String::new();
    out.push_str(&format!("-- id: {}\n", extra.id));
    out.push_str(&format!("-- title: {}\n", one_line(&meta.title)));
    out.push_str(&format!(
        "-- severity: {}\n",
        severity(meta.level.as_deref())
    ));
    out.push_str(&description(meta));
    out.push('\n');
    out.push_str(&format!("-- mitre: {}\n", mitre(&meta.tags)));
    out.push_str(&format!("-- source: {}\n", extra.source));
    out.push_str(&format!("-- tags: {}\n", tags.join(", ")));
    let author = meta.author.as_deref().map(one_line).unwrap_or_default();
    out.push_str(&format!(
        "-- author: {}\n",
        if author.is_empty() {
            "Sigma".into()
        } else {
            author
        }
    ));
    if !refs.is_empty() {
        out.push_str(&format!("-- references: {}\n", refs.join(", ")));
    }
    out.push_str(&format!(
        "-- based_on: sigma:{}\n",
        based_on.replace(',', "_")
    ));
    for (k, v) in &extra.more {
        out.push_str(&format!("-- {k}: {v}\n"));
    }
    out.push_str(sql);
    if !sql.ends_with('\n') {
        out.push('\n');
    }
    out
}
