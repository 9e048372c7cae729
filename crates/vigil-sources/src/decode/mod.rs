//! Decode: raw messages → Arrow record batches with the declared schema of
//! their source (see `crate::schema`).
//!
//! Decoding is per message and all-or-nothing: a message either yields all
//! of its events as rows, or none of them plus a [`DecodeFailure`] with the
//! reason. Failures are never dropped: the pipeline sends each one to the
//! dead-letter topic (or to stderr in replay), with the message's origin.

pub(crate) mod columns;
pub mod envelope;
mod error;
pub(crate) mod limits;
pub(crate) mod strings;
mod time;

/// What each audit event's request object says about its pods.
pub use crate::k8s_audit::pod_spec;

pub use error::{DecodeError, StringProblem, StructureError, TimeError};
pub use time::{parse_opt_time, parse_time};

use std::ops::{Deref, Range};

use arrow::record_batch::RecordBatch;

use vigil_model::source::{RawMessage, SourceKind};

/// Limits on the input a decoder accepts. A message beyond any of them is a
/// decode failure (a dead letter naming the limit), never a partially read
/// event: this keeps the service's memory and the rules' work bounded under
/// hostile input. Every limit is checked before anything of the message is
/// appended.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Most events accepted in one audit `EventList` message.
    pub max_events_per_message: usize,
    /// Longest JSON string anywhere in a message (keys included), and
    /// longest object kept as raw JSON text in a column (`request_object`,
    /// `response_object`, `output_fields`, `args`), in bytes.
    pub max_field_bytes: usize,
    /// Deepest nesting of JSON objects and arrays in a message.
    pub max_nesting_depth: usize,
    /// How far an event's time may be ahead of the wall clock, in
    /// milliseconds. A later event time is refused: one such event would
    /// push the correlation watermark into the future and make every real
    /// event after it late.
    pub max_event_time_ahead_ms: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_message_bytes: 1024 * 1024,
            max_events_per_message: 10_000,
            max_field_bytes: 256 * 1024,
            max_nesting_depth: 64,
            max_event_time_ahead_ms: 15 * 60 * 1000,
        }
    }
}

/// What a decoder needs besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct MessageInput {
    /// Index of the message in the slice given to [`decode`].
    pub(crate) message: u32,
    /// Event time of events that carry none: the message timestamp, else now.
    pub(crate) fallback_ns: i64,
    /// Wall clock of the batch.
    pub(crate) now_ns: i64,
    pub(crate) limits: DecodeLimits,
}

impl MessageInput {
    /// Refuse event times too far ahead of the wall clock (see
    /// [`DecodeLimits::max_event_time_ahead_ms`]).
    pub(crate) fn check_time(&self, field: &str, t: i64) -> Result<(), DecodeError> {
        let ahead_ns = i64::try_from(self.limits.max_event_time_ahead_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        if t > self.now_ns.saturating_add(ahead_ns) {
            return Err(DecodeError::TimeAhead {
                field: field.to_string(),
                time_ns: t,
                now_ns: self.now_ns,
                limit_ms: self.limits.max_event_time_ahead_ms,
            });
        }
        Ok(())
    }
}

/// Identity of one decoded event (one row of a [`DecodedBatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// Index of the message in the slice given to [`decode`].
    pub message: u32,
    /// Index of the event inside its message (non-zero only for audit
    /// `EventList` messages).
    pub item: u32,
    /// Where the event's own identifier is in its [`Events`]' text, when it
    /// has one ([`Events::native_id`]).
    native_id: Option<Range<usize>>,
}

/// The events of one decoded batch, row by row (a slice of [`EventRef`]s
/// through `Deref`), with their native ids in one text. An id per event in
/// a `String` of its own was an allocation per event, the largest of the
/// replay outside the parser (docs/benchmarks.md, stop 46).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    refs: Vec<EventRef>,
    ids: String,
}

impl Events {
    /// Room for `events` events (ids of about an audit event's length).
    pub fn with_capacity(events: usize) -> Self {
        Events {
            refs: Vec::with_capacity(events),
            ids: String::with_capacity(events * 56),
        }
    }

    /// Append an event. Its native id, when it has one, is the parts of
    /// `native_id` one after another.
    pub fn push(&mut self, message: u32, item: u32, native_id: Option<&[&str]>) {
        let native_id = native_id.map(|parts| {
            let start = self.ids.len();
            parts.iter().for_each(|part| self.ids.push_str(part));
            start..self.ids.len()
        });
        self.refs.push(EventRef {
            message,
            item,
            native_id,
        });
    }

