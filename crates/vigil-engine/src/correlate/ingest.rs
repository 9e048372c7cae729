//! Ingest: a decoded batch into correlation state, in steps (observe
//! event times, pre-filter, split off late events, number the events,
//! retain raw rows for re-scan rules, fold into incremental state).

use datafusion::arrow::array::BooleanBufferBuilder;
use datafusion::arrow::compute::{prep_null_mask_filter, FilterBuilder};
use datafusion::arrow::error::ArrowError;

use super::emit::EvalBudget;
use super::*;

impl Correlator {
    /// Take in a decoded batch: track event time, retain the rows rules can
    /// use, and return the events that arrived late (not retained).
    pub async fn ingest(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        now_ns: i64,
    ) -> Result<Vec<LateEvent>, CorrelationError> {
        self.ingest_from(decoded, messages, None, now_ns).await
    }

    /// [`Correlator::ingest`] of events forwarded through the repartition
    /// topic: `messages` are the repartition records (their origins are
    /// where a restart re-reads), `upstream[i]` is where message `i`'s
    /// event was first consumed: its partition's event time and the
    /// alerts' origins are that one's.
    pub async fn ingest_forwarded(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        upstream: &[Origin],
        now_ns: i64,
    ) -> Result<Vec<LateEvent>, CorrelationError> {
        debug_assert_eq!(messages.len(), upstream.len());
        self.ingest_from(decoded, messages, Some(upstream), now_ns)
            .await
    }

    /// A watermark mark of an upstream partition (see
    /// `vigil_model::forward::Forward::Mark`): it has delivered every event
    /// before `event_time_ns`.
    pub fn observe_mark(&mut self, partition: &str, event_time_ns: i64, now_ns: i64) {
        if event_time_ns == i64::MIN {
            // Announced, not read yet: holds the watermark back until it
            // delivers or goes idle, without renewing it.
            self.watermark.register(partition, now_ns);
        } else {
            self.watermark.observe(partition, event_time_ns, now_ns);
        }
    }

    async fn ingest_from(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        upstream: Option<&[Origin]>,
        now_ns: i64,
    ) -> Result<Vec<LateEvent>, CorrelationError> {
        if !self.retained.contains_key(&decoded.source) || decoded.batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let is_late = self.observe_event_times(decoded, messages, upstream, now_ns);
        let (input, kept) = self.pre_filter(decoded)?;
        let (late, on_time) = self.split_late(input, kept, &is_late, decoded)?;
        self.stats.late_events += late.len() as u64;
        let Some(on_time) = on_time else {
            return Ok(late);
        };
        let (new_events, new_offsets) =
            self.number_events(&on_time, decoded, messages, upstream)?;
        self.retain_raw(&new_events, &on_time.kept, decoded.source)?;
        let kept_rows = on_time.kept.true_count();
        self.fold_into_state(new_events, kept_rows, &new_offsets, decoded.source)
            .await;
        self.enforce_bound();
        self.enforce_state_bound();
        self.collect_identities_if_due();
        Ok(late)
    }

    /// Which rows are late, judged against the watermark before this batch;
    /// every on-time event moves its partition's event time.
    fn observe_event_times(
        &mut self,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        upstream: Option<&[Origin]>,
        now_ns: i64,
    ) -> Vec<bool> {
        let times = decoded
            .batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>();
        let n = decoded.batch.num_rows();
        let mut is_late = Vec::with_capacity(n);
        // A batch's events come from few partitions, in runs: name each
        // run's partition once.
        let mut partition: Option<(&Origin, String)> = None;
        for row in 0..n {
            let t = times.value(row);
            let late = self.watermark.is_late(t);
            is_late.push(late);
            if !late {
                let message = decoded.events[row].message as usize;
                let origin = match upstream {
                    Some(upstream) => &upstream[message],
                    None => &messages[message].origin,
                };
                let name = match &partition {
                    Some((run, name)) if same_partition(run, origin) => name,
                    _ => &partition.insert((origin, partition_of(origin))).1,
                };
                self.watermark.observe(name, t, now_ns);
            }
        }
        is_late
    }

