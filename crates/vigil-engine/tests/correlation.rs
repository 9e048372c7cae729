//! Correlation semantics as data: every `tests/correlation/*.case` file is
//! one case (rules, settings, input in arrival order and batches, and the
//! expected transcript of alerts and dead letters). The format is described
//! in `tests/correlation/README.md`.
//!
//! One test runs every case, reports each, and fails listing every failing
//! case with a diff of its expected and actual transcripts. A case file
//! that does not parse fails the test, and so does a directory without
//! cases.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use vigil_engine::alert::Alert;
use vigil_engine::correlate::CorrelationSettings;
use vigil_engine::dead_letter::DeadLetter;
use vigil_engine::detect::{Detections, Detector};
use vigil_engine::observe::NoMetrics;
use vigil_engine::rules::{parse_rule, RuleEngine};
use vigil_engine::source::{Origin, RawMessage, SourceKind};

/// The runner's own key in `# settings` and `# variant`: cut the input into
/// batches of this many messages instead of its `-- batch` markers.
const BATCH_SIZE_KEY: &str = "batch_size";

/// One parsed case file.
struct Case {
    /// `(file name, text)` of each `# rule` section.
    rules: Vec<(String, String)>,
    /// The `# settings` section.
    settings: toml::Table,
    /// The `# variant <name>` sections, in file order.
    variants: Vec<(String, toml::Table)>,
    /// The `# input` section, one entry per `-- batch N`.
    batches: Vec<Vec<Input>>,
    /// `# expect` (key `None`) and `# expect <variant>` sections.
    expect: BTreeMap<Option<String>, Vec<String>>,
}

/// One input message.
struct Input {
    source: SourceKind,
    partition: i32,
    offset: i64,
    payload: String,
}

/// A section of a case file before it is read: its kind, its argument
/// (rule file or variant name), the line of its header and its lines.
struct RawSection {
    kind: Section,
    arg: String,
    at: usize,
    lines: Vec<(usize, String)>,
}

#[derive(PartialEq, Eq)]
enum Section {
    Preamble,
    Rule,
    Settings,
    Variant,
    Input,
    Expect,
}

/// Lines that are neither blank nor `//` comments, with their numbers.
fn content(lines: &[(usize, String)]) -> impl Iterator<Item = (usize, &str)> {
    lines
        .iter()
        .map(|(n, l)| (*n, l.trim_end()))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
}

/// TOML text of a section, `//` comment lines dropped.
fn toml_table(name: &str, line: usize, lines: &[(usize, String)]) -> Result<toml::Table, String> {
    let text: String = content(lines).map(|(_, l)| format!("{l}\n")).collect();
    text.parse::<toml::Table>()
        .map_err(|e| format!("{name}:{line}: settings are not valid TOML: {e}"))
}