    /// The event's own identifier (audit `auditID` and stage, Falco `uuid`,
    /// Tetragon exec id, event type and time) of the event in `row`, when it
    /// has one.
    pub fn native_id(&self, row: usize) -> Option<&str> {
        let range = self.refs[row].native_id.clone()?;
        Some(&self.ids[range])
    }

    /// Keep only the events `keep` holds for, in their order.
    pub fn retain(&mut self, keep: impl FnMut(&EventRef) -> bool) {
        self.refs.retain(keep);
    }
}

impl Deref for Events {
    type Target = [EventRef];

    fn deref(&self) -> &[EventRef] {
        &self.refs
    }
}

/// A message that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    /// Index of the message in the slice given to [`decode`].
    pub message: u32,
    /// Why, as the dead letter says it: the [`DecodeError`]'s text.
    pub reason: String,
}

/// The result of decoding one micro-batch of one source.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    pub source: SourceKind,
    /// Rows in the source's declared schema; row `i` is `events[i]`.
    pub batch: RecordBatch,
    pub events: Events,
    pub failures: Vec<DecodeFailure>,
    /// Messages that decoded to no event at all: audit `EventList`s with an
    /// empty `items` array. Valid input with nothing to evaluate; counted
    /// (metric `empty_messages`) rather than dead-lettered. Every message
    /// index is in exactly one of: `events` (as some `message`), `failures`,
    /// `empty`.
    pub empty: Vec<u32>,
}

/// Decode `messages` (all of source `source`) into one batch.
///
/// `now_ns` is the event time given to events that carry no time and came
/// without a message timestamp.
pub fn decode(
    source: SourceKind,
    messages: &[RawMessage],
    limits: DecodeLimits,
    now_ns: i64,
) -> DecodedBatch {
    let mut events = Events::with_capacity(messages.len());
    let mut failures = Vec::new();
    let mut empty = Vec::new();
    let bytes = messages.iter().map(|m| m.payload.len()).sum();
    let mut sink = (crate::registry::expect(source).rows)(messages.len(), bytes);
    for (index, message) in messages.iter().enumerate() {
        debug_assert_eq!(message.source, source);
        let index = index as u32;
        let fallback_ns = message
            .timestamp_ms
            .map(|ms| ms.saturating_mul(1_000_000))
            .unwrap_or(now_ns);
        let input = MessageInput {
            message: index,
            fallback_ns,
            now_ns,
            limits,
        };
        let before = events.len();
        let result = if message.payload.len() > limits.max_message_bytes {
            Err(DecodeError::MessageTooLarge {
                bytes: message.payload.len(),
                limit: limits.max_message_bytes,
            })
        } else {
            // The parser checks UTF-8 only in the strings it decodes, not in
            // fields it skips: check the whole message, so what is accepted
            // is the same for Vigil and for whoever reads it next.
            // Validated once here: the decoders parse the `&str` without
            // validating it again.
            utf8(&message.payload).and_then(|text| {
                limits::check_structure(
                    text.as_bytes(),
                    limits.max_nesting_depth,
                    limits.max_field_bytes,
                )?;
                sink.append(text, input, &mut events)
            })
        };
        match result {
            Err(error) => {
                debug_assert_eq!(events.len(), before, "a failed message must add no rows");
                failures.push(DecodeFailure {
                    message: index,
                    reason: error.to_string(),
                });
            }
            Ok(()) if events.len() == before => empty.push(index),
            Ok(()) => {}
        }
    }
    let batch = sink.finish();
    debug_assert_eq!(batch.num_rows(), events.len());
    DecodedBatch {
        source,
        batch,
        events,
        failures,
        empty,
    }
}

/// The payload as text, or why it is not UTF-8. SIMD validation first (most
/// messages are valid); the standard library's error for the reason.
fn utf8(payload: &[u8]) -> Result<&str, DecodeError> {
    match simdutf8::basic::from_utf8(payload) {
        Ok(text) => Ok(text),
        Err(_) => Err(match std::str::from_utf8(payload) {
            Err(error) => DecodeError::InvalidUtf8 { error },
            Ok(_) => unreachable!("simdutf8 and std agree on what is UTF-8"),
        }),
    }
}

/// Accumulates the rows of one source's table: a source's decoder.
pub trait RowSink {
    /// Append every event of one message, or none of them and return why.
    /// On success pushes one event ([`Events::push`]) per appended row.
    /// Implementations check every limit and every field before appending
    /// anything.
    fn append(
        &mut self,
        payload: &str,
        input: MessageInput,
        events: &mut Events,
    ) -> Result<(), DecodeError>;

    /// Build the batch of everything appended so far.
    fn finish(&mut self) -> RecordBatch;
}

#[cfg(test)]
mod tests;
