//! Delta re-scans: a re-scan rule whose `window_end` is the `event_time`
//! of one scan's rows reads, from that scan, only the events newer than
//! what the rule has already emitted.
//!
//! A re-scan rule runs over every retained event at every emission and
//! keeps the output rows with `w0 < window_end <= w1`. When `window_end`
//! is, through the plan, exactly the `event_time` column of a table scan
//! `S` (a sequence rule: `b.event_time AS window_end`, B the trigger), each
//! output row comes from one row of `S` (or, below an aggregation grouping
//! by that column, from a group whose rows all share it) with the same
//! time. Filtering `S` to `event_time > w0` therefore removes exactly the
//! output rows with `window_end <= w0`, which were emitted before, and
//! changes no other row. The other scans (the A side of a sequence) still
//! read every retained event, so the work per emission is proportional to
//! the new trigger events joined against the retained context instead of
//! to every retained trigger.
//!
//! The trace from `window_end` down to a scan follows only operators for
//! which that argument holds, each mapping an output column to one input
//! column: projections of a plain column, filters, sorts without a limit,
//! repartitioning and coalescing, the group columns of an aggregation,
//! joins on the side each output row takes one row from (both sides of an
//! inner join, the preserved side of an outer, semi or anti join), and
//! every branch of a `UNION ALL`. Anything else (a window function, a
//! computed `window_end`, a LIMIT) leaves the rule a plain re-scan.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::JoinSide;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::{build_join_schema, ColumnIndex};
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

use crate::rules::slot::SlotExec;

/// Operators whose output column `i` is their input's column `i`, row by
/// row or reordered, never cut by a limit (checked separately).
const PASS_THROUGH: &[&str] = &[
    "CoalesceBatchesExec",
    "CooperativeExec",
    "SortExec",
    "RepartitionExec",
    "CoalescePartitionsExec",
    "SortPreservingMergeExec",
];

/// A rule plan rewritten for delta re-scans.
pub(super) struct DeltaPlan {
    pub plan: Arc<dyn ExecutionPlan>,
    /// The rule's last emitted watermark: the trigger scans read only
    /// events newer than this (`i64::MIN`: every event).
    pub floor: Arc<AtomicI64>,
}

/// Rewrite `plan` so the scans its `window_end` column (at `window_end`)
/// comes from read only events newer than a floor; `Err` says why the
/// plan does not allow it.
pub(super) fn delta_plan(
    plan: &Arc<dyn ExecutionPlan>,
    window_end: usize,
) -> Result<DeltaPlan, String> {
    let mut leaves = Vec::new();
    trace(plan, window_end, &mut leaves)?;
    let floor = Arc::new(AtomicI64::new(i64::MIN));
    let rewritten = plan
        .clone()
        .transform_up(
            |node| match leaves.iter().find(|(leaf, _)| Arc::ptr_eq(leaf, &node)) {
                Some((_, column)) => {
                    let slot = node
                        .downcast_ref::<SlotExec>()
                        .expect("traced leaves are slot scans");
                    Ok(Transformed::yes(
                        Arc::new(slot.newer_than(*column, floor.clone())) as Arc<dyn ExecutionPlan>,
                    ))
                }
                None => Ok(Transformed::no(node)),
            },
        )
        .map_err(|e| format!("rewriting the plan: {e}"))?
        .data;
    Ok(DeltaPlan {
        plan: rewritten,
        floor,
    })
}

/// Follow output column `column` of `node` down to the slot scans it is
/// the `event_time` of, collecting (scan, column in the scan's output).
fn trace(
    node: &Arc<dyn ExecutionPlan>,
    column: usize,
    leaves: &mut Vec<(Arc<dyn ExecutionPlan>, usize)>,
) -> Result<(), String> {
    let name = node.name();
    if node.fetch().is_some() {
        return Err(format!(
            "{name} with a LIMIT: which rows it keeps depends on all of them"
        ));
    }
    if node.downcast_ref::<SlotExec>().is_some() {
        let field = node.schema().field(column).name().clone();
        if field != "event_time" {
            return Err(format!(
                "window_end comes from the scanned column {field}, not event_time"
            ));
        }
        leaves.push((node.clone(), column));
        return Ok(());
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let Some(c) = p.expr()[column].expr.downcast_ref::<Column>() else {
            return Err(format!(
                "window_end is computed ({}), not a column passed through",
                p.expr()[column].expr
            ));
        };
        return trace(p.input(), c.index(), leaves);
    }
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        let column = f.projection().as_ref().map_or(column, |p| p[column]);
        return trace(f.input(), column, leaves);
    }
    if PASS_THROUGH.contains(&name) {
        return trace(node.children()[0], column, leaves);
    }
    if let Some(a) = node.downcast_ref::<AggregateExec>() {
        let group = a.group_expr();
        if !group.is_single() {
            return Err("GROUPING SETS above the scan".into());
        }
        let Some((expr, _)) = group.expr().get(column) else {
            return Err("window_end is an aggregate, not a GROUP BY column".into());
        };
        let Some(c) = expr.downcast_ref::<Column>() else {
            return Err(format!(
                "window_end groups by a computed expression ({expr})"
            ));
        };
        return trace(a.input(), c.index(), leaves);
    }
    if let Some(u) = node.downcast_ref::<UnionExec>() {
        for child in u.children() {
            trace(child, column, leaves)?;
        }
        return Ok(());
    }
    let join = if let Some(j) = node.downcast_ref::<HashJoinExec>() {
        Some((
            j.left(),
            j.right(),
            *j.join_type(),
            j.projection.as_deref().map(<[usize]>::to_vec),
        ))
    } else if let Some(j) = node.downcast_ref::<NestedLoopJoinExec>() {
        Some((
            j.left(),
            j.right(),
            *j.join_type(),
            j.projection().as_deref().map(<[usize]>::to_vec),
        ))
    } else if let Some(j) = node.downcast_ref::<CrossJoinExec>() {
        Some((j.left(), j.right(), JoinType::Inner, None))
    } else {
        None
    };
    if let Some((left, right, join_type, projection)) = join {
        let column = projection.map_or(column, |p| p[column]);
        let (_, indices) = build_join_schema(&left.schema(), &right.schema(), &join_type);
        let ColumnIndex { index, side } = indices[column].clone();
        // Each output row must hold exactly one row of the traced side:
        // filtering that side then removes whole output rows and changes
        // no other (an outer join's null-extended side would instead gain
        // unmatched rows).
        let preserved = match side {
            JoinSide::Left => matches!(
                join_type,
                JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti
            ),
            JoinSide::Right => matches!(
                join_type,
                JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
            ),
            JoinSide::None => false,
        };
        if !preserved {
            return Err(format!(
                "window_end comes from the non-preserved side of a {join_type} join"
            ));
        }
        return trace(
            if side == JoinSide::Left { left } else { right },
            index,
            leaves,
        );
    }
    Err(format!("{name} between window_end and the scan"))
}
