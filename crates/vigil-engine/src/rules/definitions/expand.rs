//! Expansion of definitions in a rule's SQL, before it is planned.
//!
//! Calls are replaced in the parsed statement, innermost first:
//!
//! | call | becomes |
//! |---|---|
//! | `macro_name(args)` | the macro's body in parentheses, each parameter replaced by its argument, its own calls expanded |
//! | `in_list(x, 'name')` | `COALESCE(x IN ('a', 'b', ...), FALSE)` when no item is a glob (an empty list: `FALSE`); else `glob_match(x, make_array(...))` |
//! | `any_in_list(xs, 'name')` | `glob_match_any(xs, make_array(...))`: some element of the string list `xs` matches |
//! | `all_in_list(xs, 'name')` | `glob_match_all(xs, make_array(...))`: every element matches |
//! | `list('name')` | `make_array('a', 'b', ...)` |
//! | `lookup('table', 'column', key)` | itself, once the table and column are known to exist |
//!
//! The list functions are FALSE, never NULL, for a NULL value, so that
//! `NOT in_list(...)` keeps a row whose value is unknown: an exclusion
//! that cannot be checked does not apply. Every name must resolve: a call
//! of a function that is neither a macro nor an SQL function, an unknown
//! list or lookup table, a macro that calls itself, and a wrong number of
//! arguments are errors at the line of the call.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectNamePart, Select, Statement, UnaryOperator, Value, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::lists::Item;
use super::{Definitions, Macro};
use crate::rules::RuleError;

/// Functions expanded here, whose names a macro cannot take.
pub const LIST_FUNCTIONS: [&str; 5] = ["in_list", "any_in_list", "all_in_list", "list", "lookup"];

/// A problem found while expanding, at a line of `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl From<ExpandError> for RuleError {
    fn from(e: ExpandError) -> RuleError {
        RuleError {
            path: e.path,
            line: e.line,
            message: e.message,
        }
    }
}

/// Expands the definitions of one rule set.
pub struct Expander<'a> {
    defs: &'a Definitions,
    /// Whether the session knows an SQL function (scalar, aggregate or
    /// window) of this name.
    is_function: &'a (dyn Fn(&str) -> bool + Sync),
    /// The definitions expansions have used: `list:name`, `macro:name`,
    /// `lookup:name`.
    used: Mutex<BTreeSet<String>>,
    /// Expansions that depend on nothing but the definitions, made once
    /// and cloned at each further call: a macro without parameters, by its
    /// name, and a list function, by its name and its list's, with
    /// [`LIST_VALUE`] standing for the value tested. Most macro calls take
    /// no arguments, and expanding one expands its own macros and lists.
    expansions: Mutex<HashMap<String, Expr>>,
    /// False only to compare with expansions made at every call, list tests
    /// written out and parsed with their value's text (tests).
    caches: bool,
}

/// The identifier a cached list function's expansion has where its value
/// goes: only the expansion's own text has it, which is otherwise
/// literals.
pub(crate) const LIST_VALUE: &str = "vigil_list_value__";

impl<'a> Expander<'a> {
    pub fn new(defs: &'a Definitions, is_function: &'a (dyn Fn(&str) -> bool + Sync)) -> Self {
        Expander {
            defs,
            is_function,
            used: Mutex::default(),
            expansions: Mutex::default(),
            caches: true,
        }
    }

    /// An expander that expands every call anew.
    #[cfg(test)]
    pub fn without_cache(
        defs: &'a Definitions,
        is_function: &'a (dyn Fn(&str) -> bool + Sync),
    ) -> Self {
        Expander {
            caches: false,
            ..Expander::new(defs, is_function)
        }
    }

    /// The cached expansion under `key`, else `expand()`'s, cached when it
    /// succeeds (an error is made, and reported, again at each call).
    fn cached<E>(&self, key: String, expand: impl FnOnce() -> Result<Expr, E>) -> Result<Expr, E> {
        if !self.caches {
            return expand();
        }
        if let Some(e) = self.expansions.lock().expect("expansions lock").get(&key) {
            return Ok(e.clone());
        }
        let expr = expand()?;
        self.expansions
            .lock()
            .expect("expansions lock")
            .insert(key, expr.clone());
        Ok(expr)
    }

    fn record(&self, kind: &str, name: &str) {
        self.used
            .lock()
            .expect("used-names lock")
            .insert(format!("{kind}:{name}"));
    }

