//! The output rows of a rule run that are due in the emitted range, before
//! their alerts are built.
//!
//! Suppression folds most rows of a continuing detection (an attacker who
//! keeps deploying after a binding gives a row per deployment, one alert
//! per user and period), and a folded row needs no alert: the period keeps
//! its last folded row ([`FoldedRow`]), whose alert is built when the
//! period's summary is emitted. So a due row carries what ordering and
//! suppression read first, its window end and suppression key; the events
//! it names and its alert id are found when rows with the same window end
//! are ordered or its alert is built; its fields are encoded only for an
//! alert that is raised.

use std::cell::OnceCell;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::row::{RowConverter, SortField};
use serde_json::Map;

use super::alert_fields::AlertFields;
use super::emit::collect_seqs;
use super::identities::IdentityRef;
use super::*;

/// The due rows of one result batch of a rule run.
pub(super) struct DueRows<'a> {
    /// The batch's rows with `window_end` in the emitted range (shared
    /// with the rows folded from it).
    selected: Arc<RecordBatch>,
    pub rows: Vec<DueRow>,
    naming: Naming<'a>,
}

/// What naming a row's events takes.
struct Naming<'a> {
    rule_id: String,
    event_columns: Vec<usize>,
    identities: &'a Identities,
    max_events: usize,
    /// The projection that makes a run's rows the rule's output, if the
    /// run left it out.
    fields: Option<Arc<AlertFields>>,
}

/// What ordering and suppression read of a due row.
pub(super) struct DueRow {
    pub window_end: i64,
    /// Its suppression key: the JSON of its `suppress_key` columns (empty
    /// when the rule is not suppressed or names no key).
    pub key: String,
    /// Its events and alert id, found when first needed: to order rows
    /// with the same window end, or to build its alert. A folded row of
    /// its own window end needs neither.
    identity: OnceCell<RowIdentity>,
}

struct RowIdentity {
    /// The events the row names, ordered by time (at most `max_alert_events`).
    events: Vec<EventIdentity>,
    alert_id: String,
}

impl RowIdentity {
    fn event_ids(&self) -> impl Iterator<Item = &str> {
        self.events.iter().map(|e| e.event_id.as_str())
    }
}

/// Emission order of due rows `a` and `b` (batch, row): the earliest
/// first, so that suppression raises the first alert of a key, not the
/// first row the query happened to return (that follows the events'
/// arrival order); then by named events and alert id.
pub(super) fn emission_order(
    due: &[DueRows<'_>],
    (da, ra): (usize, usize),
    (db, rb): (usize, usize),
) -> std::cmp::Ordering {
    due[da].rows[ra]
        .window_end
        .cmp(&due[db].rows[rb].window_end)
        .then_with(|| {
            let (a, b) = (due[da].identity(ra), due[db].identity(rb));
            a.event_ids()
                .cmp(b.event_ids())
                .then_with(|| a.alert_id.cmp(&b.alert_id))
        })
}

impl<'a> DueRows<'a> {
    /// The rows of `batch` with `from < window_end <= to`; `None` when
    /// there are none.
    pub fn select(
        rule: &CompiledCorrelation,
        batch: &RecordBatch,
        (from, to): (i64, i64),
        identities: &'a Identities,
        max_events: usize,
    ) -> Result<Option<DueRows<'a>>, CorrelationError> {
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
        // A type the JSON encoder refuses (or a projection left out of the
        // run that fails) fails here, for every row alike, before
        // suppression has seen any row of the run (which is then retried
        // whole).
        row_fields(rule.fields.as_deref(), &selected, 0)?;
        let keys = suppression_keys(rule, &selected)?;
        let ends = selected
            .column(rule.window_end)
            .as_primitive::<TimestampNanosecondType>();
        let rows = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| DueRow {
                window_end: ends.value(i),
                key,
                identity: OnceCell::new(),
            })
            .collect();
        let naming = Naming {
            rule_id: rule.rule.meta.id.clone(),
            event_columns: rule.event_columns.clone(),
            identities,
            max_events,
            fields: rule.fields.clone(),
        };
        Ok(Some(DueRows {
            selected: Arc::new(selected),
            rows,
            naming,
        }))
    }

    fn identity(&self, i: usize) -> &RowIdentity {
        self.rows[i].identity.get_or_init(|| {
            let events = named_events(&self.naming, &self.selected, i);
            let alert_id = row_alert_id(
                &self.naming,
                &self.selected,
                i,
                self.rows[i].window_end,
                &events,
            );
            RowIdentity { events, alert_id }
        })
    }

    /// The alert of due row `i`.
    pub fn alert(
        &self,
        i: usize,
        meta: &crate::rules::RuleMeta,
        detected_at_ns: i64,
    ) -> Result<Alert, CorrelationError> {
        let identity = self.identity(i);
        let mut alert = Alert::new(
            meta,
            detected_at_ns,
            self.rows[i].window_end,
            row_fields(self.naming.fields.as_deref(), &self.selected, i)?,
            identity.events.clone(),
        );
        alert.alert_id = identity.alert_id.clone();
        Ok(alert)
    }

    pub fn identities(&self) -> &'a Identities {
        self.naming.identities
    }

    pub fn max_events(&self) -> usize {
        self.naming.max_events
    }

    /// Due row `i`, folded at `detected_at_ns`, kept for its period's
    /// summary: a row of the run's output, until
    /// [`suppress::own_folded_rows`] copies it.
    pub fn folded(&self, i: usize, detected_at_ns: i64) -> FoldedRow {
        let mut seqs = BTreeSet::new();
        for &c in &self.naming.event_columns {
            collect_seqs(self.selected.column(c), i, &mut seqs);
        }
        FoldedRow {
            rows: Arc::clone(&self.selected),
            index: i,
            shared: true,
            window_end: self.rows[i].window_end,
            seqs,
            detected_at_ns,
        }
    }

    /// The alert of due row `i` without its fields (when they could not
    /// be encoded): its id and named events.
    pub fn alert_without_fields(
        &self,
        i: usize,
        meta: &crate::rules::RuleMeta,
        detected_at_ns: i64,
    ) -> Alert {
        let identity = self.identity(i);
        let mut alert = Alert::new(
            meta,
            detected_at_ns,
            self.rows[i].window_end,
            Map::new(),
            identity.events.clone(),
        );
        alert.alert_id = identity.alert_id.clone();
        alert
    }
}

