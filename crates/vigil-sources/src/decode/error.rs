//! Why a message could not be decoded.
//!
//! [`DecodeError`]'s `Display` is the reason a dead letter carries
//! ([`super::DecodeFailure::reason`]); docs/schemas.md lists the reasons,
//! and tests and operators match on their words, so the texts are part of
//! the interface.
//!
//! Where a reason quotes a third-party error (serde_json, chrono,
//! UTF-8 validation), its text is part of `Display` and the error is kept
//! in the variant but not returned by `source()`: a chain printed with
//! `{:#}` would otherwise say it twice. serde_json's error is kept as its
//! text: it is neither `Clone` nor `Eq`, which [`DecodeFailure`]
//! (`super::DecodeFailure`) is.

use std::str::Utf8Error;

use vigil_model::alert::format_time_ns;

use super::envelope::EnvelopeError;

/// Why a message yields no rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is longer than `limits.max_message_bytes`.
    #[error("message of {bytes} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { bytes: usize, limit: usize },

    /// The payload is not UTF-8 (anywhere, also in fields no decoder reads).
    #[error("invalid UTF-8: {error}")]
    InvalidUtf8 { error: Utf8Error },

    /// The pre-parse scan refused the payload's structure.
    #[error(transparent)]
    Structure(#[from] StructureError),

    /// Not JSON, not an object, or a mapped field of the wrong type:
    /// serde_json's words.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),

    /// A field parsed on its own (Tetragon's event body, `node_name`,
    /// `time`) is not what it should be: serde_json's words.
    #[error("field {field}: invalid JSON: {error}")]
    FieldInvalidJson { field: String, error: String },

    /// A raw JSON field that is read for derived columns (`requestObject`
    /// for `pod_spec`) could not be walked: it is not one JSON value (never
    /// for a field the parser accepted, as every raw field is).
    #[error("{field}: not a JSON value")]
    UnreadableRawField { field: String },

    /// A field kept as raw JSON text is longer than `limits.max_field_bytes`.
    #[error("field {field} of {bytes} bytes exceeds the field limit of {limit} bytes")]
    FieldTooLarge {
        field: String,
        bytes: usize,
        limit: usize,
    },

    /// A time field is present but not a timestamp.
    #[error(transparent)]
    Time(#[from] TimeError),

    /// The event time is further ahead of the wall clock than
    /// `limits.max_event_time_ahead_ms`. `field` is where the time came
    /// from (`message timestamp` when the event carries none).
    #[error(
        "event time {} ({field}) is more than {limit_ms} ms ahead of the clock ({})",
        format_time_ns(*time_ns),
        format_time_ns(*now_ns)
    )]
    TimeAhead {
        field: String,
        time_ns: i64,
        now_ns: i64,
        limit_ms: u64,
    },

    /// The object is not an event of the source: `expected` names it (`an
    /// audit event`, `a Falco alert`), `missing` what it lacks.
    #[error("not {expected}: no {missing}")]
    NotAnEvent {
        expected: &'static str,
        missing: &'static str,
    },

    /// A Tetragon-style object with more than one event key.
    #[error("not {expected}: more than one event field ({first}, {second})")]
    SeveralEventFields {
        expected: &'static str,
        first: String,
        second: String,
    },

    /// An audit object of another `kind`.
    #[error("unsupported audit kind {kind:?}: expected Event or EventList")]
    UnsupportedAuditKind { kind: String },

    /// An audit `EventList` whose `items` is missing or `null`.
    #[error("EventList without an \"items\" array")]
    EventListWithoutItems,

    /// An audit `EventList` longer than `limits.max_events_per_message`.
    #[error("EventList of {events} events exceeds the limit of {limit}")]
    TooManyEvents { events: usize, limit: usize },

    /// Item `index` of an audit `EventList` failed (and with it the list).
    #[error("EventList item {index}: {error}")]
    EventListItem {
        index: usize,
        error: Box<DecodeError>,
    },

    /// The managed-Kubernetes envelope around the audit events could not
    /// be unwrapped.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

impl DecodeError {
    /// serde_json's refusal of the message.
    pub(crate) fn json(e: serde_json::Error) -> Self {
        DecodeError::InvalidJson(e.to_string())
    }

    /// serde_json's refusal of one field parsed on its own.
    pub(crate) fn field_json(field: &str, e: serde_json::Error) -> Self {
        DecodeError::FieldInvalidJson {
            field: field.to_string(),
            error: e.to_string(),
        }
    }

    /// This error, as the failure of item `index` of an `EventList`.
    pub(crate) fn in_event_list_item(self, index: usize) -> Self {
        DecodeError::EventListItem {
            index,
            error: Box::new(self),
        }
    }
}

/// What the pre-parse scan of a payload's bytes refuses (see
/// `decode::limits`). Offsets are bytes from the start of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    /// Objects and arrays nested deeper than `limits.max_nesting_depth`.
    #[error("JSON nesting deeper than the limit of {limit} levels (at byte {at})")]
    TooDeep { limit: usize, at: usize },

    /// A JSON string (key or value, anywhere) longer than
    /// `limits.max_field_bytes`; `at` is its opening quote.
    #[error(
        "a JSON string of {bytes} bytes (at byte {at}) exceeds the field limit of {limit} bytes"
    )]
    StringTooLong {
        bytes: usize,
        at: usize,
        limit: usize,
    },

    /// Something in a JSON string the parser may let through unchecked.
    #[error("{problem} at byte {at}")]
    BadString { problem: StringProblem, at: usize },
}