    /// The definitions no expansion so far has used, each as `list NAME
    /// (defined at FILE:LINE)`: a name an overlay misspelt defines a list
    /// nothing reads.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().expect("used-names lock");
        let lists = self
            .defs
            .lists
            .values()
            .filter(|l| !used.contains(&format!("list:{}", l.name)))
            .map(|l| {
                let at = l.origins.last().map(|o| o.to_string()).unwrap_or_default();
                format!("list {} ({at}) is used by no rule", l.name)
            });
        let macros = self
            .defs
            .macros
            .values()
            .filter(|m| !used.contains(&format!("macro:{}", m.name)))
            .map(|m| format!("macro {} ({}) is used by no rule", m.name, m.at));
        let lookups = self
            .defs
            .lookups
            .values()
            .filter(|t| !used.contains(&format!("lookup:{}", t.name)))
            .map(|t| format!("lookup table {} ({}) is used by no rule", t.name, t.at));
        lists.chain(macros).chain(lookups).collect()
    }

    /// Expand every call in a statement parsed from the file at `path`.
    pub fn statement(&self, statement: &mut Statement, path: &Path) -> Result<(), ExpandError> {
        let mut pass = Pass {
            expander: self,
            file: path.to_path_buf(),
            stack: Vec::new(),
        };
        if let ControlFlow::Break(e) = statement.visit(&mut pass) {
            return Err(e);
        }
        let _ = statement.visit(&mut OpenFilterCoalesce);
        let _ = visit_expressions_mut(statement, |e| {
            coalesce_false_as_is_true(e);
            ControlFlow::<()>::Continue(())
        });
        Ok(())
    }

    /// Check every macro's body on its own (its parameters left as they
    /// are), so a broken macro is reported at its own file even when no
    /// rule calls it.
    pub fn check_macros(&self) -> Vec<ExpandError> {
        let mut errors = Vec::new();
        for m in self.defs.macros.values() {
            if (self.is_function)(&m.name) || LIST_FUNCTIONS.contains(&m.name.as_str()) {
                errors.push(ExpandError {
                    path: m.at.path.clone(),
                    line: Some(m.at.line),
                    message: format!(
                        "macro {:?} has the name of an SQL function: rename it",
                        m.name
                    ),
                });
                continue;
            }
            let mut body = m.body.clone();
            let mut pass = Pass {
                expander: self,
                file: m.at.path.clone(),
                stack: vec![m.name.clone()],
            };
            if let ControlFlow::Break(e) = body.visit(&mut pass) {
                errors.push(e);
            }
        }
        // What macro bodies use on their own says nothing of what rules use,
        // and a cached expansion records nothing when it is used again.
        self.used.lock().expect("used-names lock").clear();
        self.expansions.lock().expect("expansions lock").clear();
        errors
    }
}

/// One expansion of a text: the file its spans are lines of, and the
/// macros being expanded around it (to find cycles).
struct Pass<'e, 'a> {
    expander: &'e Expander<'a>,
    file: PathBuf,
    stack: Vec<String>,
}

