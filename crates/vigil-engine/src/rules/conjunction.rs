//! Filters evaluated one condition at a time, each on the rows the
//! conditions before it kept, reading only the columns it needs.
//!
//! A rule's WHERE clause is a conjunction whose first conditions are cheap
//! and selective (`verb = 'create'`, `object_ref.resource IN (...)`) and
//! whose later ones are expensive (regular expressions, JSON functions).
//! DataFusion's own `a AND b` short-circuits only partly:
//! * it evaluates `b` on the rows where `a` holds only when `a` has no
//!   NULLs, and a condition on an optional field (`object_ref.resource` of a
//!   request without an objectRef) has NULLs, so from there on every later
//!   condition ran on every row;
//! * when it does, it first copies those rows of *every* column of the
//!   filter's input (the user, the object reference, the request object...)
//!   for each `AND`, so a rule with seven conditions copied its selected
//!   rows seven times, whatever each condition reads. That copying was the
//!   largest cost of the rule pack after JSON parsing (docs/benchmarks.md).
//!
//! [`SelectiveAnd`] replaces the predicate of every filter of a compiled
//! rule: the top-level conjuncts in their written order, each rewritten
//! against just the columns it references. A costly conjunct (regular
//! expressions, JSON functions) is evaluated on the rows every conjunct
//! before it kept (of its own columns only, and of a struct column only the
//! fields it reads: the copy is as narrow as the condition), or on all rows
//! when nearly all were kept; a cheap one (comparisons, `IN` lists, field
//! access, `COALESCE`) on all rows at once. Evaluation
//! stops when no row is left. NULL counts as FALSE. Every rule of an engine
//! shares the values of the conditions it has in common with others, per
//! batch and row ([`SharedConditions`]).
//!
//! [`SelectiveOr`] does the same for the correlation pre-filter, a
//! disjunction of the correlation rules' scan filters: each disjunct is a
//! [`SelectiveAnd`] evaluated only on the rows no disjunct before it kept,
//! sharing condition values with the per-event rules.
//!
//! The filter keeps exactly the rows it kept before: a filter keeps a row
//! only where the predicate is TRUE, a conjunction is TRUE exactly where
//! every conjunct is TRUE, and each conjunct is evaluated at least on every
//! row where all conjuncts before it are TRUE. (As with DataFusion's own
//! short-circuit, a condition may not be evaluated at all on rows an
//! earlier condition already rejected, so an error it would raise there is
//! not raised.)

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, BooleanBufferBuilder};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{and, filter_record_batch, prep_null_mask_filter};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal,
    NotExpr, TryCastExpr,
};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

use super::duration_literal::{as_duration, join_filters_with_durations};
use super::eq_literal::EqLiteral;
use super::fields_read::FieldsRead;
use super::null_tests::with_null_tests_merged;
use super::or_literal::OrLiteral;
use super::regex_match::RegexMatch;

/// Above this share of rows still selected, a conjunct is evaluated on all
/// rows and ANDed, rather than on a copy of the selected rows.
const DENSE_SELECTION: f64 = 0.75;

/// One condition of a [`SelectiveAnd`].
#[derive(Debug, Eq)]
struct Conjunct {
    /// As planned, against the filter's input (for display and equality).
    original: Arc<dyn PhysicalExpr>,
    /// Against the input projected to `columns`.
    narrow: Arc<dyn PhysicalExpr>,
    /// The input columns the condition reads, in ascending order.
    columns: Vec<usize>,
    /// The fields of those columns it reads: what a copy of selected rows
    /// keeps.
    fields_read: FieldsRead,
    /// Cheap enough to evaluate on every row at once (see [`is_cheap`])
    /// rather than on a copy of the rows still selected.
    cheap: bool,
    /// The condition's number in its [`SharedConditions`]: the same
    /// expression in two rules over the same table has the same number.
    shared_id: usize,
}

impl PartialEq for Conjunct {
    fn eq(&self, other: &Self) -> bool {
        self.original.eq(&other.original)
    }
}

impl Hash for Conjunct {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.original.hash(state);
    }
}

impl Conjunct {
    fn new(original: Arc<dyn PhysicalExpr>, shared: &SharedConditions) -> Result<Self> {
        let mut columns: Vec<usize> = collect_columns(&original)
            .iter()
            .map(Column::index)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let narrow = Arc::clone(&original)
            .transform_up(|e| match e.downcast_ref::<Column>() {
                Some(c) => {
                    let index = columns
                        .binary_search(&c.index())
                        .expect("every column was collected");
                    Ok(Transformed::yes(
                        Arc::new(Column::new(c.name(), index)) as Arc<dyn PhysicalExpr>
                    ))
                }
                None => Ok(Transformed::no(e)),
            })?
            .data;
        let key = Arc::clone(&original)
            .transform_up(|e| match e.downcast_ref::<Column>() {
                Some(c) => Ok(Transformed::yes(
                    Arc::new(Column::new(c.name(), 0)) as Arc<dyn PhysicalExpr>
                )),
                None => Ok(Transformed::no(e)),
            })?
            .data;
        let cheap = is_cheap(&original);
        let fields_read = FieldsRead::of(&narrow, columns.len());
        Ok(Conjunct {
            original,
            narrow,
            columns,
            fields_read,
            shared_id: shared.id_of(key),
            cheap,
        })
    }