fn parse_case(name: &str, text: &str) -> Result<Case, String> {
    let mut sections = vec![RawSection {
        kind: Section::Preamble,
        arg: String::new(),
        at: 0,
        lines: Vec::new(),
    }];
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(header) = line.strip_prefix('#') {
            let header = header.trim();
            let (word, arg) = header.split_once(' ').unwrap_or((header, ""));
            let arg = arg.trim().to_string();
            let kind = match word {
                "rule" => Section::Rule,
                "settings" => Section::Settings,
                "variant" => Section::Variant,
                "input" => Section::Input,
                "expect" => Section::Expect,
                _ => {
                    return Err(format!(
                        "{name}:{n}: unknown section `{line}` (expected # rule <file>, # settings, \
                         # variant <name>, # input, # expect [<variant>]; comments start with //)"
                    ))
                }
            };
            let needs_arg = matches!(kind, Section::Rule | Section::Variant);
            if needs_arg && arg.is_empty() {
                return Err(format!("{name}:{n}: `# {word}` needs a name"));
            }
            if matches!(kind, Section::Settings | Section::Input) && !arg.is_empty() {
                return Err(format!("{name}:{n}: `# {word}` takes no argument"));
            }
            sections.push(RawSection {
                kind,
                arg,
                at: n,
                lines: Vec::new(),
            });
        } else {
            sections
                .last_mut()
                .unwrap()
                .lines
                .push((n, line.to_string()));
        }
    }

    let mut case = Case {
        rules: Vec::new(),
        settings: toml::Table::new(),
        variants: Vec::new(),
        batches: Vec::new(),
        expect: BTreeMap::new(),
    };
    let (mut seen_settings, mut seen_input) = (false, false);
    for RawSection {
        kind,
        arg,
        at,
        lines,
    } in sections
    {
        match kind {
            Section::Preamble => {}
            Section::Rule => {
                let mut body: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
                while body.last().is_some_and(|l| l.trim().is_empty()) {
                    body.pop();
                }
                if body.is_empty() {
                    return Err(format!("{name}:{at}: rule {arg} is empty"));
                }
                if case.rules.iter().any(|(f, _)| *f == arg) {
                    return Err(format!("{name}:{at}: rule file {arg} given twice"));
                }
                case.rules.push((arg, body.join("\n") + "\n"));
            }
            Section::Settings => {
                if std::mem::replace(&mut seen_settings, true) {
                    return Err(format!("{name}:{at}: a second # settings section"));
                }
                case.settings = toml_table(name, at, &lines)?;
            }
            Section::Variant => {
                if case.variants.iter().any(|(v, _)| *v == arg) {
                    return Err(format!("{name}:{at}: variant {arg} given twice"));
                }
                let table = toml_table(name, at, &lines)?;
                case.variants.push((arg, table));
            }
            Section::Input => {
                if std::mem::replace(&mut seen_input, true) {
                    return Err(format!("{name}:{at}: a second # input section"));
                }
                case.batches = parse_input(name, &lines)?;
            }
            Section::Expect => {
                let key = (!arg.is_empty()).then_some(arg.clone());
                let lines: Vec<String> = content(&lines).map(|(_, l)| l.to_string()).collect();
                if case.expect.insert(key, lines).is_some() {
                    return Err(format!("{name}:{at}: a second # expect {arg}"));
                }
            }
        }
    }
    if case.rules.is_empty() {
        return Err(format!("{name}: no # rule section"));
    }
    if !seen_input || case.batches.is_empty() {
        return Err(format!(
            "{name}: no # input section (or no `-- batch 1` in it)"
        ));
    }
    for key in case.expect.keys().flatten() {
        if !case.variants.iter().any(|(v, _)| v == key) {
            return Err(format!("{name}: # expect {key}: no variant of that name"));
        }
    }
    for variant in variant_names(&case) {
        if !case.expect.contains_key(&variant) && !case.expect.contains_key(&None) {
            return Err(format!(
                "{name}: no # expect for {}",
                variant.as_deref().unwrap_or("the case")
            ));
        }
    }
    Ok(case)
}

/// `-- batch N` markers and `source/partition[@offset] <payload>` lines.
fn parse_input(name: &str, lines: &[(usize, String)]) -> Result<Vec<Vec<Input>>, String> {
    let mut batches: Vec<Vec<Input>> = Vec::new();
    let mut next_offset: HashMap<(SourceKind, i32), i64> = HashMap::new();
    for (n, line) in content(lines) {
        if let Some(number) = line.strip_prefix("-- batch") {
            let expected = batches.len() + 1;
            if number.trim() != expected.to_string() {
                return Err(format!(
                    "{name}:{n}: expected `-- batch {expected}` (batches are numbered from 1, in order)"
                ));
            }
            batches.push(Vec::new());
            continue;
        }
        let Some(batch) = batches.last_mut() else {
            return Err(format!(
                "{name}:{n}: input before the first `-- batch 1` marker"
            ));
        };
        let bad = |why: &str| {
            format!("{name}:{n}: {why}: expected `<source>/<partition>[@<offset>] <payload>`")
        };
        let (origin, payload) = line
            .split_once(' ')
            .ok_or_else(|| bad("no payload after the origin"))?;
        let (source, rest) = origin.split_once('/').ok_or_else(|| bad("no partition"))?;
        let source: SourceKind =
            vigil_sources::registry::resolve(source).map_err(|e| bad(&e.to_string()))?;
        let (partition, offset) = match rest.split_once('@') {
            Some((p, o)) => (p, Some(o)),
            None => (rest, None),
        };
        let partition: i32 = partition.parse().map_err(|_| bad("bad partition"))?;
        let next = next_offset.entry((source, partition)).or_insert(0);
        let offset = match offset {
            Some(o) => o.parse::<i64>().map_err(|_| bad("bad offset"))?,
            None => *next,
        };
        *next = offset + 1;
        batch.push(Input {
            source,
            partition,
            offset,
            payload: payload.trim().to_string(),
        });
    }
    Ok(batches)
}

/// `None` for a case without variants, else each variant's name.
fn variant_names(case: &Case) -> Vec<Option<String>> {
    if case.variants.is_empty() {
        vec![None]
    } else {
        case.variants.iter().map(|(v, _)| Some(v.clone())).collect()
    }
}

