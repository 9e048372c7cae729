//! Synthetic event generator: realistic Kubernetes audit, Falco and
//! Tetragon events at scale, with attacks injected at known positions.
//!
//! Used by `vigil gen` (to a file or to the source topics, for load tests and
//! the docker-compose demo) and by the benchmarks (`vigil-bench`). Producing
//! to Kafka is the service's (`vigil::gen::produce`); this crate only makes
//! events.
//!
//! Invariants:
//! * **Deterministic.** The stream is a pure function of [`GenConfig`]
//!   (seed, entity counts, start time, spacing, attack interval): the same
//!   configuration yields byte-identical events and the same manifest.
//! * **Background is benign.** Background events are shaped on real traffic
//!   (API-server audit events with request objects, Falco notices, Tetragon
//!   process events) and trigger none of the shipped per-event rules
//!   (`sql-rules/`); a test checks this against the rule pack.
//! * **Attacks are accounted for.** Every injected attack is one event at a
//!   position given by [`GenConfig::attack_every`], and is reported as an
//!   [`InjectedAttack`] naming the rule ids it triggers, so expected
//!   detections can be counted exactly.

mod attacks;
mod audit;
mod runtime;

use serde::Serialize;

pub use attacks::{Attack, ATTACKS};

use vigil_model::source::SourceKind;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    /// Sources in the stream; events are spread over them by `weights`.
    pub sources: Vec<SourceKind>,
    /// Relative share of each source in `sources` (same length).
    pub weights: Vec<u32>,
    /// Distinct human users (audit), besides service accounts and nodes.
    pub users: u32,
    /// Distinct namespaces.
    pub namespaces: u32,
    /// Distinct pods (over all namespaces).
    pub pods: u32,
    /// Event time of the first event, nanoseconds since the epoch.
    pub start_ns: i64,
    /// Event time between consecutive events, nanoseconds.
    pub step_ns: i64,
    /// One attack every this many events (0: no attacks). Attack `k` is at
    /// stream position `k * attack_every + attack_every / 2`.
    pub attack_every: u64,
}

/// 2026-01-01T00:00:00Z.
pub const DEFAULT_START_NS: i64 = 1_767_225_600_000_000_000;

/// The sources the generator makes events of.
pub const GENERATED: [SourceKind; 3] = [
    SourceKind::K8sAudit,
    SourceKind::Falco,
    SourceKind::Tetragon,
];

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 1,
            sources: GENERATED.to_vec(),
            weights: vec![80, 10, 10],
            users: 200,
            namespaces: 50,
            pods: 2000,
            start_ns: DEFAULT_START_NS,
            step_ns: 1_000_000,
            attack_every: 1000,
        }
    }
}

impl GenConfig {
    /// Only `source`, everything else default.
    pub fn single(source: SourceKind) -> Self {
        GenConfig {
            sources: vec![source],
            weights: vec![1],
            ..Default::default()
        }
    }
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct GeneratedEvent {
    /// Position in the whole stream (0-based).
    pub index: u64,
    pub source: SourceKind,
    /// Position among the events of its source (0-based): the line of a
    /// single-source output file, or the offset in a one-partition topic.
    pub source_index: u64,
    /// Kafka record key: the user (audit) or pod (runtime) the event is
    /// about, so that events that belong together share a partition.
    pub key: String,
    /// The event's native id as Vigil derives it (`Events::native_id`).
    pub event_id: String,
    /// One JSON object, no trailing newline.
    pub payload: Vec<u8>,
    pub event_time_ns: i64,
    /// Set on injected attacks.
    pub attack: Option<&'static Attack>,
}

/// Manifest entry: one injected attack and the detections it must produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectedAttack {
    pub index: u64,
    pub source: SourceKind,
    pub source_index: u64,
    pub attack: &'static str,
    pub event_id: String,
    /// Rule ids that fire on this event (one alert each).
    pub rules: Vec<&'static str>,
}

impl GeneratedEvent {
    pub fn manifest_entry(&self) -> Option<InjectedAttack> {
        self.attack.map(|a| InjectedAttack {
            index: self.index,
            source: self.source,
            source_index: self.source_index,
            attack: a.name,
            event_id: self.event_id.clone(),
            rules: a.rules.to_vec(),
        })
    }

    /// The event as a message of partition 0 of a topic named after its
    /// source, at its index in that source's stream.
    pub fn raw_message(&self) -> vigil_model::source::RawMessage {
        use vigil_model::source::{Origin, RawMessage};
        RawMessage {
            source: self.source,
            payload: self.payload.clone(),
            origin: Origin::Kafka {
                topic: self.source.table_name().into(),
                partition: 0,
                offset: self.source_index as i64,
            },
            timestamp_ms: None,
            state_only: false,
        }
    }
}

