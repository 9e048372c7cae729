//! A re-scan rule's last projection, evaluated only for the rows that
//! become alerts.
//!
//! Emission reads three things of every due row: its `window_end`, the
//! events it names (`__row...`) and its suppression key. When the plan's
//! top projection passes those columns through unchanged, the run stops
//! below it, and the projection is applied to one row when its alert is
//! built. A suppressed detection that goes on folds nearly all its rows
//! ([`super::suppress`]): those never compute what only an alert shows,
//! such as `array_distinct` of the lists `k8s.rbac_change_then_workload`
//! aggregates for each workload change.
//!
//! Invariant: the run's output, projected by [`AlertFields::project`],
//! is what the whole plan would have output; `window_end`, the event
//! columns and the suppression key columns of the run's output are those
//! of the projected rows, column for column.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::Projector;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_plan::ExecutionPlan;

use crate::rules::projection::RuleProjectionExec;

/// The top projection of a rule's plan, applied to the rows that become
/// alerts.
pub(super) struct AlertFields {
    projector: Projector,
}

/// A plan split by [`split`]: the part a run executes, the projection
/// left out of it, and where the columns emission reads are in the run's
/// output.
pub(super) struct Split {
    pub run: Arc<dyn ExecutionPlan>,
    pub fields: AlertFields,
    /// For each column of the plan's output, the column of the run's
    /// output it passes through, if it is a plain column reference.
    pub passed: Vec<Option<usize>>,
}

impl AlertFields {
    /// The rows of `batch`, a run's output, as the whole plan outputs them.
    pub fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        self.projector.project_batch(batch)
    }
}

/// The plan without its top projection, when that projection is a
/// [`RuleProjectionExec`] of deterministic expressions that passes every
/// column of `needed` (indices of the plan's output) through as a plain
/// column reference; `None` otherwise (the plan runs whole).
pub(super) fn split(plan: &Arc<dyn ExecutionPlan>, needed: &[usize]) -> Option<Split> {
    let top = plan.downcast_ref::<RuleProjectionExec>()?;
    let projector = top.projector().clone();
    let exprs = projector.projection();
    if exprs.iter().any(|p| is_volatile(&p.expr)) {
        return None;
    }
    let passed: Vec<Option<usize>> = exprs
        .iter()
        .map(|p| p.expr.downcast_ref::<Column>().map(Column::index))
        .collect();
    if needed
        .iter()
        .any(|&c| passed.get(c).copied().flatten().is_none())
    {
        return None;
    }
    Some(Split {
        run: Arc::clone(top.input()),
        fields: AlertFields { projector },
        passed,
    })
}

#[cfg(test)]
mod tests {
    use crate::correlate::tests::shipped_correlator;

    /// The two suppressed join rules run without their top projection (its
    /// `array_distinct`s); a rule whose `window_end` the projection
    /// computes (`e.event_time + INTERVAL '2 minutes'`) and the incremental
    /// rules run theirs.
    #[tokio::test]
    async fn the_join_rules_compute_their_alert_fields_only_for_alerts() {
        let correlator = shipped_correlator().await;
        let split = |id: &str| {
            let rule = correlator.rules.iter().find(|r| r.rule.meta.id == id);
            rule.unwrap_or_else(|| panic!("{id}")).fields.is_some()
        };
        assert!(split("k8s.rbac_change_then_workload"));
        assert!(split("k8s.exec_then_secret_read"));
        assert!(!split("k8s.exec_with_falco_alert"));
        assert!(!split("k8s.secret_read_burst"));
    }
}
