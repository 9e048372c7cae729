//! Memory over a long run: the whole shipped audit pack and a
//! high-cardinality correlation rule fed continuously for a set wall-clock
//! time, sampling the resident set size.
//!
//! Events are generated as they are fed (nothing is held beyond a batch),
//! 1 ms of event time apart, so the stream's event time runs far ahead of
//! the wall clock and every window of the pack (at most 10 minutes) opens,
//! closes and is evicted many times over. With no leak, RSS rises while
//! the windows fill and then stays within a band: the report gives RSS per
//! sample, and the growth between the end of the first fifth of the run
//! and its end.
//!
//! Built with the `heap-count` feature (see [`super::heap`]), it also gives
//! the live heap between batches, lowest and highest in each sample's
//! interval. The lowest is the floor under the batch-to-batch sawtooth: if
//! it rises, the program holds more; if RSS rises and the floor does not,
//! the allocator does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::engine::{source_rules, CORRELATION_RULE};
use super::{heap, rss};
use vigil::correlate::CorrelationSettings;
use vigil::detect::Detector;
use vigil::gen::{GenConfig, Generator};
use vigil::metrics::Metrics;
use vigil::rules::{parse_rule, RuleEngine};
use vigil::source::SourceKind;

/// What `vigil-bench soak` runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub duration: Duration,
    pub batch: usize,
    pub seed: u64,
    pub rules: std::path::PathBuf,
    /// Distinct human users (the keys of the correlation state).
    pub users: u32,
    /// Time between RSS samples.
    pub every: Duration,
}

/// One RSS sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub events: u64,
    pub rss: u64,
    pub retained: u64,
    pub state_rows: u64,
    /// Live heap bytes between batches since the last sample, lowest and
    /// highest; `None` without the `heap-count` feature.
    pub live: Option<(u64, u64)>,
}

pub async fn run(opts: &SoakOptions, out: &mut dyn Write) -> Result<Vec<Sample>> {
    let mut rules = source_rules(&opts.rules, SourceKind::K8sAudit)?;
    rules.rules.push(
        parse_rule(Path::new("bench/user_request_burst.sql"), CORRELATION_RULE)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let n = rules.rules.len();
    let engine = RuleEngine::compile_with(rules, CorrelationSettings::default())
        .await
        .map_err(anyhow::Error::new)?;
    let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
    let mut generator = Generator::new(GenConfig {
        seed: opts.seed,
        users: opts.users,
        ..GenConfig::single(SourceKind::K8sAudit)
    });
    let (_, baseline) = rss().context("reading /proc/self/status")?;
    writeln!(
        out,
        "soak: {n} rules (the audit pack + bench.user_request_burst), {} users, batches of {}, {:.0} s; RSS after compile {:.0} MB",
        opts.users,
        opts.batch,
        opts.duration.as_secs_f64(),
        baseline as f64 / 1e6
    )?;
    let start = Instant::now();
    let mut next_sample = opts.every;
    let mut samples = Vec::new();
    let mut events = 0u64;
    let mut alerts: BTreeMap<String, u64> = BTreeMap::new();
    let mut live: Option<(u64, u64)> = None;
    while start.elapsed() < opts.duration {
        let messages: Vec<_> = (0..opts.batch)
            .map(|_| super::raw_message(&generator.next_event()))
            .collect();
        events += messages.len() as u64;
        let detections = detector.process(messages).await;
        anyhow::ensure!(
            detections.dead_letters.is_empty(),
            "dead letters during the soak: {:?}",
            detections.dead_letters.first().map(|d| &d.reason)
        );
        for a in detections.alerts {
            *alerts.entry(a.rule_id).or_default() += 1;
        }
        if let Some(now) = heap::live_bytes() {
            let (lo, hi) = live.unwrap_or((now, now));
            live = Some((lo.min(now), hi.max(now)));
        }
        if start.elapsed() >= next_sample {
            let (_, now) = rss().context("reading /proc/self/status")?;
            let stats = detector.engine().correlator().stats();
            let sample = Sample {
                at: start.elapsed(),
                events,
                rss: now,
                retained: stats.retained_events as u64,
                state_rows: stats.state_rows as u64,
                live: live.take(),
            };
            let heap = match sample.live {
                Some((lo, hi)) => format!(
                    "  live heap {:>4.0}-{:<4.0} MB",
                    lo as f64 / 1e6,
                    hi as f64 / 1e6
                ),
                None => String::new(),
            };
            writeln!(
                out,
                "  {:>5.0} s  {:>10} events  RSS {:>5.0} MB{heap}  retained events {:>7}  state rows {:>7}",
                sample.at.as_secs_f64(),
                sample.events,
                sample.rss as f64 / 1e6,
                sample.retained,
                sample.state_rows
            )?;
            out.flush()?;
            samples.push(sample);
            next_sample += opts.every;
        }
    }
    let (peak, _) = rss().context("reading /proc/self/status")?;
    let fifth = samples.iter().find(|s| s.at >= opts.duration / 5).copied();
    let last = samples.last().copied();
    if let (Some(a), Some(b)) = (fifth, last) {
        let band = samples.iter().filter(|s| s.at >= a.at);
        let (lo, hi) = band.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.rss), hi.max(s.rss)));
        let floor = match (a.live, b.live) {
            (Some((from, _)), Some((to, _))) => format!(
                "; live heap floor {:.0} -> {:.0} MB ({:+.1}%)",
                from as f64 / 1e6,
                to as f64 / 1e6,
                (to as f64 / from as f64 - 1.0) * 100.0
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "soak: {events} events in {:.0} s ({:.0} events/s, {:.0} s of event time); RSS peak {:.0} MB; from {:.0} s to the end: {:.0} -> {:.0} MB ({:+.1}%), band {:.0}-{:.0} MB{floor}; alerts: {}",
            start.elapsed().as_secs_f64(),
            events as f64 / start.elapsed().as_secs_f64(),
            events as f64 * 1e-3,
            peak as f64 / 1e6,
            a.at.as_secs_f64(),
            a.rss as f64 / 1e6,
            b.rss as f64 / 1e6,
            (b.rss as f64 / a.rss as f64 - 1.0) * 100.0,
            lo as f64 / 1e6,
            hi as f64 / 1e6,
            alerts.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
        )?;
    }
    Ok(samples)
}
