//! Decoder of Falco JSON output (`json_output: true`, one alert per message).

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, ListBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::decode::columns::*;
use crate::decode::limits::check_raw_field;
use crate::decode::strings::{opt, Str};
use crate::decode::{parse_time, DecodeError, Events, MessageInput, RowSink};
use super::schema;

#[derive(Deserialize)]
struct FalcoAlertIn<'a> {
    #[serde(borrow)]
    time: Option<Str<'a>>,
    #[serde(borrow)]
    uuid: Option<Str<'a>>,
    #[serde(borrow)]
    rule: Option<Str<'a>>,
    #[serde(borrow)]
    priority: Option<Str<'a>>,
    #[serde(borrow)]
    source: Option<Str<'a>>,
    #[serde(borrow)]
    hostname: Option<Str<'a>>,
    #[serde(borrow)]
    output: Option<Str<'a>>,
    #[serde(borrow)]
    tags: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    output_fields: Option<&'a RawValue>,
}

/// Accumulates rows of the `falco` table.
pub struct FalcoRows {
    event_time: TimestampNanosecondBuilder,
    uuid: StringBuilder,
    rule: StringBuilder,
    priority: StringBuilder,
    source: StringBuilder,
    hostname: StringBuilder,
    output: StringBuilder,
    tags: ListBuilder<StringBuilder>,
    output_fields: StringBuilder,
    row: UInt32Builder,
}

impl FalcoRows {
    pub fn with_capacity(cap: usize) -> Self {
        FalcoRows {
            event_time: timestamps(cap),
            uuid: StringBuilder::new(),
            rule: StringBuilder::new(),
            priority: StringBuilder::new(),
            source: StringBuilder::new(),
            hostname: StringBuilder::new(),
            output: StringBuilder::new(),
            tags: ListBuilder::new(StringBuilder::new()),
            output_fields: StringBuilder::new(),
            row: UInt32Builder::with_capacity(cap),
        }
    }
}

impl RowSink for FalcoRows {
    fn append(
        &mut self,
        payload: &str,
        input: MessageInput,
        events: &mut Events,
    ) -> Result<(), DecodeError> {
        let message = input.message;
        let a: FalcoAlertIn = serde_json::from_str(payload).map_err(DecodeError::json)?;
        if a.rule.is_none() {
            return Err(DecodeError::NotAnEvent {
                expected: "a Falco alert",
                missing: "\"rule\" field",
            });
        }
        let event_time = match opt(&a.time) {
            Some(t) => parse_time("time", t)?,
            None => input.fallback_ns,
        };
        input.check_time(
            if a.time.is_some() {
                "time"
            } else {
                "message timestamp"
            },
            event_time,
        )?;
        check_raw_field(
            "output_fields",
            a.output_fields,
            input.limits.max_field_bytes,
        )?;
        self.row.append_value(self.event_time.len() as u32);
        self.event_time.append_value(event_time);
        put_str(&mut self.uuid, opt(&a.uuid));
        put_str(&mut self.rule, opt(&a.rule));
        put_str(&mut self.priority, opt(&a.priority));
        put_str(&mut self.source, opt(&a.source));
        put_str(&mut self.hostname, opt(&a.hostname));
        put_str(&mut self.output, opt(&a.output));
        put_list(&mut self.tags, a.tags.as_deref());
        put_str(&mut self.output_fields, a.output_fields.map(RawValue::get));
        let uuid = opt(&a.uuid);
        events.push(message, 0, uuid.as_ref().map(std::slice::from_ref));
        Ok(())
    }

    fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            finish_ts(&mut self.event_time),
            finish_str(&mut self.uuid),
            finish_str(&mut self.rule),
            finish_str(&mut self.priority),
            finish_str(&mut self.source),
            finish_str(&mut self.hostname),
            finish_str(&mut self.output),
            finish_list(&mut self.tags),
            finish_str(&mut self.output_fields),
            Arc::new(self.row.finish()),
        ];
        RecordBatch::try_new(schema::falco(), columns)
            .expect("falco columns match the declared schema")
    }
}
