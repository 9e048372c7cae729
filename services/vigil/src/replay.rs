//! Offline mode: decode and evaluate a JSON-lines file (or stdin) with the
//! same code the service runs, printing alerts as JSON lines on stdout.
//! Detection engineers use it to backtest rules on historical logs.

use std::collections::BTreeMap;
use std::io::{BufRead, ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::alert::format_time_ns;
use crate::detect::{Detections, Detector};
use crate::rules::Severity;
use crate::source::{Origin, RawMessage, SourceKind};

/// Totals of one replay, printed at its end (see [`ReplaySummary::render`]).
#[derive(Debug, Default, Clone)]
pub struct ReplaySummary {
    /// Non-blank input lines.
    pub lines: u64,
    /// Decoded events evaluated by the rules (inside the time bounds).
    pub events: u64,
    /// Decoded events per source, in bounds or not.
    pub events_by_source: BTreeMap<SourceKind, u64>,
    /// Decoded events skipped because their event time is outside
    /// `--from`/`--to`.
    pub out_of_range: u64,
    pub dead_letters: u64,
    /// Alerts suppressed by exceptions (`exceptions.toml`), per rule.
    pub excepted_by_rule: BTreeMap<String, u64>,
    pub alerts_by_rule: BTreeMap<String, u64>,
    /// Severity of each rule in `alerts_by_rule`.
    pub severity_by_rule: BTreeMap<String, Severity>,
    /// Earliest and latest event time seen (nanoseconds), in bounds or not.
    pub event_time_range: Option<(i64, i64)>,
    /// The alert output was closed by its reader (`vigil replay | head`):
    /// the replay stopped there.
    pub output_closed: bool,
}

/// How to replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Events per micro-batch (at least 1).
    pub batch_size: usize,
    /// Count alerts and dead letters in the summary without writing them
    /// (`vigil replay --summary-only`): nothing reads them, and rendering
    /// each as JSON is most of a dead letter's cost.
    pub count_only: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            batch_size: 5000,
            count_only: false,
        }
    }
}

impl ReplaySummary {
    pub fn alerts(&self) -> u64 {
        self.alerts_by_rule.values().sum()
    }

    fn add(&mut self, source: SourceKind, detections: &Detections) {
        self.events += detections.events as u64;
        self.out_of_range += detections.out_of_range as u64;
        let decoded = (detections.events + detections.out_of_range) as u64;
        if decoded > 0 {
            *self.events_by_source.entry(source).or_default() += decoded;
        }
        for e in &detections.excepted {
            *self.excepted_by_rule.entry(e.rule_id.clone()).or_default() += 1;
        }
        self.event_time_range = match (self.event_time_range, detections.event_time_range) {
            (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
            (x, None) | (None, x) => x,
        };
    }

    /// The human-readable summary: totals, events per source, time range,
    /// then alerts per rule (most alerts first) with the rule's severity and
    /// alerts per severity.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay: {} lines, {} events evaluated, {} outside the time bounds, {} alerts, {} dead letters",
            self.lines,
            self.events,
            self.out_of_range,
            self.alerts(),
            self.dead_letters
        );
        if self.output_closed {
            let _ = writeln!(
                s,
                "  alert output closed by its reader: the replay stopped early"
            );
        }
        for (source, n) in &self.events_by_source {
            let _ = writeln!(s, "  events from {source}: {n}");
        }
        match self.event_time_range {
            Some((first, last)) => {
                let _ = writeln!(
                    s,
                    "  event time seen: {} .. {}",
                    format_time_ns(first),
                    format_time_ns(last)
                );
            }
            None => {
                let _ = writeln!(s, "  event time seen: none (no event decoded)");
            }
        }
        let mut by_severity: BTreeMap<Severity, u64> = BTreeMap::new();
        for (rule, n) in &self.alerts_by_rule {
            if let Some(sev) = self.severity_by_rule.get(rule) {
                *by_severity.entry(*sev).or_default() += n;
            }
        }
        if !by_severity.is_empty() {
            let parts: Vec<String> = by_severity
                .iter()
                .rev()
                .map(|(sev, n)| format!("{sev} {n}"))
                .collect();
            let _ = writeln!(s, "  alerts by severity: {}", parts.join(", "));
        }
        let mut rules: Vec<(&String, &u64)> = self.alerts_by_rule.iter().collect();
        rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (rule, n) in rules {
            let sev = self
                .severity_by_rule
                .get(rule)
                .map(|s| s.as_str())
                .unwrap_or("?");
            let _ = writeln!(s, "  {n:>7}  {sev:<8}  {rule}");
        }
        for (rule, n) in &self.excepted_by_rule {
            let _ = writeln!(s, "  {n:>7}  excepted  {rule} (suppressed by exceptions)");
        }
        s
    }
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
    replay_with(
        detector,
        source,
        input,
        ReplayOptions {
            batch_size,
            ..ReplayOptions::default()
        },
        alerts_out,
        dead_letters_out,
    )
    .await
}

