//! Emission: when the watermark advances, run each rule over the range
//! that became due, turn its rows into alerts, then evict what no rule can
//! use any more.

use super::*;

impl Correlator {
    /// Advance the watermark to wall-clock `now_ns`; run every rule whose
    /// emission range grew; evict what no rule can use any more.
    ///
    /// Emits the rows whose `window_end` is strictly before the watermark:
    /// an event at the watermark is on time, and a row it completes can end
    /// exactly there (a sequence's `window_end` is its trigger's time), so
    /// rows ending at the watermark are not complete yet.
    pub async fn advance(
        &mut self,
        now_ns: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let Some(watermark) = self.watermark.advance(now_ns) else {
            return (Vec::new(), std::mem::take(&mut self.pending_failures));
        };
        self.emit_until(watermark.saturating_sub(1), detected_at_ns)
            .await
    }

    /// End of input (replay): close every window and emit what remains.
    pub async fn finish(&mut self, detected_at_ns: i64) -> (Vec<Alert>, Vec<(String, String)>) {
        if self.watermark.watermark().is_none() {
            return (Vec::new(), std::mem::take(&mut self.pending_failures));
        }
        let watermark = self.watermark.finish();
        let (mut alerts, mut failures) = self.emit_until(watermark, detected_at_ns).await;
        // Close every suppression period: report what was folded.
        let max_events = self.settings.max_alert_events;
        for rule in &mut self.rules {
            rule.suppress_holds.clear();
            let periods: Vec<_> = rule.suppressed.drain().map(|(_, p)| p).collect();
            for (_, folded, last) in periods {
                if let (n @ 1.., Some(last)) = (folded, last) {
                    let (alert, error) = summary(rule, &last, n, &self.identities, max_events);
                    alerts.push(alert);
                    failures.extend(error.map(|e| (rule.rule.meta.id.clone(), e)));
                }
            }
        }
        (alerts, failures)
    }