    /// The batch with the columns no rule reads nulled, and the rows some
    /// rule would retain (the source's pre-filter), not copied. Only such
    /// an event can be late for correlation: the others were evaluated by
    /// the per-event rules and are of no use to any window, late or not.
    fn pre_filter(
        &self,
        decoded: &DecodedBatch,
    ) -> Result<(RecordBatch, BooleanArray), CorrelationError> {
        let retained = &self.retained[&decoded.source];
        let input = without_unread(&decoded.batch, &retained.unread)?;
        let kept = match retained.pre_filter.selection(&input, &self.budget)? {
            Some(kept) => kept,
            None => BooleanArray::from(vec![true; input.num_rows()]),
        };
        Ok((input, kept))
    }

    /// The positions in `decoded` of the rows the source's pre-filter
    /// keeps, without copying them.
    pub(super) fn pre_filtered_rows(
        &self,
        decoded: &DecodedBatch,
    ) -> Result<Vec<u32>, CorrelationError> {
        let retained = &self.retained[&decoded.source];
        let input = without_unread(&decoded.batch, &retained.unread)?;
        let rows = retained.pre_filter.kept_rows(&input, &self.budget)?;
        Ok(rows.into_iter().map(|row| row as u32).collect())
    }

    /// Split off the late events among the pre-filtered rows (reported,
    /// not numbered); the batch is taken in with its other pre-filtered
    /// rows, `None` when the pre-filter keeps none of it on time.
    fn split_late(
        &self,
        input: RecordBatch,
        kept: BooleanArray,
        is_late: &[bool],
        decoded: &DecodedBatch,
    ) -> Result<(Vec<LateEvent>, Option<NewEvents>), CorrelationError> {
        let rows = input
            .column(row_column(&input)?)
            .as_primitive::<UInt32Type>()
            .clone();
        let late_rows: Vec<usize> = kept
            .values()
            .set_indices()
            .filter(|&i| is_late[rows.value(i) as usize])
            .collect();
        let times = input.column(0).as_primitive::<TimestampNanosecondType>();
        let late: Vec<LateEvent> = late_rows
            .iter()
            .map(|&i| LateEvent {
                source: decoded.source,
                message: decoded.events[rows.value(i) as usize].message,
                event_time_ns: times.value(i),
                watermark_ns: self.watermark.watermark().unwrap_or(i64::MIN),
            })
            .collect();
        if kept.true_count() == late_rows.len() {
            return Ok((late, None));
        }
        let mut on_time = BooleanBufferBuilder::new(kept.len());
        on_time.append_buffer(kept.values());
        late_rows.iter().for_each(|&i| on_time.set_bit(i, false));
        let kept = BooleanArray::new(on_time.finish(), None);
        Ok((late, Some(NewEvents { batch: input, kept })))
    }

