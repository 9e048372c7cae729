//! A filter's `x IS NOT NULL AND x` evaluated with one evaluation of `x`.
//!
//! The pack's macros end in `COALESCE(<condition>, FALSE)`, so that
//! `NOT macro()` holds where the condition is unknown. DataFusion's
//! simplifier plans that as `<condition> IS NOT NULL AND <condition>`,
//! which evaluates the condition twice: once for the `IS NOT NULL`, once
//! more for the `AND`. The conditions are `IN` lists of principals, globs
//! over JSON keys, `regexp_replace`s, in a third of the pack's rules
//! (docs/benchmarks.md, stop 46).
//!
//! [`with_null_tests_merged`] finds, in every conjunction of a filter's
//! predicate, a conjunct `x IS NOT NULL` whose `x` is among the other
//! conjuncts (`x` itself, or every conjunct of `x` when `x` is a
//! conjunction, as DataFusion flattens them):
//! * where a NULL is as good as FALSE (the predicate itself, and the
//!   operands of its `AND`s and `OR`s: the filter keeps a row only where
//!   the predicate is TRUE), the `x IS NOT NULL` is dropped. The
//!   conjunction becomes NULL instead of FALSE where `x` is NULL, and is
//!   TRUE exactly where it was. `x`'s conjuncts stay where they were, each
//!   evaluated on the rows the ones before it kept;
//! * anywhere else (under `NOT`, in a `CASE`, as a function's argument),
//!   the pair becomes one `x IS NOT DISTINCT FROM TRUE`: TRUE where `x` is
//!   TRUE and FALSE elsewhere, as the pair is. A conjunction's value does
//!   not depend on the order or grouping of its conjuncts.
//!
//! The expander writes a macro's `COALESCE(<condition>, FALSE)` as
//! `(<condition>) IS TRUE`, planned as `x IS NOT DISTINCT FROM TRUE`; where
//! a NULL is as good as FALSE, that is `x` too, and its conjuncts become
//! the filter's own, as above.

use std::sync::Arc;

use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{lit, BinaryExpr, IsNotNullExpr, Literal};
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};

/// A filter's `predicate` with every `x IS NOT NULL` that is a conjunct
/// beside `x` merged with it, at every depth (see the module's doc).
pub(crate) fn with_null_tests_merged(
    predicate: &Arc<dyn PhysicalExpr>,
) -> Result<Arc<dyn PhysicalExpr>> {
    merged(predicate, Context::Filter)
}

/// Where an expression is: whether its NULL is as good as FALSE.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    /// The filter's predicate, or an operand of its `AND`s and `OR`s.
    Filter,
    /// Anywhere else: the exact value matters.
    Value,
}

