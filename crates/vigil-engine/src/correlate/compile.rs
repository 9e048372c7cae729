//! Compiling correlation rules: plan each query over the retained-event
//! tables, find its `window_end` and event columns, and derive per source
//! the pre-filter of the events worth retaining.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, Ident, ObjectNamePart, SelectItem, SetExpr, Statement,
    TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::fold_filters;
use super::ingest::PreFilter;
use super::json_cut;
use super::key::CorrelationKey;
use super::watermark::WatermarkTracker;
use super::{
    delta, incremental, ms, CompiledCorrelation, CorrelationSettings, CorrelationStats, Correlator,
    Retained, RetentionFilter, Strategy,
};
use crate::rules::conjunction::{faster_filters, selective_predicate, SharedConditions};
use crate::rules::definitions::expand::Expander;
use crate::rules::definitions::Definitions;
use crate::rules::engine::PlanOptions;
use crate::rules::projection::without_expression_metrics;
use crate::rules::slot::{cache_scan_filters, BatchSlot, SlotTable};
use crate::rules::{Rule, RuleError, RuleMode};
use crate::schema::SourceSchema;
use crate::schema::ROW_COLUMN;
use crate::source::SourceKind;

/// Schema of a source's retained events: the source schema, with the row
/// column widened to a `UInt64` sequence number unique across batches.
pub fn retained_schema(source: SourceKind) -> SchemaRef {
    static SCHEMAS: LazyLock<BTreeMap<SourceKind, SchemaRef>> = LazyLock::new(|| {
        vigil_sources::registry::kinds()
            .map(|s| {
                let fields: Vec<Field> = s
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        if f.name() == ROW_COLUMN {
                            Field::new(ROW_COLUMN, DataType::UInt64, false)
                        } else {
                            f.as_ref().clone()
                        }
                    })
                    .collect();
                (s, Arc::new(Schema::new(fields)))
            })
            .collect()
    });
    SCHEMAS[&source].clone()
}