    /// Give each pre-filtered on-time row a sequence number (in place of
    /// its row index) and register its identity; also the Kafka offsets of
    /// the rows. The other rows, dropped by the pre-filter or late, get
    /// [`UNNUMBERED`].
    fn number_events(
        &mut self,
        new: &NewEvents,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        upstream: Option<&[Origin]>,
    ) -> Result<(RecordBatch, Offsets), CorrelationError> {
        let mut new_offsets = Offsets::new();
        let batch = &new.batch;
        let row_idx = row_column(batch)?;
        let rows = batch.column(row_idx).as_primitive::<UInt32Type>().clone();
        let batch_times = batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>()
            .clone();
        let mut seqs = vec![UNNUMBERED; batch.num_rows()];
        for i in new.kept.values().set_indices() {
            let row = rows.value(i) as usize;
            let event = &decoded.events[row];
            let message = &messages[event.message as usize];
            let content_id;
            let event_id = match decoded.events.native_id(row) {
                Some(id) => id,
                None => {
                    content_id = content_event_id(&message.payload, event.item);
                    content_id.as_str()
                }
            };
            let (stream, position) = self.stream_of(&message.origin, &mut new_offsets);
            let upstream =
                upstream.map(|u| self.stream_of(&u[event.message as usize], &mut Offsets::new()));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.identities.insert(
                seq,
                event_id,
                RetainedIdentity {
                    stream,
                    position,
                    event_time: batch_times.value(i),
                    upstream,
                },
            );
            seqs[i] = seq;
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[row_idx] = Arc::new(UInt64Array::from(seqs));
        let schema = retained_schema(decoded.source);
        let numbered =
            RecordBatch::try_new(schema, columns).context("numbering the retained events")?;
        Ok((numbered, new_offsets))
    }

    /// The shared stream of an origin and the event's position in it;
    /// a Kafka origin's offset is noted in `offsets`.
    fn stream_of(&mut self, origin: &Origin, offsets: &mut Offsets) -> (Arc<Stream>, i64) {
        let position = match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                note_offset(offsets, topic, *partition, *offset);
                *offset
            }
            Origin::File { line, .. } => *line as i64,
        };
        // Most of the time, the previous event's stream.
        if let Some(stream) = self.last_stream.as_ref().filter(|s| s.holds(origin)) {
            return (stream.clone(), position);
        }
        let stream = match origin {
            Origin::Kafka {
                topic, partition, ..
            } => Stream::Kafka {
                topic: topic.clone(),
                partition: *partition,
            },
            Origin::File { path, .. } => Stream::File { path: path.clone() },
        };
        let stream = match self.streams.get(&stream) {
            Some(s) => s.clone(),
            None => self
                .streams
                .entry(stream.clone())
                .or_insert_with(|| Arc::new(stream))
                .clone(),
        };
        self.last_stream = Some(stream.clone());
        (stream, position)
    }

    /// Keep the new pre-filtered rows (`kept`) re-scan rules read, their
    /// documents cut as they are copied (those only incremental rules use
    /// are folded into their state instead), and mark the re-scan rules of
    /// the source to run again.
    fn retain_raw(
        &mut self,
        new_events: &RecordBatch,
        kept: &BooleanArray,
        source: SourceKind,
    ) -> Result<(), CorrelationError> {
        let retained = self.retained.get_mut(&source).expect("checked by ingest");
        if !retained.keep_raw {
            return Ok(());
        }
        let keep = match &retained.retain {
            None => kept.clone(),
            Some(filter) => filter
                .keep(new_events, kept)
                .context("selecting the events to retain")?,
        };
        let selected =
            select_rows(new_events, Some(&keep), &retained.cuts).context("retaining events")?;
        if let Some(batch) = selected {
            let offsets = batch_offsets(&batch, &self.identities);
            retained.batches.push(RetainedBatch::new(batch, offsets));
            retained.uncompacted += 1;
            // Merged after the rules have scanned them (`compact`), unless
            // no emission comes for many batches.
            if retained.uncompacted > MAX_UNCOMPACTED {
                retained.compact();
            }
        }
        for rule in self
            .rules
            .iter_mut()
            .filter(|r| r.sources.contains(&source))
        {
            if let Strategy::Rescan { pending } = &mut rule.strategy {
                *pending = None;
            }
        }
        Ok(())
    }

    /// Incremental rules of the source fold the new events into their
    /// state. They read the whole batch, not a copy of its `kept_rows`
    /// pre-filtered rows: each filters the rows again, and its filter
    /// passes only pre-filtered ones, since the pre-filter is the union of
    /// the rules' scan filters. A rule that fails loses the new events'
    /// contribution to its open windows; the failure is reported at the
    /// next emission. Each rule's fold is one of its runs (no rows
    /// matched): its time counts in the rule's metrics like the runs that
    /// emit.
    async fn fold_into_state(
        &mut self,
        new_events: RecordBatch,
        kept_rows: usize,
        new_offsets: &Offsets,
        source: SourceKind,
    ) {
        let retained = self.retained.get_mut(&source).expect("checked by ingest");
        retained.slot.set_all(vec![new_events]);
        let (task_ctx, budget) = (&self.task_ctx, &self.budget);
        let limits = (self.settings.max_alert_events, &self.identities);
        for rule in &mut self.rules {
            let Strategy::Incremental { split, state } = &mut rule.strategy else {
                continue;
            };
            if !rule.sources.contains(&source) {
                continue;
            }
            self.stats.rows_evaluated += kept_rows as u64;
            let started = std::time::Instant::now();
            let fold = async {
                let partial = execute(&split.partial, task_ctx, budget)
                    .await
                    .context("the partial aggregation of new events")?;
                let emitted = (new_offsets, rule.last_emitted);
                state
                    .store(split, partial, emitted, limits, task_ctx, budget)
                    .await
            };
            let (result, cpu) = CpuTimed::new(fold).await;
            let run = RuleRun {
                elapsed: started.elapsed(),
                cpu,
                matches: 0,
            };
            self.evaluations.push((rule.rule.meta.id.clone(), run));
            match result {
                Ok(merged) => self.stats.rows_evaluated += merged,
                Err(e) => self.pending_failures.push((
                    rule.rule.meta.id.clone(),
                    format!(
                        "aggregating new events (their contribution to open windows is lost): {e}"
                    ),
                )),
            }
        }
        retained.slot.clear();
    }
}

