//! The rule engine: compiles rules once into DataFusion physical plans and
//! evaluates them against each decoded micro-batch.
//!
//! Compilation (at load time) parses the rule's SQL, checks it is a single
//! SELECT over the rule's declared source table, appends the internal
//! row-index column to its projection, and plans it down to a physical plan
//! whose scan reads the engine's per-source [`BatchSlot`], with filters
//! evaluated condition by condition (`conjunction.rs`) so that each rule's
//! cheap leading conditions spare its costly later ones. Evaluation puts
//! the batch in the slot and executes the stored plans: nothing is
//! re-planned per batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{TimestampNanosecondType, UInt32Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, Ident, SelectItem, SetExpr, Statement,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde_json::{Map, Value};
use tracing::Instrument;
use vigil_model::forward::FirstSeenRow;

use super::budget::{with_deadline, BudgetExceeded, EvalDeadline};
use super::cpu_time::CpuTimed;
use super::definitions::expand::Expander;
use super::definitions::macros::line_in_message;
use super::definitions::Definitions;
use super::exceptions::{Excepted, Exceptions};
use super::first_seen::{
    combination_hex, combinations, Combination, FirstSeen, FirstSeenStats, FirstSeenStorage,
    StateChange,
};
use super::fold::Folds;
use super::forward_filter::ForwardFilter;
use super::physical_plan::PhysicalPlanner;
use super::slot::{BatchSlot, SlotTable};
use super::{Rule, RuleError, RuleErrors, RuleMode, RuleSet};
use crate::alert::{content_event_id, Alert, EventIdentity};
use crate::correlate::{CorrelationSettings, Correlator, RuleLanes};
use crate::decode::DecodedBatch;
use crate::functions;
use crate::observe::{DetectionMetrics, RuleRun};
use crate::schema::SourceSchema;
use crate::schema::ROW_COLUMN;
use crate::source::{RawMessage, SourceKind};

/// A rule's first-seen changes since they were last taken, to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstSeenChanges {
    pub rule: Arc<str>,
    /// The repartition partition of a second-stage lane's state (see
    /// `correlate::fold_lane`); `None`: the instance's own.
    pub partition: Option<i32>,
    pub changes: Vec<StateChange>,
}

/// First stage of the repartitioned placement: an alert of a per-event
/// rule that keeps state, to forward to the second stage, which decides
/// (see `correlate::fold_lane`).
#[derive(Debug)]
pub struct ToForward {
    pub event_time_ns: i64,
    pub alert: Alert,
    /// For a first-seen rule's row: its combination; the second stage
    /// raises the alert only if it is new for the group.
    pub first_seen: Option<FirstSeenRow>,
}

/// A rule whose evaluation failed on a batch. The pipeline reports it (log,
/// metric, dead-letter record) instead of dropping it silently.
#[derive(Debug, Clone)]
pub struct RuleFailure {
    pub rule_id: String,
    pub source: SourceKind,
    pub error: String,
    /// The evaluation was cancelled for exceeding the time budget.
    pub timed_out: bool,
}

/// A rule ready to run.
struct CompiledRule {
    rule: Arc<Rule>,
    plan: Arc<dyn ExecutionPlan>,
    /// Index of [`ROW_COLUMN`] in the plan's output.
    row_column: usize,
    /// Open suppression periods (`-- suppress`), see [`super::fold`].
    folds: Folds,
    /// What a first-seen rule has seen (`-- first_seen`), see
    /// [`super::first_seen`].
    first_seen: Option<FirstSeen>,
    /// In a first stage of the repartitioned placement, instead: what of
    /// its rows to forward (see [`super::forward_filter`]).
    forward_filter: Option<ForwardFilter>,
}

impl CompiledRule {
    /// Whether rows of earlier batches change what this rule raises.
    fn keeps_state(&self) -> bool {
        self.rule.meta.suppress.is_some() || self.first_seen.is_some()
    }
}

/// Compiled rules plus the DataFusion context they run in.
pub struct RuleEngine {
    ctx: SessionContext,
    slots: BTreeMap<SourceKind, Arc<BatchSlot>>,
    rules: Vec<CompiledRule>,
    task_ctx: Arc<TaskContext>,
    correlator: Correlator,
    /// With `correlation.placement = "repartition"`: the correlation rules,
    /// one lane each (see [`RuleEngine::into_lanes`]); `correlator` then
    /// holds none.
    lanes: Option<RuleLanes>,
    /// With lanes (first stage): the alerts of rules with `-- suppress` and
    /// the rows of first-seen rules, as raised, to forward to the second
    /// stage's fold lanes.
    to_forward: Vec<ToForward>,
    /// Allow-list applied to every rule's output rows before alerts are made.
    exceptions: Exceptions,
    /// Alerts suppressed by exceptions since the last [`RuleEngine::take_excepted`].
    excepted: Vec<Excepted>,
    /// Deadline read by every per-event rule plan (see [`super::budget`]).
    deadline: Arc<EvalDeadline>,
    /// How long one rule may run over one batch.
    time_budget: Duration,
    /// The lists, macros and lookup tables the rules were compiled with.
    definitions: Arc<Definitions>,
    /// Where first-seen states keep their combinations.
    first_seen_storage: FirstSeenStorage,
    /// The values of conditions the per-event rules and the correlation
    /// pre-filter share, with the columns of the batch they were computed
    /// on (see [`RuleEngine::end_batch`]).
    shared_conditions: Arc<super::conjunction::SharedConditions>,
}

/// Default of [`RuleEngine::set_time_budget`] (`rules.max_eval_ms`).
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(5);
/// How per-event rules are planned. The default is what the service uses;
/// [`PlanOptions::DATAFUSION_DEFAULTS`] is how rules were planned before
/// the changes below, kept so that the benchmarks can measure both in
/// one run (docs/benchmarks.md). Both plan the same results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanOptions {
    /// Keep DataFusion's leaf-expression extraction (see [`new_session`]).
    pub extract_leaf_expressions: bool,
    /// Evaluate filters condition by condition (see `conjunction.rs`).
    pub selective_filters: bool,
    /// JSONPath functions share parsed documents (see `functions::parsed`).
    pub share_parsed_json: bool,
    /// Passes of DataFusion's logical optimizer (its default: 3). Each
    /// pass runs every rule; a second pass over a rule's plan changed
    /// nothing in the shipped pack (every plan compared by
    /// `tests::one_optimizer_pass_plans_the_per_event_rules_as_three_do` and
    /// its correlation counterpart) and was a fifth of start-up. A rule
    /// that a second pass would improve is still planned correctly, only
    /// less well.
    pub optimizer_passes: usize,
}