/// [`replay`] with options. Event-time bounds are the detector's (see
/// [`Detector::with_event_time_bounds`]).
///
/// When `alerts_out` reports a broken pipe (its reader went away, as with
/// `vigil replay | head`), the replay stops there and returns its summary
/// with `output_closed` set: that is an ordinary end, not an error.
pub async fn replay_with(
    detector: &mut Detector,
    source: SourceKind,
    input: &Path,
    options: ReplayOptions,
    alerts_out: &mut dyn Write,
    dead_letters_out: &mut dyn Write,
) -> Result<ReplaySummary> {
    let batch_size = options.batch_size.max(1);
    let name = input.display().to_string();
    let path: std::sync::Arc<str> = name.as_str().into();
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::with_capacity(
            READ_BUFFER_BYTES,
            std::fs::File::open(input).with_context(|| format!("opening {name}"))?,
        ))
    };
    let mut summary = ReplaySummary::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut lines = LineReader::new(reader);
    let mut line_no = 0u64;
    loop {
        let line = lines
            .next_line()
            .with_context(|| format!("reading {name}"))?;
        let at_end = line.is_none();
        if let Some(line) = line {
            line_no += 1;
            if let Some(payload) = payload_of(line) {
                batch.push(RawMessage {
                    source,
                    payload,
                    origin: Origin::File {
                        path: path.clone(),
                        line: line_no,
                    },
                    timestamp_ms: None,
                    state_only: false,
                });
            }
        }
        if batch.len() >= batch_size || (at_end && !batch.is_empty()) {
            summary.lines += batch.len() as u64;
            // The next batch's vector at its full size: grown by doubling
            // from empty, its messages were moved a dozen times.
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            let detections = detector.process(full).await;
            summary.add(source, &detections);
            if !write_outputs(
                &mut summary,
                &detections,
                options,
                alerts_out,
                dead_letters_out,
            )? {
                return Ok(summary);
            }
        }
        if at_end {
            break;
        }
    }
    // End of input: the watermark moves to the end of time, so every
    // correlation window closes and is emitted.
    let detections = detector.finish().await;
    for e in &detections.excepted {
        *summary
            .excepted_by_rule
            .entry(e.rule_id.clone())
            .or_default() += 1;
    }
    if write_outputs(
        &mut summary,
        &detections,
        options,
        alerts_out,
        dead_letters_out,
    )? {
        if let Err(e) = alerts_out.flush() {
            if e.kind() != ErrorKind::BrokenPipe {
                return Err(e).context("writing alerts");
            }
            summary.output_closed = true;
        }
    }
    Ok(summary)
}

/// Read buffer of a replayed file: fewer, larger reads than the default 8 KiB.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The message of one input line (a `\r` ending it removed), or `None` for
/// a blank line.
fn payload_of(mut line: Vec<u8>) -> Option<Vec<u8>> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

/// The lines of a replayed input. A line that lies within the read buffer
/// is copied once, at its exact size, from the buffer into its own message:
/// no intermediate line buffer, and one allocation per line.
struct LineReader<R> {
    reader: R,
    /// The start of a line that continues past the end of the read buffer.
    partial: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn new(reader: R) -> Self {
        LineReader {
            reader,
            partial: Vec::new(),
        }
    }

    /// The next line without its `\n` (the last line of the input may lack
    /// one), or `None` at the end of the input.
    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let buffer = match self.reader.fill_buf() {
                Ok(buffer) => buffer,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buffer.is_empty() {
                let rest = std::mem::take(&mut self.partial);
                return Ok((!rest.is_empty()).then_some(rest));
            }
            let Some(end) = memchr::memchr(b'\n', buffer) else {
                let taken = buffer.len();
                self.partial.extend_from_slice(buffer);
                self.reader.consume(taken);
                continue;
            };
            let line = if self.partial.is_empty() {
                buffer[..end].to_vec()
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&buffer[..end]);
                line
            };
            self.reader.consume(end + 1);
            return Ok(Some(line));
        }
    }
}

