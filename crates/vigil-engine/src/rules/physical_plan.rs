//! Physical planning of per-event rules: a plan of only filters and
//! projections gets the two physical optimizer rules of DataFusion that can
//! change it, any other plan all of them.
//!
//! Start-up plans every rule, and DataFusion's 21 physical optimizer rules
//! were 12% of it (docs/benchmarks.md, stop 41). Nearly every per-event
//! rule plans to projections and filters over its source table's scan, in
//! one partition. Of those rules, only `ProjectionPushdown` (which embeds
//! the projection into the filter, so that the filter copies only the
//! columns read after it) and `EnsureCooperative` (which marks where a
//! long scan yields to the runtime) change such a plan. The others act on
//! aggregates, joins, sorts, limits, windows, repartitioning, ordering or
//! distribution requirements and filters pushed into scans, or check them;
//! a filter-and-projection plan has none of those (the source tables take
//! no filters). A plan with any other operator, or a scan of more than one
//! partition, gets every rule.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::DefaultPhysicalPlanner;

/// The physical optimizer rules that can change a filter-and-projection
/// plan (see the module doc), by name.
const FILTER_AND_PROJECTION_RULES: [&str; 2] = ["ProjectionPushdown", "EnsureCooperative"];

/// Plans rules physically in `state`'s session.
///
/// The sessions are boxed, and planning runs in a boxed future: both would
/// otherwise sit in the compile future, on the stack of whoever awaits it,
/// and a session is several kilobytes (a test awaiting many compiles in one
/// future overflowed a 2 MiB thread stack in a debug build).
pub(crate) struct PhysicalPlanner {
    /// The session without physical optimizer rules: the initial plan.
    initial: Box<SessionState>,
    /// With only [`FILTER_AND_PROJECTION_RULES`], in their order.
    filter_and_projection: Box<SessionState>,
    /// With every rule of the session.
    full: Box<SessionState>,
}

impl PhysicalPlanner {
    pub(crate) fn new(state: &SessionState) -> Self {
        let with_rules = |keep: &dyn Fn(&str) -> bool| {
            let rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> = state
                .physical_optimizers()
                .iter()
                .filter(|r| keep(r.name()))
                .cloned()
                .collect();
            Box::new(
                SessionStateBuilder::new_from_existing(state.clone())
                    .with_physical_optimizer_rules(rules)
                    .build(),
            )
        };
        PhysicalPlanner {
            initial: with_rules(&|_| false),
            filter_and_projection: with_rules(&|name| FILTER_AND_PROJECTION_RULES.contains(&name)),
            full: Box::new(state.clone()),
        }
    }

    /// The optimized physical plan of `logical` (optimized logically here).
    pub(crate) async fn plan(&self, logical: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let initial = self.initial_plan(logical).await?;
        let session: &SessionState = if is_filter_and_projection(&initial) {
            &self.filter_and_projection
        } else {
            &self.full
        };
        DefaultPhysicalPlanner::default().optimize_physical_plan(initial, session, |_, _| {})
    }

    /// The physical plan of `logical` before any physical optimizer rule.
    pub(crate) async fn initial_plan(
        &self,
        logical: &LogicalPlan,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Box::pin(self.initial.create_physical_plan(logical)).await
    }
}

/// Whether `plan` is only projections and filters over a one-partition leaf.
pub(crate) fn is_filter_and_projection(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    if children.is_empty() {
        return plan.properties().output_partitioning().partition_count() == 1;
    }
    (plan.downcast_ref::<ProjectionExec>().is_some() || plan.downcast_ref::<FilterExec>().is_some())
        && children.into_iter().all(is_filter_and_projection)
}
