//! Property tests of the decoders under hostile input: arbitrary JSON,
//! well-formed events with fields of the wrong type, byte-level mutations
//! and truncations of real samples, random bytes, huge and deep values.
//!
//! The property, for every source and every input: `decode` returns (no
//! panic), every message is accounted for exactly once (rows, a failure
//! with a non-empty reason, or an empty EventList), the batch has the
//! declared schema and one row per event, and nothing accepted breaks a
//! limit.

use crate::schema::SourceSchema;
use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

/// Limits small enough that generated input crosses them often.
const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 16 * 1024,
    max_events_per_message: 8,
    max_field_bytes: 512,
    max_nesting_depth: 12,
    max_event_time_ahead_ms: 60_000,
};

fn check_invariants(source: SourceKind, payloads: &[Vec<u8>], limits: DecodeLimits) {
    let messages: Vec<RawMessage> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawMessage {
            source,
            payload: p.clone(),
            origin: Origin::File {
                path: "fuzz".into(),
                line: i as u64 + 1,
            },
            timestamp_ms: Some(NOW_NS / 1_000_000),
            state_only: false,
        })
        .collect();
    let d = decode(source, &messages, limits, NOW_NS);
    assert_eq!(d.batch.schema(), source.schema());
    assert_eq!(d.batch.num_rows(), d.events.len());
    let with_rows: BTreeSet<u32> = d.events.iter().map(|e| e.message).collect();
    let failed: BTreeSet<u32> = d.failures.iter().map(|f| f.message).collect();
    let empty: BTreeSet<u32> = d.empty.iter().copied().collect();
    assert_eq!(
        failed.len(),
        d.failures.len(),
        "one failure per failed message"
    );
    for i in 0..payloads.len() as u32 {
        let n = [
            with_rows.contains(&i),
            failed.contains(&i),
            empty.contains(&i),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        assert_eq!(
            n,
            1,
            "message {i} must be exactly one of rows/failure/empty: {:?}",
            String::from_utf8_lossy(&payloads[i as usize])
        );
    }
    for f in &d.failures {
        assert!(!f.reason.trim().is_empty());
    }
    // Accepted messages are within every limit.
    for i in with_rows.iter().chain(&empty) {
        let p = &payloads[*i as usize];
        assert!(p.len() <= limits.max_message_bytes);
        let v: Value = serde_json::from_slice(p).unwrap_or_else(|e| {
            panic!(
                "accepted a message that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(p)
            )
        });
        assert!(
            depth(&v) <= limits.max_nesting_depth,
            "accepted too deep: {v}"
        );
        assert!(
            longest_string(&v) <= limits.max_field_bytes,
            "accepted a string over the limit"
        );
    }
    for (i, e) in d.events.iter().enumerate() {
        assert!(with_rows.contains(&e.message));
        let _ = i;
    }
    let per_message = d.events.iter().fold(
        std::collections::BTreeMap::<u32, usize>::new(),
        |mut m, e| {
            *m.entry(e.message).or_default() += 1;
            m
        },
    );
    assert!(per_message
        .values()
        .all(|n| *n <= limits.max_events_per_message));
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn longest_string(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| k.len().max(longest_string(v)))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Any JSON value, nesting up to `depth` levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        // Strings around the field limit.
        (500usize..530).prop_map(|n| Value::String("x".repeat(n))),
        timestamp().prop_map(Value::String),
    ];
    leaf.prop_recursive(16, 256, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names the decoders look for, plus noise.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "kind", "apiVersion", "auditID", "stage", "verb", "user", "username", "groups", "sourceIPs",
            "objectRef", "resource", "namespace", "responseStatus", "code", "requestObject", "responseObject",
            "requestReceivedTimestamp", "stageTimestamp", "timestamp", "annotations", "items", "metadata",
            "rule", "time", "uuid", "priority", "tags", "output_fields", "node_name", "process_exec",
            "process_kprobe", "process", "parent", "pod", "container", "image", "start_time", "pid", "args",
            "source_port", "exec_id",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
    ]
}

/// Timestamps: valid, zone-less, far past, far future, out of range, junk.
fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        (1900i64..2300, 1u32..13, 1u32..29, 0u32..24)
            .prop_map(|(y, m, d, h)| format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00Z")),
        (0i64..10000).prop_map(|y| format!("{y:04}-06-15 12:00:00.5")),
        Just("2025-12-31T23:59:00Z".to_string()),
        Just("2026-01-01T00:00:59.999999999+00:00".to_string()),
        Just("2026-01-01T00:01:01Z".to_string()),
        Just("+275760-09-13T00:00:00Z".to_string()),
        "\\PC{0,30}",
    ]
}

/// An event of `source` whose fields take arbitrary (often wrong) values.
fn event_like(source: SourceKind) -> impl Strategy<Value = Value> {
    let base: Value = serde_json::from_str(crate::registry::expect(source).example).unwrap();
    let Value::Object(base) = base else {
        unreachable!()
    };
    let keys: Vec<String> = base.keys().cloned().collect();
    prop::collection::vec((prop::sample::select(keys), any_json()), 0..4).prop_map(move |changes| {
        let mut event: Map<String, Value> = base.clone();
        for (k, v) in changes {
            event.insert(k, v);
        }
        Value::Object(event)
    })
}

