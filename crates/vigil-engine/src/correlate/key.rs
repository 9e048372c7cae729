//! The correlation key of a rule: per source table it reads, the
//! expressions over that table's columns that every group of correlated
//! events shares. Events with different keys never meet in one output row,
//! so correlation can be split by key across instances (issue 19).
//!
//! Derived from the optimized logical plan, in this order:
//! 1. a join with equality keys: those keys, traced to each side's table
//!    (a sequence joins a table with itself: both sides must trace to the
//!    same expressions; a cross-source join gives each table its side);
//! 2. else a window function: its `PARTITION BY`;
//! 3. else an aggregation: its `GROUP BY` keys other than the window
//!    (`window_end`, or anything computed from `event_time`).
//!
//! A key is traced through projections, aliases, filters and the other
//! nodes that pass columns through, down to the table scan. A key that
//! cannot be traced (an unnested list, an aggregate's result) is left out:
//! the keys that remain are coarser, and still correct. With none left,
//! the rule has no key.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::schema::SourceSchema;
use crate::source::SourceKind;

/// Per source table, the key expressions over its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationKey {
    pub per_source: BTreeMap<SourceKind, Vec<Expr>>,
}

impl fmt::Display for CorrelationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables: Vec<String> = self
            .per_source
            .iter()
            .map(|(source, exprs)| {
                let exprs: Vec<String> = exprs.iter().map(sql).collect();
                format!("{source}: {}", exprs.join(", "))
            })
            .collect();
        f.write_str(&tables.join("; "))
    }
}

/// An expression as a rule would write it (`user_info.username`,
/// `coalesce(source_ips[1], '')`), else as DataFusion displays it.
fn sql(expr: &Expr) -> String {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::expr::Case;
    match expr {
        Expr::Column(c) => c.name.clone(),
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => format!("'{}'", s.replace('\'', "''")),
        Expr::Literal(value, _) => value.to_string(),
        Expr::ScalarFunction(f) => {
            let args: Vec<String> = f.args.iter().map(sql).collect();
            match (f.name(), args.split_first()) {
                ("get_field", Some((base, fields))) => {
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|f| f.trim_matches('\'').to_string())
                        .collect();
                    format!("{base}.{}", fields.join("."))
                }
                ("array_element", Some((base, [index]))) => format!("{base}[{index}]"),
                (name, _) => format!("{name}({})", args.join(", ")),
            }
        }
        // The optimizer writes coalesce(x, y) as this CASE.
        Expr::Case(Case {
            expr: None,
            when_then_expr,
            else_expr: Some(otherwise),
        }) if when_then_expr.len() == 1
            && matches!(&*when_then_expr[0].0, Expr::IsNotNull(x) if **x == *when_then_expr[0].1) =>
        {
            format!(
                "coalesce({}, {})",
                sql(&when_then_expr[0].1),
                sql(otherwise)
            )
        }
        other => other.human_display().to_string(),
    }
}

/// Why a rule has no derivable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("it has no join equality, window partition or grouping to take a key from")]
    Nothing,
    #[error("its key {0} cannot be traced to a table column ({1})")]
    Untraceable(String, String),
    #[error("the two sides of its join on {table} take different keys: {left} and {right}")]
    SidesDiffer {
        table: SourceKind,
        left: String,
        right: String,
    },
    #[error("its window functions partition differently")]
    Partitions,
    #[error("this node combines rows of different keys: {0}")]
    Combined(String),
    #[error("invalid -- key: {0}")]
    Declared(String),
}

/// Derive the key of a correlation rule from its optimized plan, and
/// check that every node that combines rows (join, window, aggregation)
/// combines only rows that share it.
pub fn derive(plan: &LogicalPlan) -> Result<CorrelationKey, KeyError> {
    let key = if let Some(key) = find(plan, &join_key)? {
        key
    } else if let Some(key) = find(plan, &window_key)? {
        key
    } else if let Some(key) = find(plan, &group_key)? {
        key
    } else {
        return Err(KeyError::Nothing);
    };
    check_combiners(plan, &key)?;
    Ok(key)
}