/// Compile the correlation rules: each rule on its own ([`compile_rule`]),
/// every rule's error reported (not only the first), then per source what
/// to retain of its events ([`retained_source`]).
pub(super) async fn compile(
    rules: Vec<Rule>,
    settings: CorrelationSettings,
    shared: &Arc<SharedConditions>,
    definitions: &Definitions,
) -> Result<Correlator, Vec<RuleError>> {
    let (ctx, retained_slots) = retained_session(definitions);
    let state = ctx.state();
    let is_function = |name: &str| crate::rules::engine::is_known_function(&state, name);
    let expander = Expander::new(definitions, &is_function);
    let mut compiled = Vec::new();
    let mut errors = Vec::new();
    let mut usage: BTreeMap<SourceKind, SourceUsage> = BTreeMap::new();
    let mut json_reads = json_cut::JsonReads::default();
    for rule in rules {
        let compiled_rule = compile_rule(rule, &settings, &state, &expander, &mut json_reads)
            .await
            .and_then(|(c, scans)| Ok((fold_filters::at_ingest(c, shared)?, scans)));
        match compiled_rule {
            Ok((correlation, scans)) => {
                SourceUsage::record(&mut usage, &correlation, scans);
                compiled.push(correlation);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut retained = BTreeMap::new();
    for (source, usage) in usage {
        let slot = retained_slots[&source].clone();
        let events = retained_source(source, usage, slot, &state, shared, &json_reads)
            .await
            .map_err(|e| vec![e])?;
        retained.insert(source, events);
    }
    Ok(correlator(ctx, compiled, retained, settings))
}

/// The session correlation rules are planned in: the rule set's lookup
/// tables, and one table per source over a slot of its retained events
/// (schema: [`retained_schema`]), whose scans expose their filters (the
/// pre-filter and the retention filter are made of them).
pub(super) fn retained_session(
    definitions: &Definitions,
) -> (SessionContext, BTreeMap<SourceKind, Arc<BatchSlot>>) {
    retained_session_with(definitions, PlanOptions::default())
}

fn retained_session_with(
    definitions: &Definitions,
    options: PlanOptions,
) -> (SessionContext, BTreeMap<SourceKind, Arc<BatchSlot>>) {
    let ctx = crate::rules::engine::new_session_with(options);
    crate::rules::engine::register_definitions(&ctx, definitions);
    let mut retained_slots = BTreeMap::new();
    for source in vigil_sources::registry::kinds() {
        let slot = Arc::new(BatchSlot::default());
        ctx.register_table(
            source.table_name(),
            Arc::new(SlotTable::exposing_filters(
                retained_schema(source),
                slot.clone(),
            )),
        )
        .expect("source table names are unique");
        retained_slots.insert(source, slot);
    }
    (ctx, retained_slots)
}

/// A scan of a source table by a rule: the source and the conjunction of
/// the filters pushed into it (`None`: the scan reads every row).
/// A rule's scan of a source: its pushed-down filter, and the columns it
/// reads (indices into [`retained_schema`]; `None`: every column).
type Scan = (SourceKind, Option<Expr>, Option<Vec<usize>>);

/// An error in `rule` as a whole (no line).
pub(super) fn rule_error(rule: &Rule, message: impl Into<String>) -> RuleError {
    RuleError {
        path: rule.path.clone(),
        line: None,
        message: message.into(),
    }
}

/// Compile one correlation rule: its checked query ([`checked_statement`]),
/// logical plan and scans ([`rule_plan`]), physical plan and `window_end`
/// column ([`window_end_column`]), the columns naming its events, and how
/// it runs ([`strategy`], [`rescan_plan`]). With the rule, its scans: what
/// it needs retained.
async fn compile_rule(
    rule: Rule,
    settings: &CorrelationSettings,
    state: &SessionState,
    expander: &Expander<'_>,
    json_reads: &mut json_cut::JsonReads,
) -> Result<(CompiledCorrelation, Vec<Scan>), RuleError> {
    debug_assert_eq!(rule.meta.mode, RuleMode::Correlation);
    let statement = checked_statement(&rule, expander)?;
    let query = statement.to_string();
    let (plan, scans, key) = rule_plan(&rule, statement, state).await?;
    json_reads
        .plan(&plan)
        .map_err(|e| rule_error(&rule, format!("finding what the rule reads: {e}")))?;
    key.per_source
        .values()
        .flatten()
        .for_each(|e| json_reads.expr(e));
    let physical = physical_plan_of_optimized(state, &plan)
        .await
        .and_then(faster_filters)
        .map_err(|e| rule_error(&rule, format!("physical planning failed: {e}")))?;
    let schema = physical.schema();
    let window_end = window_end_column(&rule, &schema)?;
    let event_columns: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name().starts_with("__row"))
        .collect();
    let sources: BTreeSet<SourceKind> = scans.iter().map(|(s, _, _)| *s).collect();
    let (strategy, rescan_reason) =
        strategy(&physical, window_end, &sources, settings, state).await;
    let (physical, delta) = match strategy {
        Strategy::Rescan { .. } => rescan_plan(&rule, physical, window_end, settings.delta_rescan)?,
        Strategy::Incremental { .. } => (physical, None),
    };
    let output_schema = physical.schema();
    let read = ReadColumns {
        window_end,
        event_columns,
        key_columns: suppress_key_columns(&rule, &output_schema),
    };
    let (physical, fields, read) = match strategy {
        Strategy::Rescan { .. } => without_alert_fields(physical, read),
        Strategy::Incremental { .. } => (physical, None, read),
    };
    let empty_without_a_source = super::empty_input::empty_if_any_scan_is_empty(&physical);
    let correlation = CompiledCorrelation {
        rule: Arc::new(rule),
        plan: physical,
        output_schema,
        fields,
        window_end: read.window_end,
        event_columns: read.event_columns,
        key_columns: read.key_columns,
        sources,
        empty_without_a_source,
        strategy,
        rescan_reason,
        delta,
        key,
        last_emitted: None,
        rebuild_through: None,
        suppressed: Default::default(),
        folded: Default::default(),
        suppress_holds: Default::default(),
        query,
    };
    Ok((correlation, scans))
}

/// The columns of a rule's output emission reads of every due row.
struct ReadColumns {
    window_end: usize,
    event_columns: Vec<usize>,
    /// The `suppress_key` columns the output has, with their names.
    key_columns: Vec<(usize, String)>,
}

/// The output columns named by the rule's `suppress_key`, in output order
/// (none when it is not suppressed).
fn suppress_key_columns(rule: &Rule, schema: &Schema) -> Vec<(usize, String)> {
    let names = &rule.meta.suppress_key;
    if rule.meta.suppress.is_none() {
        return Vec::new();
    }
    (0..schema.fields().len())
        .filter(|&c| names.contains(schema.field(c).name()))
        .map(|c| (c, schema.field(c).name().clone()))
        .collect()
}

/// A re-scan plan without its top projection where that projection only
/// passes through the columns emission reads (`alert_fields.rs`), with
/// those columns found in what the run then outputs.
fn without_alert_fields(
    plan: Arc<dyn ExecutionPlan>,
    read: ReadColumns,
) -> (
    Arc<dyn ExecutionPlan>,
    Option<Arc<super::alert_fields::AlertFields>>,
    ReadColumns,
) {
    let needed: Vec<usize> = std::iter::once(read.window_end)
        .chain(read.event_columns.iter().copied())
        .chain(read.key_columns.iter().map(|(c, _)| *c))
        .collect();
    let Some(split) = super::alert_fields::split(&plan, &needed) else {
        return (plan, None, read);
    };
    let passed = |c: usize| split.passed[c].expect("split passes the columns read through");
    let read = ReadColumns {
        window_end: passed(read.window_end),
        event_columns: read.event_columns.iter().map(|&c| passed(c)).collect(),
        key_columns: read
            .key_columns
            .into_iter()
            .map(|(c, name)| (passed(c), name))
            .collect(),
    };
    (split.run, Some(Arc::new(split.fields)), read)
}

/// The physical plan of a logical plan the session has optimized already:
/// `SessionState::create_physical_plan` would optimize it once more, which
/// was a sixth of the correlation rules' compile time.
async fn physical_plan_of_optimized(
    state: &SessionState,
    optimized: &LogicalPlan,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    state
        .query_planner()
        .create_physical_plan(optimized, state)
        .await
}

/// Plan the rule's checked query, optimized, and find its scans in it
/// (where the filters have been pushed into them). The rule must read at
/// least one table, only source tables, and among them the source its
/// header declares.
async fn rule_plan(
    rule: &Rule,
    statement: Statement,
    state: &SessionState,
) -> Result<(LogicalPlan, Vec<Scan>, CorrelationKey), RuleError> {
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(statement)))
        .await
        .map_err(|e| {
            let mut m = format!("planning failed: {e}");
            if m.contains("named __row") {
                m.push_str(" (a correlation rule's subqueries must carry the __row column, e.g. SELECT *, ..., so alerts can name their events)");
            }
            rule_error(rule, m)
        })?;
    let optimized = state
        .optimize(&plan)
        .map_err(|e| rule_error(rule, format!("optimizing failed: {e}")))?;
    let scans = table_scans(rule, &optimized)?;
    if scans.is_empty() {
        return Err(rule_error(rule, "the rule reads no table"));
    }
    if !scans.iter().any(|(s, _, _)| *s == rule.meta.source) {
        return Err(rule_error(
            rule,
            format!(
                "the rule declares source {} but does not read it",
                rule.meta.source
            ),
        ));
    }
    let key = match &rule.meta.key {
        Some(text) => super::key::declared(text, state).map_err(|e| rule_error(rule, e.to_string()))?,
        None => super::key::derive(&optimized).map_err(|e| {
            rule_error(
                rule,
                format!("the rule has no correlation key: {e}; declare one with `-- key: <table>: <expression>, ...` (docs/rules.md#correlation-keys)"),
            )
        })?,
    };
    if let Some((uncovered, _, _)) = scans
        .iter()
        .find(|(s, _, _)| !key.per_source.contains_key(s))
    {
        return Err(rule_error(
            rule,
            format!("the rule's correlation key {key} says nothing of {uncovered}, which it reads: a key must name the columns of every table"),
        ));
    }
    Ok((optimized, scans, key))
}

