//! Errors of correlation at run time: ingesting a batch, folding state,
//! emitting windows. (A rule that cannot be planned is a `RuleError` at
//! compile time.) Each names the step that failed.
//!
//! Also, at compile time, why a rule's plan does not allow one of the
//! ways of running it with less work ([`SplitError`], [`DeltaError`]): not
//! failures, the rule then re-scans its retained events, but the reason is
//! reported (`vigil rules validate`) or logged.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::JoinType;
use datafusion::physical_plan::aggregates::AggregateMode;

#[derive(Debug, thiserror::Error)]
pub enum CorrelationError {
    #[error("{context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: DataFusionError,
    },
    #[error("{context}: {source}")]
    Arrow {
        context: &'static str,
        #[source]
        source: ArrowError,
    },
    /// A plan produced what the engine does not expect of it.
    #[error("{0}")]
    Unexpected(&'static str),
    /// A rule that compiled before did not compile again (a lane of
    /// `placement = "repartition"`).
    #[error("compiling the rule for a repartition partition: {0}")]
    Compile(String),
}

/// Name the step a DataFusion or Arrow error comes from.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, CorrelationError>;
}

impl<T> Context<T> for Result<T, DataFusionError> {
    fn context(self, context: &'static str) -> Result<T, CorrelationError> {
        self.map_err(|source| CorrelationError::Query { context, source })
    }
}

impl<T> Context<T> for Result<T, ArrowError> {
    fn context(self, context: &'static str) -> Result<T, CorrelationError> {
        self.map_err(|source| CorrelationError::Arrow { context, source })
    }
}

/// Why a rule's aggregation cannot be split into a partial aggregation of
/// each batch and a final aggregation of each closing window
/// (`incremental::split`): the rule re-scans instead, and this is the
/// reason reported for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SplitError {
    /// A LIMIT over the closing windows' rows is not the LIMIT over all rows.
    #[error("{node} with a LIMIT above the aggregation")]
    LimitAbove { node: String },
    #[error("{node} above the aggregation (or no aggregation)")]
    Above { node: String },
    #[error("window_end is computed after the aggregation, not a GROUP BY column")]
    WindowEndComputedAfter,
    #[error("unexpected aggregation mode {0:?}")]
    Mode(AggregateMode),
    #[error("GROUPING SETS, CUBE and ROLLUP are evaluated by re-scanning")]
    GroupingSets,
    #[error("window_end is not a GROUP BY column")]
    WindowEndNotGrouped,
    #[error("{node} below the aggregation (only per-row operators can run on new events alone)")]
    Below { node: String },
    #[error("the aggregation reads more than one table scan")]
    SeveralScans,
    /// DataFusion refused to build one of the split plans.
    #[error("splitting the aggregation: {source}")]
    Plan {
        #[source]
        source: DataFusionError,
    },
    #[error("the aggregation's merged state differs from its partial state")]
    MergedState,
    #[error("the final aggregation's output differs from the rule's")]
    FinalOutput,
    #[error("window_end's group column is not a timestamp")]
    WindowEndNotTimestamp,
}

impl From<DataFusionError> for SplitError {
    fn from(source: DataFusionError) -> Self {
        SplitError::Plan { source }
    }
}

/// Why a re-scan rule cannot read only the events of the range being
/// emitted (`delta::delta_plan`): `window_end` must be, through the plan,
/// a scan's `event_time` plus or minus a constant. The rule then reads
/// every retained event; the reason is logged at debug level.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeltaError {
    #[error("{node} with a LIMIT: which rows it keeps depends on all of them")]
    Limit { node: String },
    #[error("window_end comes from the scanned column {column}, not event_time")]
    NotEventTime { column: String },
    #[error(
        "window_end is computed ({expr}), not a column passed through or shifted by a constant"
    )]
    Computed { expr: String },
    #[error("window_end's shift overflows")]
    ShiftOverflow,
    #[error("GROUPING SETS above the scan")]
    GroupingSets,
    #[error("window_end is an aggregate, not a GROUP BY column")]
    Aggregate,
    #[error("window_end groups by a computed expression ({expr})")]
    GroupedByComputed { expr: String },
    #[error("window_end comes from the non-preserved side of a {join_type} join")]
    NonPreservedSide { join_type: JoinType },
    #[error("window_end comes through an unnest that does not keep its input columns in place, or is unnested itself")]
    Unnest,
    #[error("window_end is a window function's result")]
    WindowResult,
    #[error("the window function {expr} between window_end and the scan: {why}")]
    Window { expr: String, why: String },
    #[error("{node} between window_end and the scan")]
    Between { node: String },
    /// DataFusion refused the plan with the scans restricted.
    #[error("rewriting the plan: {source}")]
    Rewrite {
        #[source]
        source: DataFusionError,
    },
}
