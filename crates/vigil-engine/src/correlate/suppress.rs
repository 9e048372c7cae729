//! Suppression of correlation alerts (`-- suppress`): the first alert of
//! a key is raised, later ones in the period are folded into a count and
//! reported as one summary alert when the period ends.

use std::collections::HashSet;
use std::sync::Weak;

use datafusion::arrow::compute::interleave_record_batch;

use serde_json::Map;

use super::due::FoldedRow;
use super::*;

/// A due row's suppression key: the JSON of its `suppress_key` fields, in
/// the order they are named (null for a field the row lacks).
pub(super) fn key_of(names: &[String], fields: &Map<String, Value>) -> String {
    let values: Vec<&Value> = names
        .iter()
        .map(|k| fields.get(k).unwrap_or(&Value::Null))
        .collect();
    serde_json::to_string(&values).expect("json values serialize")
}

/// Fold a row of `key` at event time `at` into the open suppression
/// period of its key, if there is one: `true` when folded. Its alert is
/// then the period's last until another is folded, which
/// [`set_last`] records.
pub(super) fn fold(
    rule: &mut CompiledCorrelation,
    key: &str,
    at: i64,
    stats: &mut CorrelationStats,
) -> bool {
    if rule.rule.meta.suppress.is_none() {
        return false;
    }
    match rule.suppressed.get_mut(key) {
        Some((until, folded, last)) if at < *until => {
            *folded += 1;
            *last = None;
            stats.suppressed_alerts += 1;
            true
        }
        _ => false,
    }
}

/// Where a rule's last folded rows are kept between runs: in the output
/// of the run that folded them, then in copies made at the end of the
/// rule's next run, one per run for all the rows it copies.
///
/// Invariant: every copy in `copies` has at least half of its rows still
/// kept as some key's last folded row, once [`own_folded_rows`] has run;
/// so copies hold at most twice the rows kept.
#[derive(Default)]
pub(super) struct FoldedRows {
    /// Keys whose last folded row was set in the rule's last run: those
    /// not folded again in the next run are copied at its end.
    from_last_run: HashSet<String>,
    /// The copies, with the key each of their rows was copied for.
    copies: Vec<(Weak<RecordBatch>, Vec<String>)>,
    /// Rows copied, in all.
    #[cfg(test)]
    pub(super) copied: u64,
}

/// Record the last row folded into the open period of `key`.
pub(super) fn set_last(rule: &mut CompiledCorrelation, key: &str, row: FoldedRow) {
    if let Some((_, _, last)) = rule.suppressed.get_mut(key) {
        *last = Some(row);
        if !rule.folded.from_last_run.contains(key) {
            rule.folded.from_last_run.insert(key.to_string());
        }
    }
}

/// Start a run: the keys whose last folded row the previous run set, for
/// [`own_folded_rows`] at the run's end.
pub(super) fn start_run(rule: &mut CompiledCorrelation) -> HashSet<String> {
    std::mem::take(&mut rule.folded.from_last_run)
}

/// End a run: copy, in one batch, every last folded row set in the
/// previous run (`previous`, its keys) and not replaced in this one, and
/// the rows still kept of copies now less than half kept. So no run's
/// output outlives the next run, a key folded at every run is never
/// copied, and rows are copied together rather than one by one.
pub(super) fn own_folded_rows(rule: &mut CompiledCorrelation, previous: HashSet<String>) {
    let mut keys: Vec<String> = previous
        .into_iter()
        .filter(|k| !rule.folded.from_last_run.contains(k))
        .collect();
    keys.extend(keys_of_sparse_copies(
        &mut rule.folded.copies,
        &rule.suppressed,
    ));
    let mut sources: Vec<Arc<RecordBatch>> = Vec::new();
    let mut indices = Vec::new();
    let mut copied_keys = Vec::new();
    for key in keys {
        let Some((_, _, Some(last))) = rule.suppressed.get(&key) else {
            continue;
        };
        let (rows, i) = last.source();
        let s = match sources.iter().position(|b| Arc::ptr_eq(b, rows)) {
            Some(s) => s,
            None => {
                sources.push(Arc::clone(rows));
                sources.len() - 1
            }
        };
        indices.push((s, i));
        copied_keys.push(key);
    }
    if indices.is_empty() {
        return;
    }
    let batches: Vec<&RecordBatch> = sources.iter().map(|b| b.as_ref()).collect();
    // On failure the rows stay where they are: correct, only less compact.
    let Ok(copy) = interleave_record_batch(&batches, &indices) else {
        return;
    };
    let copy = Arc::new(copy);
    for (j, key) in copied_keys.iter().enumerate() {
        if let Some((_, _, Some(last))) = rule.suppressed.get_mut(key) {
            last.moved_to(Arc::clone(&copy), j);
        }
    }
    #[cfg(test)]
    {
        rule.folded.copied += copied_keys.len() as u64;
    }
    rule.folded
        .copies
        .push((Arc::downgrade(&copy), copied_keys));
}

