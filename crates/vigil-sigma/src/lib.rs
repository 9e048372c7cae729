//! Sigma rules in (issue 20): `vigil rules import sigma SRC... --out DIR`.
//!
//! Each Sigma detection rule becomes a per-event Vigil rule file, each
//! correlation rule a correlation rule file (docs/sigma.md). The importer
//! only writes text: the files are planned and checked by `vigil rules
//! validate` like hand-written ones.
//!
//! Invariants: a rule is written whole or not at all (any construct that
//! cannot be compiled skips the rule with the reason); the same input gives
//! byte-identical files (inputs are read in sorted order, no time or random
//! value is written).

pub mod condition;
pub mod correlation;
pub mod error;
pub mod pipeline;
pub mod render;
pub mod sigma;
pub mod sql;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::SigmaError;
pub use pipeline::Pipelines;
use sigma::{CorrelationRule, DetectionRule, Doc};

/// What happened to one input rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Imported {
        id: String,
        file: PathBuf,
    },
    /// A detection rule used only inside a correlation (`generate: false`).
    InCorrelation {
        id: String,
        correlation: String,
        file: PathBuf,
    },
    Skipped {
        input: PathBuf,
        /// The rule's title, name or id, when the document got that far.
        rule: Option<String>,
        reason: SigmaError,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Imported { id, file } => write!(f, "imported {id} -> {}", file.display()),
            Outcome::InCorrelation {
                id,
                correlation,
                file,
            } => write!(
                f,
                "imported {id} -> {} (in correlation {correlation})",
                file.display()
            ),
            Outcome::Skipped {
                input,
                rule: Some(r),
                reason,
            } => write!(f, "skipped {}: rule {r:?}: {reason}", input.display()),
            Outcome::Skipped {
                input,
                rule: None,
                reason,
            } => write!(f, "skipped {}: {reason}", input.display()),
        }
    }
}

/// The outcome of every input rule, in input order.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn imported(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Skipped { .. }))
            .count()
    }
    pub fn total(&self) -> usize {
        self.outcomes.len()
    }
    /// The lines `vigil rules import sigma` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.outcomes.iter().map(|o| o.to_string()).collect();
        lines.push(format!(
            "imported {} of {} Sigma rules",
            self.imported(),
            self.total()
        ));
        lines
    }
}

