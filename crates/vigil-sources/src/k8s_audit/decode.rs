//! Decoder of Kubernetes audit events (audit.k8s.io/v1 `Event` and
//! `EventList`, and the older v1beta1-style events that carry `timestamp`
//! instead of `requestReceivedTimestamp`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayBuilder, ArrayRef, Int32Builder, ListBuilder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::decode::columns::*;
use crate::decode::limits::check_raw_field;
use super::pod_spec::{self, PodSpecCols, PodSpecFacts};
use crate::decode::strings::{opt, Str};
use crate::decode::{parse_opt_time, DecodeError, Events, MessageInput, RowSink};
use super::schema;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEventIn<'a> {
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    api_version: Option<Str<'a>>,
    #[serde(borrow)]
    level: Option<Str<'a>>,
    #[serde(rename = "auditID", borrow)]
    audit_id: Option<Str<'a>>,
    #[serde(borrow)]
    stage: Option<Str<'a>>,
    #[serde(rename = "requestURI", borrow)]
    request_uri: Option<Str<'a>>,
    #[serde(borrow)]
    verb: Option<Str<'a>>,
    #[serde(borrow)]
    user: Option<UserInfoIn<'a>>,
    #[serde(borrow)]
    impersonated_user: Option<UserInfoIn<'a>>,
    #[serde(rename = "sourceIPs", borrow)]
    source_ips: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    user_agent: Option<Str<'a>>,
    #[serde(borrow)]
    object_ref: Option<ObjectRefIn<'a>>,
    #[serde(borrow)]
    response_status: Option<StatusIn<'a>>,
    #[serde(borrow)]
    request_object: Option<&'a RawValue>,
    #[serde(borrow)]
    response_object: Option<&'a RawValue>,
    #[serde(borrow)]
    request_received_timestamp: Option<Str<'a>>,
    #[serde(borrow)]
    stage_timestamp: Option<Str<'a>>,
    /// Pre-v1 audit events carry their time here.
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
    #[serde(borrow)]
    metadata: Option<ListMetaIn<'a>>,
    #[serde(borrow)]
    annotations: Option<BTreeMap<Str<'a>, Option<Str<'a>>>>,
    /// Present on `EventList`.
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct UserInfoIn<'a> {
    #[serde(borrow)]
    username: Option<Str<'a>>,
    #[serde(borrow)]
    uid: Option<Str<'a>>,
    #[serde(borrow)]
    groups: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRefIn<'a> {
    #[serde(borrow)]
    resource: Option<Str<'a>>,
    #[serde(borrow)]
    subresource: Option<Str<'a>>,
    #[serde(borrow)]
    namespace: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    api_group: Option<Str<'a>>,
    #[serde(borrow)]
    api_version: Option<Str<'a>>,
    #[serde(borrow)]
    uid: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct StatusIn<'a> {
    code: Option<i32>,
    #[serde(borrow)]
    status: Option<Str<'a>>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMetaIn<'a> {
    #[serde(borrow)]
    creation_timestamp: Option<Str<'a>>,
}

/// An audit event that passed validation, ready to append.
struct Checked<'e, 'a> {
    event: &'e AuditEventIn<'a>,
    event_time: i64,
    received: Option<i64>,
    stage_at: Option<i64>,
    /// `None` for events `pod_spec::applies_to` excludes.
    pod_spec: Option<PodSpecFacts>,
}

