//! Retained JSON documents cut to the parts correlation rules read.
//!
//! A retained audit event's `request_object` is most of its size, yet the
//! correlation rules read a few members of it (`metadata.name`,
//! `metadata.ownerReferences`, `rules`, ...). When every use of a text
//! column in every correlation rule is a JSON function given the column
//! and a path of literal keys (`json_get_str(request_object, 'metadata',
//! 'name')`, `json_path_exists(request_object, '$.rules[...]')`) or a null
//! test, the retained copy of each document keeps only the members at
//! those paths ([`Keep`]), each whole, as written in the event.
//!
//! Invariants:
//! - Every JSON function applied to a cut document with one of the
//!   recorded paths gives what it gives on the whole document: along a
//!   path only object members not on any path are dropped (arrays and
//!   scalars on the way are kept whole), and each member at a path's end is
//!   copied byte for byte. Repeated keys are all kept, in order.
//! - A null stays null and a document stays a document: the cut of a
//!   document none of whose paths exist is `{}`.
//! - Any other use of the column (as a value, compared, grouped, passed
//!   under another name, output by the rule), a path that is not a literal
//!   from its first key, a JSONPath that is not a member name first, or a
//!   plan whose operators compare whole rows, keeps the column whole.
//!   Text that is not a JSON object is kept as it is.
//! - Only a source's JSON columns are cut: their values were validated
//!   whole by the decoder, so the cut skips members by where they end
//!   without parsing them again.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};
use std::sync::Arc;
use vigil_sources::json::{for_each_item, member_at, skip_whitespace, value_end};

/// The JSON functions of `datafusion-functions-json` (and their aliases):
/// their first argument is the document, the others a path of keys
/// (strings) and indices (integers).
const PATH_FUNCTIONS: &[&str] = &[
    "json_get",
    "json_get_str",
    "json_get_int",
    "json_get_float",
    "json_get_bool",
    "json_get_json",
    "json_get_array",
    "json_as_text",
    "json_contains",
    "json_length",
    "json_len",
    "json_object_keys",
    "json_keys",
];

/// Vigil's JSONPath functions: the document and one RFC 9535 path.
const JSONPATH_FUNCTIONS: &[&str] = &["json_path_values", "json_path_exists"];

/// What to keep of a document, or of the value at a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Keep {
    /// The whole value.
    Whole,
    /// Of an object, these members (each cut by its own [`Keep`]); any
    /// other value whole.
    Members(BTreeMap<String, Keep>),
}

impl Keep {
    /// Widen to also keep the value at `path` (from this node) whole.
    fn add(&mut self, path: &[String]) {
        let Keep::Members(members) = self else {
            return;
        };
        match path.split_first() {
            None => *self = Keep::Whole,
            Some((key, rest)) => {
                let child = members
                    .entry(key.clone())
                    .or_insert_with(|| Keep::Members(BTreeMap::new()));
                if rest.is_empty() {
                    *child = Keep::Whole;
                } else {
                    child.add(rest);
                }
            }
        }
    }
}

/// How the correlation rules read each column, by name: `Keep::Whole`
/// for a column some rule reads other than through a literal path.
#[derive(Debug, Default)]
pub(super) struct JsonReads {
    columns: BTreeMap<String, Keep>,
}

impl JsonReads {
    fn path(&mut self, column: &str, path: &[String]) {
        self.columns
            .entry(column.to_string())
            .or_insert_with(|| Keep::Members(BTreeMap::new()))
            .add(path);
    }

    fn whole(&mut self, column: &str) {
        self.columns.insert(column.to_string(), Keep::Whole);
    }

    /// Record the reads of a rule's optimized plan, its subqueries
    /// included.
    pub(super) fn plan(&mut self, plan: &LogicalPlan) -> datafusion::common::Result<()> {
        for field in plan.schema().fields() {
            self.whole(field.name());
        }
        plan.apply_with_subqueries(|node| {
            self.node(node);
            Ok(TreeNodeRecursion::Continue)
        })
        .map(|_| ())
    }

