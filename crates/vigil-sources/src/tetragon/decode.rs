//! Decoder of Cilium Tetragon JSON export events: one object per message
//! with a single event key (`process_exec`, `process_exit`,
//! `process_kprobe`, ...) beside `node_name` and `time`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayBuilder, ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder,
};
use arrow::datatypes::{DataType, Fields};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::decode::columns::*;
use crate::decode::limits::check_raw_field;
use crate::decode::strings::{opt, Str};
use crate::decode::{
    parse_opt_time, parse_time, DecodeError, Events, MessageInput, RowSink, TimeError,
};
use super::schema;

/// What a message that is none is not (in its decode failure's reason).
const NOT_AN_EVENT: &str = "a Tetragon event";

/// Top-level keys that are metadata, not the event itself.
const METADATA_KEYS: [&str; 4] = ["node_name", "time", "cluster_name", "aggregation_info"];

#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(borrow)]
    process: Option<ProcessIn<'a>>,
    #[serde(borrow)]
    parent: Option<ProcessIn<'a>>,
    #[serde(borrow)]
    function_name: Option<Str<'a>>,
    #[serde(borrow)]
    policy_name: Option<Str<'a>>,
    #[serde(borrow)]
    action: Option<Str<'a>>,
    #[serde(borrow)]
    args: Option<&'a RawValue>,
    #[serde(borrow)]
    source_ip: Option<Str<'a>>,
    source_port: Option<i32>,
    #[serde(borrow)]
    destination_ip: Option<Str<'a>>,
    destination_port: Option<i32>,
    #[serde(borrow)]
    protocol: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ProcessIn<'a> {
    #[serde(borrow)]
    exec_id: Option<Str<'a>>,
    pid: Option<i64>,
    uid: Option<i64>,
    #[serde(borrow)]
    cwd: Option<Str<'a>>,
    #[serde(borrow)]
    binary: Option<Str<'a>>,
    #[serde(borrow)]
    arguments: Option<Str<'a>>,
    #[serde(borrow)]
    flags: Option<Str<'a>>,
    #[serde(borrow)]
    start_time: Option<Str<'a>>,
    auid: Option<i64>,
    #[serde(borrow)]
    parent_exec_id: Option<Str<'a>>,
    #[serde(borrow)]
    pod: Option<PodIn<'a>>,
    #[serde(borrow)]
    docker: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct PodIn<'a> {
    #[serde(borrow)]
    namespace: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    container: Option<ContainerIn<'a>>,
    #[serde(borrow)]
    workload: Option<Str<'a>>,
    #[serde(borrow)]
    workload_kind: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ContainerIn<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    image: Option<ImageIn<'a>>,
    #[serde(borrow)]
    start_time: Option<Str<'a>>,
    pid: Option<i64>,
}

#[derive(Deserialize)]
struct ImageIn<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

/// Times of a process, parsed and checked before anything is appended.
struct ProcessTimes {
    start: Option<i64>,
    container_start: Option<i64>,
}

fn process_times(p: Option<&ProcessIn<'_>>, what: &str) -> Result<ProcessTimes, TimeError> {
    let start = parse_opt_time(
        &format!("{what}.start_time"),
        p.and_then(|p| opt(&p.start_time)),
    )?;
    let container_start = parse_opt_time(
        &format!("{what}.pod.container.start_time"),
        p.and_then(|p| p.pod.as_ref())
            .and_then(|pod| pod.container.as_ref())
            .and_then(|c| opt(&c.start_time)),
    )?;
    Ok(ProcessTimes {
        start,
        container_start,
    })
}

fn struct_fields(fields: &Fields, name: &str) -> Fields {
    match fields.find(name).map(|(_, f)| f.data_type()) {
        Some(DataType::Struct(f)) => f.clone(),
        _ => unreachable!("schema declares {name} as a struct"),
    }
}

/// Builder of the `process` / `parent` struct columns.
struct ProcessCols {
    exec_id: StringBuilder,
    pid: Int64Builder,
    uid: Int64Builder,
    cwd: StringBuilder,
    binary: StringBuilder,
    arguments: StringBuilder,
    flags: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    auid: Int64Builder,
    parent_exec_id: StringBuilder,
    pod_namespace: StringBuilder,
    pod_name: StringBuilder,
    container_id: StringBuilder,
    container_name: StringBuilder,
    image_id: StringBuilder,
    image_name: StringBuilder,
    container_start: TimestampNanosecondBuilder,
    container_pid: Int64Builder,
    workload: StringBuilder,
    workload_kind: StringBuilder,
    docker: StringBuilder,
    valid: NullBufferBuilder,
    pod_valid: NullBufferBuilder,
    container_valid: NullBufferBuilder,
    image_valid: NullBufferBuilder,
}