fn check<'e, 'a>(
    event: &'e AuditEventIn<'a>,
    input: &MessageInput,
) -> Result<Checked<'e, 'a>, DecodeError> {
    match opt(&event.kind) {
        Some("Event") => {}
        None if event.verb.is_some() || event.audit_id.is_some() => {}
        None => {
            return Err(DecodeError::NotAnEvent {
                expected: "an audit event",
                missing: "\"kind\", \"verb\" or \"auditID\"",
            })
        }
        Some(other) => {
            return Err(DecodeError::UnsupportedAuditKind {
                kind: other.to_string(),
            })
        }
    }
    let received = parse_opt_time(
        "requestReceivedTimestamp",
        opt(&event.request_received_timestamp),
    )?;
    let stage_at = parse_opt_time("stageTimestamp", opt(&event.stage_timestamp))?;
    let legacy = parse_opt_time("timestamp", opt(&event.timestamp))?;
    let created = parse_opt_time(
        "metadata.creationTimestamp",
        event
            .metadata
            .as_ref()
            .and_then(|m| opt(&m.creation_timestamp)),
    )?;
    let (time_field, event_time) = [
        ("requestReceivedTimestamp", received),
        ("stageTimestamp", stage_at),
        ("timestamp", legacy),
        ("metadata.creationTimestamp", created),
    ]
    .into_iter()
    .find_map(|(f, t)| t.map(|t| (f, t)))
    .unwrap_or(("message timestamp", input.fallback_ns));
    input.check_time(time_field, event_time)?;
    let max = input.limits.max_field_bytes;
    check_raw_field("requestObject", event.request_object, max)?;
    check_raw_field("responseObject", event.response_object, max)?;
    let object_ref = event.object_ref.as_ref();
    let pod_spec = match event.request_object {
        Some(raw)
            if pod_spec::applies_to(
                object_ref.and_then(|o| opt(&o.resource)),
                object_ref.and_then(|o| opt(&o.subresource)),
            ) =>
        {
            Some(pod_spec::read(raw.get())?)
        }
        _ => None,
    };
    Ok(Checked {
        event,
        event_time,
        received: received.or(legacy),
        stage_at,
        pod_spec,
    })
}

/// Builder of `UserInfo` struct columns.
struct UserCols {
    username: StringBuilder,
    uid: StringBuilder,
    groups: ListBuilder<StringBuilder>,
    valid: NullBufferBuilder,
}

impl UserCols {
    fn new(cap: usize) -> Self {
        UserCols {
            username: StringBuilder::with_capacity(cap, cap * 16),
            uid: StringBuilder::new(),
            groups: ListBuilder::new(StringBuilder::new()),
            valid: NullBufferBuilder::new(cap),
        }
    }
    fn append(&mut self, u: Option<&UserInfoIn<'_>>) {
        self.valid.append(u.is_some());
        put_str(&mut self.username, u.and_then(|u| opt(&u.username)));
        put_str(&mut self.uid, u.and_then(|u| opt(&u.uid)));
        put_list(&mut self.groups, u.and_then(|u| u.groups.as_deref()));
    }
    fn finish(&mut self) -> ArrayRef {
        let children = vec![
            finish_str(&mut self.username),
            finish_str(&mut self.uid),
            finish_list(&mut self.groups),
        ];
        struct_array(schema::user_info_fields(), children, &mut self.valid)
    }
}

/// Accumulates rows of the `k8s_audit` table.
pub struct AuditRows {
    event_time: TimestampNanosecondBuilder,
    audit_id: StringBuilder,
    api_version: StringBuilder,
    level: StringBuilder,
    stage: StringBuilder,
    verb: StringBuilder,
    request_uri: StringBuilder,
    user: UserCols,
    impersonated_user: UserCols,
    source_ips: ListBuilder<StringBuilder>,
    user_agent: StringBuilder,
    object_ref: [StringBuilder; 7],
    object_ref_valid: NullBufferBuilder,
    status_code: Int32Builder,
    status_text: [StringBuilder; 3],
    status_valid: NullBufferBuilder,
    received: TimestampNanosecondBuilder,
    stage_at: TimestampNanosecondBuilder,
    annotations: MapBuilder<StringBuilder, StringBuilder>,
    request_object: StringBuilder,
    response_object: StringBuilder,
    pod_spec: PodSpecCols,
    row: UInt32Builder,
}