/// Every join, window and aggregation of `plan` keeps rows of different
/// keys apart: on some table of the key, the node's own keys include all
/// of the key's expressions (through a join below it, equal on one table
/// means equal on the other).
fn check_combiners(plan: &LogicalPlan, key: &CorrelationKey) -> Result<(), KeyError> {
    if let Some(node_keys) = combined_on(plan) {
        let kept_apart = key.per_source.iter().any(|(source, exprs)| {
            node_keys
                .get(source)
                .is_some_and(|own| exprs.iter().all(|e| own.contains(e)))
        });
        if !kept_apart {
            return Err(KeyError::Combined(plan.display().to_string()));
        }
    }
    plan.inputs()
        .into_iter()
        .try_for_each(|input| check_combiners(input, key))
}

/// The traceable keys a combining node keeps rows apart by, per table
/// (`None` for a node that combines no rows).
fn combined_on(plan: &LogicalPlan) -> Option<BTreeMap<SourceKind, Vec<Expr>>> {
    let mut keys: BTreeMap<SourceKind, Vec<Expr>> = BTreeMap::new();
    let mut add = |input: &LogicalPlan, expr: &Expr| {
        if let Ok((source, traced)) = trace(input, expr) {
            if !reads_event_time(&traced) {
                keys.entry(source).or_default().push(traced);
            }
        }
    };
    match plan {
        LogicalPlan::Join(join) => {
            for (left, right) in &join.on {
                add(&join.left, left);
                add(&join.right, right);
            }
        }
        LogicalPlan::Window(window) => {
            for e in &window.window_expr {
                if let Expr::WindowFunction(w) = e.clone().unalias() {
                    w.params
                        .partition_by
                        .iter()
                        .for_each(|p| add(&window.input, p));
                }
            }
        }
        LogicalPlan::Aggregate(aggregate) => {
            aggregate
                .group_expr
                .iter()
                .for_each(|g| add(&aggregate.input, g));
        }
        _ => return None,
    }
    Some(keys)
}

type KeyOf = dyn Fn(&LogicalPlan) -> Option<Result<CorrelationKey, KeyError>>;