/// SplitMix64: small, fast, and fully specified, so the stream does not
/// depend on a random-number crate's version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Index into `weights`, chosen proportionally.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let mut x = self.below(total.max(1));
        for (i, &w) in weights.iter().enumerate() {
            if x < w as u64 {
                return i;
            }
            x -= w as u64;
        }
        weights.len() - 1
    }
    /// `n` lowercase hex digits.
    pub fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(n);
        s
    }
    /// A random (version 4 shaped) UUID.
    pub fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

/// The cluster the events are about: names derived from indices, so any
/// entity count costs no memory.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    users: u32,
    namespaces: u32,
    pods: u32,
}

const APPS: [&str; 12] = [
    "checkout",
    "payments",
    "catalog",
    "search",
    "frontend",
    "orders",
    "billing",
    "auth",
    "reports",
    "inventory",
    "shipping",
    "gateway",
];

impl Cluster {
    pub fn user(&self, rng: &mut Rng) -> String {
        format!("user{}@example.com", rng.below(self.users.max(1) as u64))
    }
    pub fn namespace_of(&self, i: u64) -> String {
        format!("team-{}", i % self.namespaces.max(1) as u64)
    }
    /// A pod: (namespace, app, pod name, node).
    pub fn pod(&self, rng: &mut Rng) -> PodRef {
        let i = rng.below(self.pods.max(1) as u64);
        let app = APPS[(i % APPS.len() as u64) as usize];
        PodRef {
            namespace: self.namespace_of(i / APPS.len() as u64),
            app,
            name: format!(
                "{app}-{:08x}-{:05}",
                (i.wrapping_mul(2_654_435_761)) as u32,
                i
            ),
            node: format!("node-{}", i % (self.pods / 30).max(1) as u64),
        }
    }
    pub fn node(&self, rng: &mut Rng) -> String {
        format!("node-{}", rng.below((self.pods / 30).max(1) as u64))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PodRef {
    pub namespace: String,
    pub app: &'static str,
    pub name: String,
    pub node: String,
}

/// What a template produced, before the generator stamps positions on it.
pub(crate) struct Built {
    pub key: String,
    pub event_id: String,
    pub payload: Vec<u8>,
}

/// The deterministic event stream of one [`GenConfig`].
pub struct Generator {
    config: GenConfig,
    cluster: Cluster,
    rng: Rng,
    index: u64,
    per_source: [u64; 3],
    next_attack: usize,
    attacks: Vec<&'static Attack>,
}

impl Generator {
    pub fn new(config: GenConfig) -> Self {
        assert_eq!(
            config.sources.len(),
            config.weights.len(),
            "one weight per source"
        );
        assert!(!config.sources.is_empty(), "at least one source");
        let attacks = ATTACKS
            .iter()
            .filter(|a| config.sources.contains(&a.source))
            .collect();
        let cluster = Cluster {
            users: config.users,
            namespaces: config.namespaces,
            pods: config.pods,
        };
        let rng = Rng::new(config.seed);
        Generator {
            config,
            cluster,
            rng,
            index: 0,
            per_source: [0; 3],
            next_attack: 0,
            attacks,
        }
    }

    pub fn config(&self) -> &GenConfig {
        &self.config
    }

    fn is_attack_position(&self, index: u64) -> bool {
        let every = self.config.attack_every;
        every > 0 && !self.attacks.is_empty() && index % every == every / 2
    }

    /// The next event of the stream.
    pub fn next_event(&mut self) -> GeneratedEvent {
        let index = self.index;
        self.index += 1;
        let time_ns = self
            .config
            .start_ns
            .saturating_add(self.config.step_ns.saturating_mul(index as i64));
        let (source, built, attack) = if self.is_attack_position(index) {
            let attack = self.attacks[self.next_attack % self.attacks.len()];
            self.next_attack += 1;
            (
                attack.source,
                (attack.build)(&mut self.rng, &self.cluster, time_ns),
                Some(attack),
            )
        } else {
            let source = self.config.sources[self.rng.weighted(&self.config.weights)];
            let built = match source {
                SourceKind::K8sAudit => audit::background(&mut self.rng, &self.cluster, time_ns),
                SourceKind::Falco => {
                    runtime::falco_background(&mut self.rng, &self.cluster, time_ns)
                }
                SourceKind::Tetragon => {
                    runtime::tetragon_background(&mut self.rng, &self.cluster, time_ns)
                }
                other => unreachable!(
                    "GenConfig::sources holds {other}, which the generator does not make"
                ),
            };
            (source, built, None)
        };
        let slot = &mut self.per_source[GENERATED
            .iter()
            .position(|s| *s == source)
            .expect("known source")];
        let source_index = *slot;
        *slot += 1;
        GeneratedEvent {
            index,
            source,
            source_index,
            key: built.key,
            event_id: built.event_id,
            payload: built.payload,
            event_time_ns: time_ns,
            attack,
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedEvent;
    fn next(&mut self) -> Option<GeneratedEvent> {
        Some(self.next_event())
    }
}

/// RFC 3339 with microseconds, as the API server writes its timestamps.
pub(crate) fn rfc3339_micros(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// RFC 3339 with nanoseconds (Falco, Tetragon).
pub(crate) fn rfc3339_nanos(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