impl ProcessCols {
    fn new(cap: usize) -> Self {
        ProcessCols {
            exec_id: StringBuilder::new(),
            pid: Int64Builder::with_capacity(cap),
            uid: Int64Builder::with_capacity(cap),
            cwd: StringBuilder::new(),
            binary: StringBuilder::new(),
            arguments: StringBuilder::new(),
            flags: StringBuilder::new(),
            start_time: timestamps(cap),
            auid: Int64Builder::with_capacity(cap),
            parent_exec_id: StringBuilder::new(),
            pod_namespace: StringBuilder::new(),
            pod_name: StringBuilder::new(),
            container_id: StringBuilder::new(),
            container_name: StringBuilder::new(),
            image_id: StringBuilder::new(),
            image_name: StringBuilder::new(),
            container_start: timestamps(cap),
            container_pid: Int64Builder::with_capacity(cap),
            workload: StringBuilder::new(),
            workload_kind: StringBuilder::new(),
            docker: StringBuilder::new(),
            valid: NullBufferBuilder::new(cap),
            pod_valid: NullBufferBuilder::new(cap),
            container_valid: NullBufferBuilder::new(cap),
            image_valid: NullBufferBuilder::new(cap),
        }
    }

    fn append(&mut self, p: Option<&ProcessIn<'_>>, times: &ProcessTimes) {
        self.valid.append(p.is_some());
        put_str(&mut self.exec_id, p.and_then(|p| opt(&p.exec_id)));
        self.pid.append_option(p.and_then(|p| p.pid));
        self.uid.append_option(p.and_then(|p| p.uid));
        put_str(&mut self.cwd, p.and_then(|p| opt(&p.cwd)));
        put_str(&mut self.binary, p.and_then(|p| opt(&p.binary)));
        put_str(&mut self.arguments, p.and_then(|p| opt(&p.arguments)));
        put_str(&mut self.flags, p.and_then(|p| opt(&p.flags)));
        self.start_time.append_option(times.start);
        self.auid.append_option(p.and_then(|p| p.auid));
        put_str(
            &mut self.parent_exec_id,
            p.and_then(|p| opt(&p.parent_exec_id)),
        );
        put_str(&mut self.docker, p.and_then(|p| opt(&p.docker)));

        let pod = p.and_then(|p| p.pod.as_ref());
        self.pod_valid.append(pod.is_some());
        put_str(&mut self.pod_namespace, pod.and_then(|p| opt(&p.namespace)));
        put_str(&mut self.pod_name, pod.and_then(|p| opt(&p.name)));
        put_str(&mut self.workload, pod.and_then(|p| opt(&p.workload)));
        put_str(
            &mut self.workload_kind,
            pod.and_then(|p| opt(&p.workload_kind)),
        );

        let c = pod.and_then(|p| p.container.as_ref());
        self.container_valid.append(c.is_some());
        put_str(&mut self.container_id, c.and_then(|c| opt(&c.id)));
        put_str(&mut self.container_name, c.and_then(|c| opt(&c.name)));
        self.container_start.append_option(times.container_start);
        self.container_pid.append_option(c.and_then(|c| c.pid));

        let image = c.and_then(|c| c.image.as_ref());
        self.image_valid.append(image.is_some());
        put_str(&mut self.image_id, image.and_then(|i| opt(&i.id)));
        put_str(&mut self.image_name, image.and_then(|i| opt(&i.name)));
    }

    fn finish(&mut self) -> ArrayRef {
        let process = schema::process_fields();
        let pod = struct_fields(&process, "pod");
        let container = struct_fields(&pod, "container");
        let image = struct_fields(&container, "image");
        let image_arr = struct_array(
            image,
            vec![
                finish_str(&mut self.image_id),
                finish_str(&mut self.image_name),
            ],
            &mut self.image_valid,
        );
        let container_arr = struct_array(
            container,
            vec![
                finish_str(&mut self.container_id),
                finish_str(&mut self.container_name),
                image_arr,
                finish_ts(&mut self.container_start),
                finish_i64(&mut self.container_pid),
            ],
            &mut self.container_valid,
        );
        let pod_arr = struct_array(
            pod,
            vec![
                finish_str(&mut self.pod_namespace),
                finish_str(&mut self.pod_name),
                container_arr,
                finish_str(&mut self.workload),
                finish_str(&mut self.workload_kind),
            ],
            &mut self.pod_valid,
        );
        struct_array(
            process,
            vec![
                finish_str(&mut self.exec_id),
                finish_i64(&mut self.pid),
                finish_i64(&mut self.uid),
                finish_str(&mut self.cwd),
                finish_str(&mut self.binary),
                finish_str(&mut self.arguments),
                finish_str(&mut self.flags),
                finish_ts(&mut self.start_time),
                finish_i64(&mut self.auid),
                finish_str(&mut self.parent_exec_id),
                pod_arr,
                finish_str(&mut self.docker),
            ],
            &mut self.valid,
        )
    }
}

/// Accumulates rows of the `tetragon` table.
pub struct TetragonRows {
    event_time: TimestampNanosecondBuilder,
    event_type: StringBuilder,
    node_name: StringBuilder,
    process: ProcessCols,
    parent: ProcessCols,
    function_name: StringBuilder,
    policy_name: StringBuilder,
    action: StringBuilder,
    args: StringBuilder,
    source_ip: StringBuilder,
    source_port: Int32Builder,
    destination_ip: StringBuilder,
    destination_port: Int32Builder,
    protocol: StringBuilder,
    payload: StringBuilder,
    row: UInt32Builder,
}