/// The first node, top down, that `key_of` takes a key from.
fn find(plan: &LogicalPlan, key_of: &KeyOf) -> Result<Option<CorrelationKey>, KeyError> {
    if let Some(key) = key_of(plan) {
        return key.map(Some);
    }
    for input in plan.inputs() {
        if let Some(key) = find(input, key_of)? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

fn join_key(plan: &LogicalPlan) -> Option<Result<CorrelationKey, KeyError>> {
    let LogicalPlan::Join(join) = plan else {
        return None;
    };
    if join.on.is_empty() {
        return None;
    }
    let mut key = CorrelationKey {
        per_source: BTreeMap::new(),
    };
    let mut last_error = None;
    for (left, right) in &join.on {
        let pair = trace(&join.left, left)
            .map_err(|e| untraceable(left, e))
            .and_then(|l| {
                Ok((
                    l,
                    trace(&join.right, right).map_err(|e| untraceable(right, e))?,
                ))
            });
        match pair {
            // A table joined with itself: usable only if both sides take
            // the same key (else one event's key differs by side).
            Ok(((ls, le), (rs, re))) if ls == rs && le != re => {
                last_error = Some(KeyError::SidesDiffer {
                    table: ls,
                    left: sql(&le),
                    right: sql(&re),
                });
            }
            Ok(((ls, le), (rs, re))) => {
                key.per_source.entry(ls).or_default().push(le);
                if rs != ls {
                    key.per_source.entry(rs).or_default().push(re);
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    Some(if key.per_source.is_empty() {
        Err(last_error.unwrap_or(KeyError::Nothing))
    } else {
        Ok(key)
    })
}

fn window_key(plan: &LogicalPlan) -> Option<Result<CorrelationKey, KeyError>> {
    let LogicalPlan::Window(window) = plan else {
        return None;
    };
    let mut partitions = window
        .window_expr
        .iter()
        .map(|e| match e.clone().unalias() {
            Expr::WindowFunction(w) => w.params.partition_by.clone(),
            _ => Vec::new(),
        });
    let first = partitions.next().unwrap_or_default();
    if partitions.any(|p| p != first) {
        return Some(Err(KeyError::Partitions));
    }
    if first.is_empty() {
        return None;
    }
    Some(keyed(&window.input, &first))
}

fn group_key(plan: &LogicalPlan) -> Option<Result<CorrelationKey, KeyError>> {
    let LogicalPlan::Aggregate(aggregate) = plan else {
        return None;
    };
    let keys: Vec<Expr> = aggregate
        .group_expr
        .iter()
        .enumerate()
        .filter(|(i, _)| aggregate.schema.field(*i).name() != "window_end")
        .filter(|(_, e)| !matches!(trace(&aggregate.input, e), Ok((_, t)) if reads_event_time(&t)))
        .map(|(_, e)| e.clone())
        .collect();
    if keys.is_empty() {
        return None;
    }
    Some(keyed(&aggregate.input, &keys))
}

/// The keys among `exprs` (over `input`'s output) that trace to a table
/// column. A subset of the keys is a coarser key, still correct: rows
/// equal on every key are equal on the subset.
fn keyed(input: &LogicalPlan, exprs: &[Expr]) -> Result<CorrelationKey, KeyError> {
    let mut per_source: BTreeMap<SourceKind, Vec<Expr>> = BTreeMap::new();
    let mut last_error = None;
    for expr in exprs {
        match trace(input, expr) {
            Ok((source, traced)) => per_source.entry(source).or_default().push(traced),
            Err(e) => last_error = Some(untraceable(expr, e)),
        }
    }
    if per_source.len() > 1 {
        return Err(KeyError::Untraceable(
            exprs
                .iter()
                .map(|e| e.human_display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            "it spans several tables".into(),
        ));
    }
    if per_source.is_empty() {
        return Err(last_error.unwrap_or(KeyError::Nothing));
    }
    Ok(CorrelationKey { per_source })
}

fn untraceable(expr: &Expr, e: DataFusionError) -> KeyError {
    KeyError::Untraceable(sql(expr), e.message().to_string())
}

fn reads_event_time(expr: &Expr) -> bool {
    expr.column_refs().iter().any(|c| c.name == "event_time")
}

/// `expr` over `plan`'s output, rewritten over the columns of the one
/// table it comes from (unqualified), with that table's source.
fn trace(plan: &LogicalPlan, expr: &Expr) -> datafusion::error::Result<(SourceKind, Expr)> {
    let mut source = None;
    let traced = expr
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => {
                let (s, base) = trace_column(plan, &c)?;
                if source.is_some_and(|known| known != s) {
                    return Err(DataFusionError::Plan(format!(
                        "{c} comes from another table than the rest"
                    )));
                }
                source = Some(s);
                Ok(Transformed::yes(base))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data
        .unalias_nested()
        .data;
    let source = source.ok_or_else(|| DataFusionError::Plan("it reads no column".into()))?;
    Ok((source, traced))
}

/// One column of `plan`'s output, as an expression over a table's columns.
fn trace_column(
    plan: &LogicalPlan,
    column: &Column,
) -> datafusion::error::Result<(SourceKind, Expr)> {
    let index = plan.schema().index_of_column(column)?;
    match plan {
        LogicalPlan::TableScan(scan) => {
            let source = vigil_sources::registry::resolve(scan.table_name.table())
                .map_err(|e| DataFusionError::Plan(e.to_string()))?;
            let name = scan.projected_schema.field(index).name();
            Ok((source, Expr::Column(Column::new_unqualified(name))))
        }
        LogicalPlan::Projection(projection) => trace(&projection.input, &projection.expr[index]),
        LogicalPlan::Aggregate(aggregate) if index < aggregate.group_expr.len() => {
            trace(&aggregate.input, &aggregate.group_expr[index])
        }
        LogicalPlan::Window(window) if index < window.input.schema().fields().len() => {
            pass_through(&window.input, index)
        }
        LogicalPlan::Unnest(unnest) => {
            let from = unnest.dependency_indices[index];
            if unnest.list_type_columns.iter().any(|(i, _)| *i == from)
                || unnest.struct_type_columns.contains(&from)
            {
                return Err(DataFusionError::Plan(format!("{column} is unnested")));
            }
            pass_through(&unnest.input, from)
        }
        LogicalPlan::Join(join) => {
            let left = join.left.schema().fields().len();
            if index < left {
                pass_through(&join.left, index)
            } else {
                pass_through(&join.right, index - left)
            }
        }
        LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(_) => pass_through(plan.inputs()[0], index),
        other => Err(DataFusionError::Plan(format!(
            "{column} is computed by a {} node",
            other.display()
        ))),
    }
}

/// Column `index` of `input`'s output, traced.
fn pass_through(
    input: &LogicalPlan,
    index: usize,
) -> datafusion::error::Result<(SourceKind, Expr)> {
    let schema: &DFSchemaRef = input.schema();
    let (qualifier, field) = schema.qualified_field(index);
    trace_column(input, &Column::new(qualifier.cloned(), field.name()))
}

/// A key declared in a rule's header (`-- key:`): `<table>: <expr>, ...`,
/// tables separated by `;`, each expression SQL over that table's columns.
pub fn declared(text: &str, state: &SessionState) -> Result<CorrelationKey, KeyError> {
    let mut per_source = BTreeMap::new();
    for part in text.split(';').filter(|p| !p.trim().is_empty()) {
        let (table, exprs) = part.split_once(':').ok_or_else(|| {
            KeyError::Declared(format!("{part:?} is not <table>: <expression>, ..."))
        })?;
        let source = vigil_sources::registry::resolve(table.trim())
            .map_err(|e| KeyError::Declared(e.to_string()))?;
        let schema = DFSchema::try_from(source.schema().as_ref().clone())
            .map_err(|e| KeyError::Declared(e.to_string()))?;
        let exprs = top_level_split(exprs)
            .into_iter()
            .map(|sql| {
                state
                    .create_logical_expr(sql.trim(), &schema)
                    .map_err(|e| KeyError::Declared(format!("{}: {}", sql.trim(), e.message())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if exprs.is_empty() {
            return Err(KeyError::Declared(format!("no expression for {source}")));
        }
        per_source.insert(source, exprs);
    }
    if per_source.is_empty() {
        return Err(KeyError::Declared("no table".into()));
    }
    Ok(CorrelationKey { per_source })
}

/// `text` split at the commas outside parentheses, brackets and quotes.
fn top_level_split(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

impl CorrelationKey {
    /// The encoder of `source`'s rows, if the key covers that table.
    pub fn encoder(&self, source: SourceKind) -> datafusion::error::Result<Option<KeyEncoder>> {
        let Some(exprs) = self.per_source.get(&source) else {
            return Ok(None);
        };
        let schema = DFSchema::try_from(source.schema().as_ref().clone())?;
        let props = datafusion::execution::context::ExecutionProps::new();
        let exprs = exprs
            .iter()
            .map(|e| {
                datafusion::physical_expr::create_physical_expr(
                    e,
                    &schema,
                    &props,
                    &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
                )
            })
            .collect::<datafusion::error::Result<_>>()?;
        Ok(Some(KeyEncoder { exprs }))
    }
}

/// Each row's key as bytes: what a repartitioned row will carry as its
/// Kafka record key, so that the broker's partitioner (murmur2, as every
/// Kafka client's) puts equal keys in one partition. Each key value is
/// written as text (so equal values of different types, a pod name in the
/// audit table and in Tetragon's, give equal bytes): a 0 byte for null,
/// else 1, its length (u32, little-endian) and its UTF-8.
#[derive(Debug)]
pub struct KeyEncoder {
    exprs: Vec<std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
}

impl KeyEncoder {
    /// The key bytes of every row of `batch` (a batch of the encoder's
    /// source table).
    pub fn encode(
        &self,
        batch: &datafusion::arrow::record_batch::RecordBatch,
    ) -> datafusion::error::Result<Vec<Vec<u8>>> {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::datatypes::DataType;
        let columns = self
            .exprs
            .iter()
            .map(|e| {
                let values = e.evaluate(batch)?.into_array(batch.num_rows())?;
                Ok(datafusion::arrow::compute::cast(&values, &DataType::Utf8)?)
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut keys = vec![Vec::new(); batch.num_rows()];
        for column in &columns {
            let text = column.as_string::<i32>();
            for (row, key) in keys.iter_mut().enumerate() {
                if text.is_null(row) {
                    key.push(0);
                } else {
                    let value = text.value(row).as_bytes();
                    key.push(1);
                    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    key.extend_from_slice(value);
                }
            }
        }
        Ok(keys)
    }
}
