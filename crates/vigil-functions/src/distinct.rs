//! `array_agg(DISTINCT x)` and `count(DISTINCT x)` with a groups accumulator.
//!
//! DataFusion 55 aggregates these (for `count`, over any type but integers)
//! with one `Accumulator` per group behind its `GroupsAccumulatorAdapter`:
//! each batch is split by group, each group's slice goes through that
//! group's own hash set and row converter, and every result comes back as
//! `ScalarValue`s. The windowed correlation rules (distinct namespaces,
//! user agents and source addresses per user and window) spent most of
//! their aggregation there. [`DistinctGroups`] keeps the distinct values of
//! every group in one table, encoded once per batch.
//!
//! The functions keep DataFusion's names, signatures, state fields and
//! results; only the accumulator differs, and with it the order of a
//! list's elements: the order they were first seen in, where DataFusion's
//! came in the order of its hash table (fixed, but unrelated to the
//! input's).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::{not_impl_err, Result, ScalarValue};
use datafusion::logical_expr::expr::{
    AggregateFunction, AggregateFunctionParams, WindowFunctionParams,
};
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, Expr, GroupsAccumulator,
    Operator, ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};
use hashbrown::HashTable;

/// What the aggregate makes of a group's distinct values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distinct {
    /// `array_agg(DISTINCT x)`: the values as a list (NULL for a group
    /// without any), NULL counted as a value unless `IGNORE NULLS`.
    List,
    /// `count(DISTINCT x)`: how many non-null values.
    Count,
}

/// `inner` (DataFusion's `array_agg` or `count`), with [`DistinctGroups`]
/// as its groups accumulator for `DISTINCT` over one argument without
/// `ORDER BY`, where `inner` has none. Everything else is `inner`'s.
pub fn with_distinct_groups(inner: Arc<AggregateUDF>, output: Distinct) -> AggregateUDF {
    AggregateUDF::new_from_impl(DistinctGrouped {
        inner: inner.as_ref().clone(),
        output,
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DistinctGrouped {
    inner: AggregateUDF,
    output: Distinct,
}

impl DistinctGrouped {
    /// Whether this wrapper, not `inner`, gives the groups accumulator.
    fn takes(&self, args: &AccumulatorArgs) -> bool {
        args.is_distinct
            && args.order_bys.is_empty()
            && args.exprs.len() == 1
            && !contains_dictionary(args.expr_fields[0].data_type())
            && !self.inner.groups_accumulator_supported(args.clone())
    }

    fn imp(&self) -> &Arc<dyn AggregateUDFImpl> {
        self.inner.inner()
    }
}

impl AggregateUDFImpl for DistinctGrouped {
    fn name(&self) -> &str {
        self.imp().name()
    }
    fn aliases(&self) -> &[String] {
        self.imp().aliases()
    }
    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.imp().schema_name(params)
    }
    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.imp().human_display(params)
    }
    fn window_function_schema_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.imp().window_function_schema_name(params)
    }
    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.imp().display_name(params)
    }
    fn window_function_display_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.imp().window_function_display_name(params)
    }
    fn signature(&self) -> &Signature {
        self.imp().signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.imp().return_type(arg_types)
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.imp().return_field(arg_fields)
    }
    fn is_nullable(&self) -> bool {
        self.imp().is_nullable()
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.imp().accumulator(args)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.imp().state_fields(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.takes(&args) || self.imp().groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if !self.takes(&args) {
            return self.imp().create_groups_accumulator(args);
        }
        let field = &args.expr_fields[0];
        let ignore_nulls = match self.output {
            Distinct::List => args.ignore_nulls && field.is_nullable(),
            Distinct::Count => true,
        };
        Ok(Box::new(DistinctGroups::try_new(
            self.output,
            field.data_type(),
            ignore_nulls,
        )?))
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.imp().create_sliding_accumulator(args)
    }
    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let Some(ordered) = Arc::clone(self.imp()).with_beneficial_ordering(beneficial_ordering)?
        else {
            return Ok(None);
        };
        Ok(Some(Arc::new(DistinctGrouped {
            inner: AggregateUDF::new_from_shared_impl(ordered),
            output: self.output,
        })))
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.imp().order_sensitivity()
    }
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.imp().simplify()
    }
    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.imp()
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        self.imp().reverse_expr()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }
    fn is_descending(&self) -> Option<bool> {
        self.imp().is_descending()
    }
    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.imp().value_from_stats(statistics_args)
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.imp().default_value(data_type)
    }
    fn supports_null_handling_clause(&self) -> bool {
        self.imp().supports_null_handling_clause()
    }
    fn supports_within_group_clause(&self) -> bool {
        self.imp().supports_within_group_clause()
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.imp().set_monotonicity(data_type)
    }
}

