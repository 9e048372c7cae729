//! Rules that cannot match while one of their sources has no retained
//! events: a join of Kubernetes audit events with Falco alerts finds no
//! pair where no Falco alert is retained, so it is not run there (a site
//! that does not send Falco alerts never runs it). Its run would read and
//! hash the audit side, then probe it with nothing.
//!
//! Skipping the run changes no alert: its output would be empty. A scan
//! that did not run reads the batches retained and merged meanwhile at its
//! next run, as after any emission that did not run it (`Lineage`).

use std::sync::Arc;

use datafusion::logical_expr::JoinType;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::ExecutionPlan;

/// Operators whose output has no row when their one input has none: they
/// filter, map, reorder, move or regroup rows, and produce none of their
/// own (unlike an aggregation without GROUP BY, which yields one row).
const EMPTY_IN_EMPTY_OUT: &[&str] = &[
    "RuleProjectionExec",
    "ProjectionExec",
    "FilterExec",
    "CooperativeExec",
    "DeadlineExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "RepartitionExec",
    "SortExec",
    "SortPreservingMergeExec",
    "GlobalLimitExec",
    "LocalLimitExec",
    "BoundedWindowAggExec",
    "WindowAggExec",
    "UnnestExec",
];

/// Whether `plan` yields no row when any one of its scans reads none.
///
/// Holds when every operator above a scan yields nothing for an empty
/// input: the operators of [`EMPTY_IN_EMPTY_OUT`], aggregations that
/// group (by plain columns, no grouping sets), and joins that pair rows of
/// both sides (inner, cross, semi). A leaf holds trivially. Anything else
/// (a union, an outer or anti join, an aggregation without groups, an
/// operator not listed) answers `false`, and the rule always runs.
pub(super) fn empty_if_any_scan_is_empty(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    if children.is_empty() {
        return true;
    }
    let passes = EMPTY_IN_EMPTY_OUT.contains(&plan.name()) || groups_rows(plan) || pairs_rows(plan);
    passes && children.into_iter().all(empty_if_any_scan_is_empty)
}

/// An aggregation by group columns: no input row, no group.
fn groups_rows(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>()
        .is_some_and(|a| !a.group_expr().is_empty() && !a.group_expr().has_grouping_set())
}

/// A join whose every output row holds (or is) a row of each side.
fn pairs_rows(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let join_type = if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
        *j.join_type()
    } else if let Some(j) = plan.downcast_ref::<NestedLoopJoinExec>() {
        *j.join_type()
    } else if let Some(j) = plan.downcast_ref::<SortMergeJoinExec>() {
        j.join_type()
    } else if let Some(j) = plan.downcast_ref::<SymmetricHashJoinExec>() {
        *j.join_type()
    } else {
        return plan.downcast_ref::<CrossJoinExec>().is_some();
    };
    matches!(
        join_type,
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::correlate::tests::{header, shipped_correlator};
    use crate::correlate::{compile, CorrelationSettings};
    use crate::rules::parse_rule;

    /// Whether the correlation rule `sql` compiles to a plan that yields
    /// nothing while one of its sources has no events.
    async fn skipped_without_a_source(extra: &str, sql: &str) -> bool {
        let text = format!(
            "{}{sql}",
            header("t", "k8s_audit", &format!("-- window: 1m\n{extra}"))
        );
        let rule = parse_rule(&PathBuf::from("t.sql"), &text).unwrap();
        let settings = CorrelationSettings::default();
        let correlator =
            compile::compile(vec![rule], settings, &Arc::default(), &Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
        correlator.rules[0].empty_without_a_source
    }

    const JOIN: &str = "SELECT a.user_info.username AS username, t.process.binary AS binary, \
        t.event_time AS window_end \
      FROM k8s_audit a {join} tetragon t \
        ON a.object_ref.namespace = t.process.pod.namespace AND a.object_ref.name = t.process.pod.name \
       AND t.event_time >= a.event_time AND t.event_time <= a.event_time + INTERVAL '1 minute'";

    #[tokio::test]
    async fn an_inner_join_yields_nothing_without_either_side() {
        assert!(skipped_without_a_source("", &JOIN.replace("{join}", "JOIN")).await);
    }

    /// A left join's audit rows stand without a Tetragon event.
    #[tokio::test]
    async fn an_outer_join_always_runs() {
        assert!(!skipped_without_a_source("", &JOIN.replace("{join}", "LEFT JOIN")).await);
    }

    /// Rows of either source stand alone in a union.
    #[tokio::test]
    async fn a_union_always_runs() {
        let sql = "SELECT username, max(window_end) AS window_end FROM ( \
            SELECT __row, user_info.username AS username, event_time AS window_end FROM k8s_audit \
            UNION ALL SELECT __row, process.pod.name AS username, event_time AS window_end FROM tetragon) u GROUP BY username";
        let key = "-- key: k8s_audit: user_info.username; tetragon: process.pod.name\n";
        assert!(!skipped_without_a_source(key, sql).await);
    }

    /// Every shipped correlation rule joins, filters and groups the events
    /// of its sources: none can match while one has no events.
    #[tokio::test]
    async fn the_shipped_correlation_rules_yield_nothing_without_each_source() {
        let correlator = shipped_correlator().await;
        assert!(correlator.rules.len() >= 10);
        for rule in &correlator.rules {
            assert!(rule.empty_without_a_source, "{}", rule.rule.meta.id);
        }
    }
}
