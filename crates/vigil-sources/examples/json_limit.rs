//! How close the audit decoder is to the JSON parsing limit (issue 21):
//! the same lines through UTF-8 validation alone, parsers that build no
//! tree (serde_json and jiter skipping every value, sonic-rs skipping
//! every value or skipping the document at once, simd-json building its
//! tape), the audit fields the decoder
//! reads taken out by serde_json, by sonic-rs and by `vigil_sources::json`'s
//! cursor (the least a decoder parsing each document once would cost), and
//! the whole decoder (`decode`, batches of 5,000), each timed over the
//! whole input in memory.
//!
//!   cargo run --release -p vigil-sources --example json_limit -- FILE.jsonl
//!
//! Run it pinned (`taskset -c 0`); it prints MB/s and events/s per pass.
//! sonic-rs uses SIMD only when compiled for a CPU that has it
//! (`RUSTFLAGS="-C target-cpu=native"`); simd-json detects it at run time.

use std::borrow::Cow;
use std::time::Instant;

use serde::de::IgnoredAny;
use serde::Deserialize;
use vigil_model::source::{Origin, RawMessage, SourceKind};
use vigil_sources::decode::{decode, DecodeLimits};

const BATCH: usize = 5000;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: json_limit FILE.jsonl");
    let text = std::fs::read_to_string(&path).expect("reading the input");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let report = |name: &str, started: Instant| {
        let s = started.elapsed().as_secs_f64();
        println!(
            "{name:<34} {:>8.0} MB/s {:>10.0} events/s",
            bytes as f64 / s / 1e6,
            lines.len() as f64 / s
        );
    };

    // One pass over every line, timed; `parse` panics on invalid input.
    let pass = |name: &str, parse: &mut dyn FnMut(&str)| {
        let started = Instant::now();
        lines.iter().for_each(|line| parse(line));
        report(name, started);
    };

    pass("UTF-8 validation (simdutf8)", &mut |line| {
        simdutf8::basic::from_utf8(line.as_bytes()).expect("valid UTF-8");
    });
    pass("serde_json, no tree (IgnoredAny)", &mut |line| {
        serde_json::from_str::<IgnoredAny>(line).expect("valid JSON");
    });
    pass("jiter, no tree (next_skip)", &mut |line| {
        let mut jiter = jiter::Jiter::new(line.as_bytes());
        jiter.next_skip().expect("valid JSON");
    });
    pass("sonic-rs, no tree (IgnoredAny)", &mut |line| {
        sonic_rs::from_str::<IgnoredAny>(line).expect("valid JSON");
    });
    // Its own skip: the document's extent found by SIMD scanning.
    pass("sonic-rs, skipped whole (LazyValue)", &mut |line| {
        sonic_rs::from_str::<sonic_rs::LazyValue>(line).expect("valid JSON");
    });
    // simd-json parses in place: a copy of the line is part of its cost.
    let mut copy = Vec::new();
    pass("simd-json, tape", &mut |line| {
        copy.clear();
        copy.extend_from_slice(line.as_bytes());
        simd_json::to_tape(&mut copy).expect("valid JSON");
    });
    pass("serde_json, tree (Value)", &mut |line| {
        serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
    });
    let mut read = 0;
    pass("serde_json, the decoder's fields", &mut |line| {
        let event: AuditFields<&serde_json::value::RawValue> =
            serde_json::from_str(line).expect("valid JSON");
        read += event.read();
    });
    let mut read_again = 0;
    pass("sonic-rs, the decoder's fields", &mut |line| {
        let event: AuditFields<sonic_rs::LazyValue> = sonic_rs::from_str(line).expect("valid JSON");
        read_again += event.read();
    });
    assert_eq!(read, read_again);
    // The same fields read by a cursor over the text, which serde_json
    // has not seen: what a decoder reading each document once would cost
    // at least (it would also check the grammar of what it skips).
    let mut read_by_cursor = 0;
    pass("cursor, the decoder's fields", &mut |line| {
        read_by_cursor += cursor::audit_fields(line).expect("valid JSON");
    });
    assert_eq!(read, read_by_cursor);

    let messages: Vec<RawMessage> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawMessage {
            source: SourceKind::K8sAudit,
            payload: l.as_bytes().to_vec(),
            origin: Origin::File {
                path: path.as_str().into(),
                line: i as u64 + 1,
            },
            timestamp_ms: None,
            state_only: false,
        })
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for chunk in messages.chunks(BATCH) {
        rows += decode(
            SourceKind::K8sAudit,
            chunk,
            DecodeLimits::default(),
            i64::MAX / 2,
        )
        .batch
        .num_rows();
    }
    report("vigil decode (Arrow rows)", started);
    assert_eq!(rows, lines.len());
}

