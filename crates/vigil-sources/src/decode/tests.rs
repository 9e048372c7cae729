use arrow::array::{Array, AsArray, MapArray, StructArray};
use arrow::datatypes::{Int32Type, TimestampNanosecondType};

use super::*;
use vigil_model::source::Origin;

fn messages(source: SourceKind, lines: &[&str]) -> Vec<RawMessage> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawMessage {
            source,
            payload: l.as_bytes().to_vec(),
            origin: Origin::File {
                path: "test".into(),
                line: i as u64 + 1,
            },
            timestamp_ms: Some(1_000),
            state_only: false,
        })
        .collect()
}

/// The wall clock the tests decode at: after every sample's event time, so
/// none is refused as being ahead of the clock.
const NOW_NS: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

fn decode_lines(source: SourceKind, lines: &[&str]) -> DecodedBatch {
    decode(
        source,
        &messages(source, lines),
        DecodeLimits::default(),
        NOW_NS,
    )
}

fn str_col<'a>(batch: &'a RecordBatch, name: &str) -> &'a arrow::array::StringArray {
    batch.column_by_name(name).unwrap().as_string::<i32>()
}

fn struct_str(batch: &RecordBatch, col: &str, field: &str, row: usize) -> Option<String> {
    let s: &StructArray = batch.column_by_name(col).unwrap().as_struct();
    let f = s.column_by_name(field).unwrap().as_string::<i32>();
    (s.is_valid(row) && f.is_valid(row)).then(|| f.value(row).to_string())
}

const AUDIT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods/web/exec?command=sh","verb":"create","user":{"username":"alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.0.0.1"],"userAgent":"kubectl/v1.28","objectRef":{"resource":"pods","namespace":"default","name":"web","subresource":"exec","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":101},"requestObject":{"kind":"Pod","spec":{"containers":[{"name":"a"}]}},"requestReceivedTimestamp":"2024-01-02T03:04:05.123456Z","stageTimestamp":"2024-01-02T03:04:06Z","annotations":{"authorization.k8s.io/decision":"allow"}}"#;

#[test]
fn decodes_an_audit_event_into_typed_columns() {
    let d = decode_lines(SourceKind::K8sAudit, &[AUDIT]);
    assert!(d.failures.is_empty(), "{:?}", d.failures);
    let b = &d.batch;
    assert_eq!(b.num_rows(), 1);
    assert_eq!(b.schema(), crate::k8s_audit::schema::k8s_audit());
    assert_eq!(str_col(b, "verb").value(0), "create");
    assert_eq!(str_col(b, "audit_id").value(0), "a-1");
    assert_eq!(
        struct_str(b, "user_info", "username", 0).as_deref(),
        Some("alice")
    );
    assert_eq!(
        struct_str(b, "object_ref", "subresource", 0).as_deref(),
        Some("exec")
    );
    assert_eq!(struct_str(b, "impersonated_user", "username", 0), None);
    let status: &StructArray = b.column_by_name("response_status").unwrap().as_struct();
    assert_eq!(status.column(0).as_primitive::<Int32Type>().value(0), 101);
    let t = b
        .column_by_name("event_time")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(0), 1_704_164_645_123_456_000);
    assert_eq!(
        str_col(b, "request_object").value(0),
        r#"{"kind":"Pod","spec":{"containers":[{"name":"a"}]}}"#
    );
    assert!(str_col(b, "response_object").is_null(0));
    let ann: &MapArray = b.column_by_name("annotations").unwrap().as_map();
    assert_eq!(ann.value(0).len(), 1);
    assert_eq!(d.events.native_id(0), Some("a-1/ResponseComplete"));
}

#[test]
fn legacy_audit_events_use_timestamp() {
    let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","timestamp":"2017-09-11T19:55:05Z","auditID":"x","verb":"list"}"#;
    let d = decode_lines(SourceKind::K8sAudit, &[line]);
    let t = d.batch.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(0), 1_505_159_705_000_000_000);
}

#[test]
fn events_without_time_fall_back_to_message_timestamp() {
    let line = r#"{"kind":"Event","verb":"get"}"#;
    let d = decode_lines(SourceKind::K8sAudit, &[line]);
    let t = d.batch.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(0), 1_000_000_000); // 1000 ms
    assert_eq!(d.events.native_id(0), None);
}

