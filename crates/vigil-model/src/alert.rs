//! Alerts: what a rule match becomes, and how it is identified and encoded.
//!
//! An alert's id is derived only from the rule and the identities of the
//! triggering events, never from the time of detection, so evaluating the
//! same events again (a Kafka redelivery after a crash, or a replay of the
//! same file) yields the same `alert_id`. Consumers deduplicate on it.

use serde::{Deserialize, Serialize};

use crate::fit::{cut_text, keep_for, Fitted, RecordTooLarge, MIN_KEPT_BYTES};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::rule::{RuleMeta, Severity};
use crate::source::{Origin, SourceKind};

/// Version of the alert JSON format (docs/alerts.md).
pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// One detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema_version: u32,
    /// Deterministic: see [`alert_id`].
    pub alert_id: String,
    pub rule_id: String,
    pub rule_title: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
    pub tags: Vec<String>,
    pub source: SourceKind,
    /// When Vigil produced the alert (RFC 3339, UTC).
    pub detected_at: String,
    /// Event time of the (last) triggering event (RFC 3339, UTC).
    pub event_time: String,
    /// The columns the rule selected, by name.
    pub fields: Map<String, Value>,
    /// The triggering events.
    pub events: Vec<EventIdentity>,
    /// Correlation rules with suppression: the number of alerts folded into
    /// this summary alert during the suppression period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_count: Option<u64>,
    /// OpenTelemetry trace id (32 hex digits) of the batch span that
    /// produced the alert, when tracing is enabled (see
    /// the service's telemetry). Not part of [`alert_id`]: a redelivered batch
    /// has a new trace but the same alert ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Fields cut so the alert fits the record limit: field name ->
    /// its size before the cut (bytes of JSON). See [`Alert::to_json_within`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<std::collections::BTreeMap<String, usize>>,
}

/// Identity of one triggering event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventIdentity {
    /// The event's own id (audit `auditID/stage`, Falco `uuid`, Tetragon
    /// `exec_id/type/time`), or `sha256:<hex of the message>#<item>` for
    /// events that carry none.
    pub event_id: String,
    pub origin: Origin,
}

/// Identity of an event that carries no id of its own: a digest of the raw
/// message plus the event's index inside it.
pub fn content_event_id(payload: &[u8], item: u32) -> String {
    let digest = Sha256::digest(payload);
    format!("sha256:{}#{item}", hex::encode(&digest[..16]))
}

/// The alert id of `rule_id` fired by the events `event_ids` (in order).
///
/// 128 bits of SHA-256 over the rule id and the event ids, rendered as a
/// UUID-shaped string.
pub fn alert_id<'a>(rule_id: &str, event_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    for id in event_ids {
        h.update([0u8]);
        h.update(id.as_bytes());
    }
    let d = h.finalize();
    let x = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// Format nanoseconds since the epoch as RFC 3339 UTC with nanoseconds.
