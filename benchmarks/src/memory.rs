//! Memory of rule state: peak resident set size while a correlation rule
//! holds events of `keys` distinct users in one open window, or (with
//! `--first-seen`) while a first-seen rule holds `keys` combinations.
//!
//! Events are generated and fed batch by batch (the input is never held
//! whole), all inside one one-hour window, so nothing is evicted or
//! emitted: at the end the state holds every event fed. The figure is the
//! growth of the process's peak RSS (VmHWM) over its RSS after compiling the
//! rules, which also counts the transient memory of evaluation.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::rss;
use vigil::correlate::CorrelationSettings;
use vigil::detect::Detector;
use vigil::gen::{GenConfig, Generator};
use vigil::metrics::Metrics;
use vigil::rules::first_seen::{FirstSeenStorage, SpillStorage};
use vigil::rules::{parse_rule, RuleEngine};
use vigil::source::SourceKind;

/// The state under test: a per-user count over a one-hour tumbling window.
/// Retention keeps only writes (the rule's WHERE is pushed down), which is
/// what the generator's human users do.
pub const STATE_RULE: &str = "-- id: bench.user_write_burst
-- title: Write burst by one user (benchmark)
-- severity: low
-- description: More than 100000 writes by one user in one hour.
-- mitre: T1078
-- source: k8s_audit
-- author: vigil benchmark
-- based_on: vigil:bench
-- mode: correlation
-- window: 1h
SELECT user_info.username AS username,
       tumble_end(event_time, INTERVAL '1 hour') AS window_end,
       count(*) AS writes
FROM k8s_audit
WHERE verb IN ('create', 'update', 'patch') AND user_info.username LIKE '%@example.com'
GROUP BY user_info.username, tumble_end(event_time, INTERVAL '1 hour')
HAVING count(*) > 100000
";

/// The first-seen state under test: every human user's requests, one
/// combination per user (a request by a user not seen in 14 days).
pub const FIRST_SEEN_RULE: &str = "-- id: bench.first_request_by_user
-- title: First request by a user in 14 days (benchmark)
-- severity: low
-- description: A user not seen in 14 days made a request.
-- mitre: T1078
-- source: k8s_audit
-- author: vigil benchmark
-- based_on: vigil:bench
-- first_seen: username
-- history: 14d
SELECT user_info.username AS username, verb AS verb
FROM k8s_audit
WHERE user_info.username LIKE '%@example.com'
";

/// Which rule state `vigil-bench memory` measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Correlation,
    /// Optionally spilled to a file in a directory past a number of
    /// combinations in memory.
    FirstSeen {
        spill: Option<(std::path::PathBuf, usize)>,
    },
}