impl PlanOptions {
    pub const DATAFUSION_DEFAULTS: PlanOptions = PlanOptions {
        extract_leaf_expressions: true,
        selective_filters: false,
        share_parsed_json: false,
        optimizer_passes: 3,
    };
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            extract_leaf_expressions: false,
            selective_filters: true,
            share_parsed_json: true,
            optimizer_passes: 1,
        }
    }
}

/// A DataFusion session for rules: one partition (a rule runs on the batch
/// it is given, no repartitioning threads) and the rule functions. No
/// tables: callers register theirs.
///
/// Dynamic filters are off: they carry state from one execution of a plan
/// into the next (a TopK threshold, a join's build-side bounds), and Vigil
/// executes each plan once per batch (see [`fresh_plan`]).
pub fn new_session() -> SessionContext {
    new_session_with(PlanOptions::default())
}

pub(crate) fn new_session_with(options: PlanOptions) -> SessionContext {
    let mut ctx = SessionContext::new_with_config(session_config(options));
    // DataFusion 55 moves expressions it considers cheap field accesses out
    // of filters into a projection below them, computed for every row
    // (meant to help Parquet column pruning). datafusion-functions-json
    // declares its json_get_* functions that way, so a rule testing
    // `json_get_str(request_object, ...)` parsed the request object of
    // every event in the batch, whatever its earlier conditions. Rules read
    // an in-memory batch, so there is nothing to prune: keep expressions in
    // the filter, where the conditions before them narrow the rows first.
    if !options.extract_leaf_expressions {
        for rule in ["extract_leaf_expressions", "push_down_leaf_projections"] {
            ctx.remove_optimizer_rule(rule);
        }
    }
    functions::register_with(&mut ctx, options.share_parsed_json)
        .expect("registering built-in functions cannot fail");
    ctx
}

/// The configuration of the sessions planned with `options`: one per
/// distinct `options` in the process, shared by all of them (never
/// changed after it is made). Two function calls of different sessions are
/// equal only if their configurations are; DataFusion compares them by
/// pointer first, else by listing and sorting every entry of both, which
/// was 6% of start-up: the rules' shared conditions are found by comparing
/// the per-event session's expressions with the correlation session's.
fn session_config(options: PlanOptions) -> SessionConfig {
    static CONFIGS: std::sync::Mutex<Vec<(PlanOptions, SessionConfig)>> =
        std::sync::Mutex::new(Vec::new());
    let mut configs = CONFIGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, config)) = configs.iter().find(|(o, _)| *o == options) {
        return config.clone();
    }
    let config = new_session_config(options);
    configs.push((options, config.clone()));
    config
}

fn new_session_config(options: PlanOptions) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192)
        .with_information_schema(false)
        .with_repartition_joins(false)
        .with_repartition_aggregations(false)
        .with_repartition_windows(false)
        .with_repartition_sorts(false);
    config
        .options_mut()
        .optimizer
        .enable_dynamic_filter_pushdown = false;
    config.options_mut().optimizer.max_passes = options.optimizer_passes;
    config
}

/// A plan compiled once, ready for one more execution.
///
/// Some operators keep what they computed in the plan node itself: a hash
/// join builds its hash table once per plan instance (`OnceAsync`) and a
/// cross join keeps its left side. Executing the same instance again would
/// join the new batch against the first batch's build side. Resetting
/// rebuilds just those nodes, without re-planning.
pub(crate) fn fresh_plan(
    plan: &Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    datafusion::physical_plan::execution_plan::reset_plan_states(plan.clone())
}

/// Make a rule set's lookup tables readable by `lookup(...)` in `ctx`.
pub fn register_definitions(ctx: &SessionContext, definitions: &Definitions) {
    let tables = Arc::new(definitions.lookups.clone());
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        functions::lookup::LookupFn::new(tables),
    ));
}

/// Whether `ctx` knows an SQL function (scalar, aggregate or window) named
/// `name`: what a call that is not a macro must be.
pub(crate) fn is_known_function(state: &datafusion::execution::SessionState, name: &str) -> bool {
    state.scalar_functions().contains_key(name)
        || state.aggregate_functions().contains_key(name)
        || state.window_functions().contains_key(name)
}

/// The session of per-event rules: each source table reads its batch slot.
fn session(
    options: PlanOptions,
    definitions: &Definitions,
) -> (SessionContext, BTreeMap<SourceKind, Arc<BatchSlot>>) {
    let ctx = new_session_with(options);
    register_definitions(&ctx, definitions);
    let mut slots = BTreeMap::new();
    for source in vigil_sources::registry::kinds() {
        let slot = Arc::new(BatchSlot::default());
        ctx.register_table(
            source.table_name(),
            Arc::new(SlotTable::new(source.schema(), slot.clone())),
        )
        .expect("source table names are unique");
        slots.insert(source, slot);
    }
    (ctx, slots)
}

impl RuleEngine {
    /// Compile every rule with default correlation settings.
    pub async fn compile(set: impl Into<RuleSet>) -> Result<RuleEngine, RuleErrors> {
        Self::compile_with(set, CorrelationSettings::default()).await
    }

    /// Compile every rule, or report every rule that does not compile.
    pub async fn compile_with(
        set: impl Into<RuleSet>,
        settings: CorrelationSettings,
    ) -> Result<RuleEngine, RuleErrors> {
        Self::compile_planned(set, settings, PlanOptions::default()).await
    }