pub fn format_time_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Alert {
    /// Build an alert for `meta` from its parts.
    pub fn new(
        meta: &RuleMeta,
        detected_at_ns: i64,
        event_time_ns: i64,
        fields: Map<String, Value>,
        events: Vec<EventIdentity>,
    ) -> Alert {
        let alert_id = alert_id(&meta.id, events.iter().map(|e| e.event_id.as_str()));
        Alert {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id,
            rule_id: meta.id.clone(),
            rule_title: meta.title.clone(),
            severity: meta.severity,
            mitre: meta.mitre.clone(),
            tags: meta.tags.clone(),
            source: meta.source,
            detected_at: format_time_ns(detected_at_ns),
            event_time: format_time_ns(event_time_ns),
            fields,
            events,
            suppressed_count: None,
            trace_id: None,
            truncated: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("alerts serialize")
    }

    /// The alert's JSON within `limit` bytes: its largest fields cut (each
    /// to a marked prefix of its text) until it fits, and named with their
    /// original sizes in `truncated`. Id, rule and events are kept whole.
    pub fn to_json_within(&self, limit: usize) -> Result<Fitted, RecordTooLarge> {
        let mut json = self.to_json();
        if json.len() <= limit {
            return Ok(Fitted { json, cut: false });
        }
        let mut cut = self.clone();
        while json.len() > limit {
            let largest = cut
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), value.to_string().len()))
                .filter(|(_, size)| *size > MIN_KEPT_BYTES)
                .max_by_key(|(_, size)| *size);
            let Some((name, size)) = largest else {
                return Err(RecordTooLarge {
                    what: format!("alert {} of rule {}", self.alert_id, self.rule_id),
                    bytes: json.len(),
                    limit,
                });
            };
            let text = match &cut.fields[&name] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let keep = keep_for(size, json.len() - limit);
            cut.fields
                .insert(name.clone(), Value::String(cut_text(&text, keep)));
            cut.truncated
                .get_or_insert_with(Default::default)
                .entry(name)
                .or_insert(size);
            json = cut.to_json();
        }
        Ok(Fitted { json, cut: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert whose fields carry attacker-sized values (four fields of
    /// 255 KB, as one audit event within the input limit can).
    fn huge_alert() -> Alert {
        let text = concat!(
            "-- id: t.ua\n-- title: t\n-- severity: high\n-- description: d\n",
            "-- mitre: T1110\n-- source: k8s_audit\n-- author: a\n-- based_on: vigil:t\nSELECT 1"
        );
        let (meta, _) = crate::rule::parse_header(text).unwrap();
        let big = |c: char| c.to_string().repeat(255_000);
        let mut fields = Map::new();
        fields.insert("user_agent".into(), Value::String(big('a')));
        fields.insert("uri".into(), Value::String(format!("/{}\"", big('é'))));
        fields.insert("username".into(), Value::String(big('u')));
        fields.insert("name".into(), Value::String(big('n')));
        fields.insert("verb".into(), Value::String("get".into()));
        let events = vec![EventIdentity {
            event_id: "e1/ResponseComplete".into(),
            origin: Origin::File {
                path: "f".into(),
                line: 1,
            },
        }];
        Alert::new(&meta, 0, 0, fields, events)
    }

    #[test]
    fn an_oversized_alert_is_cut_to_the_limit_and_says_what_was_cut() {
        let alert = huge_alert();
        assert!(alert.to_json().len() > 1_000_000);
        for limit in [1_000_000, 100_000, 4_000] {
            let fitted = alert.to_json_within(limit).unwrap();
            assert!(fitted.cut);
            let json = fitted.json;
            assert!(json.len() <= limit, "{} > {limit}", json.len());
            let cut: Alert = serde_json::from_str(&json).unwrap();
            assert_eq!(cut.alert_id, alert.alert_id);
            assert_eq!(cut.rule_id, alert.rule_id);
            assert_eq!(cut.events, alert.events);
            assert_eq!(cut.fields["verb"], "get", "small fields are kept");
            let truncated = cut.truncated.unwrap();
            if limit == 4_000 {
                assert_eq!(truncated.len(), 4, "{truncated:?}");
                assert_eq!(truncated["user_agent"], 255_002, "the original JSON size");
            }
            for (name, size) in truncated {
                assert!(size > 255_000, "{name}: {size}");
                let value = cut.fields[&name].as_str().unwrap();
                assert!(value.ends_with(crate::fit::CUT_MARK), "{name}");
            }
        }
        // Nothing to cut: the alert as it is.
        let whole = alert.to_json_within(usize::MAX).unwrap();
        assert_eq!(whole.json, alert.to_json());
        assert!(!whole.cut);
        assert!(serde_json::from_str::<Alert>(&alert.to_json())
            .unwrap()
            .truncated
            .is_none());
    }

    #[test]
    fn an_alert_that_cannot_fit_is_an_error_naming_it() {
        let e = huge_alert().to_json_within(300).unwrap_err();
        assert!(e.to_string().starts_with("alert "), "{e}");
        assert!(e.to_string().contains("of rule t.ua"), "{e}");
        assert!(e.bytes > 300);
    }

    #[test]
    fn alert_id_is_deterministic_and_depends_on_rule_and_events() {
        let a = alert_id("r1", ["e1"]);
        assert_eq!(a, alert_id("r1", ["e1"]));
        assert_ne!(a, alert_id("r2", ["e1"]));
        assert_ne!(a, alert_id("r1", ["e2"]));
        // Separators keep ("ab","c") and ("a","bc") apart.
        assert_ne!(alert_id("r", ["ab", "c"]), alert_id("r", ["a", "bc"]));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn content_id_depends_on_payload_and_item() {
        assert_eq!(content_event_id(b"x", 0), content_event_id(b"x", 0));
        assert_ne!(content_event_id(b"x", 0), content_event_id(b"x", 1));
        assert_ne!(content_event_id(b"x", 0), content_event_id(b"y", 0));
    }

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(
            format_time_ns(1_470_327_477_881_781_397),
            "2016-08-04T16:17:57.881781397Z"
        );
        assert_eq!(format_time_ns(0), "1970-01-01T00:00:00Z");
    }
}