/// The last row folded into a suppression period, kept as data until the
/// period's summary reports it: most periods fold rows at every emission,
/// and only the last one's alert is ever built. The events it names stay
/// in the correlator's identities while it is kept
/// ([`Correlator::collect_identities_if_due`]).
pub(super) struct FoldedRow {
    /// The batch holding the row, at `index`: the run's output while
    /// `shared`, then a batch of rows copied together. Only folded rows
    /// keep these batches once their run has ended, so a copy's strong
    /// count is the number of its rows still kept.
    rows: Arc<RecordBatch>,
    index: usize,
    /// Whether `rows` is a run's output. Most keys of a continuing
    /// detection fold a row at every run, which replaces this one; only a
    /// row not replaced by the end of the rule's next run is copied
    /// ([`suppress::own_folded_rows`]), so that a period lasting minutes
    /// does not keep a run's whole output alive.
    shared: bool,
    window_end: i64,
    /// The events it names (`__row` sequence numbers).
    pub seqs: BTreeSet<u64>,
    /// When it was folded: its alert's `detected_at`.
    detected_at_ns: i64,
}

impl FoldedRow {
    #[cfg(test)]
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The batch holding the row, and its index there.
    pub fn source(&self) -> (&Arc<RecordBatch>, usize) {
        (&self.rows, self.index)
    }

    /// Whether the row is held in `rows`.
    pub fn is_in(&self, rows: &Arc<RecordBatch>) -> bool {
        Arc::ptr_eq(&self.rows, rows)
    }

    /// The row was copied to row `index` of `rows`.
    pub fn moved_to(&mut self, rows: Arc<RecordBatch>, index: usize) {
        self.rows = rows;
        self.index = index;
        self.shared = false;
    }

    /// Its alert, for `rule` (whose output it is); an alert without
    /// fields, and the error, when they cannot be encoded.
    pub fn alert(
        &self,
        rule: &CompiledCorrelation,
        identities: &Identities,
        max_events: usize,
    ) -> (Alert, Option<CorrelationError>) {
        let naming = Naming {
            rule_id: rule.rule.meta.id.clone(),
            event_columns: rule.event_columns.clone(),
            identities,
            max_events,
            fields: rule.fields.clone(),
        };
        let (rows, i) = (self.rows.as_ref(), self.index);
        let events = named_events(&naming, rows, i);
        let alert_id = row_alert_id(&naming, rows, i, self.window_end, &events);
        let (fields, error) = match row_fields(naming.fields.as_deref(), rows, i) {
            Ok(fields) => (fields, None),
            Err(e) => (Map::new(), Some(e)),
        };
        let mut alert = Alert::new(
            &rule.rule.meta,
            self.detected_at_ns,
            self.window_end,
            fields,
            events,
        );
        alert.alert_id = alert_id;
        (alert, error)
    }
}

/// The fields of row `i` of a run's output: the rule's visible output
/// columns as JSON, the run's row projected by `fields` first if the run
/// left that projection out.
fn row_fields(
    fields: Option<&AlertFields>,
    batch: &RecordBatch,
    i: usize,
) -> Result<Map<String, Value>, CorrelationError> {
    let row = batch.slice(i, 1);
    let row = match fields {
        Some(fields) => fields
            .project(&row)
            .context("computing the alert's fields")?,
        None => row,
    };
    crate::rules::engine::rows_to_json(&row)
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
    if rule.key_columns.is_empty() {
        // No key column in the output: every row's key is all nulls.
        let key = suppress::key_of(names, &Map::new());
        return Ok(vec![key; selected.num_rows()]);
    }
    let keys = key_batch(&rule.key_columns, selected)?;
    let Some((distinct, of_row)) = distinct_rows(&keys) else {
        return encoded_keys(names, &keys);
    };
    let firsts = take_record_batch(&keys, &distinct).context("selecting the distinct keys")?;
    let encoded = encoded_keys(names, &firsts)?;
    Ok(of_row.into_iter().map(|at| encoded[at].clone()).collect())
}

