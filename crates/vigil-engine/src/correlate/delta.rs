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
//! preserved side of an outer, semi or anti join), every branch of a
//! `UNION ALL`, and the columns an `unnest` repeats for each element. Anything else (a `window_end` computed from an aggregate or
//! a window function, a LIMIT) leaves the rule a plain re-scan.
//!
//! Window functions pass the trace when each row's value depends only on
//! rows within a fixed time of it: aggregate functions over a `RANGE`
//! frame of constant bounds, ordered ascending by the traced column (a
//! sliding count: `count(*) OVER (PARTITION BY .. ORDER BY event_time
//! RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW)`). The
//! scan below then also reads the events the frames of the due rows reach
//! (60 seconds before the range, here). Rows of those extra events get
//! values from partial frames, but their `window_end` is outside the range,
//! so the emission drops them, and no due row's value changes.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::JoinSide;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::JoinType;
use datafusion::logical_expr::Operator;
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, WindowExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::{build_join_schema, ColumnIndex};
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
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
    /// Each trigger scan's time bounds, with how its `event_time` relates
    /// to `window_end`.
    scans: Vec<(Arc<TimeBounds>, Reach)>,
}

/// How a trigger scan's `event_time` relates to the output's `window_end`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reach {
    /// `window_end` is the scan's `event_time` plus this.
    offset: i64,
    /// The window frames above the scan read events up to this long
    /// before a due row's time...
    back: i64,
    /// ... and up to this long after it.
    ahead: i64,
}

impl DeltaBounds {
    /// Before a run emitting `(after, through]`: each trigger scan reads
    /// the events whose `window_end` falls in that range, and those the
    /// window frames of their rows reach, and no others (those after
    /// `through` are read by the run that emits them).
    pub fn set_range(&self, after: i64, through: i64) {
        for (bounds, reach) in &self.scans {
            // An open end stays open.
            let shift = |t: i64, by: i64| {
                if t == i64::MIN || t == i64::MAX {
                    t
                } else {
                    t.saturating_sub(reach.offset).saturating_add(by)
                }
            };
            bounds.set(shift(after, -reach.back), shift(through, reach.ahead));
        }
    }
}

/// A slot scan the trace reached: the scan, its `event_time` column, and
/// how that relates to `window_end`.
struct Leaf {
    scan: Arc<dyn ExecutionPlan>,
    column: usize,
    reach: Reach,
}

/// Rewrite `plan` so the scans its `window_end` column (at `window_end`)
/// comes from read only the events of an emission range; `Err` says why
/// the plan does not allow it.
pub(super) fn delta_plan(
    plan: &Arc<dyn ExecutionPlan>,
    window_end: usize,
) -> Result<DeltaPlan, DeltaError> {
    let mut leaves = Vec::new();
    trace(plan, window_end, Reach::default(), &mut leaves)?;
    let scans: Vec<(Arc<TimeBounds>, Reach)> = leaves
        .iter()
        .map(|leaf| (Arc::new(TimeBounds::default()), leaf.reach))
        .collect();
    let rewritten = plan
        .clone()
        .transform_up(|node| {
            match leaves
                .iter()
                .position(|leaf| Arc::ptr_eq(&leaf.scan, &node))
            {
                Some(i) => {
                    let slot = node
                        .downcast_ref::<SlotExec>()
                        .expect("traced leaves are slot scans");
                    let within = slot.within(leaves[i].column, scans[i].0.clone());
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
    let nanos = duration_nanos(binary.right().downcast_ref::<Literal>()?.value())?;
    Some((column.index(), sign * nanos))
}

/// A constant duration in nanoseconds (`None`: not one, or months).
fn duration_nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        // Event times are UTC: a day is 86,400 s; months vary, so no.
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i.nanoseconds),
        ScalarValue::IntervalDayTime(Some(i)) => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i64::from(i.milliseconds) * 1_000_000),
        ScalarValue::DurationNanosecond(Some(n)) => Some(*n),
        _ => None,
    }
}

/// The input column of an unnest's output column `column`, when that is
/// an input column repeated for each element of the unnested lists: each
/// output row then comes from one input row, so filtering the input removes
/// exactly that row's outputs. Only when each unnested column gives one
/// output column (no struct, one depth), so output and input columns line
/// up.
fn unnest_input_column(unnest: &UnnestExec, column: usize) -> Result<usize, DeltaError> {
    let lists = unnest.list_column_indices();
    let in_place = unnest.struct_column_indices().is_empty()
        && unnest.schema().fields().len() == unnest.input().schema().fields().len()
        && lists.iter().all(|l| {
            l.depth == 1
                && lists
                    .iter()
                    .filter(|m| m.index_in_input_schema == l.index_in_input_schema)
                    .count()
                    == 1
        });
    if !in_place || lists.iter().any(|l| l.index_in_input_schema == column) {
        return Err(DeltaError::Unnest);
    }
    Ok(column)
}