/// Whether the row format would give back another type than `t` (it
/// decodes dictionaries to their values).
fn contains_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(..) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            contains_dictionary(f.data_type())
        }
        DataType::Map(f, _) => contains_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| contains_dictionary(f.data_type())),
        _ => false,
    }
}

/// The distinct values of every group, in one table.
///
/// Invariants: entry `e` is value `values.row(e)` of group `groups[e]`;
/// `members[g]` lists group `g`'s entries in the order they were first
/// seen; `table` holds each entry once, by the hash of its group and value,
/// so no group has the same value twice.
pub struct DistinctGroups {
    output: Distinct,
    item: FieldRef,
    ignore_nulls: bool,
    converter: RowConverter,
    values: Rows,
    groups: Vec<u32>,
    members: Vec<Vec<u32>>,
    table: HashTable<(u64, u32)>,
    /// Seeded at random: the values come from events, which could be
    /// crafted to collide under a known seed.
    hasher: foldhash::fast::RandomState,
    /// The rows of the batch being added (reused).
    batch_rows: Rows,
}

impl DistinctGroups {
    pub fn try_new(output: Distinct, data_type: &DataType, ignore_nulls: bool) -> Result<Self> {
        let converter = RowConverter::new(vec![SortField::new(data_type.clone())])?;
        Ok(DistinctGroups {
            output,
            item: Arc::new(Field::new_list_field(data_type.clone(), true)),
            ignore_nulls,
            values: converter.empty_rows(0, 0),
            batch_rows: converter.empty_rows(0, 0),
            converter,
            groups: Vec::new(),
            members: Vec::new(),
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        })
    }

    fn hash(&self, group: u32, value: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.hasher.build_hasher();
        h.write_u32(group);
        h.write(value);
        h.finish()
    }

    /// Add `array[i]` to group `group_of(i)` for every `i` of `rows`.
    fn add(
        &mut self,
        array: &ArrayRef,
        rows: impl Iterator<Item = usize>,
        group_of: impl Fn(usize) -> usize,
    ) -> Result<()> {
        // Taken out while its rows are added (no allocation: it is empty).
        let mut batch = std::mem::replace(&mut self.batch_rows, self.converter.empty_rows(0, 0));
        batch.clear();
        self.converter
            .append(&mut batch, std::slice::from_ref(array))?;
        let skip_nulls = self.ignore_nulls;
        let added = rows
            .filter(|&i| !(skip_nulls && array.is_null(i)))
            // Within `u32` (checked by the callers against the group count).
            .try_for_each(|i| self.insert(group_of(i) as u32, batch.row(i)));
        self.batch_rows = batch;
        added
    }

    /// Add `value` to `group` unless the group has it.
    fn insert(&mut self, group: u32, value: Row<'_>) -> Result<()> {
        let hash = self.hash(group, value.as_ref());
        let (groups, values) = (&self.groups, &self.values);
        let known = self.table.find(hash, |&(h, e)| {
            h == hash && groups[e as usize] == group && values.row(e as usize) == value
        });
        if known.is_none() {
            let entry = entry_number(self.groups.len())?;
            self.values.push(value);
            self.groups.push(group);
            self.members[group as usize].push(entry);
            self.table.insert_unique(hash, (hash, entry), |&(h, _)| h);
        }
        Ok(())
    }

    /// The groups `emit_to` names, removed: their lists of values (NULL for
    /// an empty group when `null_when_empty`), or their counts.
    fn take(&mut self, emit_to: EmitTo, as_list: bool, null_when_empty: bool) -> Result<ArrayRef> {
        let emitted = emit_to.take_needed(&mut self.members);
        let out: ArrayRef = if as_list {
            let rows = emitted
                .iter()
                .flatten()
                .map(|&e| self.values.row(e as usize));
            let values = self.converter.convert_rows(rows)?.remove(0);
            let offsets = OffsetBuffer::from_lengths(emitted.iter().map(Vec::len));
            let nulls = null_when_empty
                .then(|| NullBuffer::from_iter(emitted.iter().map(|m| !m.is_empty())));
            Arc::new(ListArray::try_new(
                Arc::clone(&self.item),
                offsets,
                values,
                nulls,
            )?)
        } else {
            Arc::new(Int64Array::from_iter_values(
                emitted.iter().map(|m| m.len() as i64),
            ))
        };
        match emit_to {
            EmitTo::All => self.clear(),
            EmitTo::First(_) => self.renumber_after()?,
        }
        Ok(out)
    }

    fn clear(&mut self) {
        self.values.clear();
        self.groups.clear();
        self.members.clear();
        self.table.clear();
    }