/// The `key_columns` of `selected`, named as in the rule's output (the
/// run that gave them may have named them otherwise).
fn key_batch(
    key_columns: &[(usize, String)],
    selected: &RecordBatch,
) -> Result<RecordBatch, CorrelationError> {
    let schema = selected.schema();
    let fields: Vec<_> = key_columns
        .iter()
        .map(|(c, name)| schema.field(*c).clone().with_name(name))
        .collect();
    let columns = key_columns
        .iter()
        .map(|(c, _)| Arc::clone(selected.column(*c)))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .context("selecting the suppression key")
}

/// Each row's suppression key, encoded row by row.
fn encoded_keys(names: &[String], keys: &RecordBatch) -> Result<Vec<String>, CorrelationError> {
    let fields =
        crate::rules::engine::rows_to_json(keys).context("encoding the suppression key")?;
    Ok(fields
        .iter()
        .map(|fields| suppress::key_of(names, fields))
        .collect())
}

/// The first row of each distinct value of `batch`'s rows, and for each
/// row the index of its value among them: the rows of a run share few
/// suppression keys (the users or workloads they are about), and each is
/// encoded once. `None` for columns Arrow's row format does not take.
fn distinct_rows(batch: &RecordBatch) -> Option<(UInt32Array, Vec<usize>)> {
    let fields = batch
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)
        .and_then(|converter| converter.convert_columns(batch.columns()))
        .ok()?;
    let mut firsts: Vec<u32> = Vec::new();
    let mut index_of: HashMap<&[u8], usize> = HashMap::new();
    let of_row = (0..batch.num_rows())
        .map(|i| {
            *index_of.entry(rows.row(i).data()).or_insert_with(|| {
                firsts.push(i as u32);
                firsts.len() - 1
            })
        })
        .collect();
    Some((UInt32Array::from(firsts), of_row))
}

/// The events row `i` names: its `__row` columns' events still known,
/// ordered by time, at most `max_events`.
fn named_events(naming: &Naming<'_>, selected: &RecordBatch, i: usize) -> Vec<EventIdentity> {
    let mut seqs = BTreeSet::new();
    for &c in &naming.event_columns {
        collect_seqs(selected.column(c), i, &mut seqs);
    }
    let mut events: Vec<IdentityRef<'_>> = seqs
        .iter()
        .filter_map(|s| naming.identities.get(s))
        .collect();
    events.sort_by(|a, b| (a.event_time, a.event_id).cmp(&(b.event_time, b.event_id)));
    events.dedup_by(|a, b| a.event_id == b.event_id);
    events.truncate(naming.max_events);
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
    naming: &Naming<'_>,
    selected: &RecordBatch,
    i: usize,
    window_end: i64,
    events: &[EventIdentity],
) -> String {
    let rule_id = naming.rule_id.as_str();
    let window = format_time_ns(window_end);
    if events.is_empty() {
        // The encoding was checked on the run's first row; should it fail
        // here, the id still differs per row of the run.
        let fields = row_fields(naming.fields.as_deref(), selected, i)
            .map(|f| Value::Object(f).to_string())
            .unwrap_or_else(|e| format!("row {i}: {e}"));
        return alert_id(rule_id, [window.as_str(), fields.as_str()]);
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    alert_id(rule_id, std::iter::once(window.as_str()).chain(ids))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    /// Keys encoded once per distinct value are those encoded row by row,
    /// NULLs and values told apart only by their other column included.
    #[test]
    fn keys_of_distinct_values_are_the_keys_of_each_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let users = vec![
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            Some("a"),
            Some("b"),
            Some("a"),
        ];
        let keys = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(users)),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1),
                    Some(1),
                    None,
                    Some(2),
                    Some(1),
                    None,
                ])),
            ],
        )
        .unwrap();
        let names = vec!["user".to_string(), "n".to_string()];
        let (distinct, of_row) = distinct_rows(&keys).unwrap();
        assert_eq!(distinct.values().to_vec(), [0, 1, 3, 4, 6]);
        assert_eq!(of_row, [0, 1, 0, 2, 3, 1, 4]);
        let firsts = take_record_batch(&keys, &distinct).unwrap();
        let encoded = encoded_keys(&names, &firsts).unwrap();
        let by_distinct: Vec<String> = of_row.iter().map(|&at| encoded[at].clone()).collect();
        let each = encoded_keys(&names, &keys).unwrap();
        assert_eq!(by_distinct, each);
        assert_eq!(each[0], r#"["a",1]"#);
        assert_eq!(each[3], r#"[null,null]"#);
    }
}