    /// Compile with explicit planning options (benchmarks compare them).
    pub async fn compile_planned(
        set: impl Into<RuleSet>,
        settings: CorrelationSettings,
        options: PlanOptions,
    ) -> Result<RuleEngine, RuleErrors> {
        let RuleSet { rules, definitions } = set.into();
        let (ctx, slots) = session(options, &definitions);
        let deadline = Arc::new(EvalDeadline::default());
        let shared_conditions = Arc::new(super::conjunction::SharedConditions::default());
        let mut compiled = Vec::with_capacity(rules.len());
        let state = ctx.state();
        let is_function = |name: &str| is_known_function(&state, name);
        let expander = Expander::new(&definitions, &is_function);
        let mut errors: Vec<RuleError> = expander
            .check_macros()
            .into_iter()
            .map(RuleError::from)
            .collect();
        let (correlation, rules): (Vec<Rule>, Vec<Rule>) = rules
            .into_iter()
            .partition(|r| r.meta.mode == RuleMode::Correlation);
        let correlator = match Correlator::compile(
            correlation,
            settings,
            &shared_conditions,
            &definitions,
        )
        .await
        {
            Ok(c) => Some(c),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let planner = PhysicalPlanner::new(&state);
        for rule in rules {
            match compile_rule(
                &state,
                &planner,
                &rule,
                &expander,
                &deadline,
                &shared_conditions,
                options,
            )
            .await
            {
                Ok((plan, row_column)) => compiled.push(CompiledRule {
                    first_seen: rule.meta.first_seen.as_ref().map(FirstSeen::new),
                    forward_filter: None,
                    rule: Arc::new(rule),
                    plan,
                    row_column,
                    folds: Folds::default(),
                }),
                Err(e) => errors.push(e),
            }
        }
        errors.dedup();
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.path.cmp(&b.path));
            return Err(RuleErrors(errors));
        }
        let task_ctx = ctx.task_ctx();
        let correlator = correlator.expect("no errors means the correlator compiled");
        Ok(RuleEngine {
            ctx,
            slots,
            rules: compiled,
            task_ctx,
            correlator,
            lanes: None,
            exceptions: Exceptions::none(),
            excepted: Vec::new(),
            to_forward: Vec::new(),
            deadline,
            time_budget: DEFAULT_TIME_BUDGET,
            definitions,
            first_seen_storage: FirstSeenStorage::default(),
            shared_conditions,
        })
    }

    /// The batch just evaluated is done with: let go of its columns, which
    /// the rules' shared conditions hold until the next batch replaces
    /// them. Without this, a batch stays in memory while the next one is
    /// decoded, and two batches' columns make the peak (docs/benchmarks.md,
    /// stop 39). Call it after the per-event rules and the correlation
    /// ingest of a batch (the pre-filter reuses the rules' conditions).
    pub fn end_batch(&self) {
        self.shared_conditions.clear();
    }

    /// The lists, macros and lookup tables the rules were compiled with.
    pub fn definitions(&self) -> &Arc<Definitions> {
        &self.definitions
    }

    /// The lists, macros and lookup tables no rule uses, described with
    /// where they were defined (`vigil rules validate` notes them: a list an
    /// overlay misspelt is defined and read by nothing).
    pub fn unused_definitions(&self) -> Vec<String> {
        let state = self.ctx.state();
        let is_function = |name: &str| is_known_function(&state, name);
        let expander = Expander::new(&self.definitions, &is_function);
        for rule in self.rules() {
            // Every rule expanded when it was compiled.
            let _ = single_query(rule, &expander);
        }
        expander.unused()
    }

    /// Set how long one per-event rule may run over one batch, and one
    /// correlation plan execution may run, before it is cancelled and
    /// reported as failed (`rules.max_eval_ms`).
    pub fn set_time_budget(&mut self, budget: Duration) {
        self.time_budget = budget;
        self.correlator.set_time_budget(budget);
        if let Some(lanes) = &mut self.lanes {
            lanes.set_time_budget(budget);
        }
    }

    pub fn time_budget(&self) -> Duration {
        self.time_budget
    }

    /// The loaded rules: per-event rules, then correlation rules.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .map(|r| r.rule.as_ref())
            .chain(self.correlator.rules())
            .chain(self.lanes.iter().flat_map(RuleLanes::rules))
    }

    /// Apply `exceptions` from now on, after checking that each names a
    /// loaded rule and one of its output columns.
    pub fn with_exceptions(mut self, exceptions: Exceptions) -> Result<RuleEngine, RuleErrors> {
        exceptions.validate(|id| self.output_columns(id))?;
        self.exceptions = exceptions;
        Ok(self)
    }

    /// Apply `exceptions` already checked against a larger set of rules
    /// (this engine holds part of it: see `rules::load_split_rule_set`).
    pub(crate) fn set_exceptions_unchecked(&mut self, exceptions: Exceptions) {
        self.exceptions = exceptions;
    }

    pub fn exceptions(&self) -> &Exceptions {
        &self.exceptions
    }

    /// The visible output columns of a rule (what its alerts carry in
    /// `fields`), or `None` for an unknown rule id.
    pub fn output_columns(&self, rule_id: &str) -> Option<Vec<String>> {
        match self.rules.iter().find(|r| r.rule.meta.id == rule_id) {
            Some(r) => Some(
                r.plan
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| !n.starts_with("__"))
                    .collect(),
            ),
            None => self.correlator.output_columns(rule_id),
        }
    }

    /// Remove from `alerts` those an exception suppresses (for alerts made
    /// outside [`RuleEngine::evaluate`]: correlation rules).
    pub fn apply_exceptions(&mut self, alerts: &mut Vec<Alert>, now_ns: i64) {
        if self.exceptions.is_empty() {
            return;
        }
        let (exceptions, excepted) = (&self.exceptions, &mut self.excepted);
        alerts.retain(
            |a| match exceptions.matching(&a.rule_id, &a.fields, now_ns) {
                Some(e) => {
                    excepted.push(Excepted {
                        rule_id: a.rule_id.clone(),
                        exception: e.location.clone(),
                    });
                    false
                }
                None => true,
            },
        );
    }

    /// The alerts suppressed by exceptions since the last call.
    pub fn take_excepted(&mut self) -> Vec<Excepted> {
        std::mem::take(&mut self.excepted)
    }

    /// Take over the state of `old`, the engine a rule reload replaces:
    /// correlation state is carried for the correlation rules whose id and
    /// expanded query are unchanged (see [`Correlator::carry_state_from`]);
    /// the open suppression periods of a per-event rule carry over by id
    /// while the rule still folds. Returns the ids of the unchanged
    /// correlation rules.
    pub fn carry_state_from(&mut self, old: RuleEngine) -> std::collections::BTreeSet<String> {
        self.set_first_seen_storage(old.first_seen_storage.clone());
        // Unchanged means the same query once its lists and macros are
        // expanded: a rule whose list changed starts its state afresh.
        let unchanged: std::collections::BTreeSet<String> = self
            .correlator
            .rules()
            .filter(|r| {
                old.correlator.rules().any(|o| o.meta.id == r.meta.id)
                    && old.correlator.query(&r.meta.id) == self.correlator.query(&r.meta.id)
            })
            .map(|r| r.meta.id.clone())
            .collect();
        let mut old_rules = old.rules;
        for rule in self
            .rules
            .iter_mut()
            .filter(|r| r.rule.meta.suppress.is_some())
        {
            // Open periods stand for alerts already raised: they carry over
            // while the rule still folds (a changed period applies to new
            // periods).
            if let Some(o) = old_rules
                .iter_mut()
                .find(|o| o.rule.meta.id == rule.rule.meta.id)
            {
                rule.folds = std::mem::take(&mut o.folds);
            }
        }
        for rule in self.rules.iter_mut() {
            let Some(state) = &mut rule.first_seen else {
                continue;
            };
            // What was seen stays seen while the combination is of the
            // same columns (a changed history applies from now on).
            if let Some(old_state) = old_rules
                .iter_mut()
                .find(|o| o.rule.meta.id == rule.rule.meta.id)
                .and_then(|o| o.first_seen.take())
                .filter(|o| o.same_columns(state))
            {
                state.carry_from(old_state);
            }
        }
        self.correlator.carry_state_from(old.correlator, &unchanged);
        unchanged
    }

    /// The correlation rules and their state.
    /// Move the correlation rules into lanes, one per rule, for the two
    /// stages of `correlation.placement = "repartition"` (see
    /// [`crate::correlate::RuleLanes`]). Done once, before any input.
    pub async fn into_lanes(mut self) -> Result<RuleEngine, RuleErrors> {
        let rules: Vec<Rule> = self.correlator.rules().cloned().collect();
        let settings = self.correlator.settings().clone();
        let empty = Correlator::compile(
            Vec::new(),
            settings.clone(),
            &Arc::new(super::conjunction::SharedConditions::default()),
            &self.definitions,
        )
        .await
        .map_err(RuleErrors)?;
        let mut lanes = RuleLanes::compile(rules, &settings, &self.definitions)
            .await
            .map_err(RuleErrors)?;
        lanes.set_time_budget(self.time_budget);
        lanes.fold_alerts_of(self.rules.iter().map(|r| r.rule.meta.clone()).collect());
        lanes.set_first_seen_storage(self.first_seen_storage.clone());
        let filter_bound = self.first_seen_storage.memory_bound();
        for r in &mut self.rules {
            r.forward_filter = r
                .rule
                .meta
                .first_seen
                .as_ref()
                .map(|meta| ForwardFilter::new(meta).with_max_entries(filter_bound));
        }
        self.correlator = empty;
        self.lanes = Some(lanes);
        Ok(self)
    }

    /// The correlation lanes (placement `repartition`), if any.
    pub fn lanes(&self) -> Option<&RuleLanes> {
        self.lanes.as_ref()
    }

    pub fn lanes_mut(&mut self) -> Option<&mut RuleLanes> {
        self.lanes.as_mut()
    }

    /// How many correlation rules run here (in the correlator or lanes).
    pub fn correlation_rule_count(&self) -> usize {
        self.correlator.rule_count() + self.lanes.as_ref().map_or(0, RuleLanes::rule_count)
    }

    /// Advance the correlator and the lanes (see `Correlator::advance`).
    pub async fn correlation_advance(
        &mut self,
        now_ns: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let (mut alerts, mut failures) = self.correlator.advance(now_ns, detected_at_ns).await;
        if let Some(lanes) = &mut self.lanes {
            let (a, f) = lanes.advance(now_ns, detected_at_ns).await;
            alerts.extend(a);
            failures.extend(f);
        }
        (alerts, failures)
    }

    /// Close every window (end of a replayed input).
    pub async fn correlation_finish(
        &mut self,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let (mut alerts, mut failures) = self.correlator.finish(detected_at_ns).await;
        if let Some(lanes) = &mut self.lanes {
            let (a, f) = lanes.finish(detected_at_ns).await;
            alerts.extend(a);
            failures.extend(f);
        }
        (alerts, failures)
    }

    /// The correlation rules' runs since the last call.
    pub fn take_correlation_evaluations(&mut self) -> Vec<(String, RuleRun)> {
        let mut out = self.correlator.take_evaluations();
        if let Some(lanes) = &mut self.lanes {
            out.extend(lanes.take_evaluations());
        }
        out
    }

    /// The correlation state's counters (the lanes' when there are lanes).
    pub fn correlation_stats(&self) -> crate::correlate::CorrelationStats {
        match &self.lanes {
            Some(lanes) => lanes.stats(),
            None => self.correlator.stats(),
        }
    }

    /// The last watermark each correlation rule emitted up to.
    pub fn emitted_watermarks(&self) -> std::collections::BTreeMap<String, i64> {
        let mut out = self.correlator.emitted_watermarks();
        if let Some(lanes) = &self.lanes {
            out.extend(lanes.emitted_watermarks());
        }
        out
    }

    /// Restore emission watermarks (see `Correlator::restore_emitted`).
    /// Not the lanes': theirs are per repartition partition, restored with
    /// its assignment (`RuleLanes::assign`).
    pub fn restore_emitted(&mut self, emitted: &std::collections::BTreeMap<String, i64>) {
        self.correlator.restore_emitted(emitted);
    }

    /// Forget all correlation state.
    pub fn reset_correlation(&mut self) {
        self.correlator.reset();
        if let Some(lanes) = &mut self.lanes {
            lanes.reset();
        }
    }

    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    pub fn correlator_mut(&mut self) -> &mut Correlator {
        &mut self.correlator
    }

    /// Number of rules reading `source`.
    pub fn rule_count(&self, source: SourceKind) -> usize {
        self.rules
            .iter()
            .filter(|r| r.rule.meta.source == source)
            .count()
    }

    /// The DataFusion context (for tools that run ad-hoc SQL against the
    /// same tables and functions).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Run every rule of `decoded.source` over the batch.
    ///
    /// `messages` are the raw messages the batch was decoded from (indexed by
    /// [`crate::decode::EventRef::message`]); they give alerts their origins
    /// and the content ids of events without ids of their own.
    pub async fn evaluate(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<RuleFailure>) {
        self.evaluate_observed(decoded, messages, detected_at_ns, None)
            .await
    }

    /// [`RuleEngine::evaluate`], recording each rule's evaluation time and
    /// matches in `metrics`. Each rule runs in a `rule` span (the child
    /// spans of a batch trace, see [`crate::telemetry`]).
    pub async fn evaluate_observed(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        detected_at_ns: i64,
        metrics: Option<&dyn DetectionMetrics>,
    ) -> (Vec<Alert>, Vec<RuleFailure>) {
        self.run_rules(decoded, messages, detected_at_ns, metrics, false)
            .await
    }

    /// Rebuild the suppression periods of the per-event rules from
    /// messages re-read after a restart (below the checkpoint's
    /// `processed` offsets): the folding rules run over them, and their
    /// alerts, delivered before the restart, are discarded.
    pub async fn rebuild_folds(&mut self, decoded: &DecodedBatch, messages: &[RawMessage]) {
        let excepted = self.excepted.len();
        self.run_rules(decoded, messages, 0, None, true).await;
        self.excepted.truncate(excepted);
    }

    /// Lowest offset per Kafka partition that a restart must re-read from
    /// to rebuild the state: the correlator's retained events and the
    /// events of open suppression periods (see [`super::fold`]). Commits
    /// must not pass it.
    pub fn retained_offsets(&self) -> std::collections::BTreeMap<(String, i32), i64> {
        let mut out = self.correlator.retained_offsets();
        if let Some(lanes) = &self.lanes {
            crate::correlate::merge_offsets(&mut out, &lanes.retained_offsets());
        }
        for r in &self.rules {
            r.folds.offsets(&mut out);
        }
        out
    }

    /// Summaries of the suppression periods the stream's watermark passed
    /// (a quiet stream closes its periods too).
    pub fn expire_folds(&mut self, watermark_ns: i64) -> Vec<Alert> {
        self.rules
            .iter_mut()
            .flat_map(|r| r.folds.expire(watermark_ns))
            .collect()
    }

    /// The rules of `decoded.source` over the batch (`only_folding`: only
    /// those that keep state from row to row, `-- suppress` and
    /// `-- first_seen`).
    async fn run_rules(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        detected_at_ns: i64,
        metrics: Option<&dyn DetectionMetrics>,
        only_folding: bool,
    ) -> (Vec<Alert>, Vec<RuleFailure>) {
        let mut alerts = Vec::new();
        let mut failures = Vec::new();
        if decoded.batch.num_rows() == 0 {
            return (alerts, failures);
        }
        let slot = &self.slots[&decoded.source];
        slot.set(decoded.batch.clone());
        // The JSONPath functions' shared parses are of this batch's
        // documents from here on (see `functions::parsed`).
        crate::functions::parsed::next_batch();
        let event_times = decoded
            .batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>()
            .clone();
        if let Some(earliest) = datafusion::arrow::compute::min(&event_times) {
            for r in self
                .rules
                .iter_mut()
                .filter(|r| r.rule.meta.source == decoded.source)
            {
                if let Some(f) = &mut r.first_seen {
                    f.observe(earliest);
                }
            }
        }
        // In the first stage of the repartitioned placement, the alerts to
        // fold are forwarded instead (see `RuleEngine::take_alerts_to_forward`).
        let forward_folds = self.lanes.is_some();
        for compiled in self
            .rules
            .iter_mut()
            .filter(|r| r.rule.meta.source == decoded.source && (!only_folding || r.keeps_state()))
        {
            let rule = compiled.rule.clone();
            let meta = &rule.meta;
            let span = tracing::info_span!("rule", rule = %meta.id, source = %decoded.source, matches = tracing::field::Empty);
            let started = std::time::Instant::now();
            let (result, cpu) = match fresh_plan(&compiled.plan) {
                Ok(plan) => {
                    self.deadline.arm(self.time_budget);
                    let result = CpuTimed::new(collect(plan, self.task_ctx.clone()))
                        .instrument(span.clone())
                        .await;
                    self.deadline.disarm();
                    result
                }
                Err(e) => (Err(e), Duration::ZERO),
            };
            let elapsed = started.elapsed();
            if let Ok(b) = &result {
                let matches: usize = b.iter().map(|b| b.num_rows()).sum();
                span.record("matches", matches as i64);
                if let Some(m) = metrics {
                    let run = RuleRun {
                        elapsed,
                        cpu,
                        matches,
                    };
                    m.rule_evaluated(&meta.id, run);
                }
            }
            let batches = match result {
                Ok(b) => b,
                Err(e) => {
                    let (error, timed_out) = match BudgetExceeded::find(&e) {
                        Some(b) => (b.to_string(), true),
                        None => (e.to_string(), false),
                    };
                    failures.push(RuleFailure {
                        rule_id: meta.id.clone(),
                        source: decoded.source,
                        error,
                        timed_out,
                    });
                    continue;
                }
            };
            // In the first stage, a first-seen rule's rows go to the
            // second stage, which holds the group's state; here they are
            // only filtered (see `super::forward_filter`).
            let forwards =
                forward_folds && (meta.suppress.is_some() || compiled.first_seen.is_some());
            let mut made: Vec<ToForward> = Vec::new();
            for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                let new_only;
                let mut combinations = None;
                let batch = match &mut compiled.first_seen {
                    None => batch,
                    Some(first_seen) => {
                        let rows = match &mut compiled.forward_filter {
                            Some(filter) if forwards => rows_to_forward(
                                (filter, first_seen.columns()),
                                batch,
                                compiled.row_column,
                                &event_times,
                            )
                            .map(|(rows, c)| {
                                combinations = Some(c);
                                rows
                            }),
                            _ => new_rows(first_seen, batch, compiled.row_column, &event_times),
                        };
                        match rows {
                            Ok(new) => {
                                new_only = new;
                                &new_only
                            }
                            Err(e) => {
                                failures.push(RuleFailure {
                                    rule_id: meta.id.clone(),
                                    source: decoded.source,
                                    error: format!("first-seen state: {e}"),
                                    timed_out: false,
                                });
                                continue;
                            }
                        }
                    }
                };
                let rows = match rows_to_json(batch) {
                    Ok(rows) => rows,
                    Err(e) => {
                        failures.push(RuleFailure {
                            rule_id: meta.id.clone(),
                            source: decoded.source,
                            error: format!("encoding the rule's output: {e}"),
                            timed_out: false,
                        });
                        continue;
                    }
                };
                let row_ids = batch
                    .column(compiled.row_column)
                    .as_primitive::<UInt32Type>();
                for (i, fields) in rows.into_iter().enumerate() {
                    if row_ids.is_null(i) {
                        continue; // unreachable: the row column is non-nullable
                    }
                    let excepted = self.exceptions.matching(&meta.id, &fields, detected_at_ns);
                    if let Some(e) = excepted {
                        self.excepted.push(Excepted {
                            rule_id: meta.id.clone(),
                            exception: e.location.clone(),
                        });
                    }
                    // An excepted first-seen row is still seen by the group.
                    let first_seen = combinations.as_ref().map(|c| FirstSeenRow {
                        combination: combination_hex(&c[i]),
                        observed_since: compiled
                            .first_seen
                            .as_ref()
                            .and_then(FirstSeen::observed_since)
                            .unwrap_or(0),
                        raise: excepted.is_none(),
                    });
                    if excepted.is_some() && first_seen.is_none() {
                        continue;
                    }
                    let row = row_ids.value(i) as usize;
                    let event = &decoded.events[row];
                    let message = &messages[event.message as usize];
                    let event_id = match decoded.events.native_id(row) {
                        Some(id) => id.to_string(),
                        None => content_event_id(&message.payload, event.item),
                    };
                    let identity = EventIdentity {
                        event_id,
                        origin: message.origin.clone(),
                    };
                    let event_time = event_times.value(row);
                    let alert =
                        Alert::new(meta, detected_at_ns, event_time, fields, vec![identity]);
                    made.push(ToForward {
                        event_time_ns: event_time,
                        alert,
                        first_seen,
                    });
                }
            }
            if forwards {
                // Re-read messages only rebuild state: their alerts were
                // forwarded before the restart, and no fold is kept here.
                if !only_folding {
                    self.to_forward.extend(made);
                }
                continue;
            }
            if meta.suppress.is_none() {
                alerts.extend(made.into_iter().map(|f| f.alert));
                continue;
            }
            // Folded in arrival order here, whatever the batching; the
            // second stage of the repartitioned placement folds in
            // event-time order (`correlate::fold_lane`).
            for f in made {
                alerts.extend(compiled.folds.admit(meta, f.alert, f.event_time_ns));
            }
        }
        // Suppression periods this batch's events have passed.
        if let Some(latest) = datafusion::arrow::compute::max(&event_times) {
            for compiled in self
                .rules
                .iter_mut()
                .filter(|r| r.rule.meta.source == decoded.source)
            {
                alerts.extend(compiled.folds.expire(latest));
            }
        }
        slot.clear();
        (alerts, failures)
    }

    /// First stage of the repartitioned placement: the alerts of rules with
    /// `-- suppress` and the rows of first-seen rules since the last call,
    /// to forward by suppression key or combination (see
    /// `correlate::fold_lane`).
    pub fn take_alerts_to_forward(&mut self) -> Vec<ToForward> {
        std::mem::take(&mut self.to_forward)
    }

    /// End of input: the summaries of every open suppression period of the
    /// per-event rules.
    pub fn finish_folds(&mut self) -> Vec<Alert> {
        self.rules
            .iter_mut()
            .flat_map(|r| r.folds.finish())
            .collect()
    }

    /// Forget the per-event rules' suppression periods and first-seen
    /// state (between independent inputs).
    pub fn reset_folds(&mut self) {
        for r in &mut self.rules {
            r.folds.clear();
            if let Some(f) = &mut r.first_seen {
                f.clear();
            }
            if let Some(f) = &mut r.forward_filter {
                f.clear();
            }
        }
    }

    /// Keep the first-seen rules' combinations as `storage` says: in
    /// memory only, or spilled past a bound (see [`super::first_seen`]).
    /// Before any input: states made before are replaced, empty.
    pub fn set_first_seen_storage(&mut self, storage: FirstSeenStorage) {
        for r in &mut self.rules {
            if let Some(meta) = &r.rule.meta.first_seen {
                r.first_seen = Some(FirstSeen::new(meta).with_storage(&storage, &r.rule.meta.id));
                // A first stage's filter holds no more than the state does
                // in memory: it has no spill file (forgetting forwards more).
                if r.forward_filter.is_some() {
                    r.forward_filter =
                        Some(ForwardFilter::new(meta).with_max_entries(storage.memory_bound()));
                }
            }
        }
        if let Some(lanes) = &mut self.lanes {
            lanes.set_first_seen_storage(storage.clone());
        }
        self.first_seen_storage = storage;
    }

    /// The first-seen rules' changes since the last call, to persist (see
    /// [`super::first_seen`]). A first stage's own state only filters what
    /// it forwards: not persisted (a restart forwards a little more).
    pub fn take_first_seen_changes(&mut self) -> Vec<FirstSeenChanges> {
        let filtering = self.lanes.is_some();
        let mut out = Vec::new();
        for r in &mut self.rules {
            let Some(state) = r.first_seen.as_mut() else {
                continue;
            };
            let changes = state.take_changes();
            if !filtering && !changes.is_empty() {
                out.push(FirstSeenChanges {
                    rule: Arc::from(r.rule.meta.id.as_str()),
                    partition: None,
                    changes,
                });
            }
        }
        if let Some(lanes) = &mut self.lanes {
            out.extend(lanes.take_first_seen_changes());
        }
        out
    }

    /// Restore a first-seen rule's persisted changes. Returns `false` when
    /// no loaded rule of that id keeps first-seen state (a rule removed
    /// since: its state is dropped).
    pub fn restore_first_seen(
        &mut self,
        rule_id: &str,
        changes: impl IntoIterator<Item = StateChange>,
    ) -> bool {
        let Some(state) = self
            .rules
            .iter_mut()
            .find(|r| r.rule.meta.id == rule_id)
            .and_then(|r| r.first_seen.as_mut())
        else {
            return false;
        };
        state.restore(changes);
        true
    }

    /// The first-seen state of every rule (in the second stage of the
    /// repartitioned placement, of every lane), summed; `None` where no
    /// group state is kept.
    pub fn first_seen_stats(&self) -> Option<FirstSeenStats> {
        let own = self
            .rules
            .iter()
            .filter(|_| self.lanes.is_none())
            .filter_map(|r| r.first_seen.as_ref())
            .map(FirstSeen::stats);
        own.chain(self.lanes.as_ref().and_then(RuleLanes::first_seen_stats))
            .reduce(|a, b| a + b)
    }
}