    /// After the first groups were emitted (and taken out of `members`):
    /// the others' entries again, their groups numbered from 0.
    fn renumber_after(&mut self) -> Result<()> {
        let kept = std::mem::take(&mut self.members);
        let old = std::mem::replace(&mut self.values, self.converter.empty_rows(0, 0));
        self.clear();
        self.members = vec![Vec::new(); kept.len()];
        for (g, entries) in kept.iter().enumerate() {
            for &e in entries {
                self.insert(g as u32, old.row(e as usize))?;
            }
        }
        Ok(())
    }
}

/// `n` as the number of an entry or a group: an error, not a wrapped
/// number, past `u32`.
fn entry_number(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        datafusion::common::DataFusionError::ResourcesExhausted(format!(
            "DISTINCT aggregate: more than {} groups or distinct values",
            u32::MAX
        ))
    })
}

impl GroupsAccumulator for DistinctGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        entry_number(total_num_groups)?;
        self.members.resize_with(total_num_groups, Vec::new);
        let rows = (0..group_indices.len())
            .filter(|&i| opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i)));
        self.add(&values[0], rows, |i| group_indices[i])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        match self.output {
            Distinct::List => self.take(emit_to, true, true),
            Distinct::Count => self.take(emit_to, false, false),
        }
    }

    /// The state is the list of distinct values: NULL for an empty group
    /// of `array_agg`, as DataFusion's; an empty list for `count`, whose
    /// state field is not nullable.
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let null_when_empty = self.output == Distinct::List;
        Ok(vec![self.take(emit_to, true, null_when_empty)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        entry_number(total_num_groups)?;
        self.members.resize_with(total_num_groups, Vec::new);
        let lists = values[0].as_list::<i32>();
        let offsets = lists.value_offsets();
        let (start, end) = (offsets[0] as usize, offsets[lists.len()] as usize);
        let items = lists.values().slice(start, end - start);
        // Element `j` of `items` belongs to list `owner[j]`.
        let mut owner = Vec::with_capacity(items.len());
        for (list, w) in offsets.windows(2).enumerate() {
            if lists.is_valid(list) {
                owner.extend(std::iter::repeat_n(Some(list), (w[1] - w[0]) as usize));
            } else {
                owner.extend(std::iter::repeat_n(None, (w[1] - w[0]) as usize));
            }
        }
        let rows = (0..items.len()).filter(|&j| owner[j].is_some());
        let group_of = |j: usize| group_indices[owner[j].expect("filtered")];
        self.add(&items, rows, group_of)
    }

    fn convert_to_state(
        &self,
        _values: &[ArrayRef],
        _opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        not_impl_err!("DISTINCT aggregates keep their state per group")
    }

    fn size(&self) -> usize {
        self.values.size()
            + self.batch_rows.size()
            + self.groups.capacity() * size_of::<u32>()
            // Each entry is in one group's members too.
            + self.groups.capacity() * size_of::<u32>()
            + self.members.capacity() * size_of::<Vec<u32>>()
            + self.table.capacity() * size_of::<(u64, u32)>()
            + self.converter.size()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    use super::*;

    type Row = (i64, Option<String>, Option<String>);

    /// `(group, v, w)` rows, values drawn from few strings and NULL, in
    /// batches.
    fn batches() -> impl Strategy<Value = Vec<Vec<Row>>> {
        let value = || {
            prop_oneof![
                1 => Just(None),
                6 => "[a-d]{0,2}".prop_map(Some),
            ]
        };
        let row = (0i64..5, value(), value());
        prop::collection::vec(prop::collection::vec(row, 0..30), 1..5)
    }

    fn record_batch(rows: &[Row]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
            Field::new("w", DataType::Utf8, true),
        ]));
        let g = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
        let v = StringArray::from_iter(rows.iter().map(|r| r.1.clone()));
        let w = StringArray::from_iter(rows.iter().map(|r| r.2.clone()));
        RecordBatch::try_new(schema, vec![Arc::new(g), Arc::new(v), Arc::new(w)]).unwrap()
    }

    /// Each group's result as text, list elements sorted (DataFusion's
    /// come in its hash table's order).
    async fn results(
        input: &[Vec<Row>],
        ours: bool,
        partitions: usize,
    ) -> BTreeMap<i64, Vec<String>> {
        let config = SessionConfig::new().with_target_partitions(partitions);
        let mut ctx = SessionContext::new_with_config(config);
        if ours {
            crate::register(&mut ctx).unwrap();
        }
        let batches: Vec<RecordBatch> = input.iter().map(|b| record_batch(b)).collect();
        let parts: Vec<Vec<RecordBatch>> = (0..partitions)
            .map(|p| {
                batches
                    .iter()
                    .skip(p)
                    .step_by(partitions)
                    .cloned()
                    .collect()
            })
            .collect();
        let table = MemTable::try_new(batches[0].schema(), parts).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        // Two columns with DISTINCT: DataFusion does not rewrite the query
        // into a grouping by the distinct column, so the accumulators run.
        let sql = "SELECT g, array_agg(DISTINCT v), count(DISTINCT w), \
                   array_agg(DISTINCT w) IGNORE NULLS, count(DISTINCT v), count(*) \
                   FROM t GROUP BY g";
        let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut by_group = BTreeMap::new();
        for b in &out {
            for r in 0..b.num_rows() {
                let g = b
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .value(r);
                let cells = (1..b.num_columns()).map(|c| cell(b.column(c), r)).collect();
                by_group.insert(g, cells);
            }
        }
        by_group
    }

    fn cell(column: &ArrayRef, row: usize) -> String {
        let Some(lists) = column.as_list_opt::<i32>() else {
            return array_value_to_string(column, row).unwrap();
        };
        if lists.is_null(row) {
            return "NULL".into();
        }
        let items = lists.value(row);
        let mut texts: Vec<String> = (0..items.len())
            .map(|i| match items.is_null(i) {
                true => "NULL".into(),
                false => array_value_to_string(&items, i).unwrap(),
            })
            .collect();
        texts.sort();
        texts.join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The same distinct values per group as DataFusion's own
        /// accumulators, aggregated in one step (one partition) and in two
        /// (partial states merged, four partitions).
        #[test]
        fn gives_the_values_datafusion_gives(input in batches()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            for partitions in [1, 4] {
                let (theirs, ours) = rt.block_on(async {
                    (results(&input, false, partitions).await, results(&input, true, partitions).await)
                });
                prop_assert_eq!(&theirs, &ours, "{} partition(s)", partitions);
            }
        }
    }

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn list_texts(array: &ArrayRef) -> Vec<String> {
        let lists = array.as_list::<i32>();
        (0..lists.len())
            .map(|r| match lists.is_null(r) {
                true => "NULL".into(),
                false => {
                    let items = lists.value(r);
                    let texts: Vec<String> = (0..items.len())
                        .map(|i| array_value_to_string(&items, i).unwrap())
                        .collect();
                    texts.join(",")
                }
            })
            .collect()
    }

    /// Elements come in the order first seen; emitting the first groups
    /// leaves the others, renumbered, with their values.
    #[test]
    fn lists_keep_first_seen_order_and_the_groups_left_after_emitting_some() {
        let mut acc = DistinctGroups::try_new(Distinct::List, &DataType::Utf8, false).unwrap();
        let values = strings(&[Some("b"), Some("a"), Some("b"), Some("c"), None, Some("a")]);
        acc.update_batch(&[values], &[0, 0, 1, 1, 2, 0], None, 4)
            .unwrap();
        let first = acc.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(list_texts(&first), ["b,a"]);
        let more = strings(&[Some("c"), Some("d")]);
        acc.update_batch(&[more], &[0, 2], None, 3).unwrap();
        let rest = acc.evaluate(EmitTo::All).unwrap();
        let lists = rest.as_list::<i32>();
        assert_eq!(lists.len(), 3);
        assert_eq!(list_texts(&rest)[0], "b,c");
        assert_eq!(
            lists.value(1).len(),
            1,
            "NULL is a value of array_agg(DISTINCT)"
        );
        assert_eq!(
            list_texts(&rest)[2],
            "d",
            "a group with no value gets the new one"
        );
        assert!(acc.evaluate(EmitTo::All).unwrap().is_empty());
    }

    /// `count(DISTINCT)`: NULL is not counted, a group without values
    /// counts 0, and its state is an empty list, not NULL.
    #[test]
    fn counts_leave_out_null_and_empty_groups_count_zero() {
        let mut acc = DistinctGroups::try_new(Distinct::Count, &DataType::Utf8, true).unwrap();
        let values = strings(&[Some("x"), None, Some("x"), Some("y")]);
        let filter = BooleanArray::from(vec![true, true, true, false]);
        acc.update_batch(&[values], &[0, 1, 0, 0], Some(&filter), 2)
            .unwrap();
        let state = acc.state(EmitTo::All).unwrap();
        assert_eq!(state[0].null_count(), 0);
        assert_eq!(list_texts(&state[0]), ["x", ""]);
        let mut merged = DistinctGroups::try_new(Distinct::Count, &DataType::Utf8, true).unwrap();
        merged.merge_batch(&state, &[1, 0], 2).unwrap();
        merged.merge_batch(&state, &[1, 1], 2).unwrap();
        let counts = merged.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            counts
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values(),
            &[0, 1]
        );
    }
}