/// The settings of one variant (the case's settings, overridden key by key
/// by the variant's), and the runner's batch size if one is set.
fn settings_of(
    case: &Case,
    variant: &Option<String>,
) -> Result<(CorrelationSettings, Option<usize>), String> {
    let mut table = case.settings.clone();
    if let Some(v) = variant {
        let (_, overrides) = case.variants.iter().find(|(n, _)| n == v).unwrap();
        table.extend(overrides.clone());
    }
    let batch_size = match table.remove(BATCH_SIZE_KEY) {
        None => None,
        Some(toml::Value::Integer(n)) if n > 0 => Some(n as usize),
        Some(other) => {
            return Err(format!(
                "{BATCH_SIZE_KEY} must be a positive integer, not {other}"
            ))
        }
    };
    let settings: CorrelationSettings = toml::Value::Table(table)
        .try_into()
        .map_err(|e| format!("settings: {e}"))?;
    Ok((settings, batch_size))
}

/// Alert ids, shown as `#1`, `#2`, … in order of first appearance in the
/// case (over all its variants): equal labels are equal ids.
#[derive(Default)]
struct IdLabels(HashMap<String, usize>);

impl IdLabels {
    fn label(&mut self, id: &str) -> String {
        let next = self.0.len() + 1;
        format!("#{}", self.0.entry(id.to_string()).or_insert(next))
    }
}

fn origin_text(o: &Origin) -> String {
    match o {
        Origin::Kafka {
            topic,
            partition,
            offset,
        } => format!("{topic}/{partition}@{offset}"),
        Origin::File { path, line } => format!("{path}:{line}"),
    }
}

fn render_alert(a: &Alert, ids: &mut IdLabels, out: &mut Vec<String>) {
    out.push(format!(
        "alert {} {} at {}",
        ids.label(&a.alert_id),
        a.rule_id,
        a.event_time
    ));
    // Sorted keys, whatever serde_json's map order in this build.
    let fields: BTreeMap<&String, &serde_json::Value> = a.fields.iter().collect();
    out.push(format!(
        "  fields {}",
        serde_json::to_string(&fields).unwrap()
    ));
    let events: Vec<&str> = a.events.iter().map(|e| e.event_id.as_str()).collect();
    out.push(format!("  events {}", events.join(" ")));
    if let Some(n) = a.suppressed_count {
        out.push(format!("  suppressed {n}"));
    }
}

fn render_dead_letter(d: &DeadLetter, inputs: &HashMap<String, &str>, out: &mut Vec<String>) {
    let kind = serde_json::to_value(d.kind).unwrap();
    let origins: Vec<String> = d.origins.iter().map(origin_text).collect();
    let mut line = format!("dead {} {}", kind.as_str().unwrap(), origins.join(" "));
    if let Some(rule) = &d.rule_id {
        write!(line, " rule {rule}").unwrap();
    }
    out.push(line);
    match (&d.payload, d.origins.as_slice()) {
        (None, _) => {}
        (Some(p), [o]) if inputs.get(&origin_text(o)).is_some_and(|i| *i == p) => {
            out.push("  payload = input".into())
        }
        (Some(p), _) => out.push(format!("  payload {p}")),
    }
    if d.kind != vigil_engine::dead_letter::DeadLetterKind::LateEvent {
        out.push(format!("  reason {}", d.reason));
    }
}

fn render(
    label: &str,
    out: Detections,
    ids: &mut IdLabels,
    inputs: &HashMap<String, &str>,
    lines: &mut Vec<String>,
) {
    lines.push(format!("-- {label}"));
    for a in &out.alerts {
        render_alert(a, ids, lines);
    }
    for d in &out.dead_letters {
        render_dead_letter(d, inputs, lines);
    }
}