/// The index of the `window_end` output column, which must be a
/// nanosecond timestamp: the event time at which a detection is complete,
/// compared with the watermark (timestamps in other units would compare
/// wrongly with event time).
fn window_end_column(rule: &Rule, schema: &Schema) -> Result<usize, RuleError> {
    let window_end = match schema.index_of("window_end") {
        Ok(i) if matches!(schema.field(i).data_type(), DataType::Timestamp(_, _)) => i,
        Ok(i) => {
            return Err(rule_error(
                rule,
                format!(
                    "window_end must be a timestamp, not {}",
                    schema.field(i).data_type()
                ),
            ))
        }
        Err(_) => return Err(rule_error(rule, "a correlation rule must output a `window_end` timestamp column: the event time at which the detection is complete (see docs/rules.md)")),
    };
    match schema.field(window_end).data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Ok(window_end),
        _ => Err(rule_error(
            rule,
            "window_end must be a nanosecond timestamp (derive it from event_time)",
        )),
    }
}

/// How a rule runs, and why it re-scans when that is worth reporting.
/// Incrementally (`incremental.rs`: partial aggregation per batch, final
/// aggregation per closing window) when `correlation.incremental` is on,
/// the rule reads one table and its aggregation can be split; otherwise
/// by re-scanning the retained events, with a reason when the rule
/// aggregates (a rule without aggregation re-scans by nature: no reason).
async fn strategy(
    physical: &Arc<dyn ExecutionPlan>,
    window_end: usize,
    sources: &BTreeSet<SourceKind>,
    settings: &CorrelationSettings,
    state: &SessionState,
) -> (Strategy, Option<String>) {
    let rescan = || Strategy::Rescan { pending: None };
    let has_aggregate = physical
        .exists(|n| Ok(n.name() == "AggregateExec"))
        .unwrap_or(false);
    if !settings.incremental {
        return (
            rescan(),
            has_aggregate.then(|| "correlation.incremental is false".to_string()),
        );
    }
    match incremental::split(physical, window_end, state).await {
        Ok(split) if sources.len() == 1 => (
            Strategy::Incremental {
                split,
                state: Default::default(),
            },
            None,
        ),
        Ok(_) => (rescan(), Some("the rule reads more than one table".into())),
        Err(reason) => (rescan(), has_aggregate.then(|| reason.to_string())),
    }
}