fn merged(expr: &Arc<dyn PhysicalExpr>, context: Context) -> Result<Arc<dyn PhysicalExpr>> {
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        match binary.op() {
            // `x IS TRUE` where a NULL is as good as FALSE is `x`, whose
            // conjuncts then join the filter's.
            Operator::IsNotDistinctFrom
                if context == Context::Filter && is_true_literal(binary.right()) =>
            {
                return merged(binary.left(), context);
            }
            Operator::And => {
                // Pairs are found among the conjuncts as planned, so that
                // a rewrite inside one cannot hide its partner.
                let conjuncts = split_conjunction(expr).into_iter().cloned().collect();
                let rewritten = merge_pairs(conjuncts, context)
                    .into_iter()
                    .map(|c| match c {
                        Merged::Kept(c) => merged(&c, context),
                        Merged::IsTrue(x) => Ok(is_true(merged(&x, Context::Value)?)),
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok(conjunction(rewritten));
            }
            Operator::Or => {
                let left = merged(binary.left(), context)?;
                let right = merged(binary.right(), context)?;
                return Ok(Arc::new(BinaryExpr::new(left, Operator::Or, right)));
            }
            _ => {}
        }
    }
    let children = expr.children();
    let rewritten = children
        .iter()
        .map(|c| merged(c, Context::Value))
        .collect::<Result<Vec<_>>>()?;
    if rewritten
        .iter()
        .zip(&children)
        .all(|(r, c)| Arc::ptr_eq(r, c))
    {
        return Ok(Arc::clone(expr));
    }
    Arc::clone(expr).with_new_children(rewritten)
}

/// A conjunct after [`merge_pairs`].
enum Merged {
    Kept(Arc<dyn PhysicalExpr>),
    /// `x IS NOT NULL` and `x` in one: `x IS NOT DISTINCT FROM TRUE`.
    IsTrue(Arc<dyn PhysicalExpr>),
}

/// The conjuncts, in their order, with each `x IS NOT NULL` whose `x` is
/// among the others merged with it (see the module's doc).
fn merge_pairs(conjuncts: Vec<Arc<dyn PhysicalExpr>>, context: Context) -> Vec<Merged> {
    let mut dropped = vec![false; conjuncts.len()];
    let mut is_true_of: Vec<Option<Arc<dyn PhysicalExpr>>> = vec![None; conjuncts.len()];
    for (i, conjunct) in conjuncts.iter().enumerate() {
        let Some(tested) = conjunct
            .downcast_ref::<IsNotNullExpr>()
            .map(IsNotNullExpr::arg)
        else {
            continue;
        };
        if dropped[i] {
            continue;
        }
        let Some(partners) = partners_of(tested, i, &conjuncts, &dropped, &is_true_of) else {
            continue;
        };
        match context {
            Context::Filter => dropped[i] = true,
            Context::Value => {
                partners.into_iter().for_each(|j| dropped[j] = true);
                is_true_of[i] = Some(Arc::clone(tested));
            }
        }
    }
    conjuncts
        .into_iter()
        .zip(is_true_of)
        .zip(dropped)
        .filter(|(_, dropped)| !dropped)
        .map(|((conjunct, is_true_of), _)| match is_true_of {
            Some(x) => Merged::IsTrue(x),
            None => Merged::Kept(conjunct),
        })
        .collect()
}

/// For each conjunct of `tested`, a distinct other conjunct (not `i`, not
/// dropped or replaced) equal to it; `None` unless every one has one.
fn partners_of(
    tested: &Arc<dyn PhysicalExpr>,
    i: usize,
    conjuncts: &[Arc<dyn PhysicalExpr>],
    dropped: &[bool],
    is_true_of: &[Option<Arc<dyn PhysicalExpr>>],
) -> Option<Vec<usize>> {
    let mut partners: Vec<usize> = Vec::new();
    for part in split_conjunction(tested) {
        let j = (0..conjuncts.len()).find(|&j| {
            j != i
                && !dropped[j]
                && is_true_of[j].is_none()
                && !partners.contains(&j)
                && conjuncts[j].eq(part)
        })?;
        partners.push(j);
    }
    Some(partners)
}

fn is_true_literal(e: &Arc<dyn PhysicalExpr>) -> bool {
    e.downcast_ref::<Literal>()
        .is_some_and(|l| l.value() == &ScalarValue::Boolean(Some(true)))
}

fn is_true(x: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(x, Operator::IsNotDistinctFrom, lit(true)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, BooleanArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::{self as ex, col};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("c", DataType::Boolean, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        // Every combination of TRUE, FALSE and NULL for `b` and `c`.
        let values = [Some(true), Some(false), None];
        let (b, c): (Vec<_>, Vec<_>) = values
            .iter()
            .flat_map(|b| values.iter().map(move |c| (*b, *c)))
            .unzip();
        let s: Vec<Option<&str>> = (0..9)
            .map(|i| [Some("a"), Some("x"), None][i % 3])
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(b)),
            Arc::new(BooleanArray::from(c)),
            Arc::new(StringArray::from(s)),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn column(name: &str) -> Arc<dyn PhysicalExpr> {
        col(name, &batch().schema()).unwrap()
    }

    fn and(l: Arc<dyn PhysicalExpr>, r: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, Operator::And, r))
    }

    fn or(l: Arc<dyn PhysicalExpr>, r: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, Operator::Or, r))
    }

    fn not_null(e: &Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        ex::is_not_null(Arc::clone(e)).unwrap()
    }

    /// `s IN ('a')`: a condition that is NULL where `s` is.
    fn s_in_a() -> Arc<dyn PhysicalExpr> {
        let schema = batch().schema();
        ex::in_list(column("s"), vec![lit("a")], &false, &schema).unwrap()
    }

    fn values(e: &Arc<dyn PhysicalExpr>) -> ArrayRef {
        e.evaluate(&batch()).unwrap().into_array(9).unwrap()
    }

    /// The rows a filter with predicate `e` keeps.
    fn kept(e: &Arc<dyn PhysicalExpr>) -> Vec<bool> {
        let values = values(e);
        let values = values.as_any().downcast_ref::<BooleanArray>().unwrap();
        values.iter().map(|v| v == Some(true)).collect()
    }

    /// How often `rewritten` evaluates `x` (by its display).
    fn evaluations_of(rewritten: &Arc<dyn PhysicalExpr>, x: &Arc<dyn PhysicalExpr>) -> usize {
        rewritten.to_string().matches(&x.to_string()).count()
    }

    #[test]
    fn a_filter_keeps_the_same_rows_evaluating_the_condition_once() {
        // `COALESCE(s IN ('a') AND c, FALSE)` as DataFusion plans it, its
        // conjunction flattened: `s IN ('a') AND c IS NOT NULL AND s IN
        // ('a') AND c`.
        let x = and(s_in_a(), column("c"));
        let shaped = and(not_null(&x), Arc::clone(&x));
        assert_eq!(evaluations_of(&shaped, &s_in_a()), 2);
        let rewritten = with_null_tests_merged(&shaped).unwrap();
        assert_eq!(kept(&rewritten), kept(&shaped));
        assert_eq!(evaluations_of(&rewritten, &s_in_a()), 1, "{rewritten}");
        // The conjuncts stay conjuncts, to be evaluated one after another.
        assert_eq!(split_conjunction(&rewritten).len(), 2, "{rewritten}");
    }

    #[test]
    fn in_a_filter_an_is_true_becomes_its_conjuncts() {
        // `b AND (s IN ('a') AND c) IS TRUE`, as the expander writes a
        // macro's `COALESCE(.., FALSE)`.
        let x = and(s_in_a(), column("c"));
        let shaped = and(column("b"), is_true(Arc::clone(&x)));
        let rewritten = with_null_tests_merged(&shaped).unwrap();
        assert_eq!(kept(&rewritten), kept(&shaped));
        assert_eq!(split_conjunction(&rewritten).len(), 3, "{rewritten}");
        // Elsewhere its value matters: NULL is not FALSE under NOT.
        let negated = ex::not(Arc::clone(&shaped)).unwrap();
        let rewritten = merged(&negated, Context::Value).unwrap();
        assert_eq!(values(&rewritten).as_ref(), values(&negated).as_ref());
    }

    #[test]
    fn under_not_the_pair_becomes_one_is_true_with_the_same_values() {
        let x = s_in_a();
        // `NOT (b AND x IS NOT NULL AND x AND c)`: the pair is two of four
        // conjuncts, not one `AND` node.
        let chain = and(
            and(and(column("b"), not_null(&x)), Arc::clone(&x)),
            column("c"),
        );
        let negated = ex::not(chain).unwrap();
        let rewritten = merged(&negated, Context::Value).unwrap();
        assert_eq!(values(&rewritten).as_ref(), values(&negated).as_ref());
        assert_eq!(evaluations_of(&rewritten, &x), 1, "{rewritten}");
        // And as an operand of a filter's `OR`.
        let shaped = or(Arc::clone(&negated), column("c"));
        let rewritten = with_null_tests_merged(&shaped).unwrap();
        assert_eq!(kept(&rewritten), kept(&shaped));
        assert_eq!(evaluations_of(&rewritten, &x), 1, "{rewritten}");
        // Reversed: `x AND x IS NOT NULL`.
        let reversed = ex::not(and(Arc::clone(&x), not_null(&x))).unwrap();
        let rewritten = merged(&reversed, Context::Value).unwrap();
        assert_eq!(values(&rewritten).as_ref(), values(&reversed).as_ref());
        assert_eq!(evaluations_of(&rewritten, &x), 1, "{rewritten}");
    }

    #[test]
    fn an_is_not_null_without_all_of_its_condition_beside_it_is_kept() {
        let x = s_in_a();
        for context in [Context::Filter, Context::Value] {
            let alone = and(not_null(&x), column("c"));
            assert!(merged(&alone, context).unwrap().eq(&alone));
            // Half of a conjunction is not the conjunction.
            let half = and(not_null(&and(Arc::clone(&x), column("b"))), Arc::clone(&x));
            assert!(merged(&half, context).unwrap().eq(&half));
            // Not a conjunct: `x IS NOT NULL OR x` is TRUE where `x` is FALSE.
            let either = or(not_null(&x), Arc::clone(&x));
            let rewritten = merged(&either, context).unwrap();
            assert!(rewritten.eq(&either), "{rewritten}");
        }
    }
}