    /// The condition on `input` (already projected to `columns`), as a
    /// NULL-free boolean array of `input`'s length.
    fn evaluate_on(&self, input: &RecordBatch) -> Result<BooleanArray> {
        let array: ArrayRef = self.narrow.evaluate(input)?.into_array(input.num_rows())?;
        let booleans = as_boolean_array(&array)?;
        Ok(if booleans.null_count() == 0 {
            booleans.clone()
        } else {
            prep_null_mask_filter(booleans)
        })
    }
}

/// A conjunction evaluated condition by condition (see the module doc).
#[derive(Debug)]
pub struct SelectiveAnd {
    conjuncts: Vec<Conjunct>,
    shared: Arc<SharedConditions>,
}

impl PartialEq for SelectiveAnd {
    fn eq(&self, other: &Self) -> bool {
        self.conjuncts == other.conjuncts
    }
}

impl Eq for SelectiveAnd {}

impl Hash for SelectiveAnd {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.conjuncts.hash(state);
    }
}

impl SelectiveAnd {
    /// The conjunction of `predicate`'s top-level conjuncts, in order (see
    /// [`filter_conjuncts`]).
    pub fn new(predicate: &Arc<dyn PhysicalExpr>, shared: Arc<SharedConditions>) -> Result<Self> {
        let conjuncts = filter_conjuncts(predicate)
            .into_iter()
            .map(|c| Conjunct::new(c, &shared))
            .collect::<Result<_>>()?;
        Ok(SelectiveAnd { conjuncts, shared })
    }

    /// The conjunction on the rows of `within` (every row when `None`):
    /// TRUE exactly where the row is in `within` and every conjunct is TRUE.
    fn evaluate_within(
        &self,
        batch: &RecordBatch,
        within: Option<BooleanArray>,
    ) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        // `None`: every row is still selected.
        let mut selected = within;
        for conjunct in &self.conjuncts {
            if selected.as_ref().is_some_and(|mask| mask.true_count() == 0) {
                break;
            }
            let input = batch.project(&conjunct.columns)?;
            selected = Some(self.shared.evaluate(conjunct, &input, selected.as_ref())?);
        }
        Ok(selected.unwrap_or_else(|| BooleanArray::from(vec![true; rows])))
    }
}

/// A disjunction of conjunctions (`(a AND b) OR (c AND d) OR ...`, the
/// correlation pre-filter: keep an event if any rule could use it),
/// evaluated disjunct by disjunct, each as a [`SelectiveAnd`] on only the
/// rows no disjunct before it kept; evaluation stops when every row is
/// kept. NULL counts as FALSE, which keeps the same rows: a filter keeps a
/// row only where the disjunction is TRUE, that is where some disjunct is.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SelectiveOr {
    disjuncts: Vec<SelectiveAnd>,
}

impl SelectiveOr {
    /// The disjunction of `predicate`'s top-level disjuncts, in order.
    pub fn new(predicate: &Arc<dyn PhysicalExpr>, shared: &Arc<SharedConditions>) -> Result<Self> {
        let disjuncts = split_disjunction(predicate)
            .into_iter()
            .map(|d| SelectiveAnd::new(d, Arc::clone(shared)))
            .collect::<Result<_>>()?;
        Ok(SelectiveOr { disjuncts })
    }

    /// The disjunction on the rows of `within` (every row when `None`; a
    /// NULL-free mask): TRUE exactly where the row is in `within` and some
    /// disjunct is TRUE. No condition is evaluated on other rows.
    fn evaluate_within(
        &self,
        batch: &RecordBatch,
        within: Option<&BooleanArray>,
    ) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        let mut kept = BooleanBuffer::new_unset(rows);
        // The rows left to decide: in `within`, kept by no disjunct yet.
        let mut open = within.map_or_else(|| BooleanBuffer::new_set(rows), |w| w.values().clone());
        for disjunct in &self.disjuncts {
            let mask = match open.count_set_bits() {
                0 => break,
                n if n == rows => None,
                _ => Some(BooleanArray::new(open.clone(), None)),
            };
            let found = disjunct.evaluate_within(batch, mask)?;
            kept = &kept | found.values();
            open = &open & &!found.values();
        }
        Ok(BooleanArray::new(kept, None))
    }
}

/// `predicate` (a filter's: NULL counts as FALSE) on the rows of `within`,
/// a NULL-free mask: TRUE exactly where the row is in `within` and the
/// predicate is TRUE. A [`SelectiveOr`] or [`SelectiveAnd`] evaluates its
/// conditions on those rows only; another predicate on every row.
pub fn evaluate_within(
    predicate: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    within: &BooleanArray,
) -> Result<BooleanArray> {
    if let Some(or) = predicate.downcast_ref::<SelectiveOr>() {
        return or.evaluate_within(batch, Some(within));
    }
    if let Some(conjunction) = predicate.downcast_ref::<SelectiveAnd>() {
        return conjunction.evaluate_within(batch, Some(within.clone()));
    }
    let value = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    let value = prep_null_mask_filter(as_boolean_array(&value)?);
    Ok(and(&value, within)?)
}