/// The plan of a re-scan rule. With `correlation.delta_rescan`, and when
/// its plan allows (`delta.rs`), it reads only the windows new events can
/// change: the bounds returned are those of its trigger scans. It reads
/// the same retained batches run after run, so its scans filter each batch
/// once and keep what passed (`rules::slot`); that rewrite comes after the
/// delta one, which traces `window_end` through the plan's projections.
fn rescan_plan(
    rule: &Rule,
    physical: Arc<dyn ExecutionPlan>,
    window_end: usize,
    delta_rescan: bool,
) -> Result<(Arc<dyn ExecutionPlan>, Option<delta::DeltaBounds>), RuleError> {
    let (physical, bounds) = match delta_rescan.then(|| delta::delta_plan(&physical, window_end)) {
        Some(Ok(d)) => (d.plan, Some(d.bounds)),
        Some(Err(why)) => {
            tracing::debug!(rule = %rule.meta.id, why = %why, "re-scan of every retained event (no delta re-scan)");
            (physical, None)
        }
        None => (physical, None),
    };
    // Projections last: the rewrites above read DataFusion's.
    let physical = cache_scan_filters(physical)
        .and_then(without_expression_metrics)
        .map_err(|e| rule_error(rule, format!("planning the re-scan failed: {e}")))?;
    Ok((physical, bounds))
}

/// What the compiled rules need of one source's events.
#[derive(Default)]
struct SourceUsage {
    /// The longest window of a re-scan rule reading the source: how long
    /// its events are retained.
    horizon_ns: i64,
    /// Whether a re-scan rule reads it (else no event is retained).
    keep_raw: bool,
    /// The filter of every scan of it, by every rule (`None`: a scan
    /// without filters).
    filters: Vec<Option<Expr>>,
    /// Those of the re-scan rules' scans.
    rescan_filters: Vec<Option<Expr>>,
    /// The columns some scan reads (`None`: every column).
    columns: Option<BTreeSet<usize>>,
}

