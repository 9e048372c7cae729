//! Benchmarks: engine throughput against its ceilings, end to end through a
//! broker, and memory of correlation state. Run by the thin `vigil-bench`
//! binary (`cargo run --release -p vigil-bench -- engine|e2e|memory|scale`);
//! docs/benchmarks.md has the commands and the measured numbers.
//!
//! Every benchmark works on events from [`vigil::gen`], so runs are
//! reproducible from the seed, and checks that the alerts it got are the
//! ones the generator's manifest announced (a fast engine that misses
//! detections is not a result).

pub mod broker;
pub mod cli;
pub mod e2e;
pub mod engine;
pub mod heap;
pub mod memory;
pub mod scale;
pub mod soak;

use std::time::Duration;

use vigil::gen::{GenConfig, GeneratedEvent, Generator};
use vigil::source::{RawMessage, SourceKind};

/// `n` generated events of one source, as the raw messages a one-partition
/// topic `source.table_name()` would deliver.
pub fn generate(config: GenConfig, n: usize) -> (Vec<GeneratedEvent>, Vec<RawMessage>) {
    let events: Vec<GeneratedEvent> = Generator::new(config).take(n).collect();
    let messages = events.iter().map(raw_message).collect();
    (events, messages)
}

pub fn raw_message(e: &GeneratedEvent) -> RawMessage {
    e.raw_message()
}

/// Generated audit events for the engine benchmarks.
pub fn audit_config(seed: u64, users: u32) -> GenConfig {
    GenConfig {
        seed,
        users,
        ..GenConfig::single(SourceKind::K8sAudit)
    }
}

/// A throughput measurement.
#[derive(Debug, Clone)]
pub struct Rate {
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Rate {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>10.0} events/s {:>8.1} MB/s ({} events in {:.3} s)",
            self.events_per_s(),
            self.mb_per_s(),
            self.events,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Peak and current resident set size of this process, in bytes (Linux
/// `/proc/self/status` VmHWM / VmRSS; `None` elsewhere).
pub fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