#[test]
fn event_list_yields_one_row_per_item() {
    let list = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{AUDIT},{AUDIT}]}}"#
    );
    let d = decode_lines(SourceKind::K8sAudit, &[&list, AUDIT]);
    assert!(d.failures.is_empty());
    assert_eq!(d.batch.num_rows(), 3);
    let refs: Vec<(u32, u32)> = d.events.iter().map(|e| (e.message, e.item)).collect();
    assert_eq!(refs, vec![(0, 0), (0, 1), (1, 0)]);
    let rows = d
        .batch
        .column_by_name("__row")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    assert_eq!(rows.values().to_vec(), vec![0, 1, 2]);
}

#[test]
fn a_bad_item_rejects_the_whole_event_list_and_nothing_else() {
    let list = format!(r#"{{"kind":"EventList","items":[{AUDIT},{{"kind":"Event","verb":7}}]}}"#);
    let d = decode_lines(SourceKind::K8sAudit, &[AUDIT, &list, AUDIT]);
    assert_eq!(d.batch.num_rows(), 2);
    assert_eq!(d.failures.len(), 1);
    assert_eq!(d.failures[0].message, 1);
    assert!(
        d.failures[0].reason.contains("EventList item 1"),
        "{}",
        d.failures[0].reason
    );
    assert_eq!(
        d.events.iter().map(|e| e.message).collect::<Vec<_>>(),
        vec![0, 2]
    );
}

#[test]
fn malformed_messages_fail_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("{not json", "invalid JSON"),
        ("[1,2]", "invalid JSON"),
        (r#"{"kind":"Pod"}"#, "unsupported audit kind"),
        (r#"{"hello":"world"}"#, "not an audit event"),
        (r#"{"kind":"Event","verb":123}"#, "invalid type"),
        (
            r#"{"kind":"Event","requestReceivedTimestamp":"yesterday"}"#,
            "requestReceivedTimestamp",
        ),
        (
            r#"{"kind":"Event","requestReceivedTimestamp":"9999-12-31T00:00:00Z"}"#,
            "outside the representable range",
        ),
        ("", "invalid JSON"),
    ];
    let lines: Vec<&str> = cases.iter().map(|(l, _)| *l).collect();
    let d = decode_lines(SourceKind::K8sAudit, &lines);
    assert_eq!(d.batch.num_rows(), 0);
    assert_eq!(d.failures.len(), cases.len());
    for (f, (line, expected)) in d.failures.iter().zip(cases) {
        assert!(
            f.reason.contains(expected),
            "{line}: {} does not mention {expected}",
            f.reason
        );
    }
}

#[test]
fn invalid_utf8_and_oversized_messages_fail() {
    let mut msgs = messages(SourceKind::K8sAudit, &[AUDIT]);
    msgs.push(RawMessage {
        payload: vec![b'{', 0xff, 0xfe, b'}'],
        ..msgs[0].clone()
    });
    let limits = DecodeLimits {
        max_message_bytes: 100,
        ..Default::default()
    };
    let d = decode(SourceKind::K8sAudit, &msgs, limits, NOW_NS);
    assert_eq!(d.batch.num_rows(), 0);
    assert!(d.failures[0]
        .reason
        .contains("exceeds the limit of 100 bytes"));
    assert!(
        d.failures[1].reason.contains("invalid UTF-8"),
        "{}",
        d.failures[1].reason
    );
    // Also in a field the decoder skips.
    let mut skipped = br#"{"kind":"Event","verb":"get","unknownField":"x"}"#.to_vec();
    let at = skipped.len() - 3;
    skipped[at] = 0xff;
    let d = decode(
        SourceKind::K8sAudit,
        &[RawMessage {
            payload: skipped,
            ..msgs[0].clone()
        }],
        DecodeLimits::default(),
        NOW_NS,
    );
    assert!(
        d.failures[0].reason.contains("invalid UTF-8"),
        "{:?}",
        d.failures
    );
}

#[test]
fn decodes_falco_alerts() {
    let line = r#"{"hostname":"h","output":"x","priority":"Critical","rule":"Terminal shell in container","source":"syscall","tags":["shell","mitre_execution"],"time":"2016-08-04T16:17:57.881781397Z","output_fields":{"k8s.ns.name":"default","proc.cmdline":"sh"}}"#;
    let d = decode_lines(SourceKind::Falco, &[line, r#"{"output":"no rule"}"#]);
    assert_eq!(d.batch.num_rows(), 1);
    assert_eq!(d.failures.len(), 1);
    assert!(d.failures[0].reason.contains("no \"rule\""));
    assert_eq!(str_col(&d.batch, "priority").value(0), "Critical");
    assert_eq!(
        str_col(&d.batch, "output_fields").value(0),
        r#"{"k8s.ns.name":"default","proc.cmdline":"sh"}"#
    );
    let t = d.batch.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(0), 1_470_327_477_881_781_397);
}

#[test]
fn decodes_every_shared_sample_without_failure() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if !root.exists() {
        panic!("shared sample data not found at {}", root.display());
    }
    for (file, source) in [
        ("k8s-audit/panther-rule-cases.jsonl", SourceKind::K8sAudit),
        ("k8s-audit/audit2rbac-demo.jsonl", SourceKind::K8sAudit),
        ("k8s-audit/aks-system.jsonl", SourceKind::K8sAudit),
        ("k8s-audit/perfspec-background.jsonl", SourceKind::K8sAudit),
        ("runtime/falco-alerts-sample.jsonl", SourceKind::Falco),
        ("runtime/tetragon-book-events.jsonl", SourceKind::Tetragon),
        ("runtime/tetragon-testdata.jsonl", SourceKind::Tetragon),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let d = decode_lines(source, &lines);
        assert!(
            d.failures.is_empty(),
            "{file}: {:?}",
            &d.failures[..d.failures.len().min(3)]
        );
        assert_eq!(d.batch.num_rows(), lines.len(), "{file}");
    }
}

#[test]
fn decodes_tetragon_events_with_nested_process() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/runtime/tetragon-book-events.jsonl"),
    )
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let d = decode_lines(SourceKind::Tetragon, &lines);
    let b = &d.batch;
    let types = str_col(b, "event_type");
    let nsenter = (0..b.num_rows())
        .find(|&i| struct_str(b, "process", "binary", i).as_deref() == Some("/usr/bin/nsenter"));
    let i = nsenter.expect("the book's samples include an nsenter exec");
    assert_eq!(types.value(i), "process_exec");
    let process: &StructArray = b.column_by_name("process").unwrap().as_struct();
    let pod: &StructArray = process.column_by_name("pod").unwrap().as_struct();
    assert!(pod.is_valid(i));
    assert!(d.events.native_id(i).unwrap().contains("/process_exec/"));
    let bad = decode_lines(
        SourceKind::Tetragon,
        &[
            r#"{"node_name":"n","time":"2022-01-01T00:00:00Z"}"#,
            r#"{"process_exec":{},"process_exit":{}}"#,
        ],
    );
    assert_eq!(bad.failures.len(), 2);
    assert!(bad.failures[0].reason.contains("no event field"));
    assert!(bad.failures[1].reason.contains("more than one event field"));
}