/// Convert a rule's output rows to JSON objects, leaving out internal
/// (`__`-prefixed) columns.
pub(crate) fn rows_to_json(
    batch: &RecordBatch,
) -> Result<Vec<Map<String, Value>>, datafusion::arrow::error::ArrowError> {
    let visible: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| !batch.schema().field(i).name().starts_with("__"))
        .collect();
    if visible.is_empty() {
        return Ok(vec![Map::new(); batch.num_rows()]);
    }
    let projected = batch.project(&visible)?;
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    writer.write(&projected)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    serde_json::from_slice::<Vec<Map<String, Value>>>(&bytes)
        .map_err(|e| datafusion::arrow::error::ArrowError::JsonError(e.to_string()))
}

/// Plan one rule. Returns its physical plan and the index of the row column.
async fn compile_rule(
    state: &datafusion::execution::SessionState,
    planner: &PhysicalPlanner,
    rule: &Rule,
    expander: &Expander<'_>,
    deadline: &Arc<EvalDeadline>,
    shared_conditions: &Arc<super::conjunction::SharedConditions>,
    options: PlanOptions,
) -> Result<(Arc<dyn ExecutionPlan>, usize), RuleError> {
    let err = |line: Option<usize>, message: String| RuleError {
        path: rule.path.clone(),
        line,
        message,
    };
    let statement = checked_statement(rule, expander)?;
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(statement)))
        .await
        .map_err(|e| err(None, format!("planning failed: {e}")))?;
    check_tables(rule, &plan)?;
    check_first_seen_columns(rule, &plan)?;
    let physical = planner
        .plan(&plan)
        .await
        .map_err(|e| err(None, format!("physical planning failed: {e}")))?;
    let physical = super::projection::without_expression_metrics(physical)
        .map_err(|e| err(None, format!("physical planning failed: {e}")))?;
    let physical = if options.selective_filters {
        super::conjunction::selective_filters(physical, shared_conditions)
            .map_err(|e| err(None, format!("physical planning failed: {e}")))?
    } else {
        physical
    };
    let row_column = physical.schema().index_of(ROW_COLUMN).map_err(|_| {
        err(
            None,
            format!("the rule's output lost the internal {ROW_COLUMN} column"),
        )
    })?;
    let physical = with_deadline(physical, deadline)
        .map_err(|e| err(None, format!("adding the time budget: {e}")))?;
    Ok((physical, row_column))
}