/// A new batch as correlation takes it in: the decoded batch, not copied.
struct NewEvents {
    batch: RecordBatch,
    /// Of `batch`'s rows, those the pre-filter keeps and that are not
    /// late: they are numbered, and the retained rows are chosen among
    /// them.
    kept: BooleanArray,
}

/// The sequence number of a row the pre-filter did not keep, or of a late
/// one. The column is not nullable. No scan's filter passes a row the
/// pre-filter dropped (the pre-filter is their union), and the partial
/// aggregations of incremental rules, the only plans that read a new batch
/// as decoded, drop every row with this number first
/// (`fold_filters::at_ingest`): no rule's output holds it.
pub(super) const UNNUMBERED: u64 = u64::MAX;

/// Index of [`ROW_COLUMN`] in `batch`.
fn row_column(batch: &RecordBatch) -> Result<usize, CorrelationError> {
    batch
        .schema()
        .index_of(ROW_COLUMN)
        .context("finding the row column")
}

/// The pre-filter of a source's new events: a row is kept if any scan of
/// any rule could use it (the union of the scans' filters, built by
/// `compile::pre_filter`).
pub(super) struct PreFilter {
    /// Over the source's schema; `None` keeps every row (a scan without a
    /// filter).
    pub(super) predicate: Option<Arc<dyn PhysicalExpr>>,
}

impl PreFilter {
    /// Which rows of `batch` the predicate keeps; `None`: every row.
    pub(super) fn selection(
        &self,
        batch: &RecordBatch,
        budget: &EvalBudget,
    ) -> Result<Option<BooleanArray>, CorrelationError> {
        match &self.predicate {
            None => Ok(None),
            Some(predicate) => evaluated_within(predicate, batch, budget).map(Some),
        }
    }

    /// The positions in `batch` of the rows the predicate keeps, without
    /// copying them (what the first stage of scale-out forwards).
    pub(super) fn kept_rows(
        &self,
        batch: &RecordBatch,
        budget: &EvalBudget,
    ) -> Result<Vec<usize>, CorrelationError> {
        let selected = self.selection(batch, budget)?;
        Ok(selected_rows(batch, selected.as_ref()))
    }
}

/// The positions of the rows `selected` marks (every row when `None`).
fn selected_rows(batch: &RecordBatch, selected: Option<&BooleanArray>) -> Vec<usize> {
    match selected {
        None => (0..batch.num_rows()).collect(),
        Some(keep) => keep.values().set_indices().collect(),
    }
}

/// The rows of `batch` `selected` marks (NULL does not pass; every row
/// when `None`), `None` when it marks none, with the JSON documents of
/// the columns of `cuts` cut to what the rules read (`json_cut.rs`) as
/// they are copied: those columns' whole documents are never copied.
fn select_rows(
    batch: &RecordBatch,
    selected: Option<&BooleanArray>,
    cuts: &[(usize, super::json_cut::Keep)],
) -> Result<Option<RecordBatch>, ArrowError> {
    let selected = selected.map(|keep| match keep.null_count() {
        0 => keep.clone(),
        _ => prep_null_mask_filter(keep),
    });
    let rows = selected_rows(batch, selected.as_ref());
    if rows.is_empty() {
        return Ok(None);
    }
    let filter = selected
        .filter(|keep| keep.true_count() < keep.len())
        .map(|keep| FilterBuilder::new(&keep).optimize().build());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, column) in batch.columns().iter().enumerate() {
        let kept = match (cuts.iter().find(|(c, _)| *c == i), &filter) {
            (Some((_, keep)), _) => super::json_cut::cut_rows(column, keep, rows.iter().copied()),
            (None, Some(filter)) => filter.filter(column)?,
            (None, None) => Arc::clone(column),
        };
        columns.push(kept);
    }
    RecordBatch::try_new(batch.schema(), columns).map(Some)
}

