//! Dead letters: input Vigil could not process, kept with the reason.
//!
//! Two kinds: a message that failed to decode (its payload is kept, so it
//! can be fixed and replayed), and a rule that failed on a batch (the
//! origins of the batch's events are kept, so it can be replayed once the
//! rule is fixed). Format: docs/alerts.md#dead-letters.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::alert::format_time_ns;
use crate::fit::{cut_text, keep_for, Fitted, RecordTooLarge};
use crate::source::{Origin, SourceKind};

/// Most payload bytes a dead letter keeps. JSON escaping can double the
/// size; 256 KiB stays under Kafka's default 1 MB message limit.
pub const MAX_KEPT_PAYLOAD: usize = 256 * 1024;

/// One dead-letter record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub schema_version: u32,
    pub kind: DeadLetterKind,
    pub reason: String,
    pub source: SourceKind,
    /// The rule that failed (`rule_error`), or whose alert could not be
    /// delivered (`output_error`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule_id: Option<String>,
    /// The output (its configured `name`) that could not deliver the
    /// alert (`output_error` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output: Option<String>,
    /// The undelivered alert's id (`output_error` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alert_id: Option<String>,
    /// Where the input came from: one origin for a decode error, every
    /// message of the batch for a rule error.
    pub origins: Vec<Origin>,
    pub failed_at: String,
    /// The message as UTF-8 text, when it is valid UTF-8 (`decode_error`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload: Option<String>,
    /// The message as base64, when it is not valid UTF-8 (`decode_error`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_base64: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    DecodeError,
    RuleError,
    /// An event behind the watermark: evaluated by per-event rules, but not
    /// retained for correlation (sent to the late-events topic).
    LateEvent,
    /// An alert an output could not deliver after its retries; the payload
    /// is the alert's JSON, so it can be sent again.
    OutputError,
}