/// A real sample, then mutated at the byte level.
fn mutated_sample(source: SourceKind) -> impl Strategy<Value = Vec<u8>> {
    let sample = crate::registry::expect(source).example.as_bytes().to_vec();
    let len = sample.len();
    prop_oneof![
        // Truncation.
        (0..len).prop_map({
            let s = sample.clone();
            move |n| s[..n].to_vec()
        }),
        // Byte replacements, including invalid UTF-8.
        prop::collection::vec((0..len, any::<u8>()), 1..6).prop_map({
            let s = sample.clone();
            move |edits| {
                let mut s = s.clone();
                for (i, b) in edits {
                    s[i] = b;
                }
                s
            }
        }),
        // Insertions of structural characters.
        prop::collection::vec(
            (0..len, prop::sample::select(b"{}[]\",:\\0\xff".to_vec())),
            1..6
        )
        .prop_map({
            let s = sample;
            move |edits| {
                let mut s = s.clone();
                for (i, b) in edits {
                    s.insert(i.min(s.len()), b);
                }
                s
            }
        }),
    ]
}

fn payload(source: SourceKind) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => any_json().prop_map(|v| v.to_string().into_bytes()),
        3 => event_like(source).prop_map(|v| v.to_string().into_bytes()),
        2 => mutated_sample(source),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        // JSON-looking noise: escapes, surrogates, control characters, numbers.
        1 => prop::collection::vec(prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "d800", "dc00", "00e9", "\\x", "\t", "\u{1}",
            "1", "-0", "01", "1.", "1e999", ".5", "true", "nul", "\"kind\"", "\"EventList\"", "\"items\"",
            "\"verb\"", "\"rule\"", "\"process_exec\"", "\"requestObject\"",
        ]), 0..40).prop_map(|parts| parts.concat().into_bytes()),
        // Audit EventLists of up to twice the item limit, items well- or ill-formed.
        1 => prop::collection::vec(prop_oneof![event_like(SourceKind::K8sAudit), any_json()], 0..17)
            .prop_map(|items| json!({"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":items}).to_string().into_bytes()),
    ]
}

fn any_source() -> impl Strategy<Value = SourceKind> {
    prop::sample::select(crate::registry::kinds().collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_message_is_rows_a_failure_or_empty(
        (source, payloads) in any_source().prop_flat_map(|s| (Just(s), prop::collection::vec(payload(s), 1..12)))
    ) {
        check_invariants(source, &payloads, LIMITS);
    }

    #[test]
    fn default_limits_hold_too(
        (source, payloads) in any_source().prop_flat_map(|s| (Just(s), prop::collection::vec(payload(s), 1..6)))
    ) {
        check_invariants(source, &payloads, DecodeLimits::default());
    }
}

/// Inputs too large for random generation: each is decoded or refused with
/// a reason, never a panic; the ones over a limit name it.
#[test]
fn huge_inputs_are_refused_or_decoded_within_limits() {
    let limits = DecodeLimits::default();
    let ips = format!(
        r#"{{"kind":"Event","verb":"get","sourceIPs":[{}"1"]}}"#,
        "\"10.0.0.1\",".repeat(80_000)
    );
    let huge_list = format!(
        r#"{{"kind":"EventList","items":[{}{{"verb":"get"}}]}}"#,
        r#"{"verb":"get"},"#.repeat(limits.max_events_per_message)
    );
    let big_string = format!(r#"{{"rule":"{}"}}"#, "a".repeat(limits.max_field_bytes + 1));
    let too_big = format!(
        r#"{{"rule":"r","output":"{}"}}"#,
        "a".repeat(limits.max_message_bytes)
    );
    let deep_in_string = format!(r#"{{"rule":"{}"}}"#, "[".repeat(10_000));
    let cases: Vec<(SourceKind, String, Option<&str>)> = vec![
        (SourceKind::K8sAudit, ips, None),
        (
            SourceKind::K8sAudit,
            huge_list,
            Some("exceeds the limit of 10000"),
        ),
        (
            SourceKind::Falco,
            big_string,
            Some("exceeds the field limit"),
        ),
        (
            SourceKind::Falco,
            too_big,
            Some("bytes exceeds the limit of"),
        ),
        (SourceKind::Falco, deep_in_string, None),
        (
            SourceKind::Tetragon,
            "{".repeat(1_000_000),
            Some("nesting deeper"),
        ),
        (
            SourceKind::Tetragon,
            format!("\"{}", "\\".repeat(300_001)),
            Some("exceeds the field limit"),
        ),
    ];
    for (source, text, refused_with) in cases {
        check_invariants(source, &[text.clone().into_bytes()], limits);
        let d = decode(
            source,
            &[RawMessage {
                source,
                payload: text.into_bytes(),
                origin: Origin::File {
                    path: "huge".into(),
                    line: 1,
                },
                timestamp_ms: None,
                state_only: false,
            }],
            limits,
            NOW_NS,
        );
        match refused_with {
            Some(reason) => assert!(
                d.failures
                    .first()
                    .is_some_and(|f| f.reason.contains(reason)),
                "{source}: {:?}",
                d.failures
            ),
            None => assert!(d.failures.is_empty(), "{source}: {:?}", d.failures),
        }
    }
}