/// The rows of `batch` `predicate` selects (NULL does not pass, as in a
/// WHERE clause), or the budget's overrun.
fn evaluated_within(
    predicate: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    budget: &EvalBudget,
) -> Result<BooleanArray, CorrelationError> {
    budget.deadline.arm(budget.limit);
    let keep = predicate
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .and_then(|keep| budget.deadline.check().map(|()| keep));
    budget.deadline.disarm();
    let keep = keep.context("pre-filtering events for correlation")?;
    let keep = keep.as_boolean_opt().ok_or(CorrelationError::Unexpected(
        "the pre-filter is not boolean",
    ))?;
    Ok(match keep.null_count() {
        0 => keep.clone(),
        _ => prep_null_mask_filter(keep),
    })
}

/// `batch` with the columns `unread` replaced by nulls (of their types):
/// what correlation takes in is then only what its rules read.
fn without_unread(batch: &RecordBatch, unread: &[usize]) -> Result<RecordBatch, CorrelationError> {
    if unread.is_empty() {
        return Ok(batch.clone());
    }
    let mut columns = batch.columns().to_vec();
    for &i in unread {
        columns[i] =
            datafusion::arrow::array::new_null_array(columns[i].data_type(), batch.num_rows());
    }
    RecordBatch::try_new(batch.schema(), columns)
        .context("dropping the columns no correlation rule reads")
}

/// The most rows a batch merged from smaller retained batches holds.
const COMPACT_ROWS: usize = 1024;

/// The most batches retained before they are merged at ingest: between
/// emissions, they wait for the rules' scans (see [`Retained::compact`]).
const MAX_UNCOMPACTED: usize = 64;

impl Retained {
    /// Merge the batches retained since the last merge into the ones
    /// before, as [`push_compacting`] does one by one, and record the
    /// merges for the scans. Done after an emission, once the rules have
    /// scanned the new batches: a scan then puts the merged batches'
    /// filter results and kept rows together from their parts' instead of
    /// filtering and gathering them again.
    pub(super) fn compact(&mut self) {
        let from = self.batches.len() - self.uncompacted.min(self.batches.len());
        let lineage = Arc::make_mut(&mut self.lineage);
        for batch in self.batches.split_off(from) {
            push_compacting(&mut self.batches, batch, lineage);
        }
        self.uncompacted = 0;
    }
}