impl SourceUsage {
    /// Add a compiled rule's scans to the usage of their sources.
    fn record(
        usage: &mut BTreeMap<SourceKind, SourceUsage>,
        correlation: &CompiledCorrelation,
        scans: Vec<Scan>,
    ) {
        let window_ns = correlation
            .rule
            .meta
            .window
            .expect("correlation rules have a window")
            .as_nanos() as i64;
        let rescan = matches!(correlation.strategy, Strategy::Rescan { .. });
        for (source, filter, projection) in scans {
            let first = !usage.contains_key(&source);
            let entry = usage.entry(source).or_default();
            entry.columns = match (projection, entry.columns.take()) {
                (Some(p), Some(mut all)) => {
                    all.extend(p);
                    Some(all)
                }
                (Some(p), None) if first => Some(p.into_iter().collect()),
                _ => None,
            };
            if rescan {
                entry.horizon_ns = entry.horizon_ns.max(window_ns);
                entry.keep_raw = true;
                entry.rescan_filters.push(filter.clone());
            }
            entry.filters.push(filter);
        }
    }
}

/// What correlation keeps of one source's events: every new event goes
/// through the pre-filter ([`pre_filter`]), and what a re-scan rule can
/// use ([`retention_filter`]) is retained for the longest re-scan window.
async fn retained_source(
    source: SourceKind,
    usage: SourceUsage,
    slot: Arc<BatchSlot>,
    state: &SessionState,
    shared: &Arc<SharedConditions>,
    json_reads: &json_cut::JsonReads,
) -> Result<Retained, RuleError> {
    let SourceUsage {
        horizon_ns,
        keep_raw,
        filters,
        rescan_filters,
        columns,
    } = usage;
    let unread = unread_columns(source, columns, filters.iter().chain(&rescan_filters));
    let retain = retention_filter(source, rescan_filters, filters.len(), state, shared)?;
    let pre_filter = pre_filter(source, filters, state, shared)?;
    let cuts = json_reads
        .cuts(
            &retained_schema(source),
            vigil_sources::registry::expect(source).json_columns,
        )
        .into_iter()
        .filter(|(i, _)| !unread.contains(i))
        .collect();
    Ok(Retained {
        slot,
        batches: Vec::new(),
        uncompacted: 0,
        lineage: Arc::default(),
        keep_raw,
        horizon_ns,
        pre_filter,
        retain,
        unread,
        cuts,
    })
}

/// The nullable columns of `source` no scan of a correlation rule reads
/// and no filter names: nulled in the events correlation takes in, so
/// that neither the pre-filter's copy nor the retained events carry them.
fn unread_columns<'a>(
    source: SourceKind,
    read: Option<BTreeSet<usize>>,
    filters: impl Iterator<Item = &'a Option<Expr>>,
) -> Vec<usize> {
    let Some(mut read) = read else {
        return Vec::new();
    };
    let schema = retained_schema(source);
    for filter in filters.flatten() {
        for column in filter.column_refs() {
            if let Ok(i) = schema.index_of(&column.name) {
                read.insert(i);
            }
        }
    }
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, f)| f.is_nullable() && !read.contains(i))
        .map(|(i, _)| i)
        .collect()
}

/// Of the pre-filtered events, those to retain: the union of the re-scan
/// rules' scan filters, over [`retained_schema`], evaluated rule by rule
/// on the pre-filtered rows no rule before it kept ([`selective_predicate`],
/// its conditions shared with the pre-filter's: `shared`), when that keeps
/// less than the pre-filter does (fewer than all `scans` of the source are
/// a re-scan's, and every re-scan's has a filter). `None`: retain every
/// pre-filtered event.
fn retention_filter(
    source: SourceKind,
    rescan_filters: Vec<Option<Expr>>,
    scans: usize,
    state: &SessionState,
    shared: &Arc<SharedConditions>,
) -> Result<Option<RetentionFilter>, RuleError> {
    if rescan_filters.len() >= scans || !rescan_filters.iter().all(Option::is_some) {
        return Ok(None);
    }
    let Some(predicate) = rescan_filters.into_iter().flatten().reduce(Expr::or) else {
        return Ok(None);
    };
    let schema = retained_schema(source);
    DFSchema::try_from(schema.as_ref().clone())
        .and_then(|s| state.create_physical_expr(predicate, &s))
        .and_then(|p| selective_predicate(p, &schema, shared))
        .map(|predicate| Some(RetentionFilter { predicate }))
        .map_err(|e| RuleError {
            path: format!("<retention filter of {source}>").into(),
            line: None,
            message: format!("building the retention filter failed: {e}"),
        })
}