    /// Run the rules for `(last_emitted, watermark]`; returns alerts and
    /// rule failures (rule id, error).
    async fn emit_until(
        &mut self,
        watermark: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let mut alerts = Vec::new();
        let mut failures = std::mem::take(&mut self.pending_failures);
        if self
            .rules
            .iter()
            .all(|r| r.last_emitted.is_some_and(|l| l >= watermark))
        {
            return (alerts, failures);
        }
        for retained in self.retained.values().filter(|r| r.keep_raw) {
            retained.slot.set_retained(
                retained
                    .batches
                    .iter()
                    .map(|b| (b.id, b.batch.clone()))
                    .collect(),
                retained.lineage.clone(),
            );
        }
        let max_events = self.settings.max_alert_events;
        // What a suppression period opened now must keep for a re-read.
        let hold = self.holds_suppression.then(|| self.state_offsets());
        for rule in &mut self.rules {
            let from = rule.last_emitted.unwrap_or(i64::MIN);
            if from >= watermark {
                continue;
            }
            // Compute every row first: a rule that fails emits nothing for
            // this range and keeps it, so the range is retried next time.
            let span = tracing::info_span!("rule", rule = %rule.rule.meta.id, matches = tracing::field::Empty);
            let started = std::time::Instant::now();
            let (output, cpu) = match &mut rule.strategy {
                // Nothing new since the last run: its rows still stand.
                Strategy::Rescan {
                    pending: Some(rows),
                } => (Ok(std::mem::take(rows)), Duration::ZERO),
                // A join with a side that has no events: no rows.
                Strategy::Rescan { pending: None }
                    if rule.empty_without_a_source
                        && rule.sources.iter().any(|s| self.retained[s].rows() == 0) =>
                {
                    (Ok(Vec::new()), Duration::ZERO)
                }
                Strategy::Rescan { pending: None } => {
                    let rows: usize = rule.sources.iter().map(|s| self.retained[s].rows()).sum();
                    self.stats.rows_evaluated += rows as u64;
                    if let Some(delta) = &rule.delta {
                        // Only the triggers of the rows due now: earlier
                        // ones were emitted, later ones are read when due.
                        delta.set_range(from, watermark);
                    }
                    execute_timed(&rule.plan, &self.task_ctx, &self.budget)
                        .instrument(span.clone())
                        .await
                }
                Strategy::Incremental { split, state } => {
                    let closing = state.closing(from, watermark);
                    if closing.is_empty() {
                        (Ok(Vec::new()), Duration::ZERO)
                    } else {
                        self.stats.rows_evaluated +=
                            closing.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                        split.state_input.set_all(closing);
                        let output = execute_timed(&split.finish, &self.task_ctx, &self.budget)
                            .instrument(span.clone())
                            .await;
                        split.state_input.clear();
                        output
                    }
                }
            };
            let elapsed = started.elapsed();
            let found = output.map_err(|e| e.to_string()).and_then(|batches| {
                let due = batches
                    .iter()
                    .filter(|b| b.num_rows() > 0)
                    .filter_map(|b| {
                        DueRows::select(rule, b, (from, watermark), &self.identities, max_events)
                            .transpose()
                    })
                    .collect::<Result<Vec<DueRows>, CorrelationError>>()
                    .map_err(|e| e.to_string())?;
                Ok((batches, due))
            });
            match found {
                Ok((batches, due)) => {
                    let matches: usize = due.iter().map(|d| d.rows.len()).sum();
                    span.record("matches", matches as i64);
                    let run = RuleRun {
                        elapsed,
                        cpu,
                        matches,
                    };
                    self.evaluations.push((rule.rule.meta.id.clone(), run));
                    let (raised, errors) =
                        raise_due(rule, &due, detected_at_ns, &mut self.stats, hold.as_ref());
                    alerts.extend(raised);
                    failures.extend(errors.into_iter().map(|e| (rule.rule.meta.id.clone(), e)));
                    suppress::end_rebuild_before(rule, watermark);
                    rule.last_emitted = Some(watermark);
                    match &mut rule.strategy {
                        Strategy::Incremental { state, .. } => state.evict_through(watermark),
                        // A delta run reads no trigger beyond the watermark,
                        // so it leaves no undue rows to reuse.
                        Strategy::Rescan { pending } if rule.delta.is_some() => *pending = None,
                        Strategy::Rescan { pending } => {
                            *pending = Some(rows_after(&batches, rule.window_end, watermark))
                        }
                    }
                }
                Err(e) => {
                    if let Strategy::Rescan { pending } = &mut rule.strategy {
                        *pending = None;
                    }
                    failures.push((rule.rule.meta.id.clone(), e));
                    continue;
                }
            }
            // Suppression periods the watermark has passed: report folded alerts.
            let rebuilding = rule.rebuild_through.is_some();
            for (last, folded) in suppress::close_periods(rule, watermark) {
                if let (Some(last), 1.., false) = (last, folded, rebuilding) {
                    let (alert, error) = summary(rule, &last, folded, &self.identities, max_events);
                    alerts.push(alert);
                    failures.extend(error.map(|e| (rule.rule.meta.id.clone(), e)));
                }
            }
        }
        for retained in self.retained.values_mut() {
            retained.slot.clear();
            // The rules have read the merges; a rule that did not run
            // this time filters merged batches again when it next does.
            retained.lineage = Arc::default();
        }
        self.evict(watermark);
        for retained in self.retained.values_mut() {
            retained.compact();
        }
        self.collect_identities_if_due();
        (alerts, failures)
    }

    /// Drop retained events no rule can use: older than watermark − window,
    /// where a rule whose last run failed holds the watermark at what it
    /// last emitted (so its retried range still has its events).
    fn evict(&mut self, watermark: i64) {
        for (source, retained) in self.retained.iter_mut() {
            let held = self
                .rules
                .iter()
                .filter(|r| {
                    matches!(r.strategy, Strategy::Rescan { .. }) && r.sources.contains(source)
                })
                .map(|r| r.last_emitted.unwrap_or(i64::MIN))
                .min()
                .unwrap_or(watermark);
            let cutoff = watermark.min(held).saturating_sub(retained.horizon_ns);
            evict_before(&mut retained.batches, cutoff, &self.identities);
        }
    }

    /// Keep retained events under `max_retained_events`, oldest first out.
    /// (Identities of evicted events are collected by
    /// [`Self::collect_identities_if_due`]: incremental state may share them.)
    pub(super) fn enforce_bound(&mut self) {
        let max = self.settings.max_retained_events;
        let mut total: usize = self.retained.values().map(Retained::rows).sum();
        while total > max {
            // Evict the oldest batch of the largest source.
            let Some(retained) = self.retained.values_mut().max_by_key(|r| r.rows()) else {
                break;
            };
            if retained.batches.is_empty() {
                break;
            }
            for rule in &mut self.rules {
                if let Strategy::Rescan { pending } = &mut rule.strategy {
                    *pending = None;
                }
            }
            let batch = retained.batches.remove(0).batch;
            total -= batch.num_rows();
            self.stats.evicted_early += batch.num_rows() as u64;
            tracing::warn!(
                evicted = batch.num_rows(),
                max_retained_events = max,
                "correlation state at its bound: oldest events evicted before their window closed"
            );
        }
    }

