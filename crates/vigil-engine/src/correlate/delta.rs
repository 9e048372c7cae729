//! Delta re-scans: a re-scan rule whose `window_end` is the `event_time`
//! of one scan's rows (plus a constant) reads, from that scan, only the
//! events whose rows are due in the range being emitted.
//!
//! A re-scan rule runs over every retained event at every emission and
//! keeps the output rows with `w0 < window_end <= w1`. When `window_end`
//! is, through the plan, exactly the `event_time` column of a table scan
//! `S` shifted by a constant `d` (a sequence rule: `b.event_time AS
//! window_end`, B the trigger; or `e.event_time + INTERVAL '2 minutes'`),
//! each output row comes from one row of `S` (or, below an aggregation
//! grouping by that column, from a group whose rows all share it) whose
//! time is `window_end - d`. Filtering `S` to `w0 - d < event_time <= w1 -
//! d` therefore keeps exactly the output rows of the range and changes
//! none of them. The other scans (the A side of a sequence, the context)
//! still read every retained event, so each trigger is joined once, when
//! the watermark passes it, instead of at every run while it is retained:
//! the work per emission is proportional to the triggers it emits.
//!
//! The trace from `window_end` down to a scan follows only operators for
//! which that argument holds, each mapping an output column to one input
//! column: projections of a plain column or of a column plus or minus a
//! constant duration, filters, sorts without a limit, repartitioning and
//! coalescing, the group columns of an aggregation, joins on the side each
//! output row takes one row from (both sides of an inner join, the
//! preserved side of an outer, semi or anti join), and every branch of a
//! `UNION ALL`. Anything else (a window function, a `window_end` computed
//! from an aggregate, a LIMIT) leaves the rule a plain re-scan.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::JoinSide;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::JoinType;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::{build_join_schema, ColumnIndex};
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

use super::error::DeltaError;
use crate::rules::slot::{SlotExec, TimeBounds};

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
    pub bounds: DeltaBounds,
}

/// The time bounds of a delta plan's trigger scans.
pub(super) struct DeltaBounds {
    /// Each trigger scan's time bounds, with the constant its `event_time`
    /// is shifted by to give `window_end`.
    scans: Vec<(Arc<TimeBounds>, i64)>,
}

impl DeltaBounds {
    /// Before a run emitting `(after, through]`: each trigger scan reads
    /// the events whose `window_end` falls in that range, and no others
    /// (those after `through` are read by the run that emits them).
    pub fn set_range(&self, after: i64, through: i64) {
        for (bounds, offset) in &self.scans {
            let shift = |t: i64| {
                if t == i64::MIN || t == i64::MAX {
                    t
                } else {
                    t.saturating_sub(*offset)
                }
            };
            bounds.set(shift(after), shift(through));
        }
    }
}

/// Rewrite `plan` so the scans its `window_end` column (at `window_end`)
/// comes from read only the events of an emission range; `Err` says why
/// the plan does not allow it.
pub(super) fn delta_plan(
    plan: &Arc<dyn ExecutionPlan>,
    window_end: usize,
) -> Result<DeltaPlan, DeltaError> {
    let mut leaves = Vec::new();
    trace(plan, window_end, 0, &mut leaves)?;
    let scans: Vec<(Arc<TimeBounds>, i64)> = leaves
        .iter()
        .map(|(_, _, offset)| (Arc::new(TimeBounds::default()), *offset))
        .collect();
    let rewritten = plan
        .clone()
        .transform_up(|node| {
            match leaves
                .iter()
                .position(|(leaf, _, _)| Arc::ptr_eq(leaf, &node))
            {
                Some(i) => {
                    let slot = node
                        .downcast_ref::<SlotExec>()
                        .expect("traced leaves are slot scans");
                    let within = slot.within(leaves[i].1, scans[i].0.clone());
                    Ok(Transformed::yes(Arc::new(within) as Arc<dyn ExecutionPlan>))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .map_err(|source| DeltaError::Rewrite { source })?
        .data;
    Ok(DeltaPlan {
        plan: rewritten,
        bounds: DeltaBounds { scans },
    })
}

/// `expr` as `column ± constant duration`: (column, nanoseconds added).
fn shifted_column(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, i64)> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some((c.index(), 0));
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let sign = match binary.op() {
        Operator::Plus => 1,
        Operator::Minus => -1,
        _ => return None,
    };
    let column = binary.left().downcast_ref::<Column>()?;
    let nanos = match binary.right().downcast_ref::<Literal>()?.value() {
        // Event times are UTC: a day is 86,400 s; months vary, so no.
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i.nanoseconds)?,
        ScalarValue::IntervalDayTime(Some(i)) => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i64::from(i.milliseconds) * 1_000_000)?,
        ScalarValue::DurationNanosecond(Some(n)) => *n,
        _ => return None,
    };
    Some((column.index(), sign * nanos))
}

/// Follow output column `column` of `node`, which is `offset` nanoseconds
/// before `window_end`, down to the slot scans it is the `event_time` of,
/// collecting (scan, column in the scan's output, offset).
fn trace(
    node: &Arc<dyn ExecutionPlan>,
    column: usize,
    offset: i64,
    leaves: &mut Vec<(Arc<dyn ExecutionPlan>, usize, i64)>,
) -> Result<(), DeltaError> {
    let name = node.name();
    if node.fetch().is_some() {
        return Err(DeltaError::Limit {
            node: name.to_string(),
        });
    }
    if node.downcast_ref::<SlotExec>().is_some() {
        let field = node.schema().field(column).name().clone();
        if field != "event_time" {
            return Err(DeltaError::NotEventTime { column: field });
        }
        leaves.push((node.clone(), column, offset));
        return Ok(());
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let Some((c, shift)) = shifted_column(&p.expr()[column].expr) else {
            return Err(DeltaError::Computed {
                expr: p.expr()[column].expr.to_string(),
            });
        };
        let offset = offset.checked_add(shift).ok_or(DeltaError::ShiftOverflow)?;
        return trace(p.input(), c, offset, leaves);
    }
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        let column = f.projection().as_ref().map_or(column, |p| p[column]);
        return trace(f.input(), column, offset, leaves);
    }
    if PASS_THROUGH.contains(&name) {
        return trace(node.children()[0], column, offset, leaves);
    }
    if let Some(a) = node.downcast_ref::<AggregateExec>() {
        let group = a.group_expr();
        if !group.is_single() {
            return Err(DeltaError::GroupingSets);
        }
        let Some((expr, _)) = group.expr().get(column) else {
            return Err(DeltaError::Aggregate);
        };
        let Some(c) = expr.downcast_ref::<Column>() else {
            return Err(DeltaError::GroupedByComputed {
                expr: expr.to_string(),
            });
        };
        return trace(a.input(), c.index(), offset, leaves);
    }
    if let Some(u) = node.downcast_ref::<UnionExec>() {
        for child in u.children() {
            trace(child, column, offset, leaves)?;
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
    } else {
        node.downcast_ref::<CrossJoinExec>()
            .map(|j| (j.left(), j.right(), JoinType::Inner, None))
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
            return Err(DeltaError::NonPreservedSide { join_type });
        }
        return trace(
            if side == JoinSide::Left { left } else { right },
            index,
            offset,
            leaves,
        );
    }
    Err(DeltaError::Between {
        node: name.to_string(),
    })
}