/// The pre-filter of a source's new events: a row is kept if any scan of
/// any rule could use it (the union of the scans' filters; every row when
/// a scan has none). Evaluated rule by rule, each on the rows no rule
/// before it kept, sharing the values of conditions with the per-event
/// rules (`shared`).
///
/// The scans' filters come from optimized plans, so their union is made
/// a physical expression as it is. Optimized once more, the union's common
/// subexpressions moved into projections computed on every new event,
/// before any rule's filter had narrowed the rows (docs/benchmarks.md,
/// stop 45).
fn pre_filter(
    source: SourceKind,
    filters: Vec<Option<Expr>>,
    state: &SessionState,
    shared: &Arc<SharedConditions>,
) -> Result<PreFilter, RuleError> {
    if !filters.iter().all(Option::is_some) {
        return Ok(PreFilter { predicate: None });
    }
    let predicate = filters
        .into_iter()
        .flatten()
        .reduce(Expr::or)
        .expect("a used source has a scan");
    let schema = source.schema();
    DFSchema::try_from(schema.as_ref().clone())
        .and_then(|s| state.create_physical_expr(predicate, &s))
        .and_then(|p| selective_predicate(p, &schema, shared))
        .map(|predicate| PreFilter {
            predicate: Some(predicate),
        })
        .map_err(|e| RuleError {
            path: format!("<pre-filter of {source}>").into(),
            line: None,
            message: format!("building the pre-filter failed: {e}"),
        })
}

/// The correlator of the compiled rules and their sources' retained
/// events, before any event: no watermark, identity or statistic yet.
fn correlator(
    ctx: SessionContext,
    rules: Vec<CompiledCorrelation>,
    retained: BTreeMap<SourceKind, Retained>,
    settings: CorrelationSettings,
) -> Correlator {
    let watermark = WatermarkTracker::new(
        ms(settings.allowed_lateness_ms),
        ms(settings.idle_timeout_ms),
    );
    Correlator {
        retained,
        rules,
        watermark,
        identities: Default::default(),
        streams: Default::default(),
        last_stream: None,
        identities_gc_at: super::IDENTITIES_GC_MIN,
        next_seq: 0,
        settings,
        task_ctx: ctx.task_ctx(),
        stats: CorrelationStats::default(),
        evaluations: Vec::new(),
        pending_failures: Vec::new(),
        budget: Default::default(),
        holds_suppression: false,
        _ctx: ctx,
    }
}

/// Each table scan of the plan: its source and the conjunction of the
/// filters pushed into it, with columns unqualified.
fn table_scans(rule: &Rule, plan: &LogicalPlan) -> Result<Vec<Scan>, RuleError> {
    let mut out = Vec::new();
    let mut bad = None;
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match vigil_sources::registry::resolve(scan.table_name.table()) {
                Ok(source) => {
                    let filter = scan
                        .filters
                        .iter()
                        .cloned()
                        .map(|f| {
                            f.transform(|e| match e {
                                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
                                    Column::new_unqualified(c.name),
                                ))),
                                other => Ok(Transformed::no(other)),
                            })
                            .map(|t| t.data)
                        })
                        .collect::<datafusion::common::Result<Vec<_>>>();
                    match filter {
                        Ok(f) => out.push((
                            source,
                            f.into_iter().reduce(Expr::and),
                            scan.projection.clone(),
                        )),
                        Err(e) => bad = Some(format!("unqualifying a scan's filters: {e}")),
                    }
                }
                Err(_) => {
                    bad = Some(format!(
                        "the rule reads {:?}, which is not a source table",
                        scan.table_name.table()
                    ))
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| rule_error(rule, format!("finding the scans: {e}")))?;
    match bad {
        Some(m) => Err(rule_error(rule, m)),
        None => Ok(out),
    }
}

/// Parse, check the shape, and add the columns that name triggering events.
fn checked_statement(rule: &Rule, expander: &Expander<'_>) -> Result<Statement, RuleError> {
    let statement = crate::rules::engine::single_query(rule, expander)?;
    with_event_columns(rule, statement)
}