    /// Keep the state rows of incremental rules under `max_state_rows`:
    /// drop the window that ends first of the rule with the most rows.
    pub(super) fn enforce_state_bound(&mut self) {
        let max = self.settings.max_state_rows;
        let mut total: usize = self.rules.iter().map(CompiledCorrelation::state_rows).sum();
        while total > max {
            let Some(rule) = self.rules.iter_mut().max_by_key(|r| r.state_rows()) else {
                break;
            };
            let Strategy::Incremental { state, .. } = &mut rule.strategy else {
                break;
            };
            let Some((window_end, rows)) = state.evict_oldest() else {
                break;
            };
            total -= rows;
            self.stats.evicted_state_rows += rows as u64;
            tracing::warn!(
                rule = %rule.rule.meta.id,
                window_end = %format_time_ns(window_end),
                evicted_rows = rows,
                max_state_rows = max,
                "correlation state at its bound: a window's aggregation state evicted before it closed (its alerts are lost)"
            );
        }
    }

    /// [`Self::collect_identities_if_due`], due or not.
    #[cfg(test)]
    pub(crate) fn collect_identities_now(&mut self) {
        self.identities_gc_at = 0;
        self.collect_identities_if_due();
    }

    /// Drop the identities of events nothing names any more (evicted,
    /// emitted and not the last folded into an open suppression period, or
    /// beyond `max_alert_events` of their group). Runs when
    /// their number has doubled since the last collection, so its cost is
    /// amortised over the events that made it due.
    pub(super) fn collect_identities_if_due(&mut self) {
        if self.identities.len() <= self.identities_gc_at {
            return;
        }
        // Gathered, then sorted: most are the retained batches' runs of
        // ascending numbers, which the stable sort finds and merges.
        let mut live: Vec<u64> = Vec::with_capacity(self.identities.len());
        for retained in self.retained.values() {
            for b in &retained.batches {
                if let Some(seqs) = b.batch.column_by_name(ROW_COLUMN) {
                    live.extend(seqs.as_primitive::<UInt64Type>().values().iter().copied());
                }
            }
        }
        for rule in &self.rules {
            // The last rows folded into open suppression periods: their
            // summaries name these events.
            for (_, _, last) in rule.suppressed.values() {
                if let Some(last) = last {
                    live.extend(last.seqs.iter().copied());
                }
            }
            match &rule.strategy {
                Strategy::Incremental { split, state } => state.live_events(split, &mut live),
                Strategy::Rescan {
                    pending: Some(rows),
                } => {
                    for batch in rows {
                        for row in 0..batch.num_rows() {
                            for &c in &rule.event_columns {
                                collect_seqs(batch.column(c), row, &mut live);
                            }
                        }
                    }
                }
                Strategy::Rescan { pending: None } => {}
            }
        }
        live.sort();
        live.dedup();
        self.identities
            .retain(|seq| live.binary_search(&seq).is_ok());
        self.identities_gc_at = (2 * self.identities.len()).max(IDENTITIES_GC_MIN);
    }
}

/// The rows of `batches` with `window_end` after `watermark` (not emitted yet).
pub(super) fn rows_after(
    batches: &[RecordBatch],
    window_end: usize,
    watermark: i64,
) -> Vec<RecordBatch> {
    batches
        .iter()
        .filter_map(|b| {
            let ends = b
                .column(window_end)
                .as_primitive::<TimestampNanosecondType>();
            let mask: BooleanArray = ends
                .iter()
                .map(|t| Some(t.is_some_and(|t| t > watermark)))
                .collect();
            (mask.true_count() > 0).then(|| {
                filter_record_batch(b, &mask).expect("filter with a mask of the batch's length")
            })
        })
        .collect()
}