/// The rows of a first-seen rule's output `batch` whose combination is
/// new; every row is remembered (see [`super::first_seen`]).
fn new_rows(
    first_seen: &mut FirstSeen,
    batch: &RecordBatch,
    row_column: usize,
    event_times: &datafusion::arrow::array::TimestampNanosecondArray,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let rows = batch.column(row_column).as_primitive::<UInt32Type>();
    let new = first_seen.admit_batch(batch, |i| event_times.value(rows.value(i) as usize))?;
    datafusion::arrow::compute::filter_record_batch(batch, &new)
}

/// First stage: the rows of a first-seen rule's output `batch` (of
/// combinations of `columns`) the group's state needs, with their
/// combinations (see [`super::forward_filter`]).
fn rows_to_forward(
    (filter, columns): (&mut ForwardFilter, &[String]),
    batch: &RecordBatch,
    row_column: usize,
    event_times: &datafusion::arrow::array::TimestampNanosecondArray,
) -> Result<(RecordBatch, Vec<Combination>), datafusion::arrow::error::ArrowError> {
    let rows = batch.column(row_column).as_primitive::<UInt32Type>();
    let mut kept = Vec::new();
    let keep: BooleanArray = combinations(columns, batch)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let forward = filter.forward(c, event_times.value(rows.value(i) as usize));
            if forward {
                kept.push(c);
            }
            Some(forward)
        })
        .collect();
    let picked = datafusion::arrow::compute::filter_record_batch(batch, &keep)?;
    Ok((picked, kept))
}