/// Forget the copies no row is kept in any more, and those less than half
/// kept, returning the keys of the rows still kept in the latter (to be
/// copied again).
fn keys_of_sparse_copies(
    copies: &mut Vec<(Weak<RecordBatch>, Vec<String>)>,
    suppressed: &HashMap<String, (i64, u64, Option<FoldedRow>)>,
) -> Vec<String> {
    let mut keys = Vec::new();
    copies.retain(|(copy, copy_keys)| {
        let Some(copy) = copy.upgrade() else {
            return false;
        };
        // The upgrade is one of the counts.
        let kept = Arc::strong_count(&copy) - 1;
        if kept * 2 >= copy_keys.len() {
            return true;
        }
        let still_in = |k: &&String| {
            matches!(suppressed.get(k.as_str()), Some((_, _, Some(last))) if last.is_in(&copy))
        };
        keys.extend(copy_keys.iter().filter(still_in).cloned());
        false
    });
    keys
}

/// Raise a row of event time `at` that [`fold`] did not fold: it opens a
/// period of `key` (when the rule is suppressed). Returns the key's
/// previous period's last folded row and count, if it folded some: its
/// summary goes before the raised alert.
///
/// `hold`: the offsets to keep while the period this row opens lasts
/// (see [`Correlator::hold_for_suppression`]).
pub(super) fn raise(
    rule: &mut CompiledCorrelation,
    key: String,
    at: i64,
    hold: Option<&Offsets>,
) -> Option<(FoldedRow, u64)> {
    let period = rule.rule.meta.suppress?;
    let until = at.saturating_add(period.as_nanos() as i64);
    if let Some(hold) = hold {
        rule.suppress_holds.insert(key.clone(), hold.clone());
    }
    match rule.suppressed.insert(key, (until, 0, None)) {
        Some((_, folded @ 1.., Some(last))) => Some((last, folded)),
        _ => None,
    }
}

/// A rebuilding rule (see `CompiledCorrelation::rebuild_through`) past
/// event time `t`: the periods the partition's previous holder closed are
/// closed here too, without a summary (it raised them).
pub(super) fn end_rebuild_before(rule: &mut CompiledCorrelation, t: i64) {
    let Some(through) = rule.rebuild_through else {
        return;
    };
    if t <= through {
        return;
    }
    close_periods(rule, through);
    rule.rebuild_through = None;
}

/// Close the periods over by `t`: each one's last folded row and count.
pub(super) fn close_periods(
    rule: &mut CompiledCorrelation,
    t: i64,
) -> Vec<(Option<FoldedRow>, u64)> {
    let over: Vec<String> = rule
        .suppressed
        .iter()
        .filter(|(_, (until, _, _))| *until <= t)
        .map(|(k, _)| k.clone())
        .collect();
    over.into_iter()
        .filter_map(|key| {
            rule.suppress_holds.remove(&key);
            rule.suppressed
                .remove(&key)
                .map(|(_, folded, last)| (last, folded))
        })
        .collect()
}

/// The alert reporting how many alerts a suppression period folded: the
/// last folded alert, with `suppressed_count` set.
pub(super) fn summary_alert(mut last: Alert, folded: u64) -> Alert {
    last.suppressed_count = Some(folded);
    last.alert_id = alert_id(
        &last.rule_id,
        [last.alert_id.as_str(), "suppression-summary"],
    );
    last
}