/// What is wrong inside a JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StringProblem {
    /// A raw byte below 0x20.
    #[error("control character in a JSON string")]
    ControlCharacter,
    /// `\u` not followed by four hex digits.
    #[error("invalid \\u escape")]
    InvalidUnicodeEscape,
    /// A `\u` high surrogate without its low half, or a low one alone.
    #[error("unpaired UTF-16 surrogate escape")]
    UnpairedSurrogate,
    /// A backslash followed by anything JSON does not allow there.
    #[error("invalid escape in a JSON string")]
    InvalidEscape,
}

/// A timestamp that cannot be read (see [`super::parse_time`]). `field`
/// names where it was, `value` is the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not RFC 3339, nor one of the zone-less forms read as UTC; chrono's
    /// words for the RFC 3339 attempt.
    #[error("field {field}: invalid RFC 3339 timestamp {value:?}: {error}")]
    Invalid {
        field: String,
        value: String,
        error: chrono::ParseError,
    },
    /// A valid timestamp outside the i64 nanoseconds since the epoch
    /// (about 1677-09-21 to 2262-04-11).
    #[error("field {field}: timestamp {value:?} is outside the representable range")]
    OutOfRange { field: String, value: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8_error(bytes: &[u8]) -> Utf8Error {
        std::str::from_utf8(bytes).unwrap_err()
    }

    /// The reasons docs/schemas.md shows, word for word.
    #[test]
    fn reasons_read_as_documented() {
        let cases: [(DecodeError, &str); 12] = [
            (
                DecodeError::MessageTooLarge {
                    bytes: 2_000_026,
                    limit: 1_048_576,
                },
                "message of 2000026 bytes exceeds the limit of 1048576 bytes",
            ),
            (
                StructureError::TooDeep { limit: 64, at: 131 }.into(),
                "JSON nesting deeper than the limit of 64 levels (at byte 131)",
            ),
            (
                StructureError::StringTooLong {
                    bytes: 300_000,
                    at: 9,
                    limit: 262_144,
                }
                .into(),
                "a JSON string of 300000 bytes (at byte 9) exceeds the field limit of 262144 bytes",
            ),
            (
                StructureError::BadString {
                    problem: StringProblem::UnpairedSurrogate,
                    at: 57,
                }
                .into(),
                "unpaired UTF-16 surrogate escape at byte 57",
            ),
            (
                DecodeError::InvalidUtf8 {
                    error: utf8_error(b"a\xffb"),
                },
                "invalid UTF-8: invalid utf-8 sequence of 1 bytes from index 1",
            ),
            (
                DecodeError::FieldTooLarge {
                    field: "requestObject".into(),
                    bytes: 300_012,
                    limit: 262_144,
                },
                "field requestObject of 300012 bytes exceeds the field limit of 262144 bytes",
            ),
            (
                DecodeError::TimeAhead {
                    field: "time".into(),
                    time_ns: 7_258_118_400_000_000_000,
                    now_ns: 0,
                    limit_ms: 900_000,
                },
                "event time 2200-01-01T00:00:00Z (time) is more than 900000 ms ahead of the clock (1970-01-01T00:00:00Z)",
            ),
            (
                DecodeError::UnsupportedAuditKind { kind: "Pod".into() },
                "unsupported audit kind \"Pod\": expected Event or EventList",
            ),
            (
                DecodeError::TooManyEvents {
                    events: 10_001,
                    limit: 10_000,
                },
                "EventList of 10001 events exceeds the limit of 10000",
            ),
            (
                DecodeError::EventListWithoutItems,
                "EventList without an \"items\" array",
            ),
            (
                DecodeError::NotAnEvent {
                    expected: "a Falco alert",
                    missing: "\"rule\" field",
                },
                "not a Falco alert: no \"rule\" field",
            ),
            (
                DecodeError::SeveralEventFields {
                    expected: "a Tetragon event",
                    first: "process_exec".into(),
                    second: "process_exit".into(),
                },
                "not a Tetragon event: more than one event field (process_exec, process_exit)",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        let item = DecodeError::json(serde_json::from_str::<u8>("x").unwrap_err());
        assert_eq!(
            item.in_event_list_item(1).to_string(),
            "EventList item 1: invalid JSON: expected value at line 1 column 1"
        );
        let time = crate::decode::parse_time("requestReceivedTimestamp", "not-a-time");
        assert!(time.unwrap_err().to_string().starts_with(
            "field requestReceivedTimestamp: invalid RFC 3339 timestamp \"not-a-time\": "
        ));
    }

    /// The quoted third-party error is in the text once: not also a source.
    #[test]
    fn no_reason_repeats_its_cause_as_a_source() {
        use std::error::Error;
        let utf8 = DecodeError::InvalidUtf8 {
            error: utf8_error(b"\xff"),
        };
        assert!(utf8.source().is_none());
        let time = DecodeError::from(crate::decode::parse_time("t", "x").unwrap_err());
        assert!(time.source().is_none());
    }
}