impl AuditRows {
    /// Room for `cap` events of `payload_bytes` bytes in all: the raw JSON
    /// columns get a share of that up front (growing by doubling copies
    /// what was written; untouched capacity costs no page until written).
    pub fn with_capacity(cap: usize, payload_bytes: usize) -> Self {
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        AuditRows {
            event_time: timestamps(cap),
            audit_id: StringBuilder::with_capacity(cap, cap * 36),
            api_version: StringBuilder::with_capacity(cap, cap * 16),
            level: StringBuilder::with_capacity(cap, cap * 16),
            stage: StringBuilder::with_capacity(cap, cap * 16),
            verb: StringBuilder::with_capacity(cap, cap * 8),
            request_uri: StringBuilder::with_capacity(cap, cap * 64),
            user: UserCols::new(cap),
            impersonated_user: UserCols::new(0),
            source_ips: ListBuilder::new(StringBuilder::new()),
            user_agent: StringBuilder::with_capacity(cap, cap * 64),
            object_ref: std::array::from_fn(|_| StringBuilder::new()),
            object_ref_valid: NullBufferBuilder::new(cap),
            status_code: Int32Builder::with_capacity(cap),
            status_text: std::array::from_fn(|_| StringBuilder::new()),
            status_valid: NullBufferBuilder::new(cap),
            received: timestamps(cap),
            stage_at: timestamps(cap),
            annotations: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new()),
            request_object: StringBuilder::with_capacity(cap, payload_bytes / 2),
            response_object: StringBuilder::with_capacity(cap, payload_bytes / 4),
            pod_spec: PodSpecCols::new(cap),
            row: UInt32Builder::with_capacity(cap),
        }
    }

    fn append_checked(&mut self, c: &Checked<'_, '_>) {
        let e = c.event;
        self.row.append_value(self.event_time.len() as u32);
        self.event_time.append_value(c.event_time);
        put_str(&mut self.audit_id, opt(&e.audit_id));
        put_str(&mut self.api_version, opt(&e.api_version));
        put_str(&mut self.level, opt(&e.level));
        put_str(&mut self.stage, opt(&e.stage));
        put_str(&mut self.verb, opt(&e.verb));
        put_str(&mut self.request_uri, opt(&e.request_uri));
        self.user.append(e.user.as_ref());
        self.impersonated_user.append(e.impersonated_user.as_ref());
        put_list(&mut self.source_ips, e.source_ips.as_deref());
        put_str(&mut self.user_agent, opt(&e.user_agent));

        let o = e.object_ref.as_ref();
        self.object_ref_valid.append(o.is_some());
        let parts = [
            o.and_then(|o| opt(&o.resource)),
            o.and_then(|o| opt(&o.subresource)),
            o.and_then(|o| opt(&o.namespace)),
            o.and_then(|o| opt(&o.name)),
            o.and_then(|o| opt(&o.api_group)),
            o.and_then(|o| opt(&o.api_version)),
            o.and_then(|o| opt(&o.uid)),
        ];
        for (b, v) in self.object_ref.iter_mut().zip(parts) {
            put_str(b, v);
        }

        let s = e.response_status.as_ref();
        self.status_valid.append(s.is_some());
        self.status_code.append_option(s.and_then(|s| s.code));
        let parts = [
            s.and_then(|s| opt(&s.status)),
            s.and_then(|s| opt(&s.reason)),
            s.and_then(|s| opt(&s.message)),
        ];
        for (b, v) in self.status_text.iter_mut().zip(parts) {
            put_str(b, v);
        }

        self.received.append_option(c.received);
        self.stage_at.append_option(c.stage_at);
        match &e.annotations {
            Some(map) => {
                for (k, v) in map {
                    self.annotations.keys().append_value(k.as_str());
                    put_str(self.annotations.values(), v.as_ref().map(|v| v.as_str()));
                }
                self.annotations
                    .append(true)
                    .expect("keys and values appended in pairs");
            }
            None => self
                .annotations
                .append(false)
                .expect("keys and values appended in pairs"),
        }
        put_str(
            &mut self.request_object,
            e.request_object.map(RawValue::get),
        );
        put_str(
            &mut self.response_object,
            e.response_object.map(RawValue::get),
        );
        self.pod_spec.append(c.pod_spec.as_ref());
    }
}