    fn node(&mut self, node: &LogicalPlan) {
        match node {
            // Columns passed on under their own name are not read here:
            // whoever reads them above is.
            LogicalPlan::Projection(projection) => {
                for expr in &projection.expr {
                    match expr {
                        Expr::Column(_) => {}
                        Expr::Alias(alias) => match alias.expr.as_ref() {
                            Expr::Column(c) if c.name == alias.name => {}
                            inner => self.expr(inner),
                        },
                        other => self.expr(other),
                    }
                }
            }
            // Operators comparing whole rows, or whose uses cannot be seen.
            LogicalPlan::Distinct(Distinct::All(_)) | LogicalPlan::Extension(_) => {
                for input in node.inputs() {
                    for field in input.schema().fields() {
                        self.whole(field.name());
                    }
                }
            }
            // A union passes columns by position: one renamed is read whole.
            LogicalPlan::Union(union) => {
                for input in &union.inputs {
                    for (a, b) in input.schema().fields().iter().zip(union.schema.fields()) {
                        if a.name() != b.name() {
                            self.whole(a.name());
                            self.whole(b.name());
                        }
                    }
                }
            }
            other => {
                let _ = other.apply_expressions(|e| {
                    self.expr(e);
                    Ok(TreeNodeRecursion::Continue)
                });
            }
        }
    }

    /// Record the reads of one expression (a key expression, a filter).
    pub(super) fn expr(&mut self, expr: &Expr) {
        let _ = expr.apply(|e| {
            Ok(match e {
                Expr::ScalarFunction(f) => match (document_path(f.name(), &f.args), f.args.first())
                {
                    (Some(path), Some(document)) => {
                        self.document(document, &path);
                        for arg in &f.args[1..] {
                            self.expr(arg);
                        }
                        TreeNodeRecursion::Jump
                    }
                    _ => TreeNodeRecursion::Continue,
                },
                Expr::IsNull(inner) | Expr::IsNotNull(inner)
                    if matches!(inner.as_ref(), Expr::Column(_)) =>
                {
                    TreeNodeRecursion::Jump
                }
                Expr::Column(c) | Expr::OuterReferenceColumn(_, c) => {
                    self.whole(&c.name);
                    TreeNodeRecursion::Continue
                }
                _ => TreeNodeRecursion::Continue,
            })
        });
    }

    /// Record that `path` is read of the document `expr`: a column, or one
    /// of several chosen by a CASE or COALESCE (their conditions are read
    /// as any expression); anything else is read as any expression.
    fn document(&mut self, expr: &Expr, path: &[String]) {
        match expr {
            Expr::Column(c) => self.path(&c.name, path),
            Expr::Case(case) if case.expr.is_none() => {
                for (when, then) in &case.when_then_expr {
                    self.expr(when);
                    self.document(then, path);
                }
                if let Some(other) = &case.else_expr {
                    self.document(other, path);
                }
            }
            Expr::ScalarFunction(f) if f.name() == "coalesce" => {
                for arg in &f.args {
                    self.document(arg, path);
                }
            }
            other => self.expr(other),
        }
    }