impl DeadLetter {
    pub fn decode_error(
        source: SourceKind,
        origin: Origin,
        payload: &[u8],
        reason: String,
        now_ns: i64,
    ) -> Self {
        // A dead letter must fit the broker's message size even when the
        // message it reports did not: keep the head, say so in the reason.
        let (payload, reason) = if payload.len() > MAX_KEPT_PAYLOAD {
            (
                &payload[..MAX_KEPT_PAYLOAD],
                format!(
                    "{reason} (payload truncated to its first {MAX_KEPT_PAYLOAD} of {} bytes)",
                    payload.len()
                ),
            )
        } else {
            (payload, reason)
        };
        let (payload, payload_base64) = match std::str::from_utf8(payload) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(payload)),
            ),
        };
        DeadLetter {
            schema_version: 1,
            kind: DeadLetterKind::DecodeError,
            reason,
            source,
            rule_id: None,
            output: None,
            alert_id: None,
            origins: vec![origin],
            failed_at: format_time_ns(now_ns),
            payload,
            payload_base64,
        }
    }

    pub fn rule_error(
        source: SourceKind,
        rule_id: String,
        origins: Vec<Origin>,
        reason: String,
        now_ns: i64,
    ) -> Self {
        DeadLetter {
            schema_version: 1,
            kind: DeadLetterKind::RuleError,
            reason,
            source,
            rule_id: Some(rule_id),
            output: None,
            alert_id: None,
            origins,
            failed_at: format_time_ns(now_ns),
            payload: None,
            payload_base64: None,
        }
    }

    /// An event that arrived behind the watermark; its payload is kept so it
    /// can be re-processed.
    pub fn late_event(
        source: SourceKind,
        origin: Origin,
        payload: &[u8],
        event_time_ns: i64,
        watermark_ns: i64,
        now_ns: i64,
    ) -> Self {
        let mut d = Self::decode_error(
            source,
            origin,
            payload,
            format!(
                "event time {} is behind the watermark {}: not retained for correlation",
                format_time_ns(event_time_ns),
                format_time_ns(watermark_ns)
            ),
            now_ns,
        );
        d.kind = DeadLetterKind::LateEvent;
        d
    }

    /// An alert that `output` could not deliver, for `reason`: its origins
    /// are the alert's events' and its payload the alert's JSON (`alert_json`,
    /// as read from the alerts topic).
    pub fn output_error(
        alert: &crate::alert::Alert,
        alert_json: &str,
        output: &str,
        reason: String,
        now_ns: i64,
    ) -> Self {
        let mut d = Self::decode_error(
            alert.source,
            crate::source::Origin::File {
                path: "".into(),
                line: 0,
            },
            alert_json.as_bytes(),
            reason,
            now_ns,
        );
        d.kind = DeadLetterKind::OutputError;
        d.origins = alert.events.iter().map(|e| e.origin.clone()).collect();
        d.rule_id = Some(alert.rule_id.clone());
        d.output = Some(output.to_string());
        d.alert_id = Some(alert.alert_id.clone());
        d
    }

    /// Kafka key: the first origin, so redeliveries of one bad message share a key.
    pub fn key(&self) -> String {
        if let (Some(output), Some(alert_id)) = (&self.output, &self.alert_id) {
            return format!("{output}@{alert_id}");
        }
        match (&self.rule_id, self.origins.first()) {
            (Some(rule), Some(o)) => format!("{rule}@{o}"),
            (None, Some(o)) => o.to_string(),
            (_, None) => String::new(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("dead letters serialize")
    }

    /// The record's JSON within `limit` bytes: the payload cut to a marked
    /// prefix, then the origins and the reason, each cut noted in the
    /// reason. What the dead letter is about (kind, source, rule, first
    /// origin) is kept.
    pub fn to_json_within(&self, limit: usize) -> Result<Fitted, RecordTooLarge> {
        let mut json = self.to_json();
        if json.len() <= limit {
            return Ok(Fitted { json, cut: false });
        }
        let mut cut = self.clone();
        for step in 0..3 {
            if json.len() <= limit {
                return Ok(Fitted { json, cut: true });
            }
            let excess = json.len() - limit;
            match step {
                0 => cut.cut_payload(excess),
                1 => cut.cut_origins(excess),
                _ => {
                    let keep = keep_for(cut.reason.len(), excess);
                    cut.reason = cut_text(&cut.reason, keep);
                }
            }
            json = cut.to_json();
        }
        if json.len() <= limit {
            return Ok(Fitted { json, cut: true });
        }
        Err(RecordTooLarge {
            what: format!("{:?} dead letter", self.kind),
            bytes: json.len(),
            limit,
        })
    }

    fn cut_payload(&mut self, excess: usize) {
        let note =
            |size: usize| format!(" (payload cut from {size} bytes to fit the record limit)");
        if let Some(text) = &self.payload {
            let size = text.len();
            self.payload = Some(cut_text(text, keep_for(size, excess + 64)));
            self.reason.push_str(&note(size));
        } else if let Some(b64) = &self.payload_base64 {
            let size = b64.len();
            self.payload_base64 =
                Some(b64[..keep_for(size, excess + 64).min(size) / 4 * 4].to_string());
            self.reason.push_str(&note(size));
        }
    }

    fn cut_origins(&mut self, excess: usize) {
        let total = self.origins.len();
        let mut freed = 0;
        while self.origins.len() > 1 && freed < excess + 128 {
            let last = self.origins.pop().expect("more than one");
            freed += serde_json::to_string(&last).map_or(0, |j| j.len() + 1);
        }
        if self.origins.len() < total {
            let keep = self.origins.len();
            self.reason
                .push_str(&format!(" (origins cut to the first {keep} of {total})"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_dead_letter_is_cut_to_the_limit() {
        let origin = |line| Origin::File {
            path: "f".into(),
            line,
        };
        let payload = "x".repeat(200_000);
        let decode = DeadLetter::decode_error(
            SourceKind::K8sAudit,
            origin(1),
            payload.as_bytes(),
            "bad".into(),
            0,
        );
        let fitted = decode.to_json_within(10_000).unwrap();
        assert!(fitted.cut);
        let json = fitted.json;
        assert!(json.len() <= 10_000);
        let cut: DeadLetter = serde_json::from_str(&json).unwrap();
        assert!(cut.payload.unwrap().ends_with(crate::fit::CUT_MARK));
        assert!(
            cut.reason.starts_with("bad (payload cut from 200000 bytes"),
            "{}",
            cut.reason
        );
        let binary = DeadLetter::decode_error(
            SourceKind::K8sAudit,
            origin(1),
            &[0xff; 100_000],
            "bad".into(),
            0,
        );
        let cut: DeadLetter =
            serde_json::from_str(&binary.to_json_within(10_000).unwrap().json).unwrap();
        assert!(base64::engine::general_purpose::STANDARD
            .decode(cut.payload_base64.unwrap())
            .is_ok());
        let rule = DeadLetter::rule_error(
            SourceKind::K8sAudit,
            "r".into(),
            (1..=5000).map(origin).collect(),
            "failed".into(),
            0,
        );
        let cut: DeadLetter =
            serde_json::from_str(&rule.to_json_within(10_000).unwrap().json).unwrap();
        assert_eq!(cut.origins[0], origin(1));
        assert!(cut.origins.len() < 5000);
        assert!(
            cut.reason.contains("origins cut to the first"),
            "{}",
            cut.reason
        );
        assert!(rule.to_json_within(50).is_err());
    }

    #[test]
    fn oversized_payloads_are_truncated_and_say_so() {
        let origin = Origin::File {
            path: "-".into(),
            line: 1,
        };
        let big = vec![b'x'; MAX_KEPT_PAYLOAD * 3];
        let d = DeadLetter::decode_error(
            SourceKind::Falco,
            origin.clone(),
            &big,
            "too large".into(),
            0,
        );
        assert_eq!(d.payload.as_ref().unwrap().len(), MAX_KEPT_PAYLOAD);
        assert!(
            d.reason.starts_with("too large (payload truncated"),
            "{}",
            d.reason
        );
        let small = DeadLetter::decode_error(SourceKind::Falco, origin, b"{x", "bad".into(), 0);
        assert_eq!(small.payload.as_deref(), Some("{x"));
        assert_eq!(small.reason, "bad");
    }
}