/// Run one variant of a case: its transcript.
async fn run_variant(
    case: &Case,
    variant: &Option<String>,
    ids: &mut IdLabels,
) -> Result<Vec<String>, String> {
    let (settings, batch_size) = settings_of(case, variant)?;
    let rules = case
        .rules
        .iter()
        .map(|(file, text)| {
            parse_rule(&PathBuf::from(file), text).map_err(|errors| {
                let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                format!("rule {file}: {}", errors.join("; "))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let engine = RuleEngine::compile_with(rules, settings)
        .await
        .map_err(|e| format!("the rules do not compile: {e}"))?;
    let mut detector = Detector::new(engine, Default::default(), Arc::new(NoMetrics));

    let all: Vec<&Input> = case.batches.iter().flatten().collect();
    let batches: Vec<Vec<&Input>> = match batch_size {
        Some(n) => all.chunks(n).map(|c| c.to_vec()).collect(),
        None => case.batches.iter().map(|b| b.iter().collect()).collect(),
    };
    let inputs: HashMap<String, &str> = all
        .iter()
        .map(|i| {
            (
                format!("{}/{}@{}", i.source.table_name(), i.partition, i.offset),
                i.payload.as_str(),
            )
        })
        .collect();
    let mut lines = Vec::new();
    for (n, batch) in batches.iter().enumerate() {
        let messages = batch
            .iter()
            .map(|i| RawMessage {
                source: i.source,
                payload: i.payload.clone().into_bytes(),
                origin: Origin::Kafka {
                    topic: i.source.table_name().into(),
                    partition: i.partition,
                    offset: i.offset,
                },
                timestamp_ms: None,
                state_only: false,
            })
            .collect();
        let out = detector.process(messages).await;
        render(&format!("batch {}", n + 1), out, ids, &inputs, &mut lines);
    }
    let out = detector.finish().await;
    render("finish", out, ids, &inputs, &mut lines);
    Ok(lines)
}

/// Lines of context shown around each difference.
const CONTEXT: usize = 3;

/// A line diff (longest common subsequence): `- ` expected only, `+ `
/// actual only, `  ` both (only [`CONTEXT`] lines around each change).
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            ops.push((' ', &expected[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', &expected[i]));
            i += 1;
        } else {
            ops.push(('+', &actual[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("    ...\n");
                skipped = false;
            }
            writeln!(out, "  {op} {line}").unwrap();
        } else {
            skipped = true;
        }
    }
    if skipped {
        out.push_str("    ...\n");
    }
    out
}

/// Run every variant of a case; `Err` describes each mismatch.
async fn run_case(case: &Case) -> Result<(), String> {
    let mut ids = IdLabels::default();
    let mut failures = String::new();
    for variant in variant_names(case) {
        let what = match &variant {
            Some(v) => format!("variant {v}"),
            None => "the case".to_string(),
        };
        let run = AssertUnwindSafe(run_variant(case, &variant, &mut ids))
            .catch_unwind()
            .await;
        let actual = match run {
            // Compared as the expectation is read: without trailing spaces.
            Ok(Ok(lines)) => lines
                .into_iter()
                .map(|l| l.trim_end().to_string())
                .collect::<Vec<_>>(),
            Ok(Err(e)) => {
                writeln!(failures, "{what}: {e}").unwrap();
                continue;
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                writeln!(failures, "{what}: panicked: {msg}").unwrap();
                continue;
            }
        };
        let expected = case
            .expect
            .get(&variant)
            .or_else(|| case.expect.get(&None))
            .unwrap();
        if *expected != actual {
            let section = match &variant {
                Some(v) if case.expect.contains_key(&variant) => format!("# expect {v}"),
                _ => "# expect".to_string(),
            };
            writeln!(
                failures,
                "{what}: the transcript differs from {section} (- expected, + actual):\n{}",
                diff(expected, &actual)
            )
            .unwrap();
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// The `*.case` files of `dir`, sorted; any other file but the README is
/// an error (a misnamed case would never run).
fn case_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|x| x == "case") {
            files.push(path);
        } else if path.file_name().is_none_or(|n| n != "README.md") {
            return Err(format!(
                "{}: not a *.case file (cases end in .case; the format is in README.md)",
                path.display()
            ));
        }
    }
    files.sort();
    Ok(files)
}

#[tokio::test]
async fn correlation_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/correlation");
    let files = case_files(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !files.is_empty(),
        "no *.case file in {}: nothing would be tested",
        dir.display()
    );
    // Run a subset while working on a case: VIGIL_CASE=<part of the file name>.
    let only = std::env::var("VIGIL_CASE").ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        ran += 1;
        let text = std::fs::read_to_string(file).unwrap();
        let result = match parse_case(&name, &text) {
            Ok(case) => run_case(&case).await,
            Err(e) => Err(format!("does not parse: {e}")),
        };
        match result {
            Ok(()) => println!("ok      {name}"),
            Err(e) => {
                println!("FAILED  {name}");
                failed.push(format!("=== {name}\n{e}"));
            }
        }
    }
    let only = only.map(|o| format!(" (VIGIL_CASE={o}: {ran} of {})", files.len()));
    let only = only.unwrap_or_default();
    assert!(ran > 0, "no case file matches{only}");
    assert!(
        failed.is_empty(),
        "{} of {ran} correlation cases failed{only}:\n\n{}",
        failed.len(),
        failed.join("\n")
    );
    println!("{ran} correlation cases passed{only}");
}