    /// The columns of `schema` to cut, with what to keep: of the source's
    /// JSON columns (`json_columns`, which hold values its decoder
    /// validated), those every rule reads only through paths.
    pub(super) fn cuts(&self, schema: &Schema, json_columns: &[&str]) -> Vec<(usize, Keep)> {
        schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.data_type() == &DataType::Utf8)
            .filter(|(_, f)| json_columns.contains(&f.name().as_str()))
            .filter_map(|(i, f)| match self.columns.get(f.name()) {
                Some(keep @ Keep::Members(_)) => Some((i, keep.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The leading literal keys of the path a JSON function reads of its
/// first argument; `None` if `name` is not a JSON function.
fn document_path(name: &str, args: &[Expr]) -> Option<Vec<String>> {
    let path = if PATH_FUNCTIONS.contains(&name) {
        args.iter()
            .skip(1)
            .map_while(|a| match a {
                Expr::Literal(ScalarValue::Utf8(Some(key)), _) => Some(key.clone()),
                _ => None,
            })
            .collect()
    } else if JSONPATH_FUNCTIONS.contains(&name) {
        match args.get(1) {
            Some(Expr::Literal(ScalarValue::Utf8(Some(path)), _)) => jsonpath_members(path),
            _ => Vec::new(),
        }
    } else {
        return None;
    };
    Some(path)
}

/// The member names a JSONPath starts with (`$.rules[?...]`: `rules`),
/// in dot notation. Empty (the whole document) for a path that names the
/// root again inside (`$` in a filter can read any member).
fn jsonpath_members(path: &str) -> Vec<String> {
    let Some(rest) = path.strip_prefix('$') else {
        return Vec::new();
    };
    if rest.contains('$') {
        return Vec::new();
    }
    let mut members = Vec::new();
    let mut rest = rest;
    while let Some(after_dot) = rest.strip_prefix('.') {
        let end = after_dot
            .find(|c: char| !is_name_char(c))
            .unwrap_or(after_dot.len());
        let name = &after_dot[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
        members.push(name.to_string());
        rest = &after_dot[end..];
    }
    members
}

/// RFC 9535 `name-char`: letters, digits, `_` and any non-ASCII character.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

/// `array` (text) with every document cut to `keep`.
#[cfg(test)]
pub(super) fn cut_column(array: &ArrayRef, keep: &Keep) -> ArrayRef {
    cut_rows(array, keep, 0..array.len())
}

/// The documents of `rows` of `array` (text), in that order, each cut to
/// `keep`: what is not kept is never copied.
pub(super) fn cut_rows(
    array: &ArrayRef,
    keep: &Keep,
    rows: impl ExactSizeIterator<Item = usize>,
) -> ArrayRef {
    let strings = array.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(rows.len(), rows.len() * 64);
    let mut cut = String::new();
    for row in rows {
        match strings.is_valid(row).then(|| strings.value(row)) {
            None => out.append_null(),
            Some(doc) => {
                cut.clear();
                if cut_document(doc, keep, &mut cut) {
                    out.append_value(&cut);
                } else {
                    out.append_value(doc);
                }
            }
        }
    }
    Arc::new(out.finish())
}

/// Write the cut of `doc` to `out`: false if `doc` is not a JSON object
/// (the caller keeps it as it is).
///
/// `doc` is a value the decoder validated (a source's JSON column), so
/// members not kept are skipped by where they end ([`value_end`]), not
/// parsed again. Text that turns out not to be one JSON object is still
/// refused and kept whole.
fn cut_document(doc: &str, keep: &Keep, out: &mut String) -> bool {
    let start = skip_whitespace(doc, 0);
    doc.as_bytes().get(start) == Some(&b'{')
        && cut_value(doc, start, keep, out)
            .is_some_and(|end| skip_whitespace(doc, end) == doc.len())
}

/// Copy the value at byte `at` of `doc`, cut to `keep`: the index after
/// it.
fn cut_value(doc: &str, at: usize, keep: &Keep, out: &mut String) -> Option<usize> {
    match keep {
        Keep::Members(members) if doc.as_bytes().get(at) == Some(&b'{') => {
            cut_object(doc, at, members, out)
        }
        _ => {
            let end = value_end(doc.as_bytes(), at)?;
            out.push_str(doc.get(at..end)?);
            Some(end)
        }
    }
}

/// Copy the object at byte `at` of `doc` with only `members`: the index
/// after it. Indices found by [`value_end`] are at ASCII bytes or the end,
/// so slicing `doc` there cannot split a character.
fn cut_object(
    doc: &str,
    at: usize,
    members: &BTreeMap<String, Keep>,
    out: &mut String,
) -> Option<usize> {
    out.push('{');
    let mut first = true;
    let end = for_each_item(doc, at, |i| {
        let (key, value) = member_at(doc, i)?;
        match members.get(key.as_ref()) {
            Some(child) => {
                if !first {
                    out.push(',');
                }
                first = false;
                push_json_string(out, &key);
                out.push(':');
                cut_value(doc, value, child, out)
            }
            None => value_end(doc.as_bytes(), value),
        }
    })?;
    out.push('}');
    Some(end)
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes as JSON requires; writing to a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(paths: &[&[&str]]) -> Keep {
        let mut keep = Keep::Members(BTreeMap::new());
        for path in paths {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            keep.add(&path);
        }
        keep
    }

    fn cut(doc: &str, keep: &Keep) -> String {
        let mut out = String::new();
        assert!(cut_document(doc, keep, &mut out), "an object");
        out
    }

    #[test]
    fn a_document_keeps_the_members_at_its_paths_as_written() {
        let doc = r#"{"kind":"Pod", "metadata": {"name": "a\u0041", "labels": {"x": 1.50}, "uid": "u"},
            "spec": {"containers": [{"image": "i"}]}, "rules": [ {"verbs": ["*"]} ]}"#;
        let keep = keep(&[&["metadata", "name"], &["metadata", "labels"], &["rules"]]);
        assert_eq!(
            cut(doc, &keep),
            r#"{"metadata":{"name":"a\u0041","labels":{"x": 1.50}},"rules":[ {"verbs": ["*"]} ]}"#
        );
    }

    #[test]
    fn values_on_a_path_that_are_not_objects_are_kept_whole() {
        let keep = keep(&[&["metadata", "name"]]);
        assert_eq!(
            cut(r#"{"metadata":[1,{"name":2}]}"#, &keep),
            r#"{"metadata":[1,{"name":2}]}"#
        );
        assert_eq!(
            cut(r#"{"metadata":null,"b":1}"#, &keep),
            r#"{"metadata":null}"#
        );
        assert_eq!(cut(r#"{"other":1}"#, &keep), "{}");
    }

    /// The cut as it was made before documents were known to be valid:
    /// every member parsed (jiter), the reference for the cut by ends.
    fn parsed_cut(doc: &str, keep: &Keep) -> Option<String> {
        fn value(
            jiter: &mut jiter::Jiter,
            keep: &Keep,
            out: &mut String,
        ) -> Result<(), jiter::JiterError> {
            let peek = jiter.peek()?;
            let members = match keep {
                Keep::Members(members) if peek == jiter::Peek::Object => members,
                _ => {
                    let start = jiter.current_index();
                    jiter.known_skip(peek)?;
                    let raw = jiter.slice_to_current(start);
                    out.push_str(std::str::from_utf8(raw).unwrap().trim_start());
                    return Ok(());
                }
            };
            out.push('{');
            let mut first = true;
            let mut key = jiter.known_object()?.map(str::to_owned);
            while let Some(name) = key {
                match members.get(&name) {
                    Some(child) => {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        push_json_string(out, &name);
                        out.push(':');
                        value(jiter, child, out)?;
                    }
                    None => jiter.next_skip()?,
                }
                key = jiter.next_key()?.map(str::to_owned);
            }
            out.push('}');
            Ok(())
        }
        let mut jiter = jiter::Jiter::new(doc.as_bytes());
        let mut out = String::new();
        (matches!(jiter.peek(), Ok(jiter::Peek::Object))
            && value(&mut jiter, keep, &mut out).is_ok()
            && jiter.finish().is_ok())
        .then_some(out)
    }

    /// Objects whose members are named from a few keys (repeated ones
    /// among them, escaped ones too), and what to keep of them.
    fn document_and_keep() -> impl proptest::strategy::Strategy<Value = (String, Keep)> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("a"),
            Just("b"),
            Just("metadata"),
            Just("n\\u0061me"),
            Just("name"),
            Just("é"),
        ];
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("12.5e3".to_string()),
            Just("true".to_string()),
            "[a-z{}\\[\\]\\\\\"]{0,90}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        let value = leaf.prop_recursive(5, 100, 6, move |inner| {
            let member = (name.clone(), inner.clone(), " {0,2}");
            prop_oneof![
                proptest::collection::vec(inner, 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
                proptest::collection::vec(member, 0..7).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v, space)| format!("\"{k}\"{space}:{space}{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        });
        let paths = proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![Just("a"), Just("b"), Just("metadata"), Just("name")],
                1..4,
            ),
            0..4,
        );
        (value, paths).prop_map(|(doc, paths)| {
            let paths: Vec<Vec<&str>> = paths;
            let paths: Vec<&[&str]> = paths.iter().map(Vec::as_slice).collect();
            (format!(" {doc} "), keep(&paths))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// On valid JSON the cut by ends gives the parsed cut, byte for byte.
        #[test]
        fn the_cut_by_ends_gives_the_parsed_cut((doc, keep) in document_and_keep()) {
            let mut out = String::new();
            let by_ends = cut_document(&doc, &keep, &mut out).then_some(out);
            proptest::prop_assert_eq!(by_ends, parsed_cut(&doc, &keep), "{}", doc);
        }
    }

    #[test]
    fn repeated_keys_are_all_kept_in_order() {
        let keep = keep(&[&["a"]]);
        assert_eq!(cut(r#"{"a":1,"b":2,"a":3}"#, &keep), r#"{"a":1,"a":3}"#);
    }

    #[test]
    fn text_that_is_not_a_json_object_is_kept_as_it_is() {
        let keep = keep(&[&["a"]]);
        let column: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            Some("[1,2]"),
            Some("{\"a\":"),
            None,
            Some("{\"a\":1} x"),
            Some("{\"b\":1,\"a\":[2]}"),
        ]));
        let cut = cut_column(&column, &keep);
        let cut: Vec<Option<&str>> = cut.as_string::<i32>().iter().collect();
        assert_eq!(
            cut,
            vec![
                Some("[1,2]"),
                Some("{\"a\":"),
                None,
                Some("{\"a\":1} x"),
                Some("{\"a\":[2]}")
            ]
        );
    }

    /// What the optimized plan of `sql` (over the retained tables) reads.
    async fn reads_of(sql: &str) -> JsonReads {
        let definitions = crate::rules::definitions::Definitions::default();
        let (ctx, _) = super::super::compile::retained_session(&definitions);
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.expect("plans");
        let plan = state.optimize(&plan).expect("optimizes");
        let mut reads = JsonReads::default();
        reads.plan(&plan).expect("visits");
        reads
    }

    #[tokio::test]
    async fn json_functions_over_a_column_read_their_paths_of_it() {
        let reads = reads_of(
            "SELECT json_get_str(request_object, 'metadata', 'name') AS name, \
                    json_get_str(request_object, 'metadata', 'ownerReferences', 0, 'kind') AS owner, \
                    json_get_str(COALESCE(request_object, response_object), 'roleRef', 'name') AS role, \
                    json_get_str(user_agent, 'name') AS agent \
             FROM k8s_audit \
             WHERE json_path_exists(request_object, '$.rules[?@.verbs[?@ == ''*'']]') \
               AND request_object IS NOT NULL",
        )
        .await;
        assert_eq!(
            reads.columns["request_object"],
            keep(&[
                &["metadata", "name"],
                &["metadata", "ownerReferences"],
                &["roleRef", "name"],
                &["rules"]
            ])
        );
        assert_eq!(
            reads.columns["response_object"],
            keep(&[&["roleRef", "name"]])
        );
        let schema = super::super::compile::retained_schema(crate::source::SourceKind::K8sAudit);
        let cut: Vec<&str> = reads
            .cuts(&schema, vigil_sources::k8s_audit::SPEC.json_columns)
            .iter()
            .map(|(i, _)| schema.field(*i).name().as_str())
            .collect();
        // `user_agent` is read through a path too, but it is not a JSON
        // column: its text was never validated as JSON.
        assert_eq!(reads.columns["user_agent"], keep(&[&["name"]]));
        assert_eq!(cut, ["request_object", "response_object"]);
    }

    #[tokio::test]
    async fn any_other_read_of_a_column_keeps_it_whole() {
        for sql in [
            // output as it is, or under another name
            "SELECT request_object FROM k8s_audit",
            "SELECT o FROM (SELECT request_object AS o FROM k8s_audit) WHERE json_get_str(o, 'a') = 'x'",
            // read as text, compared, grouped, deduplicated
            "SELECT verb FROM k8s_audit WHERE length(request_object) > 10",
            "SELECT a.verb FROM k8s_audit a JOIN k8s_audit b ON a.request_object = b.request_object",
            "SELECT count(*) AS n FROM k8s_audit GROUP BY request_object",
            "SELECT verb FROM (SELECT DISTINCT verb, request_object FROM k8s_audit)",
            // a path that does not start with a literal key
            "SELECT json_get_str(request_object, verb) AS v FROM k8s_audit",
            "SELECT json_get_str(request_object, 0, 'a') AS v FROM k8s_audit",
            "SELECT json_path_values(request_object, '$..name') AS v FROM k8s_audit",
        ] {
            let reads = reads_of(sql).await;
            assert_eq!(reads.columns.get("request_object"), Some(&Keep::Whole), "{sql}");
            let schema = super::super::compile::retained_schema(crate::source::SourceKind::K8sAudit);
            let columns = vigil_sources::k8s_audit::SPEC.json_columns;
            assert!(reads.cuts(&schema, columns).is_empty(), "{sql}");
        }
    }

    #[test]
    fn a_json_function_without_arguments_reads_the_whole_document() {
        assert_eq!(document_path("json_get", &[]), Some(Vec::new()));
        assert_eq!(document_path("json_path_exists", &[]), Some(Vec::new()));
        assert_eq!(document_path("upper", &[]), None);
    }

    #[test]
    fn jsonpaths_keep_their_leading_member_names() {
        assert_eq!(
            jsonpath_members("$.rules[?@.verbs[?@ == '*']]"),
            vec!["rules"]
        );
        assert_eq!(
            jsonpath_members("$.spec.containers[*].image"),
            vec!["spec", "containers"]
        );
        assert_eq!(jsonpath_members("$.abé.c"), vec!["abé", "c"]);
        assert!(jsonpath_members("$..image").is_empty());
        assert!(jsonpath_members("$['spec']").is_empty());
        assert!(jsonpath_members("$.a[?@.b == $.c]").is_empty());
    }
}
