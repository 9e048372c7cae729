//! Suppression of correlation alerts (`-- suppress`): the first alert of
//! a key is raised, later ones in the period are folded into a count and
//! reported as one summary alert when the period ends.

use super::*;

/// Apply the rule's suppression: the alerts to emit (none if folded; the
/// alert, preceded by the summary of a previous period that folded some).
pub(super) fn suppress(
    rule: &mut CompiledCorrelation,
    alert: Alert,
    stats: &mut CorrelationStats,
) -> Vec<Alert> {
    let Some(period) = rule.rule.meta.suppress else {
        return vec![alert];
    };
    let key: String = if rule.rule.meta.suppress_key.is_empty() {
        String::new()
    } else {
        let values: Vec<&Value> = rule
            .rule
            .meta
            .suppress_key
            .iter()
            .map(|k| alert.fields.get(k).unwrap_or(&Value::Null))
            .collect();
        serde_json::to_string(&values).expect("json values serialize")
    };
    let at = event_time_ns(&alert);
    match rule.suppressed.get_mut(&key) {
        Some((until, folded, last)) if at < *until => {
            *folded += 1;
            *last = Some(alert);
            stats.suppressed_alerts += 1;
            Vec::new()
        }
        _ => {
            let until = at.saturating_add(period.as_nanos() as i64);
            let mut out = Vec::with_capacity(2);
            if let Some((_, folded @ 1.., Some(last))) =
                rule.suppressed.insert(key, (until, 0, None))
            {
                out.push(summary_alert(last, folded));
            }
            out.push(alert);
            out
        }
    }
}

/// An alert's event time in nanoseconds (`i64::MIN` if unreadable).
pub(super) fn event_time_ns(alert: &Alert) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&alert.event_time)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MIN)
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