/// Append `batch` to the retained `batches`, then merge the last two while
/// the earlier holds no more rows than the later and together they hold at
/// most [`COMPACT_ROWS`]. Every scan of an emission walks the retained
/// batches, so a stream whose micro-batches retain a few events each would
/// otherwise cost per micro-batch of the window at every emission. Sizes
/// then fall by halves, as in a binary counter: a row is copied at most
/// about log2(`COMPACT_ROWS` / rows per batch) times, and a batch already
/// of half that size or more is never merged. A merged batch is a new
/// batch (a new identity), recorded in `lineage`: the scans put together
/// what they knew of its parts instead of filtering it again.
fn push_compacting(batches: &mut Vec<RetainedBatch>, batch: RetainedBatch, lineage: &mut Lineage) {
    batches.push(batch);
    while let [.., earlier, later] = batches.as_slice() {
        let (a, b) = (earlier.batch.num_rows(), later.batch.num_rows());
        if a > b || a + b > COMPACT_ROWS {
            break;
        }
        // Batches of one source share the retained schema; were they ever
        // not to, they stay apart.
        let Ok(merged) = datafusion::arrow::compute::concat_batches(
            &earlier.batch.schema(),
            [&earlier.batch, &later.batch],
        ) else {
            break;
        };
        let later = batches.pop().expect("two batches");
        let mut earlier = batches.pop().expect("two batches");
        merge_offsets(&mut earlier.offsets, &later.offsets);
        let merged = RetainedBatch::new(merged, earlier.offsets);
        lineage.record((earlier.id, a), (later.id, b), merged.id);
        batches.push(merged);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampNanosecondArray;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    /// A retained batch of `rows` events with times `first..first + rows`,
    /// whose lowest offset in partition ("t", 0) is `offset`.
    fn retained(first: i64, rows: usize, offset: i64) -> RetainedBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new(ROW_COLUMN, DataType::UInt64, false),
        ]));
        let times: Vec<i64> = (first..first + rows as i64).collect();
        let seqs: Vec<u64> = times.iter().map(|&t| t as u64).collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(times)),
                Arc::new(UInt64Array::from(seqs)),
            ],
        )
        .unwrap();
        RetainedBatch::new(batch, Offsets::from([(("t".to_string(), 0), offset)]))
    }

    fn times(batches: &[RetainedBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let times = b.batch.column(0).as_primitive::<TimestampNanosecondType>();
                times.values().to_vec()
            })
            .collect()
    }

    /// Rows with a number and a JSON document (`doc`).
    fn documents(numbers: &[Option<i64>], docs: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("doc", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(datafusion::arrow::array::Int64Array::from(numbers.to_vec())),
                Arc::new(datafusion::arrow::array::StringArray::from(docs.to_vec())),
            ],
        )
        .unwrap()
    }

    fn pre_filter_keeping_n_over(bound: i64) -> PreFilter {
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
        let schema = documents(&[], &[]).schema();
        let n = col("n", &schema).unwrap();
        PreFilter {
            predicate: Some(Arc::new(BinaryExpr::new(n, Operator::Gt, lit(bound)))),
        }
    }

    /// The rows `pre_filter` keeps of `batch`, with the documents of
    /// `cuts` cut: its selection, then the copy retention makes of it.
    fn pre_filtered(
        pre_filter: &PreFilter,
        batch: &RecordBatch,
        cuts: &[(usize, json_cut::Keep)],
        budget: &EvalBudget,
    ) -> Result<Option<RecordBatch>, CorrelationError> {
        let selected = pre_filter.selection(batch, budget)?;
        select_rows(batch, selected.as_ref(), cuts).context("retaining events")
    }

    fn docs_of(batch: &RecordBatch) -> Vec<Option<&str>> {
        batch.column(1).as_string::<i32>().iter().collect()
    }

    /// The pre-filter keeps the rows its predicate selects (not those it
    /// finds NULL), in order, with their documents cut to what the rules
    /// read, and the other columns as they were.
    #[test]
    fn the_pre_filter_keeps_the_selected_rows_with_their_documents_cut() {
        let keep =
            json_cut::Keep::Members(BTreeMap::from([("a".to_string(), json_cut::Keep::Whole)]));
        let cuts = [(1, keep)];
        let batch = documents(
            &[Some(5), Some(1), None, Some(7), Some(9)],
            &[
                Some(r#"{"a":1,"big":"xxxxxxxx"}"#),
                Some(r#"{"a":2}"#),
                Some(r#"{"a":3}"#),
                None,
                Some(r#"{"b":{"a":4},"a":[5]}"#),
            ],
        );
        let budget = EvalBudget::default();
        let kept = pre_filtered(&pre_filter_keeping_n_over(4), &batch, &cuts, &budget)
            .unwrap()
            .unwrap();
        let numbers: Vec<Option<i64>> = kept
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .iter()
            .collect();
        assert_eq!(numbers, [Some(5), Some(7), Some(9)]);
        assert_eq!(
            docs_of(&kept),
            [Some(r#"{"a":1}"#), None, Some(r#"{"a":[5]}"#)]
        );

        // Without a predicate every row is kept, cut; without cuts, whole.
        let every = PreFilter { predicate: None };
        let all = pre_filtered(&every, &batch, &cuts, &budget)
            .unwrap()
            .unwrap();
        assert_eq!(all.num_rows(), 5);
        assert_eq!(docs_of(&all)[0], Some(r#"{"a":1}"#));
        let whole = pre_filtered(&every, &batch, &[], &budget).unwrap().unwrap();
        assert_eq!(docs_of(&whole), docs_of(&batch));

        // No row selected: nothing kept.
        let none = pre_filtered(&pre_filter_keeping_n_over(100), &batch, &cuts, &budget);
        assert!(none.unwrap().is_none());
    }

    /// Retained rows are selected by a mask that may hold NULLs (the
    /// retention filter's), with the documents cut as they are copied.
    #[test]
    fn rows_selected_by_a_mask_with_nulls_keep_only_its_true_rows_cut() {
        let keep =
            json_cut::Keep::Members(BTreeMap::from([("a".to_string(), json_cut::Keep::Whole)]));
        let batch = documents(
            &[Some(1), Some(2), Some(3)],
            &[
                Some(r#"{"a":1,"b":2}"#),
                Some(r#"{"a":2,"b":3}"#),
                Some(r#"{"b":4}"#),
            ],
        );
        // A NULL whose value bit is set still does not pass.
        let mask = BooleanArray::new(
            vec![true, true, true].into(),
            Some(vec![false, true, true].into()),
        );
        let kept = select_rows(&batch, Some(&mask), &[(1, keep)])
            .unwrap()
            .unwrap();
        assert_eq!(docs_of(&kept), [Some(r#"{"a":2}"#), Some("{}")]);
        let none = BooleanArray::from(vec![Some(false), None, Some(false)]);
        assert!(select_rows(&batch, Some(&none), &[]).unwrap().is_none());
    }

    /// A pre-filter that outlasts the rules' time budget fails the batch,
    /// as a rule's evaluation does, and leaves the deadline disarmed.
    #[test]
    fn a_pre_filter_over_its_time_budget_fails() {
        let batch = documents(&[Some(5)], &[Some("{}")]);
        let budget = EvalBudget {
            limit: Duration::ZERO,
            ..EvalBudget::default()
        };
        let error = pre_filtered(&pre_filter_keeping_n_over(1), &batch, &[], &budget).unwrap_err();
        assert!(error.to_string().contains("time budget of 0 ms"), "{error}");
        assert!(budget.deadline.check().is_ok());
    }

    #[test]
    fn batches_of_few_rows_are_merged_as_a_binary_counter_in_order() {
        let (mut batches, mut lineage) = (Vec::new(), Lineage::default());
        for i in 0..100 {
            push_compacting(&mut batches, retained(i * 3, 3, 1_000 - i), &mut lineage);
        }
        // 100 pushes = 64 + 32 + 4: three batches, the oldest first.
        let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(sizes, [192, 96, 12]);
        assert_eq!(times(&batches), (0..300).collect::<Vec<i64>>());
        // Each merged batch keeps the lowest offset of the batches in it,
        // and its earliest time.
        let lowest: Vec<i64> = batches
            .iter()
            .map(|b| b.offsets[&("t".into(), 0)])
            .collect();
        assert_eq!(lowest, [1_000 - 63, 1_000 - 95, 1_000 - 99]);
        let earliest: Vec<Option<i64>> = batches.iter().map(|b| b.earliest).collect();
        assert_eq!(earliest, [Some(0), Some(192), Some(288)]);
    }

    #[test]
    fn a_merged_batch_is_a_new_batch() {
        let (a, b) = (retained(0, 2, 0), retained(2, 2, 0));
        let ids = [a.id, b.id];
        let (mut batches, mut lineage) = (vec![a], Lineage::default());
        push_compacting(&mut batches, b, &mut lineage);
        assert_eq!(batches.len(), 1);
        assert!(
            !ids.contains(&batches[0].id),
            "a merged batch reused an identity"
        );
        // Its parts, in order, are recorded for the scans.
        assert_eq!(
            lineage.rename(&[7, ids[0], ids[1]]),
            [7, batches[0].id],
            "the merge is in the lineage"
        );
    }

    #[test]
    fn batches_beyond_the_limit_together_stay_apart() {
        let half = COMPACT_ROWS / 2 + 1;
        let (mut batches, mut lineage) = (Vec::new(), Lineage::default());
        for i in 0..3 {
            push_compacting(
                &mut batches,
                retained(i * half as i64, half, 0),
                &mut lineage,
            );
        }
        assert_eq!(batches.len(), 3);
        assert!(lineage.is_empty());
        // A small batch after a large one is not merged into it.
        push_compacting(&mut batches, retained(10_000, 1, 0), &mut lineage);
        push_compacting(&mut batches, retained(10_001, 1, 0), &mut lineage);
        let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(sizes, [half, half, half, 2]);
    }
}