/// The top-level operands of a chain of `OR`s, in order.
fn split_disjunction(predicate: &Arc<dyn PhysicalExpr>) -> Vec<&Arc<dyn PhysicalExpr>> {
    match predicate.downcast_ref::<BinaryExpr>() {
        Some(b) if *b.op() == Operator::Or => {
            let mut parts = split_disjunction(b.left());
            parts.extend(split_disjunction(b.right()));
            parts
        }
        _ => vec![predicate],
    }
}

impl fmt::Display for SelectiveOr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write_call(f, "selective_or", &self.disjuncts)
    }
}

/// `name(item, item, ...)`.
fn write_call<T: fmt::Display>(
    f: &mut fmt::Formatter,
    name: &str,
    items: impl IntoIterator<Item = T>,
) -> fmt::Result {
    write!(f, "{name}(")?;
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{item}")?;
    }
    write!(f, ")")
}

impl PhysicalExpr for SelectiveOr {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Array(Arc::new(
            self.evaluate_within(batch, None)?,
        )))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.disjuncts.iter().flat_map(|d| d.children()).collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let mut children = children.into_iter();
        let disjuncts = self
            .disjuncts
            .iter()
            .map(|d| {
                let conjuncts = children
                    .by_ref()
                    .take(d.conjuncts.len())
                    .map(|c| Conjunct::new(c, &d.shared))
                    .collect::<Result<_>>()?;
                Ok(SelectiveAnd {
                    conjuncts,
                    shared: Arc::clone(&d.shared),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Arc::new(SelectiveOr { disjuncts }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.disjuncts.iter().enumerate() {
            if i > 0 {
                write!(f, " OR ")?;
            }
            write!(f, "(")?;
            d.fmt_sql(f)?;
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// The conjuncts of a filter predicate, in order: its top-level `AND`s
/// split, and within them every `COALESCE(p, FALSE)` opened up and split in
/// turn. In a filter `COALESCE(p, FALSE)` keeps exactly the rows `p` keeps
/// (NULL and FALSE both drop a row); boolean macros are written that way so
/// that `NOT macro()` is safe (`rules::definitions::macros`), and opening
/// them lets their conditions be evaluated one at a time and shared like
/// any other (`request_succeeded()` in every rule is computed once).
pub(crate) fn filter_conjuncts(predicate: &Arc<dyn PhysicalExpr>) -> Vec<Arc<dyn PhysicalExpr>> {
    let mut out = Vec::new();
    for c in split_conjunction(predicate) {
        match coalesce_false_operand(c) {
            Some(inner) => out.extend(filter_conjuncts(inner)),
            None => out.push(Arc::clone(c)),
        }
    }
    out
}

/// `p` when `expr` is `COALESCE(p, FALSE)`.
fn coalesce_false_operand(expr: &Arc<dyn PhysicalExpr>) -> Option<&Arc<dyn PhysicalExpr>> {
    let f = expr.downcast_ref::<ScalarFunctionExpr>()?;
    let [p, fallback] = f.args() else {
        return None;
    };
    let is_false = fallback.downcast_ref::<Literal>().is_some_and(|l| {
        matches!(
            l.value(),
            datafusion::common::ScalarValue::Boolean(Some(false))
        )
    });
    (f.name() == "coalesce" && is_false).then_some(p)
}

/// Functions that take each row's value at no more cost than a comparison:
/// a struct's field, the first non-NULL argument, a list's length.
const CHEAP_FUNCTIONS: [&str; 3] = ["get_field", "coalesce", "cardinality"];

/// Whether a condition is cheap enough to evaluate on every row of a batch
/// rather than on a copy of the rows still selected: column reads, struct
/// field access, literals, comparisons (with a literal too), `IN` lists,
/// `CASE`, `COALESCE`, list lengths, `IS [NOT] NULL`, `NOT`, casts.
/// Regular expressions, `LIKE` and every other function are not. Copying
/// the selected rows costs more than evaluating a cheap condition on all
/// of them (docs/benchmarks.md, stop 41).
fn is_cheap(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let node_cheap = if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        !matches!(
            b.op(),
            Operator::RegexMatch
                | Operator::RegexIMatch
                | Operator::RegexNotMatch
                | Operator::RegexNotIMatch
                | Operator::LikeMatch
                | Operator::ILikeMatch
                | Operator::NotLikeMatch
                | Operator::NotILikeMatch
                | Operator::StringConcat
        )
    } else if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() {
        CHEAP_FUNCTIONS.contains(&f.name())
    } else {
        expr.downcast_ref::<Column>().is_some()
            || expr.downcast_ref::<EqLiteral>().is_some()
            || expr.downcast_ref::<Literal>().is_some()
            || expr.downcast_ref::<InListExpr>().is_some()
            || expr.downcast_ref::<CaseExpr>().is_some()
            || expr.downcast_ref::<OrLiteral>().is_some()
            || expr.downcast_ref::<IsNullExpr>().is_some()
            || expr.downcast_ref::<IsNotNullExpr>().is_some()
            || expr.downcast_ref::<NotExpr>().is_some()
            || expr.downcast_ref::<CastExpr>().is_some()
            || expr.downcast_ref::<TryCastExpr>().is_some()
    };
    node_cheap && expr.children().into_iter().all(is_cheap)
}

/// The conditions of the batch being evaluated, shared by every rule of an
/// engine: rules repeat conditions (`verb = 'create'`, `COALESCE(stage, '')
/// <> 'RequestReceived'`, the workload resource list, the control-plane user
/// regular expression...), and each is evaluated at most once per row of a
/// batch, not once per rule ("evaluate shared predicates once").
///
/// A cheap condition is evaluated on every row the first time a rule asks;
/// a costly one only on the rows a rule asks about that no rule asked about
/// before. Conditions are row by row (no aggregates or windows in a filter),
/// so a row's value does not depend on the other rows evaluated with it.
///
/// An entry is valid for the exact input arrays it was computed from: it
/// holds them (so their memory cannot be reused by another batch while the
/// entry exists) and a lookup compares them by pointer. One entry per
/// condition; the next batch replaces it.
///
/// Conditions are numbered when rules are compiled, by the expression with
/// column names only (no input positions), compared as an expression and
/// not as its text: `s IN ('a, b')` and `s IN ('a', 'b')`, or `s = 'NULL'`
/// and `s = NULL`, display alike. Entries are looked up by that number, so
/// no expression is hashed per batch.
#[derive(Debug, Default)]
pub struct SharedConditions {
    ids: Mutex<HashMap<Arc<dyn PhysicalExpr>, usize>>,
    entries: Mutex<HashMap<usize, Entry>>,
}

#[derive(Debug)]
struct Entry {
    arrays: Vec<ArrayRef>,
    /// The condition's value (NULL as FALSE) on the rows in `computed`.
    values: BooleanBuffer,
    computed: BooleanBuffer,
}

impl SharedConditions {
    /// Let go of every condition's values (and the arrays they were
    /// computed from): for an evaluation whose batch no later one shares.
    pub fn clear(&self) {
        self.entries.lock().expect("shared conditions lock").clear();
    }

    /// The number of the condition `key`, given at its first sight.
    fn id_of(&self, key: Arc<dyn PhysicalExpr>) -> usize {
        let mut ids = self.ids.lock().expect("shared condition ids lock");
        let next = ids.len();
        *ids.entry(key).or_insert(next)
    }

    /// The condition on the rows of `mask` (every row when `None`): TRUE
    /// exactly where the row is in `mask` and the condition is TRUE.
    fn evaluate(
        &self,
        conjunct: &Conjunct,
        input: &RecordBatch,
        mask: Option<&BooleanArray>,
    ) -> Result<BooleanArray> {
        let rows = input.num_rows();
        if input.num_columns() == 0 {
            let all = conjunct.evaluate_on(input)?;
            return Ok(match mask {
                None => all,
                Some(m) => and(m, &all)?,
            });
        }
        let previous = self
            .entries
            .lock()
            .expect("shared conditions lock")
            .remove(&conjunct.shared_id);
        let mut entry = previous
            .filter(|e| {
                e.values.len() == rows
                    && e.arrays.len() == input.num_columns()
                    && e.arrays
                        .iter()
                        .zip(input.columns())
                        .all(|(a, b)| Arc::ptr_eq(a, b))
            })
            .unwrap_or_else(|| Entry {
                arrays: input.columns().to_vec(),
                values: BooleanBuffer::new_unset(rows),
                computed: BooleanBuffer::new_unset(rows),
            });
        let missing = !&entry.computed;
        let need = match mask {
            Some(m) if !conjunct.cheap => m.values() & &missing,
            _ => missing,
        };
        let needed = need.count_set_bits();
        if needed > 0 {
            if needed as f64 > DENSE_SELECTION * rows as f64 {
                // Nearly every row: all of them, without copying any.
                entry.values = conjunct.evaluate_on(input)?.values().clone();
                entry.computed = BooleanBuffer::new_set(rows);
            } else {
                let need = BooleanArray::new(need, None);
                let fresh = scatter(
                    &need,
                    &conjunct.evaluate_on(&filter_record_batch(
                        &conjunct.fields_read.narrow(input)?,
                        &need,
                    )?)?,
                );
                entry.values = &entry.values | fresh.values();
                entry.computed = &entry.computed | need.values();
            }
        }
        let result = match mask {
            None => BooleanArray::new(entry.values.clone(), None),
            Some(m) => BooleanArray::new(m.values() & &entry.values, None),
        };
        self.entries
            .lock()
            .expect("shared conditions lock")
            .insert(conjunct.shared_id, entry);
        Ok(result)
    }
}

/// `selected` with each of its set bits replaced by the next value of
/// `values` (which has one value per set bit).
fn scatter(selected: &BooleanArray, values: &BooleanArray) -> BooleanArray {
    let mut out = BooleanBufferBuilder::new(selected.len());
    out.append_n(selected.len(), false);
    for (value, row) in values.values().iter().zip(selected.values().set_indices()) {
        if value {
            out.set_bit(row, true);
        }
    }
    BooleanArray::new(out.finish(), None)
}

impl fmt::Display for SelectiveAnd {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write_call(
            f,
            "selective_and",
            self.conjuncts.iter().map(|c| &c.original),
        )
    }
}

impl PhysicalExpr for SelectiveAnd {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Array(Arc::new(
            self.evaluate_within(batch, None)?,
        )))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.conjuncts.iter().map(|c| &c.original).collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let conjuncts = children
            .into_iter()
            .map(|c| Conjunct::new(c, &self.shared))
            .collect::<Result<_>>()?;
        Ok(Arc::new(SelectiveAnd {
            conjuncts,
            shared: Arc::clone(&self.shared),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.conjuncts.iter().enumerate() {
            if i > 0 {
                write!(f, " AND ")?;
            }
            write!(f, "COALESCE(")?;
            c.original.fmt_sql(f)?;
            write!(f, ", FALSE)")?;
        }
        Ok(())
    }
}

/// `predicate` (over `schema`) as a [`SelectiveOr`] whose conditions are
/// shared through `shared`, after the rewrites of every rule filter (see
/// [`rewrite_filters`]).
pub fn selective_predicate(
    predicate: Arc<dyn PhysicalExpr>,
    schema: &Schema,
    shared: &Arc<SharedConditions>,
) -> Result<Arc<dyn PhysicalExpr>> {
    let predicate = with_faster_forms(predicate, schema)?;
    Ok(Arc::new(SelectiveOr::new(&predicate, shared)?))
}

/// Every filter of `plan` with its predicate as a [`SelectiveAnd`] whose
/// conditions are shared through `shared`.
pub fn selective_filters(
    plan: Arc<dyn ExecutionPlan>,
    shared: &Arc<SharedConditions>,
) -> Result<Arc<dyn ExecutionPlan>> {
    rewrite_filters(plan, |predicate| {
        Ok(Arc::new(SelectiveAnd::new(predicate, Arc::clone(shared))?))
    })
}

/// Every filter of `plan` with its predicate in [`with_faster_forms`], and
/// every hash join's filter with its intervals as durations
/// ([`join_filters_with_durations`]): correlation plans, whose filters
/// share no conditions, are evaluated run after run, and a regular
/// expression left to DataFusion would be compiled at each evaluation.
pub fn faster_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = rewrite_filters(plan, |predicate| Ok(Arc::clone(predicate)))?;
    join_filters_with_durations(plan)
}

/// Every filter of `plan` with its predicate replaced by `rewrite`'s, after
/// [`with_faster_forms`].
fn rewrite_filters(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: impl Fn(&Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        let predicate =
            with_faster_forms(Arc::clone(filter.predicate()), &filter.input().schema())?;
        let rebuilt = FilterExecBuilder::from(filter)
            .with_predicate(rewrite(&predicate)?)
            .build()?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// `expr` (over `schema`) with the shapes Vigil evaluates in fewer passes
/// than DataFusion replaced: first `x IS NOT NULL` beside `x` merged with
/// it ([`with_null_tests_merged`]; `expr` is a filter's predicate), then in
/// one pass `coalesce`-shaped `CASE`s by
/// [`OrLiteral`]s, matches against literal patterns by [`RegexMatch`]es,
/// string comparisons with a literal and tests against short lists of
/// literals by [`EqLiteral`]s; and intervals
/// added to timestamps as durations ([`as_duration`]).
pub(crate) fn with_faster_forms(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Arc<dyn PhysicalExpr>> {
    // Before the other forms: it compares DataFusion's expressions.
    let expr = with_null_tests_merged(&expr)?;
    let faster = |e: &Arc<dyn PhysicalExpr>| -> Option<Arc<dyn PhysicalExpr>> {
        if let Some(case) = e.downcast_ref::<CaseExpr>() {
            return Some(Arc::new(OrLiteral::of_case(case, schema)?));
        }
        if let Some(duration) = as_duration(e, schema) {
            return Some(duration);
        }
        if let Some(in_list) = e.downcast_ref::<InListExpr>() {
            return Some(Arc::new(EqLiteral::of_in_list(in_list, schema)?));
        }
        let binary = e.downcast_ref::<BinaryExpr>()?;
        if let Some(regex) = RegexMatch::of_binary(binary, schema) {
            return Some(Arc::new(regex));
        }
        Some(Arc::new(EqLiteral::of_binary(binary, schema)?))
    };
    Ok(expr
        .transform_up(|e| match faster(&e) {
            Some(replaced) => Ok(Transformed::yes(replaced)),
            None => Ok(Transformed::no(e)),
        })?
        .data)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, is_not_null, lit};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("m", DataType::Int64, true),
        ]));
        let n: Vec<Option<i64>> = (0..100)
            .map(|i| if i % 7 == 0 { None } else { Some(i) })
            .collect();
        let s: Vec<Option<String>> = (0..100)
            .map(|i| (i % 5 != 0).then(|| format!("v{}", i % 3)))
            .collect();
        let m: Vec<Option<i64>> = (0..100).map(|i| Some(i % 10)).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(n)),
                Arc::new(StringArray::from(s)),
                Arc::new(Int64Array::from(m)),
            ],
        )
        .unwrap()
    }

    /// Two conditions that display alike are still two conditions: a rule
    /// must not be given the values of another's.
    #[test]
    fn conditions_that_display_alike_do_not_share_values() {
        use datafusion::physical_expr::expressions::in_list;
        let b = batch();
        let schema = b.schema();
        let s = || col("s", &schema).unwrap();
        let one_string = in_list(s(), vec![lit("v0, v1")], &false, &schema).unwrap();
        let two_strings = in_list(s(), vec![lit("v0"), lit("v1")], &false, &schema).unwrap();
        assert_eq!(one_string.to_string(), two_strings.to_string());
        let shared = Arc::new(SharedConditions::default());
        for plain in [one_string, two_strings] {
            let rule: Arc<dyn PhysicalExpr> =
                Arc::new(SelectiveAnd::new(&plain, Arc::clone(&shared)).unwrap());
            assert_eq!(kept(&rule, &b), kept(&plain, &b), "{plain}");
        }
    }

    /// The rows a predicate keeps, as DataFusion's own evaluation decides.
    fn kept(predicate: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<bool> {
        let array = predicate
            .evaluate(batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        as_boolean_array(&array)
            .unwrap()
            .iter()
            .map(|v| v == Some(true))
            .collect()
    }

    #[test]
    fn keeps_exactly_the_rows_the_plain_conjunction_keeps_at_every_selectivity() {
        let b = batch();
        let schema = b.schema();
        let s = || col("s", &schema).unwrap();
        let n = || col("n", &schema).unwrap();
        let m = || col("m", &schema).unwrap();
        // Conjunctions from dense to empty, with NULLs in the first
        // condition, a last condition on another column, and one reading
        // two columns.
        let cases: Vec<Vec<Arc<dyn PhysicalExpr>>> = vec![
            vec![binary(n(), Operator::Gt, lit(1i64), &schema).unwrap()],
            vec![
                binary(n(), Operator::Gt, lit(3i64), &schema).unwrap(),
                binary(s(), Operator::Eq, lit("v1"), &schema).unwrap(),
            ],
            vec![
                binary(s(), Operator::NotEq, lit("v0"), &schema).unwrap(),
                binary(n(), Operator::Lt, m(), &schema).unwrap(),
                is_not_null(n()).unwrap(),
            ],
            vec![
                binary(m(), Operator::Eq, lit(3i64), &schema).unwrap(),
                binary(n(), Operator::Gt, lit(50i64), &schema).unwrap(),
            ],
            vec![
                binary(m(), Operator::Eq, lit(99i64), &schema).unwrap(),
                binary(s(), Operator::Eq, lit("v1"), &schema).unwrap(),
            ],
        ];
        for conjuncts in cases {
            let plain = conjuncts
                .iter()
                .cloned()
                .reduce(|l, r| binary(l, Operator::And, r, &schema).unwrap())
                .unwrap();
            let selective: Arc<dyn PhysicalExpr> =
                Arc::new(SelectiveAnd::new(&plain, Arc::default()).unwrap());
            assert_eq!(selective.conjuncts_len(), conjuncts.len());
            let expected = kept(&plain, &b);
            assert!(expected.len() == 100);
            let out = selective.evaluate(&b).unwrap().into_array(100).unwrap();
            assert_eq!(out.null_count(), 0, "{plain}");
            assert_eq!(kept(&selective, &b), expected, "{plain}");
        }
    }

    #[test]
    fn a_selective_or_keeps_exactly_the_rows_the_plain_disjunction_keeps() {
        let b = batch();
        let schema = b.schema();
        let s = || col("s", &schema).unwrap();
        let n = || col("n", &schema).unwrap();
        let m = || col("m", &schema).unwrap();
        let and = |l, r| binary(l, Operator::And, r, &schema).unwrap();
        // Disjuncts with NULLs (n, s), overlapping ones, one that keeps
        // nothing, one that keeps everything left, conjunctions inside.
        let disjuncts: Vec<Arc<dyn PhysicalExpr>> = vec![
            and(
                binary(n(), Operator::Gt, lit(90i64), &schema).unwrap(),
                binary(s(), Operator::Eq, lit("v1"), &schema).unwrap(),
            ),
            binary(m(), Operator::Eq, lit(99i64), &schema).unwrap(),
            and(
                binary(s(), Operator::Eq, lit("v2"), &schema).unwrap(),
                binary(n(), Operator::Lt, m(), &schema).unwrap(),
            ),
            binary(m(), Operator::Eq, lit(3i64), &schema).unwrap(),
            is_not_null(s()).unwrap(),
            binary(m(), Operator::Eq, lit(4i64), &schema).unwrap(),
        ];
        for count in 1..=disjuncts.len() {
            let plain = disjuncts[..count]
                .iter()
                .cloned()
                .reduce(|l, r| binary(l, Operator::Or, r, &schema).unwrap())
                .unwrap();
            let selective: Arc<dyn PhysicalExpr> =
                Arc::new(SelectiveOr::new(&plain, &Arc::default()).unwrap());
            assert_eq!(selective.children().len(), {
                let mut c = 0;
                for d in &disjuncts[..count] {
                    c += filter_conjuncts(d).len();
                }
                c
            });
            let out = selective.evaluate(&b).unwrap().into_array(100).unwrap();
            assert_eq!(out.null_count(), 0, "{plain}");
            assert_eq!(kept(&selective, &b), kept(&plain, &b), "{plain}");
            // Rebuilt from its children, it is the same predicate.
            let rebuilt = Arc::clone(&selective)
                .with_new_children(selective.children().into_iter().cloned().collect())
                .unwrap();
            assert_eq!(kept(&rebuilt, &b), kept(&plain, &b), "{plain}");
        }
    }

    #[test]
    fn a_later_disjunct_is_evaluated_only_on_rows_no_earlier_one_kept() {
        let b = batch();
        let schema = b.schema();
        let shared: Arc<SharedConditions> = Arc::default();
        // `m < 5` keeps half the rows; the regular expression (a costly
        // condition, see `is_cheap`) must be computed on the other half only.
        let first = binary(col("m", &schema).unwrap(), Operator::Lt, lit(5i64), &schema).unwrap();
        let second = binary(
            col("s", &schema).unwrap(),
            Operator::RegexMatch,
            lit("^v[12]$"),
            &schema,
        )
        .unwrap();
        let plain = binary(first, Operator::Or, second, &schema).unwrap();
        let selective: Arc<dyn PhysicalExpr> = Arc::new(SelectiveOr::new(&plain, &shared).unwrap());
        assert_eq!(kept(&selective, &b), kept(&plain, &b));
        let regex_id = shared
            .ids
            .lock()
            .unwrap()
            .iter()
            .find(|(key, _)| key.to_string().contains("~"))
            .map(|(_, id)| *id)
            .expect("the regular expression has a number");
        let entries = shared.entries.lock().unwrap();
        let regex = &entries[&regex_id];
        let m_lt_5 = (0..100).filter(|i| i % 10 < 5).count();
        assert_eq!(
            regex.computed.count_set_bits(),
            100 - m_lt_5,
            "computed exactly on the rows the first disjunct did not keep"
        );
    }

    /// On a mask, a selective predicate keeps the rows of the mask the
    /// plain one keeps, and computes a costly condition on no other row;
    /// a plain predicate is masked after it.
    #[test]
    fn a_predicate_within_a_mask_keeps_its_rows_there_and_evaluates_nothing_else() {
        let b = batch();
        let schema = b.schema();
        let first = binary(col("m", &schema).unwrap(), Operator::Eq, lit(3i64), &schema).unwrap();
        let regex = binary(
            col("s", &schema).unwrap(),
            Operator::RegexMatch,
            lit("^v[12]$"),
            &schema,
        )
        .unwrap();
        let plain = binary(first, Operator::Or, regex, &schema).unwrap();
        let within = BooleanArray::from((0..100).map(|i| i % 4 == 0).collect::<Vec<_>>());
        let expected: Vec<bool> = kept(&plain, &b)
            .into_iter()
            .zip(within.values().iter())
            .map(|(k, w)| k && w)
            .collect();
        let shared: Arc<SharedConditions> = Arc::default();
        let or: Arc<dyn PhysicalExpr> = Arc::new(SelectiveOr::new(&plain, &shared).unwrap());
        let and: Arc<dyn PhysicalExpr> =
            Arc::new(SelectiveAnd::new(&plain, Arc::clone(&shared)).unwrap());
        for predicate in [&or, &and, &plain] {
            let out = evaluate_within(predicate, &b, &within).unwrap();
            assert_eq!(out.null_count(), 0);
            let out: Vec<bool> = out.values().iter().collect();
            assert_eq!(out, expected, "{predicate}");
        }
        // Cheap conditions are computed on every row (see `is_cheap`);
        // the regular expression and the disjunction holding it are not.
        let ids = shared.ids.lock().unwrap();
        let costly: Vec<usize> = ids
            .iter()
            .filter(|(key, _)| key.to_string().contains("~"))
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            costly.len(),
            2,
            "the regular expression and the disjunction"
        );
        let entries = shared.entries.lock().unwrap();
        for id in costly {
            let outside = &entries[&id].computed & &!within.values();
            assert_eq!(outside.count_set_bits(), 0, "computed outside the mask");
        }
    }

    #[test]
    fn a_shared_condition_is_reused_within_a_batch_and_recomputed_for_the_next() {
        let shared: Arc<SharedConditions> = Arc::default();
        let first = batch();
        // The same condition, `m = 3`, planned against two inputs where `m`
        // sits at different positions (as in two rules' projected scans).
        let narrow = first.project(&[2, 0]).unwrap();
        let cond = |schema: &Schema| {
            binary(col("m", schema).unwrap(), Operator::Eq, lit(3i64), schema).unwrap()
        };
        let a: Arc<dyn PhysicalExpr> =
            Arc::new(SelectiveAnd::new(&cond(&first.schema()), Arc::clone(&shared)).unwrap());
        let b: Arc<dyn PhysicalExpr> =
            Arc::new(SelectiveAnd::new(&cond(&narrow.schema()), Arc::clone(&shared)).unwrap());
        let expected = kept(&cond(&first.schema()), &first);
        assert_eq!(kept(&a, &first), expected);
        assert_eq!(shared.entries.lock().unwrap().len(), 1);
        assert_eq!(
            kept(&b, &narrow),
            expected,
            "the entry of the same arrays is reused"
        );
        // A new batch with other values in `m`: the entry must not be reused.
        let m: Vec<i64> = (0..100).map(|i| (i + 3) % 10).collect();
        let second = RecordBatch::try_new(
            first.schema(),
            vec![
                first.column(0).clone(),
                first.column(1).clone(),
                Arc::new(Int64Array::from(m)),
            ],
        )
        .unwrap();
        let expected = kept(&cond(&second.schema()), &second);
        assert_ne!(expected, kept(&cond(&first.schema()), &first));
        assert_eq!(kept(&a, &second), expected);
    }

    #[test]
    fn a_costly_condition_computed_for_some_rows_is_completed_for_others() {
        // Two rules share a regular expression behind different selective
        // conditions: the second asks about rows the first did not.
        let shared: Arc<SharedConditions> = Arc::default();
        let b = batch();
        let schema = b.schema();
        let regex = || {
            binary(
                col("s", &schema).unwrap(),
                Operator::RegexMatch,
                lit("^v[01]$"),
                &schema,
            )
            .unwrap()
        };
        for (first, m) in [(true, 3i64), (false, 4), (false, 3), (false, 99)] {
            let pick = binary(col("m", &schema).unwrap(), Operator::Eq, lit(m), &schema).unwrap();
            let plain = binary(pick, Operator::And, regex(), &schema).unwrap();
            let rule: Arc<dyn PhysicalExpr> =
                Arc::new(SelectiveAnd::new(&plain, Arc::clone(&shared)).unwrap());
            assert_eq!(kept(&rule, &b), kept(&plain, &b), "m = {m}");
            if first {
                let entries = shared.entries.lock().unwrap();
                let entry = entries
                    .values()
                    .find(|e| e.values.len() == 100 && e.computed.count_set_bits() < 100);
                assert!(
                    entry.is_some(),
                    "the regular expression was evaluated on the selected rows only"
                );
            }
        }
    }

    #[test]
    fn comparisons_are_cheap_and_regular_expressions_are_not() {
        let b = batch();
        let schema = b.schema();
        let cheap = binary(col("s", &schema).unwrap(), Operator::Eq, lit("v1"), &schema).unwrap();
        let regex = binary(
            col("s", &schema).unwrap(),
            Operator::RegexMatch,
            lit("^v"),
            &schema,
        )
        .unwrap();
        assert!(is_cheap(&cheap));
        let with_literal =
            EqLiteral::of_binary(cheap.downcast_ref::<BinaryExpr>().unwrap(), &schema)
                .map(|e| Arc::new(e) as Arc<dyn PhysicalExpr>)
                .unwrap();
        assert!(is_cheap(&with_literal));
        assert!(!is_cheap(&regex));
        assert!(!is_cheap(
            &binary(cheap, Operator::And, regex, &schema).unwrap()
        ));
    }

    /// A costly condition on one field of a struct, evaluated on a copy of
    /// the selected rows of that field only, keeps what the plain
    /// conjunction keeps, NULL structs included.
    #[test]
    fn a_costly_condition_on_a_struct_field_keeps_what_the_plain_conjunction_keeps() {
        use datafusion::arrow::array::{AsArray, StructArray};
        use datafusion::arrow::buffer::NullBuffer;
        use datafusion::arrow::datatypes::Fields;
        let fields = Fields::from(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("uid", DataType::Utf8, true),
        ]);
        let names: Vec<String> = (0..100).map(|i| format!("n{}", i % 4)).collect();
        let object = StructArray::new(
            fields.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(vec!["u"; 100])),
            ],
            Some(NullBuffer::from(
                (0..100).map(|i| i % 6 != 0).collect::<Vec<_>>(),
            )),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("object", DataType::Struct(fields), true),
            Field::new("m", DataType::Int64, true),
        ]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(object),
                Arc::new(Int64Array::from(
                    (0..100).map(|i| i % 3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        let name: Arc<dyn PhysicalExpr> = Arc::new(
            ScalarFunctionExpr::try_new(
                datafusion::functions::core::get_field(),
                vec![col("object", &schema).unwrap(), lit("name")],
                &schema,
                Arc::new(datafusion::config::ConfigOptions::default()),
            )
            .unwrap(),
        );
        let pick = binary(col("m", &schema).unwrap(), Operator::Eq, lit(1i64), &schema).unwrap();
        let regex = binary(name, Operator::RegexMatch, lit("^n[13]$"), &schema).unwrap();
        let plain = binary(pick, Operator::And, regex, &schema).unwrap();
        let selective = SelectiveAnd::new(&plain, Arc::default()).unwrap();
        let costly = &selective.conjuncts[1];
        assert!(!costly.cheap);
        let input = b.project(&costly.columns).unwrap();
        let copied = costly.fields_read.narrow(&input).unwrap();
        assert_eq!(
            copied.column(0).as_struct().column_names(),
            ["name"],
            "the copy keeps the one field read"
        );
        let selective: Arc<dyn PhysicalExpr> = Arc::new(selective);
        let expected = kept(&plain, &b);
        assert!(expected.iter().any(|k| *k));
        assert_eq!(kept(&selective, &b), expected);
    }

    #[test]
    fn scatter_puts_values_at_the_selected_rows() {
        let selected = BooleanArray::from(vec![false, true, true, false, true]);
        let values = BooleanArray::from(vec![true, false, true]);
        assert_eq!(
            scatter(&selected, &values),
            BooleanArray::from(vec![false, true, false, false, true])
        );
    }

    trait Len {
        fn conjuncts_len(&self) -> usize;
    }
    impl Len for Arc<dyn PhysicalExpr> {
        fn conjuncts_len(&self) -> usize {
            self.downcast_ref::<SelectiveAnd>().unwrap().conjuncts.len()
        }
    }
}