pub async fn run(
    state: State,
    keys: usize,
    batch: usize,
    seed: u64,
    out: &mut dyn Write,
) -> Result<()> {
    let (path, text) = match state {
        State::Correlation => ("bench/user_write_burst.sql", STATE_RULE),
        State::FirstSeen { .. } => ("bench/first_request_by_user.sql", FIRST_SEEN_RULE),
    };
    let rule = parse_rule(Path::new(path), text).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let settings = CorrelationSettings {
        max_retained_events: usize::MAX,
        ..Default::default()
    };
    let mut engine = RuleEngine::compile_with(vec![rule], settings)
        .await
        .map_err(anyhow::Error::new)?;
    if let State::FirstSeen {
        spill: Some((dir, memory)),
    } = &state
    {
        engine.set_first_seen_storage(FirstSeenStorage {
            spill: Some(SpillStorage {
                store: vigil_state::SpillStore::create(dir, vigil_state::DEFAULT_CACHE_BYTES)?,
                memory_entries: *memory,
            }),
            ..FirstSeenStorage::default()
        });
    }
    let metrics = Arc::new(Metrics::default());
    let mut detector = Detector::new(engine, Default::default(), metrics.clone());
    // Users drawn from 2^32 names: among a million draws about a hundred
    // repeat, so distinct keys are counted, not assumed. 100 µs apart, the
    // few million stream positions needed stay inside the first hour.
    let config = GenConfig {
        seed,
        users: u32::MAX,
        step_ns: 100_000,
        attack_every: 0,
        ..GenConfig::single(SourceKind::K8sAudit)
    };
    let mut generator = Generator::new(config);
    let (_, baseline) = rss().context("reading /proc/self/status")?;
    // A first-seen rule counts its distinct users itself: the benchmark's
    // own set (150 MB at 10 million) would be measured with its state.
    let count_here = state == State::Correlation;
    let mut seen: HashSet<u64> = HashSet::with_capacity(if count_here { keys } else { 0 });
    let distinct = |seen: &HashSet<u64>, detector: &Detector| match state {
        State::Correlation => seen.len(),
        State::FirstSeen { .. } => detector
            .engine()
            .first_seen_stats()
            .map_or(0, |s| s.entries),
    };
    let mut fed = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    while distinct(&seen, &detector) < keys {
        // A first-seen rule's last batches stop at `keys` (the users are
        // almost all distinct): its bound is 10 million, and past it the
        // oldest tenth would be forgotten.
        let room = match state {
            State::Correlation => batch,
            State::FirstSeen { .. } => batch.min(keys - distinct(&seen, &detector)),
        };
        let mut messages = Vec::with_capacity(room);
        while messages.len() < room && (!count_here || seen.len() < keys) {
            let e = generator.next_event();
            if !e.key.ends_with("@example.com") {
                continue;
            }
            if count_here {
                seen.insert(hash(&e.key));
            }
            bytes += e.payload.len() as u64;
            messages.push(super::raw_message(&e));
        }
        fed += messages.len() as u64;
        let out = detector.process(messages).await;
        anyhow::ensure!(
            out.dead_letters.is_empty(),
            "dead letters while loading state: {:?}",
            out.dead_letters.first()
        );
    }
    let elapsed = start.elapsed();
    let (peak, now) = rss().context("reading /proc/self/status")?;
    let growth = peak.saturating_sub(baseline);
    if let State::FirstSeen { .. } = state {
        let stats = detector.engine().first_seen_stats().unwrap_or_default();
        let entries = stats.entries;
        anyhow::ensure!(
            stats.forgotten_early == 0 && stats.spill_failures == 0,
            "the rule forgot {} combinations early, {} spill failures",
            stats.forgotten_early,
            stats.spill_failures
        );
        if let State::FirstSeen {
            spill: Some((dir, _)),
        } = &state
        {
            let file = std::fs::metadata(dir.join(vigil_state::SPILL_FILE))?.len();
            writeln!(
                out,
                "spill file: {:.0} MB, {:.0} bytes/spilled combination",
                file as f64 / 1e6,
                file as f64 / stats.spilled.max(1) as f64
            )?;
        }
        writeln!(
            out,
            "first-seen state: {entries} combinations ({} spilled), {fed} events fed ({:.0} MB of JSON); \
             RSS after compile {:.0} MB, peak {:.0} MB, at end {:.0} MB; peak growth {:.0} MB = {:.0} bytes/combination; {:.1} s",
            stats.spilled,
            bytes as f64 / 1e6,
            baseline as f64 / 1e6,
            peak as f64 / 1e6,
            now as f64 / 1e6,
            growth as f64 / 1e6,
            growth as f64 / entries.max(1) as f64,
            elapsed.as_secs_f64()
        )?;
        return Ok(());
    }
    let retained = Metrics::get(&metrics.retained_events);
    writeln!(
        out,
        "correlation state: {} distinct keys, {fed} events fed ({:.0} MB of JSON), {retained} retained; \
         RSS after compile {:.0} MB, peak {:.0} MB, at end {:.0} MB; peak growth {:.0} MB = {:.0} bytes/key, {:.0} bytes/retained event; {:.1} s",
        seen.len(),
        bytes as f64 / 1e6,
        baseline as f64 / 1e6,
        peak as f64 / 1e6,
        now as f64 / 1e6,
        growth as f64 / 1e6,
        growth as f64 / seen.len().max(1) as f64,
        growth as f64 / retained.max(1) as f64,
        elapsed.as_secs_f64()
    )?;
    Ok(())
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}