/// The rule's query with one more output column per FROM item, the
/// `__row` of the events of its rows (`array_agg` of them when the query
/// groups): the alert names them. The outer query must be one SELECT
/// whose FROM items are tables or aliased subqueries.
fn with_event_columns(rule: &Rule, mut statement: Statement) -> Result<Statement, RuleError> {
    let Statement::Query(query) = &mut statement else {
        unreachable!("single_query returns a query")
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(rule_error(rule, "a correlation rule's outer query must be a single SELECT (UNIONs may go in subqueries)"));
    };
    if select.from.is_empty() {
        return Err(rule_error(
            rule,
            format!(
                "the rule reads no table: it must select FROM {}",
                rule.meta.source.table_name()
            ),
        ));
    }
    let mut qualifiers = Vec::new();
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            let q = match factor {
                TableFactor::Table { alias: Some(a), .. }
                | TableFactor::Derived { alias: Some(a), .. } => a.name.value.clone(),
                TableFactor::Table {
                    name, alias: None, ..
                } => match name.0.last() {
                    Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
                    _ => return Err(rule_error(rule, "unsupported table name")),
                },
                _ => return Err(rule_error(
                    rule,
                    "each FROM item of a correlation rule must be a table or an aliased subquery",
                )),
            };
            qualifiers.push(q);
        }
    }
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
    };
    for (i, q) in qualifiers.iter().enumerate() {
        let column = if qualifiers.len() == 1 {
            ROW_COLUMN.to_string()
        } else {
            format!("{q}.{ROW_COLUMN}")
        };
        let text = if grouped {
            format!("array_agg({column})")
        } else {
            column
        };
        let expr: SqlExpr = Parser::new(&GenericDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| rule_error(rule, format!("internal: {e}")))?;
        select.projection.push(SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(format!("{ROW_COLUMN}_{i}")),
        });
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every correlation rule of the shipped pack, planned with one pass of
    /// DataFusion's logical optimizer, gets the physical plan three passes
    /// give (aliases of common subexpressions aside; see
    /// `PlanOptions::optimizer_passes`).
    #[tokio::test]
    async fn one_optimizer_pass_plans_the_correlation_rules_as_three_do() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
        let set = crate::rules::RulePack::load_dir(&dir).unwrap().rule_set();
        let plans = |passes: usize| {
            let set = &set;
            async move {
                let options = PlanOptions {
                    optimizer_passes: passes,
                    ..PlanOptions::default()
                };
                let (ctx, _) = retained_session_with(&set.definitions, options);
                let state = ctx.state();
                let is_function =
                    |name: &str| crate::rules::engine::is_known_function(&state, name);
                let expander = Expander::new(&set.definitions, &is_function);
                let mut plans = Vec::new();
                for rule in set
                    .rules
                    .iter()
                    .filter(|r| r.meta.mode == RuleMode::Correlation)
                {
                    let statement = checked_statement(rule, &expander).unwrap();
                    let (plan, _, _) = rule_plan(rule, statement, &state).await.unwrap();
                    let physical = physical_plan_of_optimized(&state, &plan).await.unwrap();
                    plans.push((
                        rule.meta.id.clone(),
                        crate::rules::engine::plan_text(physical.as_ref()),
                    ));
                }
                plans
            }
        };
        let (one, three) = (plans(1).await, plans(3).await);
        assert!(one.len() >= 10, "{} rules", one.len());
        crate::rules::engine::assert_same_plans(&one, &three);
    }

    /// The pre-filters evaluate the shipped correlation rules' scan filters
    /// as the rules' plans have them, rule by rule (`SelectiveOr`), with
    /// nothing computed on every new event before a condition narrows the
    /// rows. Planned as a filter over a scan and optimized once more, the
    /// audit pre-filter computed the response code (`COALESCE(...code,
    /// 200)`, which many rules share) in projections below its filter.
    #[tokio::test]
    async fn the_pre_filters_evaluate_the_scan_filters_rule_by_rule() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
        let set = crate::rules::RulePack::load_dir(&dir).unwrap().rule_set();
        let rules: Vec<Rule> = set
            .rules
            .iter()
            .filter(|r| r.meta.mode == RuleMode::Correlation)
            .cloned()
            .collect();
        let correlator = compile(
            rules,
            CorrelationSettings::default(),
            &Arc::default(),
            &set.definitions,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(correlator.retained.contains_key(&SourceKind::K8sAudit));
        for (source, retained) in &correlator.retained {
            let predicate = retained.pre_filter.predicate.as_ref();
            let shown = predicate.map(|p| p.to_string()).unwrap_or_default();
            assert!(shown.starts_with("selective_or("), "{source}: {shown}");
        }
    }
}