/// Write one batch's alerts and dead letters and count them. Returns false
/// when the alert output is closed (broken pipe).
fn write_outputs(
    summary: &mut ReplaySummary,
    detections: &Detections,
    options: ReplayOptions,
    alerts_out: &mut dyn Write,
    dead_letters_out: &mut dyn Write,
) -> Result<bool> {
    for alert in &detections.alerts {
        *summary
            .alerts_by_rule
            .entry(alert.rule_id.clone())
            .or_default() += 1;
        summary
            .severity_by_rule
            .insert(alert.rule_id.clone(), alert.severity);
        if options.count_only {
            continue;
        }
        if let Err(e) = writeln!(alerts_out, "{}", alert.to_json()) {
            if e.kind() == ErrorKind::BrokenPipe {
                summary.output_closed = true;
                return Ok(false);
            }
            return Err(e).context("writing alerts");
        }
    }
    summary.dead_letters += detections.dead_letters.len() as u64;
    if !options.count_only {
        for dl in &detections.dead_letters {
            writeln!(dead_letters_out, "{}", dl.to_json()).context("writing dead letters")?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::detect::EventTimeBounds;
    use crate::metrics::Metrics;
    use crate::rules::{parse_rule, RuleEngine};

    const RULE: &str = "-- id: t.delete\n-- title: T\n-- severity: high\n-- description: d\n-- mitre: T1070\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\nSELECT user_info.username AS username FROM k8s_audit WHERE verb = 'delete'\n";

    fn event(id: &str, verb: &str, time: &str) -> String {
        format!(
            r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"bob"}},"objectRef":{{"resource":"pods","namespace":"ns"}},"requestReceivedTimestamp":"{time}"}}"#
        )
    }

    async fn detector(bounds: EventTimeBounds) -> Detector {
        let rule = parse_rule(&PathBuf::from("t.sql"), RULE).unwrap();
        let engine = RuleEngine::compile(vec![rule]).await.unwrap();
        Detector::new(engine, Default::default(), Arc::new(Metrics::default()))
            .with_event_time_bounds(bounds)
    }

    fn input(lines: &[String]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    fn ns(t: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[tokio::test]
    async fn events_outside_the_bounds_are_skipped_and_counted() {
        let file = input(&[
            event("a", "delete", "2024-05-01T09:59:59Z"),
            event("b", "get", "2024-05-01T10:30:00Z"),
            event("c", "delete", "2024-05-01T10:00:00Z"),
            event("d", "delete", "2024-05-01T11:00:00Z"),
        ]);
        let bounds = EventTimeBounds {
            from_ns: Some(ns("2024-05-01T10:00:00Z")),
            to_ns: Some(ns("2024-05-01T11:00:00Z")),
        };
        let mut d = detector(bounds).await;
        let (mut alerts, mut dead) = (Vec::new(), Vec::new());
        let summary = replay_with(
            &mut d,
            SourceKind::K8sAudit,
            file.path(),
            ReplayOptions {
                batch_size: 10,
                ..ReplayOptions::default()
            },
            &mut alerts,
            &mut dead,
        )
        .await
        .unwrap();
        // Only "c" is a delete inside [from, to): "a" is before, "d" is at the exclusive end.
        let alerts = String::from_utf8(alerts).unwrap();
        assert_eq!(alerts.lines().count(), 1, "{alerts}");
        assert!(
            alerts.contains("\"event_id\":\"c/ResponseComplete\""),
            "{alerts}"
        );
        assert_eq!(summary.lines, 4);
        assert_eq!(summary.events, 2);
        assert_eq!(summary.out_of_range, 2);
        assert_eq!(
            summary.events_by_source.get(&SourceKind::K8sAudit),
            Some(&4)
        );
        assert_eq!(
            summary.event_time_range,
            Some((ns("2024-05-01T09:59:59Z"), ns("2024-05-01T11:00:00Z")))
        );
        assert_eq!(
            summary.severity_by_rule.get("t.delete"),
            Some(&Severity::High)
        );
        let text = summary.render();
        assert!(text.contains("2 outside the time bounds"), "{text}");
        assert!(text.contains("alerts by severity: high 1"), "{text}");
        assert!(
            text.contains("event time seen: 2024-05-01T09:59:59Z .. 2024-05-01T11:00:00Z"),
            "{text}"
        );
    }

    /// A writer that must not be written to.
    struct Unread;

    impl Write for Unread {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            panic!("written: {}", String::from_utf8_lossy(buf));
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `--summary-only` counts alerts and dead letters as a replay that
    /// writes them does, and writes nothing.
    #[tokio::test]
    async fn counting_only_counts_what_is_not_written() {
        let file = input(&[
            event("a", "delete", "2024-05-01T10:00:00Z"),
            "{not json".to_string(),
            event("b", "delete", "2024-05-01T10:00:01Z"),
        ]);
        let mut d = detector(EventTimeBounds::default()).await;
        let options = ReplayOptions {
            batch_size: 2,
            count_only: true,
        };
        let counted = replay_with(
            &mut d,
            SourceKind::K8sAudit,
            file.path(),
            options,
            &mut Unread,
            &mut Unread,
        )
        .await
        .unwrap();
        let mut d = detector(EventTimeBounds::default()).await;
        let (mut alerts, mut dead) = (Vec::new(), Vec::new());
        let options = ReplayOptions {
            count_only: false,
            ..options
        };
        let written = replay_with(
            &mut d,
            SourceKind::K8sAudit,
            file.path(),
            options,
            &mut alerts,
            &mut dead,
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8(alerts).unwrap().lines().count(), 2);
        assert_eq!(String::from_utf8(dead).unwrap().lines().count(), 1);
        assert_eq!(counted.alerts(), 2);
        assert_eq!(counted.dead_letters, 1);
        assert_eq!(counted.render(), written.render());
    }

    /// A writer whose reader has gone away after `room` lines.
    struct ClosesAfter {
        room: usize,
        written: Vec<u8>,
    }

    impl Write for ClosesAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.written.iter().filter(|b| **b == b'\n').count() >= self.room {
                return Err(std::io::Error::new(ErrorKind::BrokenPipe, "closed"));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_closed_alert_output_ends_the_replay_without_error() {
        let lines: Vec<String> = (0..20)
            .map(|i| event(&format!("e{i}"), "delete", "2024-05-01T10:00:00Z"))
            .collect();
        let file = input(&lines);
        let mut d = detector(EventTimeBounds::default()).await;
        let mut out = ClosesAfter {
            room: 2,
            written: Vec::new(),
        };
        let summary = replay_with(
            &mut d,
            SourceKind::K8sAudit,
            file.path(),
            ReplayOptions {
                batch_size: 5,
                ..ReplayOptions::default()
            },
            &mut out,
            &mut Vec::new(),
        )
        .await
        .expect("a broken pipe is not an error");
        assert!(summary.output_closed);
        assert_eq!(String::from_utf8(out.written).unwrap().lines().count(), 2);
        // It stopped at the first batch instead of reading the whole input.
        assert_eq!(summary.lines, 5);
        assert!(summary.render().contains("stopped early"));
    }

    #[tokio::test]
    async fn other_write_errors_are_errors() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let file = input(&[event("a", "delete", "2024-05-01T10:00:00Z")]);
        let mut d = detector(EventTimeBounds::default()).await;
        let err = replay_with(
            &mut d,
            SourceKind::K8sAudit,
            file.path(),
            ReplayOptions::default(),
            &mut Full,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
    }

    /// What `BufRead::read_until` gave, line by line: each line without its
    /// `\n`, a last line without one kept, nothing after a final `\n`.
    fn lines_by_read_until(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = input;
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                return lines;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            lines.push(line);
        }
    }

    proptest::proptest! {
        /// Lines within the read buffer and lines across its end (a buffer
        /// of 1 to 16 bytes) come out as `read_until` gives them.
        #[test]
        fn lines_are_read_whole_whatever_the_buffer_holds(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'\n', b'\r', b' ', b'x']),
                0..64,
            ),
            capacity in 1usize..16,
        ) {
            let reader = std::io::BufReader::with_capacity(capacity, input.as_slice());
            let mut lines = LineReader::new(reader);
            let mut read = Vec::new();
            while let Some(line) = lines.next_line().unwrap() {
                read.push(line);
            }
            proptest::prop_assert_eq!(read, lines_by_read_until(&input));
        }
    }

    #[test]
    fn blank_lines_are_skipped_and_a_carriage_return_is_removed() {
        assert_eq!(payload_of(b"{}\r".to_vec()), Some(b"{}".to_vec()));
        assert_eq!(payload_of(b"{}".to_vec()), Some(b"{}".to_vec()));
        assert_eq!(payload_of(b" \t\r".to_vec()), None);
        assert_eq!(payload_of(Vec::new()), None);
    }
}
