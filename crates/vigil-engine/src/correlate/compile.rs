//! Compiling correlation rules: plan each query over the retained-event
//! tables, find its `window_end` and event columns, and derive per source
//! the pre-filter of the events worth retaining.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, Ident, ObjectNamePart, SelectItem, SetExpr, Statement,
    TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::watermark::WatermarkTracker;
use super::{
    delta, incremental, ms, CompiledCorrelation, CorrelationSettings, CorrelationStats, Correlator,
    Retained, Strategy,
};
use crate::rules::conjunction::{selective_disjunction, SharedConditions};
use crate::rules::definitions::expand::Expander;
use crate::rules::definitions::Definitions;
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

pub(super) async fn compile(
    rules: Vec<Rule>,
    settings: CorrelationSettings,
    shared: &Arc<SharedConditions>,
    definitions: &Definitions,
) -> Result<Correlator, Vec<RuleError>> {
    let ctx = crate::rules::engine::new_session();
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
    let state = ctx.state();
    let is_function = |name: &str| crate::rules::engine::is_known_function(&state, name);
    let expander = Expander::new(definitions, &is_function);
    let mut compiled = Vec::new();
    let mut errors = Vec::new();
    // source -> (longest window of a re-scan rule reading it, whether one
    // does, per-scan filters of every rule, of the re-scan rules; None = a
    // scan without filters)
    let mut usage: BTreeMap<SourceKind, (i64, bool, Vec<Option<Expr>>, Vec<Option<Expr>>)> =
        BTreeMap::new();
    for rule in rules {
        debug_assert_eq!(rule.meta.mode, RuleMode::Correlation);
        let err = |line: Option<usize>, message: String| RuleError {
            path: rule.path.clone(),
            line,
            message,
        };
        let statement = match checked_statement(&rule, &expander) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let query = statement.to_string();
        let plan = match state
            .statement_to_plan(DFStatement::Statement(Box::new(statement)))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let mut m = format!("planning failed: {e}");
                if m.contains("named __row") {
                    m.push_str(" (a correlation rule's subqueries must carry the __row column, e.g. SELECT *, ..., so alerts can name their events)");
                }
                errors.push(err(None, m));
                continue;
            }
        };
        let optimized = match state.optimize(&plan) {
            Ok(p) => p,
            Err(e) => {
                errors.push(err(None, format!("optimizing failed: {e}")));
                continue;
            }
        };
        let scans = match table_scans(&optimized) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => {
                errors.push(err(None, "the rule reads no table".into()));
                continue;
            }
            Err(m) => {
                errors.push(err(None, m));
                continue;
            }
        };
        if !scans.iter().any(|(s, _)| *s == rule.meta.source) {
            errors.push(err(
                None,
                format!(
                    "the rule declares source {} but does not read it",
                    rule.meta.source
                ),
            ));
            continue;
        }
        let physical = match state.create_physical_plan(&plan).await {
            Ok(p) => p,
            Err(e) => {
                errors.push(err(None, format!("physical planning failed: {e}")));
                continue;
            }
        };
        let schema = physical.schema();
        let window_end = match schema.index_of("window_end") {
            Ok(i) if matches!(schema.field(i).data_type(), DataType::Timestamp(_, _)) => i,
            Ok(i) => {
                errors.push(err(
                    None,
                    format!(
                        "window_end must be a timestamp, not {}",
                        schema.field(i).data_type()
                    ),
                ));
                continue;
            }
            Err(_) => {
                errors.push(err(None, "a correlation rule must output a `window_end` timestamp column: the event time at which the detection is complete (see docs/rules.md)".into()));
                continue;
            }
        };
        // Timestamps in other units would compare wrongly with event time.
        let physical = if matches!(
            schema.field(window_end).data_type(),
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, _)
        ) {
            physical
        } else {
            errors.push(err(
                None,
                "window_end must be a nanosecond timestamp (derive it from event_time)".into(),
            ));
            continue;
        };
        let event_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| schema.field(i).name().starts_with("__row"))
            .collect();
        let window_ns = rule
            .meta
            .window
            .expect("correlation rules have a window")
            .as_nanos() as i64;
        let sources: BTreeSet<SourceKind> = scans.iter().map(|(s, _)| *s).collect();
        let has_aggregate = physical
            .exists(|n| Ok(n.name() == "AggregateExec"))
            .unwrap_or(false);
        let (strategy, rescan_reason) = if !settings.incremental {
            (
                Strategy::Rescan { pending: None },
                has_aggregate.then(|| "correlation.incremental is false".to_string()),
            )
        } else {
            match incremental::split(&physical, window_end, &state).await {
                Ok(split) if sources.len() == 1 => (
                    Strategy::Incremental {
                        split,
                        state: Default::default(),
                    },
                    None,
                ),
                Ok(_) => (
                    Strategy::Rescan { pending: None },
                    Some("the rule reads more than one table".into()),
                ),
                Err(reason) => (
                    Strategy::Rescan { pending: None },
                    has_aggregate.then_some(reason),
                ),
            }
        };
        let rescan = matches!(strategy, Strategy::Rescan { .. });
        // A re-scan reads the same retained batches run after run: its scans
        // filter each batch once (`rules::slot`).
        let physical = match rescan {
            true => match cache_scan_filters(physical) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(err(None, format!("planning the re-scan failed: {e}")));
                    continue;
                }
            },
            false => physical,
        };
        let (physical, delta) = match rescan && settings.delta_rescan {
            true => match delta::delta_plan(&physical, window_end) {
                Ok(d) => (d.plan, Some(d.bounds)),
                Err(why) => {
                    tracing::debug!(rule = %rule.meta.id, why, "re-scan of every retained event (no delta re-scan)");
                    (physical, None)
                }
            },
            false => (physical, None),
        };
        for (source, filter) in scans {
            let entry = usage
                .entry(source)
                .or_insert((0, false, Vec::new(), Vec::new()));
            if rescan {
                entry.0 = entry.0.max(window_ns);
                entry.1 = true;
                entry.3.push(filter.clone());
            }
            entry.2.push(filter);
        }
        compiled.push(CompiledCorrelation {
            rule: Arc::new(rule),
            plan: physical,
            window_end,
            event_columns,
            sources,
            strategy,
            rescan_reason,
            delta,
            last_emitted: None,
            suppressed: Default::default(),
            query,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut retained = BTreeMap::new();
    for (source, (horizon_ns, keep_raw, filters, rescan_filters)) in usage {
        // Retain only what the re-scan rules can use, when that is less
        // than what the pre-filter keeps for every rule.
        let retain =
            if rescan_filters.len() < filters.len() && rescan_filters.iter().all(Option::is_some) {
                match rescan_filters.into_iter().flatten().reduce(Expr::or) {
                    None => None,
                    Some(p) => Some(
                        DFSchema::try_from(retained_schema(source).as_ref().clone())
                            .and_then(|s| state.create_physical_expr(p, &s))
                            .map_err(|e| {
                                vec![RuleError {
                                    path: format!("<retention filter of {source}>").into(),
                                    line: None,
                                    message: format!("building the retention filter failed: {e}"),
                                }]
                            })?,
                    ),
                }
            } else {
                None
            };
        let input = Arc::new(BatchSlot::default());
        let provider = Arc::new(SlotTable::new(source.schema(), input.clone()));
        let ingest = async {
            let mut builder =
                LogicalPlanBuilder::scan(source.table_name(), provider_as_source(provider), None)?;
            // Keep a row if any scan of any rule could use it.
            if filters.iter().all(Option::is_some) {
                let predicate = filters
                    .into_iter()
                    .flatten()
                    .reduce(Expr::or)
                    .expect("a used source has a scan");
                builder = builder.filter(predicate)?;
            }
            let plan = state.optimize(&builder.build()?)?;
            // Evaluated rule by rule, each on the rows no rule before it
            // kept, sharing conditions with the per-event rules.
            selective_disjunction(state.create_physical_plan(&plan).await?, shared)
        }
        .await
        .map_err(|e| {
            vec![RuleError {
                path: format!("<pre-filter of {source}>").into(),
                line: None,
                message: format!("building the pre-filter failed: {e}"),
            }]
        })?;
        retained.insert(
            source,
            Retained {
                slot: retained_slots[&source].clone(),
                batches: Vec::new(),
                keep_raw,
                horizon_ns,
                ingest,
                input,
                retain,
            },
        );
    }
    let watermark = WatermarkTracker::new(
        ms(settings.allowed_lateness_ms),
        ms(settings.idle_timeout_ms),
    );
    let task_ctx = ctx.task_ctx();
    Ok(Correlator {
        retained,
        rules: compiled,
        watermark,
        identities: BTreeMap::new(),
        streams: Default::default(),
        identities_gc_at: super::IDENTITIES_GC_MIN,
        next_seq: 0,
        settings,
        task_ctx,
        stats: CorrelationStats::default(),
        evaluations: Vec::new(),
        pending_failures: Vec::new(),
        budget: Default::default(),
        _ctx: ctx,
    })
}

/// Each table scan of the plan: its source and the conjunction of the
/// filters pushed into it, with columns unqualified.
fn table_scans(plan: &LogicalPlan) -> Result<Vec<(SourceKind, Option<Expr>)>, String> {
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
                        Ok(f) => out.push((source, f.into_iter().reduce(Expr::and))),
                        Err(e) => bad = Some(e.to_string()),
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
    .map_err(|e| e.to_string())?;
    match bad {
        Some(m) => Err(m),
        None => Ok(out),
    }
}

/// Parse, check the shape, and add the columns that name triggering events.
fn checked_statement(rule: &Rule, expander: &Expander<'_>) -> Result<Statement, RuleError> {
    let statement = crate::rules::engine::single_query(rule, expander)?;
    with_event_columns(rule, statement).map_err(|(line, message)| RuleError {
        path: rule.path.clone(),
        line,
        message,
    })
}

fn with_event_columns(
    rule: &Rule,
    mut statement: Statement,
) -> Result<Statement, (Option<usize>, String)> {
    let Statement::Query(query) = &mut statement else {
        unreachable!("single_query returns a query")
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err((None, "a correlation rule's outer query must be a single SELECT (UNIONs may go in subqueries)".into()));
    };
    if select.from.is_empty() {
        return Err((
            None,
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
                    _ => return Err((None, "unsupported table name".into())),
                },
                _ => return Err((
                    None,
                    "each FROM item of a correlation rule must be a table or an aliased subquery"
                        .into(),
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
            .map_err(|e| (None, format!("internal: {e}")))?;
        select.projection.push(SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(format!("{ROW_COLUMN}_{i}")),
        });
    }
    Ok(statement)
}
