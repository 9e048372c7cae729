//! Per-rule time budget: a rule's evaluation over one batch is cancelled
//! once it has run longer than `rules.max_eval_ms`.
//!
//! DataFusion executes a plan by polling streams; a CPU-bound operator (a
//! cross join of a batch with itself, say) keeps producing record batches
//! without ever returning `Pending`, so a `tokio::time::timeout` around the
//! execution would never get to fire. Instead every node of a rule's
//! physical plan is wrapped in a [`DeadlineExec`] whose stream checks a
//! shared [`EvalDeadline`] each time it is polled: once the deadline has
//! passed, the next poll anywhere in the plan returns
//! [`BudgetExceeded`] as an error, which ends the execution (the caller
//! drops the stream and reports a `rule_error`).
//!
//! Granularity: the deadline is checked between record batches of every
//! operator, so an overrun is detected within the time one operator takes
//! for one batch (at most `batch_size` = 8192 rows). Work inside a single
//! batch step is not interrupted.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// The deadline of the evaluation currently running, shared by every
/// [`DeadlineExec`] of the plans of one engine. Rules are evaluated one
/// after another, so one deadline at a time suffices.
#[derive(Debug, Default)]
pub struct EvalDeadline {
    deadline: Mutex<Option<(Instant, Duration)>>,
}

impl EvalDeadline {
    /// Start the clock of one evaluation: it may run for `budget`.
    pub fn arm(&self, budget: Duration) {
        *self.deadline.lock().expect("deadline lock") = Some((Instant::now() + budget, budget));
    }

    /// No evaluation running: nothing is cancelled.
    pub fn disarm(&self) {
        *self.deadline.lock().expect("deadline lock") = None;
    }

    pub(crate) fn check(&self) -> Result<()> {
        match *self.deadline.lock().expect("deadline lock") {
            Some((at, budget)) if Instant::now() >= at => {
                Err(DataFusionError::External(Box::new(BudgetExceeded {
                    budget,
                })))
            }
            _ => Ok(()),
        }
    }
}

/// The error a plan fails with when its evaluation ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExceeded {
    pub budget: Duration,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule evaluation cancelled: it exceeded its time budget of {} ms (rules.max_eval_ms)",
            self.budget.as_millis()
        )
    }
}

impl std::error::Error for BudgetExceeded {}

impl BudgetExceeded {
    /// The budget overrun behind a DataFusion error, if that is what it is.
    pub fn find(error: &DataFusionError) -> Option<BudgetExceeded> {
        let mut current: &dyn std::error::Error = error;
        loop {
            if let Some(e) = current.downcast_ref::<BudgetExceeded>() {
                return Some(*e);
            }
            if let Some(DataFusionError::External(inner)) =
                current.downcast_ref::<DataFusionError>()
            {
                if let Some(e) = inner.downcast_ref::<BudgetExceeded>() {
                    return Some(*e);
                }
            }
            current = current.source()?;
        }
    }
}

/// Wrap every node of `plan` in a [`DeadlineExec`] reading `deadline`.
pub fn with_deadline(
    plan: Arc<dyn ExecutionPlan>,
    deadline: &Arc<EvalDeadline>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let wrapped: Arc<dyn ExecutionPlan> = Arc::new(DeadlineExec::new(node, deadline.clone()));
        Ok(Transformed::yes(wrapped))
    })
    .map(|t| t.data)
}

/// Pass-through operator: its output is its input's, but polling it fails
/// once the shared deadline has passed.
#[derive(Debug)]
pub struct DeadlineExec {
    input: Arc<dyn ExecutionPlan>,
    deadline: Arc<EvalDeadline>,
}

impl DeadlineExec {
    fn new(input: Arc<dyn ExecutionPlan>, deadline: Arc<EvalDeadline>) -> Self {
        DeadlineExec { input, deadline }
    }
}

impl DisplayAs for DeadlineExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeadlineExec")
    }
}

impl ExecutionPlan for DeadlineExec {
    fn name(&self) -> &str {
        "DeadlineExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "DeadlineExec has one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(DeadlineExec::new(
            children.remove(0),
            self.deadline.clone(),
        )))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.deadline.check()?;
        let inner = self.input.execute(partition, context)?;
        Ok(Box::pin(DeadlineStream {
            inner,
            deadline: self.deadline.clone(),
            failed: false,
        }))
    }
}

struct DeadlineStream {
    inner: SendableRecordBatchStream,
    deadline: Arc<EvalDeadline>,
    failed: bool,
}

impl Stream for DeadlineStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if let Err(e) = self.deadline.check() {
            self.failed = true;
            return Poll::Ready(Some(Err(e)));
        }
        self.inner.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for DeadlineStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