/// Order the due rows, fold those suppression folds, and build the alerts
/// of the rest; keep the last row folded into each period still open (its
/// summary reports it when the period closes). Returns the alerts to
/// emit, and the errors of alerts whose fields could not be encoded (each
/// raised with no fields instead: its events are still named).
fn raise_due(
    rule: &mut CompiledCorrelation,
    due: &[DueRows<'_>],
    detected_at_ns: i64,
    stats: &mut CorrelationStats,
    hold: Option<&Offsets>,
) -> (Vec<Alert>, Vec<String>) {
    let mut order: Vec<(usize, usize)> = due
        .iter()
        .enumerate()
        .flat_map(|(d, rows)| (0..rows.rows.len()).map(move |r| (d, r)))
        .collect();
    order.sort_by(|&a, &b| due::emission_order(due, a, b));
    let previous = suppress::start_run(rule);
    let mut alerts = Vec::new();
    let mut errors = Vec::new();
    // Per key, the row last folded into its open period in this run.
    let mut last_folded: HashMap<&str, (usize, usize)> = HashMap::new();
    for (d, r) in order {
        let row = &due[d].rows[r];
        suppress::end_rebuild_before(rule, row.window_end);
        if suppress::fold(rule, &row.key, row.window_end, stats) {
            last_folded.insert(&row.key, (d, r));
            continue;
        }
        // The key's previous period ends here: its last folded row first.
        if let Some((ld, lr)) = last_folded.remove(row.key.as_str()) {
            suppress::set_last(rule, &row.key, due[ld].folded(lr, detected_at_ns));
        }
        let ended = suppress::raise(rule, row.key.clone(), row.window_end, hold);
        // Rebuilding: raised by the partition's previous holder.
        if rule.rebuild_through.is_some() {
            continue;
        }
        if let Some((last, folded)) = ended {
            let (alert, error) = summary(
                rule,
                &last,
                folded,
                due[d].identities(),
                due[d].max_events(),
            );
            alerts.push(alert);
            errors.extend(error);
        }
        alerts.push(
            due[d]
                .alert(r, &rule.rule.meta, detected_at_ns)
                .unwrap_or_else(|e| {
                    errors.push(format!("an alert raised without its fields: {e}"));
                    due[d].alert_without_fields(r, &rule.rule.meta, detected_at_ns)
                }),
        );
    }
    for (key, (d, r)) in last_folded {
        suppress::set_last(rule, key, due[d].folded(r, detected_at_ns));
    }
    suppress::own_folded_rows(rule, previous);
    (alerts, errors)
}

/// The summary alert of a suppression period that folded `folded` rows,
/// the last of them `last`; with the error if its fields could not be
/// encoded.
fn summary(
    rule: &CompiledCorrelation,
    last: &due::FoldedRow,
    folded: u64,
    identities: &Identities,
    max_events: usize,
) -> (Alert, Option<String>) {
    let (alert, error) = last.alert(rule, identities, max_events);
    let error = error.map(|e| format!("a suppression summary without its fields: {e}"));
    (summary_alert(alert, folded), error)
}

/// The events (`__row` sequence numbers) row `row` of an event column
/// names, added to `out`.
pub(super) fn collect_seqs(column: &ArrayRef, row: usize, out: &mut impl Extend<u64>) {
    if column.is_null(row) {
        return;
    }
    match column.data_type() {
        DataType::UInt64 => {
            out.extend([column.as_primitive::<UInt64Type>().value(row)]);
        }
        DataType::List(_) => {
            let values = column.as_list::<i32>().value(row);
            if let Some(v) = values.as_primitive_opt::<UInt64Type>() {
                out.extend(v.iter().flatten());
            }
        }
        DataType::LargeList(_) => {
            let values = column.as_list::<i64>().value(row);
            if let Some(v) = values.as_primitive_opt::<UInt64Type>() {
                out.extend(v.iter().flatten());
            }
        }
        _ => {}
    }
}

/// Execute a stored plan afresh. Some operators keep state from one
/// execution to the next (a hash join builds its hash table once and
/// reuses it): without the reset, a re-execution would join new events
/// against the first execution's build side.
///
/// The execution runs within `budget` (`rules.max_eval_ms`, as for
/// per-event rules): past it, the plan is cancelled between record batches
/// and the execution fails like any rule error (a `rule_error` dead letter,
/// the range retried at the next evaluation), so a pathological correlation
/// rule costs at most its budget per evaluation and cannot stall the
/// pipeline.
pub(super) async fn execute(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
    budget: &EvalBudget,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    execute_timed(plan, task_ctx, budget).await.0
}

/// [`execute`], and the CPU time the execution used.
async fn execute_timed(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
    budget: &EvalBudget,
) -> (datafusion::error::Result<Vec<RecordBatch>>, Duration) {
    let plan = match reset_plan_states(plan.clone())
        .and_then(|plan| with_deadline(plan, &budget.deadline))
    {
        Ok(plan) => plan,
        Err(e) => return (Err(e), Duration::ZERO),
    };
    budget.deadline.arm(budget.limit);
    let output = CpuTimed::new(collect(plan, task_ctx.clone())).await;
    budget.deadline.disarm();
    output
}

/// The time budget of one correlation plan execution (see [`execute`]).
#[derive(Debug)]
pub(crate) struct EvalBudget {
    pub(super) deadline: Arc<EvalDeadline>,
    pub(super) limit: Duration,
}

impl Default for EvalBudget {
    fn default() -> Self {
        EvalBudget {
            deadline: Arc::default(),
            limit: crate::rules::engine::DEFAULT_TIME_BUDGET,
        }
    }
}
