//! Offline mode: decode and evaluate a JSON-lines file (or stdin) with the
//! same code the service runs, printing alerts as JSON lines on stdout.
//! Detection engineers use it to backtest rules on historical logs.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::detect::Detector;
use crate::source::{Origin, RawMessage, SourceKind};

/// Totals of one replay.
#[derive(Debug, Default, Clone)]
pub struct ReplaySummary {
    pub lines: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub alerts_by_rule: BTreeMap<String, u64>,
}

/// Replay `input` (a path, or `-` for stdin) of `source` events.
///
/// Alerts go to `alerts_out` as JSON lines; dead letters (undecodable lines
/// and rule failures) go to `dead_letters_out` as JSON lines. Blank lines
/// are skipped.
pub async fn replay(
    detector: &mut Detector,
    source: SourceKind,
    input: &Path,
    batch_size: usize,
    alerts_out: &mut dyn Write,
    dead_letters_out: &mut dyn Write,
) -> Result<ReplaySummary> {
    let name = input.display().to_string();
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("opening {name}"))?,
        ))
    };
    let mut summary = ReplaySummary::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut lines = reader.split(b'\n');
    let mut line_no = 0u64;
    loop {
        let next = lines.next().transpose().with_context(|| format!("reading {name}"))?;
        let at_end = next.is_none();
        if let Some(mut line) = next {
            line_no += 1;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                batch.push(RawMessage {
                    source,
                    payload: line,
                    origin: Origin::File { path: name.clone(), line: line_no },
                    timestamp_ms: None,
                    state_only: false,
                });
            }
        }
        if batch.len() >= batch_size || (at_end && !batch.is_empty()) {
            summary.lines += batch.len() as u64;
            let detections = detector.process(std::mem::take(&mut batch)).await;
            summary.events += detections.events as u64;
            for alert in &detections.alerts {
                *summary.alerts_by_rule.entry(alert.rule_id.clone()).or_default() += 1;
                writeln!(alerts_out, "{}", alert.to_json())?;
            }
            for dl in &detections.dead_letters {
                summary.dead_letters += 1;
                writeln!(dead_letters_out, "{}", dl.to_json())?;
            }
        }
        if at_end {
            break;
        }
    }
    // End of input: the watermark moves to the end of time, so every
    // correlation window closes and is emitted.
    let detections = detector.finish().await;
    for alert in &detections.alerts {
        *summary.alerts_by_rule.entry(alert.rule_id.clone()).or_default() += 1;
        writeln!(alerts_out, "{}", alert.to_json())?;
    }
    for dl in &detections.dead_letters {
        summary.dead_letters += 1;
        writeln!(dead_letters_out, "{}", dl.to_json())?;
    }
    alerts_out.flush()?;
    Ok(summary)
}