#[test]
fn empty_event_lists_are_counted_and_event_lists_without_items_fail() {
    let empty = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#;
    let missing = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1"}"#;
    let null = r#"{"kind":"EventList","items":null}"#;
    let d = decode_lines(SourceKind::K8sAudit, &[empty, AUDIT, missing, null]);
    assert_eq!(d.batch.num_rows(), 1);
    assert_eq!(d.empty, vec![0]);
    assert_eq!(
        d.failures.iter().map(|f| f.message).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(
        d.failures
            .iter()
            .all(|f| f.reason.contains("without an \"items\" array")),
        "{:?}",
        d.failures
    );
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!(
        r#"{{"kind":"Event","verb":"get","requestObject":{}1{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let d = decode_lines(SourceKind::K8sAudit, &[&deep]);
    assert_eq!(d.batch.num_rows(), 0);
    assert!(
        d.failures[0]
            .reason
            .contains("nesting deeper than the limit of 64"),
        "{}",
        d.failures[0].reason
    );
    // Far deeper than any recursion could survive: still just a failure.
    let abyss = "[".repeat(1_000_000);
    let d = decode_lines(SourceKind::Tetragon, &[&abyss]);
    assert!(
        d.failures[0].reason.contains("nesting deeper"),
        "{}",
        d.failures[0].reason
    );
    // Within the limit, the raw object is kept as written.
    let ok = format!(
        r#"{{"kind":"Event","verb":"get","requestObject":{}1{}}}"#,
        "[".repeat(60),
        "]".repeat(60)
    );
    let d = decode_lines(SourceKind::K8sAudit, &[&ok]);
    assert!(d.failures.is_empty(), "{:?}", d.failures);
    assert_eq!(str_col(&d.batch, "request_object").value(0).len(), 121);
}

#[test]
fn oversized_fields_are_refused_with_the_field_named() {
    let limits = DecodeLimits {
        max_field_bytes: 1000,
        ..Default::default()
    };
    let long_user = format!(
        r#"{{"kind":"Event","verb":"get","user":{{"username":"{}"}}}}"#,
        "a".repeat(1001)
    );
    let big_object = format!(
        r#"{{"kind":"Event","verb":"get","requestObject":{{"data":[{}1]}}}}"#,
        "1,".repeat(600)
    );
    let big_falco = format!(
        r#"{{"rule":"r","output_fields":{{"a":[{}1]}}}}"#,
        "1,".repeat(600)
    );
    let just_fits = format!(
        r#"{{"kind":"Event","verb":"get","user":{{"username":"{}"}}}}"#,
        "a".repeat(1000)
    );
    let d = decode(
        SourceKind::K8sAudit,
        &messages(SourceKind::K8sAudit, &[&long_user, &big_object, &just_fits]),
        limits,
        NOW_NS,
    );
    assert_eq!(d.batch.num_rows(), 1);
    assert!(
        d.failures[0].reason.contains("string of 1001 bytes")
            && d.failures[0].reason.contains("limit of 1000")
    );
    assert!(
        d.failures[1]
            .reason
            .contains("field requestObject of 1212 bytes"),
        "{}",
        d.failures[1].reason
    );
    let d = decode(
        SourceKind::Falco,
        &messages(SourceKind::Falco, &[&big_falco]),
        limits,
        NOW_NS,
    );
    assert!(
        d.failures[0].reason.contains("field output_fields"),
        "{}",
        d.failures[0].reason
    );
}

#[test]
fn event_times_ahead_of_the_clock_are_refused() {
    let at =
        |t: &str| format!(r#"{{"kind":"Event","verb":"get","requestReceivedTimestamp":"{t}"}}"#);
    // NOW_NS is 2026-01-01T00:00:00Z; the default allows 15 minutes ahead.
    let (ok, ahead, past) = (
        at("2026-01-01T00:14:59Z"),
        at("2026-01-01T00:15:01Z"),
        at("1700-01-01T00:00:00Z"),
    );
    let falco = r#"{"rule":"r","time":"2200-01-01T00:00:00Z"}"#;
    let tetragon = r#"{"process_exec":{},"time":"2200-01-01T00:00:00Z"}"#;
    let d = decode_lines(SourceKind::K8sAudit, &[&ok, &ahead, &past]);
    assert_eq!(
        d.events.iter().map(|e| e.message).collect::<Vec<_>>(),
        vec![0, 2],
        "{:?}",
        d.failures
    );
    assert!(
        d.failures[0].reason.contains("requestReceivedTimestamp")
            && d.failures[0].reason.contains("ahead of the clock")
    );
    for (source, line) in [(SourceKind::Falco, falco), (SourceKind::Tetragon, tetragon)] {
        let d = decode_lines(source, &[line]);
        assert!(
            d.failures[0].reason.contains("ahead of the clock"),
            "{source}: {:?}",
            d.failures
        );
    }
    // A message timestamp in the future (no event time of its own) too.
    let mut m = messages(SourceKind::K8sAudit, &[r#"{"kind":"Event","verb":"get"}"#]);
    m[0].timestamp_ms = Some(NOW_NS / 1_000_000 + 3_600_000);
    let d = decode(SourceKind::K8sAudit, &m, DecodeLimits::default(), NOW_NS);
    assert!(
        d.failures[0].reason.contains("message timestamp"),
        "{:?}",
        d.failures
    );
}

#[test]
fn timestamps_without_zone_are_utc() {
    assert_eq!(
        parse_time("t", "2022-11-29 00:09:04.38").unwrap(),
        parse_time("t", "2022-11-29T00:09:04.38Z").unwrap()
    );
    assert_eq!(
        parse_time("t", "2022-11-29T00:09:04").unwrap(),
        parse_time("t", "2022-11-29T00:09:04+00:00").unwrap()
    );
    assert!(parse_time("t", "2022-13-29 00:09:04").is_err());
}

mod fuzz;

#[test]
fn events_keep_each_native_id_in_their_one_text_through_a_retain() {
    let mut events = Events::with_capacity(1);
    events.push(0, 0, Some(&["a-1", "/", "ResponseComplete"]));
    events.push(1, 0, None);
    events.push(2, 3, Some(&["uuid-2"]));
    events.push(2, 4, Some(&[""]));
    assert_eq!(events.len(), 4);
    assert_eq!(events.native_id(0), Some("a-1/ResponseComplete"));
    assert_eq!(events.native_id(1), None);
    assert_eq!(events.native_id(2), Some("uuid-2"));
    assert_eq!(events.native_id(3), Some(""), "an empty id is an id");
    events.retain(|e| e.message != 0);
    let kept: Vec<(u32, u32, Option<&str>)> = (0..events.len())
        .map(|row| (events[row].message, events[row].item, events.native_id(row)))
        .collect();
    assert_eq!(
        kept,
        [(1, 0, None), (2, 3, Some("uuid-2")), (2, 4, Some(""))]
    );
}
