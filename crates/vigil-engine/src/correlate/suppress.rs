//! Suppression of correlation alerts (`-- suppress`): the first alert of
//! a key is raised, later ones in the period are folded into a count and
//! reported as one summary alert when the period ends.

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

/// Record the last row folded into the open period of `key`.
pub(super) fn set_last(rule: &mut CompiledCorrelation, key: &str, row: FoldedRow) {
    if let Some((_, _, last)) = rule.suppressed.get_mut(key) {
        *last = Some(row);
        rule.folded_shared.push(key.to_string());
    }
}

/// Give every last folded row that still shares the output of the rule's
/// previous run a copy of its own, so that no run's output outlives the
/// next run. A key folded at every run is never copied.
pub(super) fn own_folded_rows(rule: &mut CompiledCorrelation) {
    for key in std::mem::take(&mut rule.folded_shared) {
        if let Some((_, _, Some(last))) = rule.suppressed.get_mut(&key) {
            last.own();
        }
    }
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