/// Every `.yml`/`.yaml` file under the sources (a file is taken as given),
/// sorted within each directory.
pub fn input_files(sources: &[PathBuf]) -> Result<Vec<PathBuf>, SigmaError> {
    let mut out = Vec::new();
    for s in sources {
        if s.is_dir() {
            walk(s, &mut out)?;
        } else if s.is_file() {
            out.push(s.clone());
        } else {
            return Err(SigmaError::Io {
                path: s.display().to_string(),
                why: "no such file or directory".into(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SigmaError> {
    let io = |e: std::io::Error| SigmaError::Io {
        path: dir.display().to_string(),
        why: e.to_string(),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            out.push(p);
        }
    }
    Ok(())
}

/// One parsed input document.
struct Input {
    path: PathBuf,
    /// File stem, with `_<n>` for the n-th rule of a multi-rule file.
    stem: String,
    label: Option<String>,
    doc: Result<Doc, SigmaError>,
}

fn read_inputs(files: &[PathBuf]) -> Result<Vec<Input>, SigmaError> {
    let mut inputs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| SigmaError::Io {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("rule")
            .to_string();
        match sigma::yaml_documents(&text) {
            Err(e) => inputs.push(Input {
                path: path.clone(),
                stem,
                label: None,
                doc: Err(e),
            }),
            Ok(docs) => {
                let many = docs.len() > 1;
                for (i, d) in docs.iter().enumerate() {
                    inputs.push(Input {
                        path: path.clone(),
                        stem: if many {
                            format!("{stem}_{}", i + 1)
                        } else {
                            stem.clone()
                        },
                        label: sigma::doc_label(d),
                        doc: sigma::parse_doc(d),
                    });
                }
            }
        }
    }
    Ok(inputs)
}

/// A file stem safe as a file name.
fn file_stem(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Compile every rule of the inputs; returns the report and the files to
/// write (path relative to the output directory -> contents).
pub fn compile(
    files: &[PathBuf],
    pipelines: &Pipelines,
) -> Result<(Report, BTreeMap<PathBuf, String>), SigmaError> {
    let inputs = read_inputs(files)?;
    // Detection rules by name and id, for correlations.
    let mut by_ref: BTreeMap<String, usize> = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        if let Ok(Doc::Detection(r)) = &input.doc {
            for k in [&r.meta.name, &r.meta.id].into_iter().flatten() {
                by_ref.insert(k.clone(), i);
            }
        }
    }
    // Detection rules only used inside correlations: which correlation.
    let mut only_in: BTreeMap<usize, usize> = BTreeMap::new();
    for (ci, input) in inputs.iter().enumerate() {
        if let Ok(Doc::Correlation(c)) = &input.doc {
            if !c.generate {
                for r in &c.rules {
                    if let Some(i) = by_ref.get(r) {
                        only_in.insert(*i, ci);
                    }
                }
            }
        }
    }
    let mut report = Report::default();
    let mut written: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut files_of: BTreeMap<usize, (String, PathBuf)> = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let compiled = input
            .doc
            .clone()
            .and_then(|doc| compile_doc(&doc, input, &inputs, &by_ref, pipelines));
        match compiled {
            Ok((id, rel, text)) => {
                if written.contains_key(&rel) {
                    report.outcomes.push(Outcome::Skipped {
                        input: input.path.clone(),
                        rule: input.label.clone(),
                        reason: SigmaError::Unsupported(format!(
                            "output file {} already written by another rule of the input",
                            rel.display()
                        )),
                    });
                    continue;
                }
                files_of.insert(i, (id.clone(), rel.clone()));
                if !only_in.contains_key(&i) {
                    written.insert(rel.clone(), text);
                }
                report.outcomes.push(Outcome::Imported { id, file: rel });
            }
            Err(reason) => report.outcomes.push(Outcome::Skipped {
                input: input.path.clone(),
                rule: input.label.clone(),
                reason,
            }),
        }
    }
    // A rule used only inside a correlation points at the correlation's file.
    // One outcome per input, in input order: outcome `i` is input `i`.
    for (rule, corr) in only_in {
        let Some(Outcome::Imported { id, .. }) = report.outcomes.get(rule).cloned() else {
            continue;
        };
        report.outcomes[rule] = match files_of.get(&corr) {
            Some((cid, cfile)) => Outcome::InCorrelation {
                id,
                correlation: cid.clone(),
                file: cfile.clone(),
            },
            None => Outcome::Skipped {
                input: inputs[rule].path.clone(),
                rule: inputs[rule].label.clone(),
                reason: SigmaError::Correlation(format!(
                    "used only by the correlation {:?} (generate: false), which was skipped",
                    inputs[corr].label.clone().unwrap_or_default()
                )),
            },
        };
    }
    Ok((report, written))
}

fn compile_doc(
    doc: &Doc,
    input: &Input,
    inputs: &[Input],
    by_ref: &BTreeMap<String, usize>,
    pipelines: &Pipelines,
) -> Result<(String, PathBuf, String), SigmaError> {
    let meta = doc.meta();
    let id = render::rule_id(meta, &input.stem);
    let stem = file_stem(meta.name.as_deref().unwrap_or(&input.stem));
    let based_on = meta
        .name
        .clone()
        .or_else(|| meta.id.clone())
        .unwrap_or_else(|| input.stem.clone());
    let (table, sql, more) = match doc {
        Doc::Detection(r) => {
            let p = pipelines.for_logsource(&r.logsource)?;
            (p.table.clone(), detection_select(r, p)?, vec![])
        }
        Doc::Correlation(c) => {
            let (p, refs) = correlation_refs(c, inputs, by_ref, pipelines)?;
            let compiled = correlation::compile(c, &refs, p)?;
            (p.table.clone(), compiled.sql, compiled.header)
        }
    };
    let extra = render::Extra {
        id: &id,
        source: &table,
        more,
    };
    let text = render::rule_file(meta, &extra, &based_on, &sql);
    Ok((id, PathBuf::from(&table).join(format!("{stem}.sql")), text))
}

/// The per-event rule's SELECT.
pub fn detection_select(r: &DetectionRule, p: &pipeline::Pipeline) -> Result<String, SigmaError> {
    let cond = sql::detection_where(r, p)?;
    Ok(format!(
        "SELECT\n  {}\nFROM {}\nWHERE {cond}\n",
        p.output.join(",\n  "),
        p.table
    ))
}

fn correlation_refs<'a>(
    c: &CorrelationRule,
    inputs: &'a [Input],
    by_ref: &BTreeMap<String, usize>,
    pipelines: &'a Pipelines,
) -> Result<(&'a pipeline::Pipeline, Vec<&'a DetectionRule>), SigmaError> {
    let mut refs = Vec::new();
    for name in &c.rules {
        let i = by_ref
            .get(name)
            .ok_or_else(|| SigmaError::UnknownRuleRef(name.clone()))?;
        match &inputs[*i].doc {
            Ok(Doc::Detection(r)) => refs.push(r),
            _ => return Err(SigmaError::UnknownRuleRef(name.clone())),
        }
    }
    let p = pipelines.for_logsource(&refs[0].logsource)?;
    for r in &refs[1..] {
        let q = pipelines.for_logsource(&r.logsource)?;
        if q.table != p.table {
            return Err(SigmaError::Correlation(format!(
                "rules of different tables ({} and {}) are not supported",
                p.table, q.table
            )));
        }
    }
    Ok((p, refs))
}

/// Compile and write: the whole `vigil rules import sigma`. Files of
/// skipped rules are not written; a file whose contents are unchanged is
/// left alone.
pub fn import(
    sources: &[PathBuf],
    out: &Path,
    pipelines: &Pipelines,
) -> Result<Report, SigmaError> {
    let files = input_files(sources)?;
    let (report, written) = compile(&files, pipelines)?;
    for (rel, text) in written {
        let path = out.join(rel);
        let io = |e: std::io::Error| SigmaError::Io {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "title: Secrets listed\nid: 11111111-0000-4000-8000-000000000001\nname: secret_list\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel:\n    verb: list\n  condition: sel\n";

    /// Import `files` (name, text) from a fresh directory into another.
    fn run(files: &[(&str, &str)]) -> (Vec<String>, tempfile::TempDir) {
        let src = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(src.path().join(name), text).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let report = import(
            &[src.path().to_path_buf()],
            out.path(),
            &Pipelines::builtin(),
        )
        .unwrap();
        let lines = report
            .lines()
            .into_iter()
            .map(|l| l.replace(&src.path().display().to_string(), "SRC"))
            .collect();
        (lines, out)
    }

    fn written(out: &Path) -> Vec<String> {
        let mut v = Vec::new();
        for dir in std::fs::read_dir(out).unwrap() {
            for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                v.push(f.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        v.sort();
        v
    }

    #[test]
    fn bad_input_names_file_rule_and_construct_and_writes_nothing_for_it() {
        let bad_modifier = GOOD.replace("verb: list", "verb|containz: list");
        let missing = GOOD.replace("condition: sel", "condition: sel and filter");
        let corr_missing = "title: Burst\nid: c1\ncorrelation:\n  type: event_count\n  rules: [nope]\n  group-by: [user.username]\n  timespan: 1m\n  condition: {gte: 3}\n";
        let corr_timespan = "title: Burst2\nid: c2\ncorrelation:\n  type: event_count\n  rules: [secret_list]\n  group-by: [user.username]\n  timespan: soon\n  condition: {gte: 3}\n";
        let (lines, out) = run(&[
            ("a_good.yml", GOOD),
            ("b_yaml.yml", "title: [unclosed\n"),
            (
                "c_modifier.yml",
                &bad_modifier
                    .replace("secret_list", "x1")
                    .replace("0001", "0002"),
            ),
            (
                "d_missing.yml",
                &missing.replace("secret_list", "x2").replace("0001", "0003"),
            ),
            ("e_corr.yml", corr_missing),
            ("f_corr.yml", corr_timespan),
        ]);
        assert_eq!(
            lines,
            vec![
                "imported sigma.11111111-0000-4000-8000-000000000001 -> k8s_audit/secret_list.sql",
                "skipped SRC/b_yaml.yml: invalid YAML: did not find expected ',' or ']' at line 2 column 1, while parsing a flow sequence at line 1 column 8",
                "skipped SRC/c_modifier.yml: rule \"Secrets listed\": unknown modifier \"containz\" on \"verb|containz\"",
                "skipped SRC/d_missing.yml: rule \"Secrets listed\": condition names \"filter\", which is not a detection of the rule",
                "skipped SRC/e_corr.yml: rule \"Burst\": correlation names rule \"nope\", which is not in the input",
                "skipped SRC/f_corr.yml: rule \"Burst2\": unparseable timespan \"soon\": expected a number and s, m, h or d (e.g. 10m)",
                "imported 1 of 6 Sigma rules",
            ]
        );
        assert_eq!(written(out.path()), vec!["secret_list.sql"]);
    }

    #[test]
    fn unmapped_logsource_and_field_are_skipped_whole() {
        let windows = GOOD.replace(
            "{product: kubernetes, service: audit}",
            "{product: windows, category: process_creation}",
        );
        let field = GOOD.replace("verb: list", "verb: list\n    Image: /bin/sh");
        let (lines, out) = run(&[("a.yml", &windows), ("b.yml", &field)]);
        assert_eq!(
            lines,
            vec![
                "skipped SRC/a.yml: rule \"Secrets listed\": no pipeline maps logsource {product: windows, category: process_creation}",
                "skipped SRC/b.yml: rule \"Secrets listed\": field \"Image\" has no mapping in pipeline kubernetes/audit",
                "imported 0 of 2 Sigma rules",
            ]
        );
        assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
    }

    #[test]
    fn correlation_with_aliases_range_and_generate() {
        let other = "title: Pods created\nname: pod_create\nid: p1\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel:\n    verb: create\n    objectRef.resource: pods\n  condition: sel\n";
        let corr = "title: Lists and pods\nname: lists_and_pods\nid: c3\ncorrelation:\n  type: event_count\n  rules: [secret_list, pod_create]\n  group-by: [who]\n  aliases:\n    who:\n      secret_list: user.username\n      pod_create: impersonatedUser.username\n  timespan: 5m\n  condition: {range: 2..4}\n  generate: true\n";
        let (lines, out) = run(&[("a.yml", GOOD), ("b.yml", other), ("c.yml", corr)]);
        assert_eq!(lines.last().unwrap(), "imported 3 of 3 Sigma rules");
        // generate: true keeps the rules as per-event rules too.
        assert_eq!(
            written(out.path()),
            vec!["lists_and_pods.sql", "pod_create.sql", "secret_list.sql"]
        );
        let text =
            std::fs::read_to_string(out.path().join("k8s_audit/lists_and_pods.sql")).unwrap();
        assert!(
            text.contains("-- mode: correlation\n-- window: 300s\n"),
            "{text}"
        );
        assert!(
            text.contains("CASE WHEN verb = 'list' THEN user_info.username WHEN (verb = 'create' AND object_ref.resource = 'pods') THEN impersonated_user.username END AS who"),
            "{text}"
        );
        assert!(
            text.contains("HAVING count(*) >= 2 AND count(*) <= 4"),
            "{text}"
        );
    }

    #[test]
    fn generated_header_parses_as_a_vigil_rule() {
        let (_, out) = run(&[("a.yml", GOOD)]);
        let text = std::fs::read_to_string(out.path().join("k8s_audit/secret_list.sql")).unwrap();
        let (meta, _) = vigil_model::rule::parse_header(&text).unwrap();
        assert_eq!(meta.id, "sigma.11111111-0000-4000-8000-000000000001");
        assert_eq!(meta.based_on, vec!["sigma:secret_list"]);
        assert!(meta.mitre.is_empty());
    }
}