/// A first-seen rule's combination is of output columns: a name the
/// output lacks would make every row's combination the same.
fn check_first_seen_columns(rule: &Rule, plan: &LogicalPlan) -> Result<(), RuleError> {
    let Some(first_seen) = &rule.meta.first_seen else {
        return Ok(());
    };
    let schema = plan.schema();
    let missing: Vec<&str> = first_seen
        .columns
        .iter()
        .filter(|c| !schema.fields().iter().any(|f| f.name() == *c))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(RuleError {
        path: rule.path.clone(),
        line: None,
        message: format!(
            "first_seen names {} not among the rule's output columns ({})",
            missing.join(", "),
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .filter(|n| *n != ROW_COLUMN)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Parse a rule's SQL, check its shape, and add the row-index column.
///
/// Only a single `SELECT` (optionally with `WITH`, `ORDER BY`, `LIMIT`) is
/// accepted: no DDL, DML, `COPY`, `SET` or `EXPLAIN`.
fn checked_statement(rule: &Rule, expander: &Expander<'_>) -> Result<Statement, RuleError> {
    let err = |line: Option<usize>, message: String| RuleError {
        path: rule.path.clone(),
        line,
        message,
    };
    let mut statement = single_query(rule, expander)?;
    let Statement::Query(query) = &mut statement else {
        unreachable!("single_query returns a query")
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(err(
            None,
            "an event rule must be a single SELECT (no UNION, VALUES or nested set operations)"
                .into(),
        ));
    };
    match rule.meta.mode {
        RuleMode::Correlation => unreachable!("correlation rules are compiled by the correlator"),
        RuleMode::Event => {
            let grouped = match &select.group_by {
                GroupByExpr::All(_) => true,
                GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
            };
            if grouped || select.having.is_some() {
                return Err(err(None, "an event rule cannot GROUP BY or HAVING: it yields one alert per matching event".into()));
            }
        }
    }
    if select.from.is_empty() {
        return Err(err(
            None,
            format!(
                "the rule reads no table: it must select FROM {}",
                rule.meta.source.table_name()
            ),
        ));
    }
    if select.into.is_some() {
        return Err(err(None, "SELECT INTO is not allowed in a rule".into()));
    }
    let has_wildcard = select.projection.iter().any(|p| {
        matches!(
            p,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    if !has_wildcard {
        select
            .projection
            .push(SelectItem::UnnamedExpr(SqlExpr::Identifier(Ident::new(
                ROW_COLUMN,
            ))));
    }
    Ok(statement)
}

/// A rule's query with its lists and macros expanded, as SQL text that
/// `ctx` can plan (tools that run rules outside the engine: the benchmarks'
/// DataFusion ceilings, `explain`). `ctx` must know the rule functions and
/// the set's lookup tables ([`register_definitions`]).
pub fn expanded_sql(
    ctx: &SessionContext,
    definitions: &Definitions,
    rule: &Rule,
) -> Result<String, RuleError> {
    let state = ctx.state();
    let is_function = |name: &str| is_known_function(&state, name);
    let expander = Expander::new(definitions, &is_function);
    Ok(single_query(rule, &expander)?.to_string())
}

/// The rules of `rules` whose expanded query names a table of `source`,
/// or that cannot be parsed (see [`super::load_rule_set_for`]).
pub(crate) fn rules_reading(
    rules: Vec<Rule>,
    definitions: &Definitions,
    source: SourceKind,
) -> Vec<Rule> {
    let ctx = new_session();
    let state = ctx.state();
    let is_function = |name: &str| is_known_function(&state, name);
    let expander = Expander::new(definitions, &is_function);
    let names_source = |statement: Statement| {
        let statement = datafusion::sql::parser::Statement::Statement(Box::new(statement));
        match datafusion::sql::resolve::resolve_table_references(&statement, true) {
            Ok((tables, _)) => tables.iter().any(|t| t.table() == source.table_name()),
            Err(_) => true,
        }
    };
    let reads_source = |rule: &Rule| {
        // Expanding only adds to a query: a rule that names the source
        // before its macros are expanded names it after. Most rules do, and
        // are not expanded here (they are when compiled).
        let Ok(statement) = choosing_query(rule) else {
            return true;
        };
        names_source(statement) || single_query(rule, &expander).map_or(true, names_source)
    };
    rules.into_iter().filter(|r| reads_source(r)).collect()
}

/// Parse a rule's SQL: exactly one statement, and a query; then expand
/// the lists and macros it uses.
pub(crate) fn single_query(rule: &Rule, expander: &Expander<'_>) -> Result<Statement, RuleError> {
    let mut statement = unexpanded_query(rule)?;
    expander.statement(&mut statement, &rule.path)?;
    Ok(statement)
}

/// Parse a rule's SQL: exactly one statement, and a query, its lists and
/// macros not expanded. The parse a [`choosing_query`] left is taken
/// instead, when there is one.
fn unexpanded_query(rule: &Rule) -> Result<Statement, RuleError> {
    let left = rule.parsed.lock().unwrap_or_else(|e| e.into_inner()).take();
    left.unwrap_or_else(|| parsed_query(rule))
}

/// [`unexpanded_query`], leaving a copy of the parse for the next use: the
/// rule is chosen by its query, and then compiled.
fn choosing_query(rule: &Rule) -> Result<Statement, RuleError> {
    let parsed = unexpanded_query(rule);
    *rule.parsed.lock().unwrap_or_else(|e| e.into_inner()) = Some(parsed.clone());
    parsed
}

fn parsed_query(rule: &Rule) -> Result<Statement, RuleError> {
    let err = |line: Option<usize>, message: String| RuleError {
        path: rule.path.clone(),
        line,
        message,
    };
    let mut statements = Parser::parse_sql(&GenericDialect {}, rule.sql()).map_err(|e| {
        let m = e.to_string();
        err(line_in_message(&m), format!("SQL syntax error: {m}"))
    })?;
    if statements.len() != 1 {
        return Err(err(
            None,
            format!(
                "a rule must be exactly one SELECT statement, found {}",
                statements.len()
            ),
        ));
    }
    let mut statement = statements.remove(0);
    if !matches!(statement, Statement::Query(_)) {
        return Err(err(
            None,
            "a rule must be a SELECT query; DDL, DML, COPY and SET are not allowed".into(),
        ));
    }
    // Before anything walks it by recursion (cloning included).
    crate::rules::balance::balance_chains(&mut statement);
    Ok(statement)
}

/// Every table an event rule reads (in its logical `plan`) must be its
/// declared source.
fn check_tables(rule: &Rule, plan: &LogicalPlan) -> Result<(), RuleError> {
    let source = rule.meta.source;
    let err = |message: String| RuleError {
        path: rule.path.clone(),
        line: None,
        message,
    };
    let mut tables = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| err(format!("finding the tables the rule reads: {e}")))?;
    if tables.is_empty() {
        return Err(err(format!(
            "the rule reads no table: it must select FROM {}",
            source.table_name()
        )));
    }
    match tables.iter().find(|t| *t != source.table_name()) {
        Some(other) => Err(err(format!(
            "the rule reads table {other:?} but declares source {}: an event rule reads only its source table",
            source.table_name()
        ))),
        None => Ok(()),
    }
}

/// A physical plan as indented text, common-subexpression aliases
/// (`__common_expr_8`, numbered per session) written `CSE`: plans compared
/// across sessions by the optimizer-pass tests.
#[cfg(test)]
pub(crate) fn plan_text(plan: &dyn ExecutionPlan) -> String {
    static ALIASES: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"__common_expr_\d+").unwrap());
    let text = datafusion::physical_plan::displayable(plan)
        .indent(true)
        .to_string();
    ALIASES.replace_all(&text, "CSE").into_owned()
}

/// Each rule's plan with one optimizer pass equals its plan with three.
#[cfg(test)]
pub(crate) fn assert_same_plans(one: &[(String, String)], three: &[(String, String)]) {
    assert_eq!(one.len(), three.len());
    for (a, b) in one.iter().zip(three) {
        assert_eq!(a, b, "{} plans differently with one pass", a.0);
    }
}

#[cfg(test)]
mod tests;