/// The fields of an audit event the decoder reads, borrowed where their
/// text has no escapes (as the decoder does), with the request and response
/// objects kept raw (`R`).
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a, R: Deserialize<'de>")
)]
#[allow(dead_code)] // read only by the parser
struct AuditFields<'a, R> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    level: Option<Cow<'a, str>>,
    #[serde(rename = "auditID", borrow)]
    audit_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stage: Option<Cow<'a, str>>,
    #[serde(rename = "requestURI", borrow)]
    request_uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    verb: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<UserFields<'a>>,
    #[serde(borrow)]
    impersonated_user: Option<UserFields<'a>>,
    #[serde(rename = "sourceIPs", borrow)]
    source_ips: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object_ref: Option<ObjectFields<'a>>,
    response_status: Option<StatusFields<'a>>,
    request_object: Option<R>,
    response_object: Option<R>,
    #[serde(borrow)]
    request_received_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stage_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    annotations: Option<std::collections::BTreeMap<Cow<'a, str>, Option<Cow<'a, str>>>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct UserFields<'a> {
    #[serde(borrow)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    groups: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ObjectFields<'a> {
    #[serde(borrow)]
    resource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subresource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api_group: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct StatusFields<'a> {
    code: Option<i32>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

impl<R> AuditFields<'_, R> {
    /// Something of what was read, so both parsers can be checked to have
    /// read the same.
    fn read(&self) -> usize {
        let len = |s: &Option<Cow<str>>| s.as_ref().map_or(0, |s| s.len());
        len(&self.audit_id)
            + len(&self.request_uri)
            + len(&self.user_agent)
            + self.user.as_ref().map_or(0, |u| len(&u.username))
            + self.request_object.is_some() as usize
            + self.response_object.is_some() as usize
    }
}

/// The decoder's fields read with `vigil_sources::json`'s cursor: strings
/// decoded (borrowed without escapes), the request and response objects
/// and every other value skipped by where they end.
mod cursor {
    use std::borrow::Cow;
    use std::hint::black_box;

    use vigil_sources::json::{for_each_item, member_at, string_at, value_end};

    /// [`super::AuditFields::read`]'s measure of one event. Not inlined,
    /// so that a profile can count its instructions apart.
    #[inline(never)]
    pub fn audit_fields(line: &str) -> Option<usize> {
        let mut read = 0;
        let start = vigil_sources::json::skip_whitespace(line, 0);
        for_each_item(line, start, |i| {
            let (key, at) = member_at(line, i)?;
            match &*key {
                "auditID" | "requestURI" | "userAgent" => {
                    let (s, end) = string_or_null(line, at)?;
                    read += s.map_or(0, |s| s.len());
                    Some(end)
                }
                "kind"
                | "apiVersion"
                | "level"
                | "stage"
                | "verb"
                | "requestReceivedTimestamp"
                | "stageTimestamp" => {
                    let (s, end) = string_or_null(line, at)?;
                    black_box(s);
                    Some(end)
                }
                "user" | "impersonatedUser" => {
                    let (username, end) = strings_of(line, at)?;
                    if key == "user" {
                        read += username;
                    }
                    Some(end)
                }
                "objectRef" | "responseStatus" | "annotations" => {
                    strings_of(line, at).map(|(_, end)| end)
                }
                "sourceIPs" => strings_of(line, at).map(|(_, end)| end),
                "requestObject" | "responseObject" => {
                    let end = value_end(line.as_bytes(), at)?;
                    read += (line.as_bytes()[at] != b'n') as usize;
                    Some(end)
                }
                _ => value_end(line.as_bytes(), at),
            }
        })?;
        Some(read)
    }

    /// The string at `at` (`None` for `null`) and one past its end.
    fn string_or_null(line: &str, at: usize) -> Option<(Option<Cow<'_, str>>, usize)> {
        if line.as_bytes().get(at) == Some(&b'"') {
            string_at(line, at).map(|(s, end)| (Some(s), end))
        } else {
            Some((None, value_end(line.as_bytes(), at)?))
        }
    }

    /// Decode every string of the object or array at `at`, a level deep
    /// (and the arrays of strings in it): the length of its `username`
    /// member, and one past its end.
    fn strings_of(line: &str, at: usize) -> Option<(usize, usize)> {
        let bytes = line.as_bytes();
        match bytes.get(at)? {
            b'{' => {
                let mut username = 0;
                let end = for_each_item(line, at, |i| {
                    let (key, v) = member_at(line, i)?;
                    match bytes.get(v)? {
                        b'"' => {
                            let (s, end) = string_at(line, v)?;
                            if key == "username" {
                                username = s.len();
                            }
                            black_box(s);
                            Some(end)
                        }
                        b'[' => strings_of(line, v).map(|(_, end)| end),
                        _ => value_end(bytes, v),
                    }
                })?;
                Some((username, end))
            }
            b'[' => {
                let end = for_each_item(line, at, |i| {
                    let (s, end) = string_or_null(line, i)?;
                    black_box(s);
                    Some(end)
                })?;
                Some((0, end))
            }
            _ => Some((0, value_end(bytes, at)?)),
        }
    }
}