/// Push `e`'s event. The same auditID is logged once per stage
/// (RequestReceived, ResponseStarted, ResponseComplete, Panic): the stage is
/// part of the native id.
fn push_event(events: &mut Events, message: u32, item: u32, e: &AuditEventIn<'_>) {
    match (opt(&e.audit_id), opt(&e.stage)) {
        (Some(id), Some(stage)) => events.push(message, item, Some(&[id, "/", stage])),
        (Some(id), None) => events.push(message, item, Some(&[id])),
        (None, _) => events.push(message, item, None),
    }
}

impl RowSink for AuditRows {
    fn append(
        &mut self,
        payload: &str,
        input: MessageInput,
        events: &mut Events,
    ) -> Result<(), DecodeError> {
        let message = input.message;
        let limits = input.limits;
        let event: AuditEventIn = serde_json::from_str(payload).map_err(DecodeError::json)?;
        if opt(&event.kind) == Some("EventList") {
            // An EventList without `items` is malformed; `"items": []` is a
            // valid empty list: no rows, reported by `decode` as empty.
            let items = event
                .items
                .as_deref()
                .ok_or(DecodeError::EventListWithoutItems)?;
            if items.len() > limits.max_events_per_message {
                return Err(DecodeError::TooManyEvents {
                    events: items.len(),
                    limit: limits.max_events_per_message,
                });
            }
            // Parse and check every item before appending any: a message is
            // decoded whole or not at all.
            let parsed = items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    serde_json::from_str::<AuditEventIn>(raw.get())
                        .map_err(|e| DecodeError::json(e).in_event_list_item(i))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let checked = parsed
                .iter()
                .enumerate()
                .map(|(i, e)| check(e, &input).map_err(|r| r.in_event_list_item(i)))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, c) in checked.iter().enumerate() {
                self.append_checked(c);
                push_event(events, message, i as u32, c.event);
            }
            return Ok(());
        }
        let checked = check(&event, &input)?;
        self.append_checked(&checked);
        push_event(events, message, 0, &event);
        Ok(())
    }

    fn finish(&mut self) -> RecordBatch {
        let object_ref = {
            let children = self.object_ref.iter_mut().map(finish_str).collect();
            struct_array(
                schema::object_ref_fields(),
                children,
                &mut self.object_ref_valid,
            )
        };
        let status = {
            let mut children = vec![finish_i32(&mut self.status_code)];
            children.extend(self.status_text.iter_mut().map(finish_str));
            struct_array(
                schema::response_status_fields(),
                children,
                &mut self.status_valid,
            )
        };
        let columns: Vec<ArrayRef> = vec![
            finish_ts(&mut self.event_time),
            finish_str(&mut self.audit_id),
            finish_str(&mut self.api_version),
            finish_str(&mut self.level),
            finish_str(&mut self.stage),
            finish_str(&mut self.verb),
            finish_str(&mut self.request_uri),
            self.user.finish(),
            self.impersonated_user.finish(),
            finish_list(&mut self.source_ips),
            finish_str(&mut self.user_agent),
            object_ref,
            status,
            finish_ts(&mut self.received),
            finish_ts(&mut self.stage_at),
            Arc::new(self.annotations.finish()),
            finish_str(&mut self.request_object),
            finish_str(&mut self.response_object),
            self.pod_spec.finish(),
            Arc::new(self.row.finish()),
        ];
        RecordBatch::try_new(schema::k8s_audit(), columns)
            .expect("audit columns match the declared schema")
    }
}