impl VisitorMut for Pass<'_, '_> {
    type Break = ExpandError;

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<ExpandError> {
        if let Expr::Function(call) = expr {
            if simple_name(call).is_some_and(|(name, _)| name == "cidr_contains") {
                if let Err(e) = self.check_networks(call) {
                    return ControlFlow::Break(e);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<ExpandError> {
        let Expr::Function(call) = expr else {
            return ControlFlow::Continue(());
        };
        match self.call(call) {
            Ok(Some(expanded)) => {
                *expr = Expr::Nested(Box::new(expanded));
                ControlFlow::Continue(())
            }
            Ok(None) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

impl Pass<'_, '_> {
    fn error(&self, line: Option<usize>, message: String) -> ExpandError {
        ExpandError {
            path: self.file.clone(),
            line,
            message,
        }
    }

    /// The expansion of a call, or `None` when it stays (an SQL function).
    fn call(&self, call: &Function) -> Result<Option<Expr>, ExpandError> {
        let Some((name, line)) = simple_name(call) else {
            return Ok(None);
        };
        let defs = self.expander.defs;
        if let Some(m) = defs.macros.get(&name) {
            self.expander.record("macro", &m.name);
            return self.macro_call(m, call, line).map(Some);
        }
        match name.as_str() {
            "in_list" | "any_in_list" | "all_in_list" => {
                let args = self.args(call, &name, line, 2)?;
                let (list, items) = self.list_arg(&args[1], line)?;
                if !self.expander.caches {
                    return Ok(Some(parse(&membership(&name, &args[0].to_string(), items))));
                }
                let mut test = self.expander.cached(format!("{name}:{list}"), || {
                    Ok::<_, ExpandError>(parse(&membership(&name, LIST_VALUE, items)))
                })?;
                put_value(&mut test, &args[0]);
                Ok(Some(test))
            }
            "list" => {
                let args = self.args(call, &name, line, 1)?;
                let (list, items) = self.list_arg(&args[0], line)?;
                let array = self.expander.cached(format!("list:{list}"), || {
                    Ok::<_, ExpandError>(parse(&array_literal(items)))
                })?;
                Ok(Some(array))
            }
            "lookup" => {
                self.check_lookup(call, line)?;
                Ok(None)
            }
            _ if (self.expander.is_function)(&name)
                || PLANNER_FUNCTIONS.contains(&name.as_str()) =>
            {
                Ok(None)
            }
            _ => Err(self.error(line, format!("unknown function or macro {name:?}"))),
        }
    }

    fn macro_call(
        &self,
        m: &Macro,
        call: &Function,
        line: Option<usize>,
    ) -> Result<Expr, ExpandError> {
        if let Some(i) = self.stack.iter().position(|n| *n == m.name) {
            let cycle: Vec<&str> = self.stack[i..]
                .iter()
                .map(String::as_str)
                .chain([m.name.as_str()])
                .collect();
            return Err(ExpandError {
                path: m.at.path.clone(),
                line: Some(m.at.line),
                message: format!(
                    "macro {:?} refers to itself: {}",
                    m.name,
                    cycle.join(" -> ")
                ),
            });
        }
        let args = self.args(call, &m.name, line, m.params.len())?;
        if !args.is_empty() {
            return self.macro_body(m, &args);
        }
        // Whether a macro's expansion fails does not depend on the macros
        // around its call: a cycle through it is a cycle from it.
        self.expander
            .cached(format!("macro:{}", m.name), || self.macro_body(m, &[]))
    }

    /// `m`'s body with `args` for its parameters, its calls expanded.
    fn macro_body(&self, m: &Macro, args: &[Expr]) -> Result<Expr, ExpandError> {
        let mut body = m.body.clone();
        if !args.is_empty() {
            substitute(&mut body, &m.params, args);
        }
        let mut inner = Pass {
            expander: self.expander,
            file: m.at.path.clone(),
            stack: self.stack.iter().cloned().chain([m.name.clone()]).collect(),
        };
        match body.visit(&mut inner) {
            ControlFlow::Continue(()) => Ok(body),
            ControlFlow::Break(e) => Err(e),
        }
    }

    /// The plain expression arguments of a call, exactly `n` of them.
    fn args(
        &self,
        call: &Function,
        name: &str,
        line: Option<usize>,
        n: usize,
    ) -> Result<Vec<Expr>, ExpandError> {
        let list = match &call.args {
            FunctionArguments::List(l)
                if l.duplicate_treatment.is_none() && l.clauses.is_empty() =>
            {
                &l.args
            }
            FunctionArguments::None => &Vec::new(),
            _ => return Err(self.error(line, format!("{name}(...) takes plain arguments"))),
        };
        if call.over.is_some() || call.filter.is_some() {
            return Err(self.error(
                line,
                format!("{name}(...) is not a window or aggregate function"),
            ));
        }
        let args: Option<Vec<Expr>> = list
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        match args {
            Some(args) if args.len() == n => Ok(args),
            Some(args) => Err(self.error(
                line,
                format!("{name}(...) takes {n} argument(s), not {}", args.len()),
            )),
            None => Err(self.error(line, format!("{name}(...) takes plain arguments"))),
        }
    }

    /// The name and items of the list a string-literal argument names.
    fn list_arg(&self, arg: &Expr, line: Option<usize>) -> Result<(String, &[Item]), ExpandError> {
        let (name, line) = literal(arg).map(|(s, l)| (s, l.or(line))).ok_or_else(|| {
            self.error(
                line,
                "a list is named by a string literal, e.g. 'approved_registries'".into(),
            )
        })?;
        match self.expander.defs.lists.get(&name) {
            Some(list) => {
                self.expander.record("list", &name);
                Ok((name, &list.items))
            }
            None => Err(self.error(line, format!("unknown list {name:?}"))),
        }
    }

    fn check_lookup(&self, call: &Function, line: Option<usize>) -> Result<(), ExpandError> {
        let args = self.args(call, "lookup", line, 3)?;
        let named = |e: &Expr, what: &str| {
            literal(e).ok_or_else(|| {
                self.error(
                    line,
                    format!("lookup(...) takes the {what} as a string literal"),
                )
            })
        };
        let (table, table_line) = named(&args[0], "table name")?;
        let (column, column_line) = named(&args[1], "column name")?;
        let Some(lookup) = self.expander.defs.lookups.get(&table) else {
            return Err(self.error(
                table_line.or(line),
                format!("unknown lookup table {table:?}"),
            ));
        };
        self.expander.record("lookup", &table);
        if lookup.value_column(&column).is_none() {
            return Err(self.error(
                column_line.or(line),
                format!(
                    "lookup table {table:?} has no value column {column:?} (its columns: {})",
                    lookup.columns[1..].join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// `cidr_contains(list('name'), ip)` and `cidr_contains('10.0.0.0/8',
    /// ip)`, seen before their arguments are expanded: the networks are
    /// known here, so a malformed one is an error at its line rather than
    /// a rule failing on every batch.
    fn check_networks(&self, call: &Function) -> Result<(), ExpandError> {
        let line = simple_name(call).and_then(|(_, l)| l);
        let Ok(args) = self.args(call, "cidr_contains", line, 2) else {
            return Ok(()); // the planner reports the arity
        };
        let networks: Vec<(String, ExpandError)> = match &args[0] {
            Expr::Function(inner) if simple_name(inner).is_some_and(|(n, _)| n == "list") => {
                let Ok(list_args) = self.args(inner, "list", line, 1) else {
                    return Ok(()); // reported when list(...) is expanded
                };
                let Ok((_, items)) = self.list_arg(&list_args[0], line) else {
                    return Ok(());
                };
                items
                    .iter()
                    .map(|i| {
                        let at = ExpandError {
                            path: i.at.path.clone(),
                            line: Some(i.at.line),
                            message: String::new(),
                        };
                        (i.value.clone(), at)
                    })
                    .collect()
            }
            e => match literal(e) {
                Some((s, l)) => vec![(s, self.error(l.or(line), String::new()))],
                None => Vec::new(),
            },
        };
        for (network, at) in networks {
            if let Err(e) = crate::functions::network::parse_network(&network) {
                return Err(ExpandError {
                    message: e.to_string(),
                    ..at
                });
            }
        }
        Ok(())
    }
}

/// Opens `COALESCE(p, FALSE)` where it is a conjunct of a WHERE or HAVING
/// clause: there it keeps exactly the rows `p` keeps (NULL and FALSE both
/// drop a row). Boolean macros are written that way so that `NOT macro()`
/// is safe; opened, their conditions become conjuncts of the filter like
/// any other, evaluated one at a time and shared between rules, where
/// DataFusion would otherwise plan the whole macro as one opaque
/// expression (and hoist it into a projection computed for every row).
struct OpenFilterCoalesce;

impl VisitorMut for OpenFilterCoalesce {
    type Break = ();

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        for clause in [&mut select.selection, &mut select.having]
            .into_iter()
            .flatten()
        {
            open_conjuncts(clause);
        }
        ControlFlow::Continue(())
    }
}

fn open_conjuncts(expr: &mut Expr) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            open_conjuncts(left);
            open_conjuncts(right);
        }
        Expr::Nested(inner) => open_conjuncts(inner),
        Expr::Function(call) => {
            if let Some(p) = coalesce_false_operand(call) {
                *expr = Expr::Nested(Box::new(p));
                open_conjuncts(expr);
            }
        }
        _ => {}
    }
}

/// `p` when `call` is `COALESCE(p, FALSE)`.
fn coalesce_false_operand(call: &Function) -> Option<Expr> {
    let (name, _) = simple_name(call)?;
    let FunctionArguments::List(list) = &call.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(p)), FunctionArg::Unnamed(FunctionArgExpr::Expr(fallback))] =
        list.args.as_slice()
    else {
        return None;
    };
    let is_false = matches!(fallback, Expr::Value(v) if v.value == Value::Boolean(false));
    (name == "coalesce" && is_false).then(|| p.clone())
}

/// `COALESCE(p, FALSE)`, where `p` is boolean by its form, as `(p) IS
/// TRUE`: the same value (TRUE where `p` is TRUE, FALSE where it is FALSE
/// or NULL), planned the same (`p IS NOT DISTINCT FROM TRUE`), but not a
/// function call. DataFusion computes a call's type from a field named by
/// formatting the call with all its arguments, and its arguments' types
/// the same way, so a macro's body in a `COALESCE` was formatted once per
/// call around it, at every type check of planning: a third of start-up
/// (docs/benchmarks.md, stop 51).
fn coalesce_false_as_is_true(e: &mut Expr) {
    if let Expr::BinaryOp { left, op, right } = e {
        parenthesize_is_true_operands(op, left, right);
        return;
    }
    let Expr::Function(call) = e else {
        return;
    };
    let Some(p) = coalesce_false_operand(call).filter(is_boolean_form) else {
        return;
    };
    // No parentheses added where the operand has them (a macro's body):
    // planning recurses once per level, and a debug build's frames are
    // large.
    let p = match p {
        Expr::Nested(_) => p,
        p => Expr::Nested(Box::new(p)),
    };
    *e = Expr::IsTrue(Box::new(p));
}

/// `IS TRUE` binds less tightly than comparisons and arithmetic: as their
/// operand, it is put in parentheses, so that the statement's SQL text
/// ([`crate::rules::engine::expanded_sql`]) parses back to the same expression.
fn parenthesize_is_true_operands(op: &BinaryOperator, left: &mut Expr, right: &mut Expr) {
    use BinaryOperator as Op;
    if matches!(op, Op::And | Op::Or | Op::Xor) {
        return;
    }
    for operand in [left, right] {
        if matches!(operand, Expr::IsTrue(_)) {
            let is_true = std::mem::replace(operand, Expr::value(Value::Null));
            *operand = Expr::Nested(Box::new(is_true));
        }
    }
}

/// Whether `e` is boolean whatever its operands' types: a comparison, a
/// logical operator, a test, a pattern match, a boolean literal.
fn is_boolean_form(e: &Expr) -> bool {
    use BinaryOperator as Op;
    match e {
        Expr::Nested(inner) => is_boolean_form(inner),
        Expr::BinaryOp { op, .. } => matches!(
            op,
            Op::And | Op::Or | Op::Xor | Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq
        ),
        Expr::UnaryOp { op, .. } => *op == UnaryOperator::Not,
        Expr::Value(v) => matches!(v.value, Value::Boolean(_)),
        Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::InList { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::SimilarTo { .. } => true,
        _ => false,
    }
}

/// Functions DataFusion's SQL planner handles itself rather than through
/// the function registry.
const PLANNER_FUNCTIONS: [&str; 4] = ["unnest", "unnest_outer", "make_map", "map"];

/// The name of a call of an unqualified function (lower case unless
/// quoted) and the line it is on.
fn simple_name(call: &Function) -> Option<(String, Option<usize>)> {
    let [ObjectNamePart::Identifier(ident)] = call.name.0.as_slice() else {
        return None;
    };
    let name = match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    };
    Some((name, line_of(ident)))
}

fn line_of(ident: &Ident) -> Option<usize> {
    match ident.span.start.line {
        0 => None,
        l => Some(l as usize),
    }
}

/// A single-quoted string literal and its line.
fn literal(e: &Expr) -> Option<(String, Option<usize>)> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => {
                let line = match v.span.start.line {
                    0 => None,
                    l => Some(l as usize),
                };
                Some((s.clone(), line))
            }
            _ => None,
        },
        Expr::Nested(inner) => literal(inner),
        _ => None,
    }
}

/// Put `value` where a cached list test's expansion has [`LIST_VALUE`]: the
/// same expression as parsing the test with `value`'s text in its place.
fn put_value(test: &mut Expr, value: &Expr) {
    let _ = visit_expressions_mut(test, |e| {
        if matches!(e, Expr::Identifier(ident) if ident.value == LIST_VALUE) {
            *e = value.clone();
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Replace each parameter, wherever the body names it, by its argument.
fn substitute(body: &mut Expr, params: &[String], args: &[Expr]) {
    let _ = visit_expressions_mut(body, |e| {
        if let Expr::Identifier(ident) = e {
            if ident.quote_style.is_none() {
                let name = ident.value.to_lowercase();
                if let Some(i) = params.iter().position(|p| *p == name) {
                    *e = Expr::Nested(Box::new(args[i].clone()));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// An SQL string literal.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn array_literal(items: &[Item]) -> String {
    if items.is_empty() {
        return "CAST(make_array() AS VARCHAR[])".into();
    }
    let values: Vec<String> = items.iter().map(|i| quoted(&i.value)).collect();
    format!("make_array({})", values.join(", "))
}

/// The SQL of a membership test of `value` (see the module doc).
fn membership(function: &str, value: &str, items: &[Item]) -> String {
    let plain = items.iter().all(|i| !i.is_glob());
    match function {
        "in_list" if items.is_empty() => "FALSE".into(),
        "in_list" if plain => {
            let values: Vec<String> = items.iter().map(|i| quoted(&i.value)).collect();
            format!("COALESCE(({value}) IN ({}), FALSE)", values.join(", "))
        }
        "in_list" => format!("glob_match({value}, {})", array_literal(items)),
        "any_in_list" => format!("glob_match_any({value}, {})", array_literal(items)),
        _ => format!("glob_match_all({value}, {})", array_literal(items)),
    }
}

/// Parse SQL this module generated.
fn parse(sql: &str) -> Expr {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|e| panic!("generated SQL {sql:?} does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        let _ = visit_expressions_mut(&mut statement, |e| {
            coalesce_false_as_is_true(e);
            ControlFlow::<()>::Continue(())
        });
        statement.to_string()
    }

    #[test]
    fn a_boolean_coalesce_with_false_becomes_is_true() {
        assert_eq!(
            rewritten("SELECT 1 FROM t WHERE NOT COALESCE(a IN ('x') OR b = 1, FALSE)"),
            "SELECT 1 FROM t WHERE NOT (a IN ('x') OR b = 1) IS TRUE"
        );
        // A macro's body is in parentheses already.
        assert_eq!(
            rewritten("SELECT COALESCE((a OR b), FALSE) FROM t"),
            "SELECT (a OR b) IS TRUE FROM t"
        );
        // The operand of a comparison is put in parentheses.
        assert_eq!(
            rewritten("SELECT c = COALESCE(a, FALSE) AND COALESCE(a = 1, FALSE) FROM t"),
            "SELECT c = COALESCE(a, false) AND (a = 1) IS TRUE FROM t"
        );
        assert_eq!(
            rewritten("SELECT c = COALESCE(a = 1, FALSE) FROM t"),
            "SELECT c = ((a = 1) IS TRUE) FROM t"
        );
        // Inner first: the outer call's operand is then boolean by its form.
        assert_eq!(
            rewritten("SELECT COALESCE(COALESCE(a = 1, FALSE) OR f(b), FALSE) FROM t"),
            "SELECT ((a = 1) IS TRUE OR f(b)) IS TRUE FROM t"
        );
    }

    #[test]
    fn other_coalesce_calls_stay() {
        for sql in [
            // Not boolean by its form: its type is known only to the planner.
            "SELECT COALESCE(a, FALSE) FROM t",
            "SELECT COALESCE(f(a), FALSE) FROM t",
            "SELECT COALESCE(a = 1, TRUE) FROM t",
            "SELECT COALESCE(a = 1, b, FALSE) FROM t",
        ] {
            let parsed = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
            assert_eq!(rewritten(sql), parsed[0].to_string());
        }
    }

    /// The rewritten query gives what the original gives, for every
    /// combination of TRUE, FALSE and NULL operands, under NOT and as a
    /// value.
    #[tokio::test]
    async fn is_true_has_the_values_of_the_coalesce() {
        let ctx = SessionContext::new();
        let original =
            "SELECT a, b, COALESCE(a AND b, FALSE) AS v, NOT COALESCE(a OR b, FALSE) AS n, \
            b = COALESCE(a, FALSE) AND COALESCE(a, FALSE) = COALESCE(b = TRUE, FALSE) AS c \
            FROM (VALUES (TRUE, TRUE), (TRUE, FALSE), (TRUE, NULL), (FALSE, NULL), \
            (NULL, NULL), (NULL, TRUE)) AS t(a, b) ORDER BY a, b";
        let changed = rewritten(original);
        assert_ne!(changed, original);
        let mut tables = Vec::new();
        for sql in [original, changed.as_str()] {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            tables.push(pretty_format_batches(&batches).unwrap().to_string());
        }
        assert_eq!(tables[0], tables[1]);
    }
}