impl TetragonRows {
    pub fn with_capacity(cap: usize) -> Self {
        TetragonRows {
            event_time: timestamps(cap),
            event_type: StringBuilder::new(),
            node_name: StringBuilder::new(),
            process: ProcessCols::new(cap),
            parent: ProcessCols::new(cap),
            function_name: StringBuilder::new(),
            policy_name: StringBuilder::new(),
            action: StringBuilder::new(),
            args: StringBuilder::new(),
            source_ip: StringBuilder::new(),
            source_port: Int32Builder::new(),
            destination_ip: StringBuilder::new(),
            destination_port: Int32Builder::new(),
            protocol: StringBuilder::new(),
            payload: StringBuilder::new(),
            row: UInt32Builder::with_capacity(cap),
        }
    }
}

impl RowSink for TetragonRows {
    fn append(
        &mut self,
        payload: &str,
        input: MessageInput,
        events: &mut Events,
    ) -> Result<(), DecodeError> {
        let message = input.message;
        let top: BTreeMap<Str, &RawValue> =
            serde_json::from_str(payload).map_err(DecodeError::json)?;
        let mut kinds = top
            .iter()
            .filter(|(k, _)| !METADATA_KEYS.contains(&k.as_str()));
        let (event_type, body) = match (kinds.next(), kinds.next()) {
            (Some(one), None) => one,
            (None, _) => {
                return Err(DecodeError::NotAnEvent {
                    expected: NOT_AN_EVENT,
                    missing: "event field beside node_name and time",
                })
            }
            (Some((a, _)), Some((b, _))) => {
                return Err(DecodeError::SeveralEventFields {
                    expected: NOT_AN_EVENT,
                    first: a.as_str().to_string(),
                    second: b.as_str().to_string(),
                })
            }
        };
        let node_name: Option<Str> = match top.get(&Str("node_name".into())) {
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| DecodeError::field_json("node_name", e))?,
            None => None,
        };
        let time: Option<Str> = match top.get(&Str("time".into())) {
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| DecodeError::field_json("time", e))?,
            None => None,
        };
        let event: EventIn = serde_json::from_str(body.get())
            .map_err(|e| DecodeError::field_json(event_type.as_str(), e))?;
        let event_time = match opt(&time) {
            Some(t) => parse_time("time", t)?,
            None => input.fallback_ns,
        };
        input.check_time(
            if time.is_some() {
                "time"
            } else {
                "message timestamp"
            },
            event_time,
        )?;
        check_raw_field("args", event.args, input.limits.max_field_bytes)?;
        let own_times = process_times(event.process.as_ref(), "process")?;
        let parent_times = process_times(event.parent.as_ref(), "parent")?;

        self.row.append_value(self.event_time.len() as u32);
        self.event_time.append_value(event_time);
        self.event_type.append_value(event_type.as_str());
        put_str(&mut self.node_name, opt(&node_name));
        self.process.append(event.process.as_ref(), &own_times);
        self.parent.append(event.parent.as_ref(), &parent_times);
        put_str(&mut self.function_name, opt(&event.function_name));
        put_str(&mut self.policy_name, opt(&event.policy_name));
        put_str(&mut self.action, opt(&event.action));
        put_str(&mut self.args, event.args.map(RawValue::get));
        put_str(&mut self.source_ip, opt(&event.source_ip));
        self.source_port.append_option(event.source_port);
        put_str(&mut self.destination_ip, opt(&event.destination_ip));
        self.destination_port.append_option(event.destination_port);
        put_str(&mut self.protocol, opt(&event.protocol));
        self.payload.append_value(body.get());

        let exec_id = event.process.as_ref().and_then(|p| opt(&p.exec_id));
        match (exec_id, opt(&time)) {
            (Some(exec_id), Some(time)) => {
                let parts = [exec_id, "/", event_type.as_str(), "/", time];
                events.push(message, 0, Some(&parts));
            }
            _ => events.push(message, 0, None),
        }
        Ok(())
    }

    fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            finish_ts(&mut self.event_time),
            finish_str(&mut self.event_type),
            finish_str(&mut self.node_name),
            self.process.finish(),
            self.parent.finish(),
            finish_str(&mut self.function_name),
            finish_str(&mut self.policy_name),
            finish_str(&mut self.action),
            finish_str(&mut self.args),
            finish_str(&mut self.source_ip),
            finish_i32(&mut self.source_port),
            finish_str(&mut self.destination_ip),
            finish_i32(&mut self.destination_port),
            finish_str(&mut self.protocol),
            finish_str(&mut self.payload),
            Arc::new(self.row.finish()),
        ];
        RecordBatch::try_new(schema::tetragon(), columns)
            .expect("tetragon columns match the declared schema")
    }
}
