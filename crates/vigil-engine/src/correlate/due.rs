//! The output rows of a rule run that are due in the emitted range, before
//! their alerts are built.
//!
//! Suppression folds most rows of a continuing detection (an attacker who
//! keeps deploying after a binding gives a row per deployment, one alert
//! per user and period), and a folded row needs no alert unless it is the
//! last of its period, which the period's summary reports. So a due row
//! carries only what ordering and suppression read (its window end, named
//! events, alert id and suppression key), and its alert, the JSON of its
//! fields, is built when suppression raises or reports it.

use serde_json::Map;

use super::emit::collect_seqs;
use super::*;

/// The due rows of one result batch of a rule run.
pub(super) struct DueRows {
    /// The batch's rows with `window_end` in the emitted range.
    selected: RecordBatch,
    pub rows: Vec<DueRow>,
}

/// What ordering and suppression read of a due row.
pub(super) struct DueRow {
    pub window_end: i64,
    /// The events it names, ordered by time (at most `max_alert_events`).
    pub events: Vec<EventIdentity>,
    pub alert_id: String,
    /// Its suppression key: the JSON of its `suppress_key` columns (empty
    /// when the rule is not suppressed or names no key).
    pub key: String,
}

impl DueRow {
    /// Emission order: the earliest first, so that suppression raises the
    /// first alert of a key, not the first row the query happened to
    /// return (that follows the events' arrival order).
    pub fn order(&self, other: &DueRow) -> std::cmp::Ordering {
        self.window_end
            .cmp(&other.window_end)
            .then_with(|| self.event_ids().cmp(other.event_ids()))
            .then_with(|| self.alert_id.cmp(&other.alert_id))
    }
}

impl DueRow {
    fn event_ids(&self) -> impl Iterator<Item = &str> {
        self.events.iter().map(|e| e.event_id.as_str())
    }
}

impl DueRows {
    /// The rows of `batch` with `from < window_end <= to`; `None` when
    /// there are none.
    pub fn select(
        rule: &CompiledCorrelation,
        batch: &RecordBatch,
        (from, to): (i64, i64),
        identities: &BTreeMap<u64, RetainedIdentity>,
        max_events: usize,
    ) -> Result<Option<DueRows>, CorrelationError> {
        let ends = batch
            .column(rule.window_end)
            .as_primitive::<TimestampNanosecondType>();
        let mask: BooleanArray = ends
            .iter()
            .map(|t| Some(t.is_some_and(|t| t > from && t <= to)))
            .collect();
        if mask.true_count() == 0 {
            return Ok(None);
        }
        let selected =
            filter_record_batch(batch, &mask).context("selecting the windows to emit")?;
        // A type the JSON encoder refuses fails here, for every row alike,
        // before suppression has seen any row of the run (which is then
        // retried whole).
        crate::rules::engine::rows_to_json(&selected.slice(0, 1))
            .context("encoding the rule's output")?;
        let keys = suppression_keys(rule, &selected)?;
        let ends = selected
            .column(rule.window_end)
            .as_primitive::<TimestampNanosecondType>();
        let mut rows = Vec::with_capacity(selected.num_rows());
        for (i, key) in keys.into_iter().enumerate() {
            let events = named_events(rule, &selected, i, identities, max_events);
            let window_end = ends.value(i);
            let alert_id = row_alert_id(rule, &selected, i, window_end, &events)?;
            rows.push(DueRow {
                window_end,
                events,
                alert_id,
                key,
            });
        }
        Ok(Some(DueRows { selected, rows }))
    }

    /// The alert of due row `i`.
    pub fn alert(
        &self,
        i: usize,
        meta: &crate::rules::RuleMeta,
        detected_at_ns: i64,
    ) -> Result<Alert, CorrelationError> {
        let row = &self.rows[i];
        let mut alert = Alert::new(
            meta,
            detected_at_ns,
            row.window_end,
            row_fields(&self.selected, i)?,
            row.events.clone(),
        );
        alert.alert_id = row.alert_id.clone();
        Ok(alert)
    }
}

/// The fields of row `i`: its visible columns as JSON.
fn row_fields(batch: &RecordBatch, i: usize) -> Result<Map<String, Value>, CorrelationError> {
    crate::rules::engine::rows_to_json(&batch.slice(i, 1))
        .context("encoding the rule's output")?
        .pop()
        .ok_or(CorrelationError::Unexpected(
            "the JSON of one row is not one object",
        ))
}

/// Each row's suppression key, from its `suppress_key` columns alone
/// (the JSON a row's fields give them; null where the row has no such
/// column).
fn suppression_keys(
    rule: &CompiledCorrelation,
    selected: &RecordBatch,
) -> Result<Vec<String>, CorrelationError> {
    let names = &rule.rule.meta.suppress_key;
    if rule.rule.meta.suppress.is_none() || names.is_empty() {
        return Ok(vec![String::new(); selected.num_rows()]);
    }
    let schema = selected.schema();
    let columns: Vec<usize> = (0..selected.num_columns())
        .filter(|&c| names.contains(schema.field(c).name()))
        .collect();
    let fields = crate::rules::engine::rows_to_json(
        &selected
            .project(&columns)
            .context("selecting the suppression key")?,
    )
    .context("encoding the suppression key")?;
    Ok(fields
        .iter()
        .map(|fields| suppress::key_of(names, fields))
        .collect())
}

/// The events row `i` names: its `__row` columns' events still known,
/// ordered by time, at most `max_events`.
fn named_events(
    rule: &CompiledCorrelation,
    selected: &RecordBatch,
    i: usize,
    identities: &BTreeMap<u64, RetainedIdentity>,
    max_events: usize,
) -> Vec<EventIdentity> {
    let mut seqs = BTreeSet::new();
    for &c in &rule.event_columns {
        collect_seqs(selected.column(c), i, &mut seqs);
    }
    let mut events: Vec<&RetainedIdentity> =
        seqs.iter().filter_map(|s| identities.get(s)).collect();
    events.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
    events.dedup_by(|a, b| a.event_id == b.event_id);
    events.truncate(max_events);
    events
        .iter()
        .map(|e| EventIdentity {
            event_id: e.event_id.to_string(),
            origin: e.origin(),
        })
        .collect()
}

/// The id of row `i`'s alert. It must not depend on arrival order or on
/// which events were still retained: rule, window end, the sorted event
/// ids (or, for a row that names no events, the row's fields).
fn row_alert_id(
    rule: &CompiledCorrelation,
    selected: &RecordBatch,
    i: usize,
    window_end: i64,
    events: &[EventIdentity],
) -> Result<String, CorrelationError> {
    let id = &rule.rule.meta.id;
    let window = format_time_ns(window_end);
    if events.is_empty() {
        let row = Value::Object(row_fields(selected, i)?).to_string();
        return Ok(alert_id(id, [window.as_str(), row.as_str()]));
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    Ok(alert_id(id, std::iter::once(window.as_str()).chain(ids)))
}
