//! How close the audit decoder is to the JSON parsing limit (issue 21):
//! the same lines through UTF-8 validation alone, parsers that build no
//! tree (serde_json skipping every value, jiter skipping every value), and
//! the whole decoder (`decode`, batches of 5,000), each timed over the
//! whole input in memory.
//!
//!   cargo run --release -p vigil-sources --example json_limit -- FILE.jsonl
//!
//! Run it pinned (`taskset -c 0`); it prints MB/s and events/s per pass.

use std::time::Instant;

use serde::de::IgnoredAny;
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

    let started = Instant::now();
    let valid = lines
        .iter()
        .filter(|l| simdutf8::basic::from_utf8(l.as_bytes()).is_ok())
        .count();
    report("UTF-8 validation (simdutf8)", started);
    assert_eq!(valid, lines.len());

    let started = Instant::now();
    for line in &lines {
        serde_json::from_str::<IgnoredAny>(line).expect("valid JSON");
    }
    report("serde_json, no tree (IgnoredAny)", started);

    let started = Instant::now();
    for line in &lines {
        jiter::Jiter::new(line.as_bytes())
            .next_skip()
            .expect("valid JSON");
    }
    report("jiter, no tree (next_skip)", started);

    let started = Instant::now();
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
    }
    report("serde_json, tree (Value)", started);

    let messages: Vec<RawMessage> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawMessage {
            source: SourceKind::K8sAudit,
            payload: l.as_bytes().to_vec(),
            origin: Origin::File {
                path: path.clone(),
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