/// A window execution's input and window expressions.
type WindowParts<'a> = (&'a Arc<dyn ExecutionPlan>, &'a [Arc<dyn WindowExpr>]);

/// The window execution `node` is, as its input and window expressions.
fn window_exec(node: &Arc<dyn ExecutionPlan>) -> Option<WindowParts<'_>> {
    if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
        return Some((w.input(), w.window_expr()));
    }
    node.downcast_ref::<WindowAggExec>()
        .map(|w| (w.input(), w.window_expr()))
}

/// How far before and after a row's time (input column `column`) the
/// frames of `exprs` read, when every one is an aggregate function over a
/// `RANGE` frame of constant bounds ordered ascending by that column alone.
fn frame_reach(exprs: &[Arc<dyn WindowExpr>], column: usize) -> Result<(i64, i64), DeltaError> {
    let mut reach = (0i64, 0i64);
    for expr in exprs {
        let why = |what: &str| DeltaError::Window {
            expr: expr.name().to_string(),
            why: what.to_string(),
        };
        // Ranking and offset functions (row_number, lag, ...) depend on
        // rows outside any frame.
        let any = expr.as_any();
        if !any.is::<PlainAggregateWindowExpr>() && !any.is::<SlidingAggregateWindowExpr>() {
            return Err(why("not an aggregate function over a frame"));
        }
        let ordered_by_column = match expr.order_by() {
            [key] => {
                !key.options.descending
                    && key.expr.downcast_ref::<Column>().map(Column::index) == Some(column)
            }
            _ => false,
        };
        if !ordered_by_column {
            return Err(why("not ordered ascending by window_end's column alone"));
        }
        let frame = expr.get_window_frame();
        if frame.units != WindowFrameUnits::Range {
            return Err(why("its frame is not a RANGE of time"));
        }
        let bound = |b: &WindowFrameBound| match b {
            WindowFrameBound::CurrentRow => Some(0),
            WindowFrameBound::Preceding(v) => duration_nanos(v).map(|n| -n),
            WindowFrameBound::Following(v) => duration_nanos(v),
        };
        let (Some(start), Some(end)) = (bound(&frame.start_bound), bound(&frame.end_bound)) else {
            return Err(why("its frame is unbounded or not a constant duration"));
        };
        reach = (reach.0.max(-start).max(0), reach.1.max(end).max(0));
    }
    Ok(reach)
}

/// Follow output column `column` of `node`, which is `reach.offset`
/// nanoseconds before `window_end`, down to the slot scans it is the
/// `event_time` of, collecting them.
fn trace(
    node: &Arc<dyn ExecutionPlan>,
    column: usize,
    reach: Reach,
    leaves: &mut Vec<Leaf>,
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
        leaves.push(Leaf {
            scan: node.clone(),
            column,
            reach,
        });
        return Ok(());
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let Some((c, shift)) = shifted_column(&p.expr()[column].expr) else {
            return Err(DeltaError::Computed {
                expr: p.expr()[column].expr.to_string(),
            });
        };
        let offset = reach
            .offset
            .checked_add(shift)
            .ok_or(DeltaError::ShiftOverflow)?;
        return trace(p.input(), c, Reach { offset, ..reach }, leaves);
    }
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        let column = f.projection().as_ref().map_or(column, |p| p[column]);
        return trace(f.input(), column, reach, leaves);
    }
    if PASS_THROUGH.contains(&name) {
        return trace(node.children()[0], column, reach, leaves);
    }
    if let Some(u) = node.downcast_ref::<UnnestExec>() {
        return trace(u.input(), unnest_input_column(u, column)?, reach, leaves);
    }
    if let Some((input, exprs)) = window_exec(node) {
        // The output is the input's columns, then one per window function.
        if column >= input.schema().fields().len() {
            return Err(DeltaError::WindowResult);
        }
        let (back, ahead) = frame_reach(exprs, column)?;
        let reach = Reach {
            back: reach
                .back
                .checked_add(back)
                .ok_or(DeltaError::ShiftOverflow)?,
            ahead: reach
                .ahead
                .checked_add(ahead)
                .ok_or(DeltaError::ShiftOverflow)?,
            ..reach
        };
        return trace(input, column, reach, leaves);
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
        return trace(a.input(), c.index(), reach, leaves);
    }
    if let Some(u) = node.downcast_ref::<UnionExec>() {
        for child in u.children() {
            trace(child, column, reach, leaves)?;
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
            reach,
            leaves,
        );
    }
    Err(DeltaError::Between {
        node: name.to_string(),
    })
}
