//! Service configuration: a TOML file layered under `VIGIL__...`
//! environment variables (the `config` crate).
//!
//! Every key, its default and its environment form is documented in
//! docs/configuration.md; `vigil.example.toml` at the repository root is a
//! complete example. Environment variables use `__` between levels:
//! `VIGIL__KAFKA__BROKERS=kafka:9092`, `VIGIL__BATCH__MAX_EVENTS=2000`.
//! librdkafka properties go under `[kafka.properties]`; from the
//! environment, write the property's dots as underscores
//! (`VIGIL__KAFKA__PROPERTIES__SASL_PASSWORD` sets `sasl.password`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::correlate::CorrelationSettings;
use crate::decode::envelope::{AuditFormat, UnknownAuditFormat};
use crate::decode::DecodeLimits;
use crate::http::HttpSettings;
pub use crate::kafka::{is_secret_property, DeliveryMode, KafkaSettings, PROTECTED_PROPERTIES};
use crate::outputs::console::ConsoleSettings;
use crate::outputs::settings::{OutputSettings, RoutingSettings};
use crate::source::SourceKind;
use crate::telemetry::{LogSettings, TracingSettings};
use std::collections::BTreeMap;
use vigil_sources::registry;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub topics: TopicSettings,
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub rules: RuleSettings,
    #[serde(default)]
    pub limits: LimitSettings,
    #[serde(default)]
    pub correlation: CorrelationSettings,
    /// The metrics and health endpoints.
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub log: LogSettings,
    /// OpenTelemetry trace export.
    #[serde(default)]
    pub tracing: TracingSettings,
    /// The outputs' consumer and enrichment (see `crate::outputs`).
    #[serde(default)]
    pub routing: RoutingSettings,
    /// Where alerts are delivered besides the alerts topic (`[[outputs]]`,
    /// see `crate::outputs`).
    #[serde(default)]
    pub outputs: Vec<OutputSettings>,
    /// The alert console at `/console` (see `crate::outputs::console`).
    #[serde(default)]
    pub console: ConsoleSettings,
}

/// Topic names. A source's topic is keyed by its table name
/// (`topics.k8s_audit`, `topics.falco`, `topics.tetragon`: every source of
/// the registry, `vigil_sources::registry`), defaulting to the registry's
/// topic; an empty source topic disables that source. Unknown keys are
/// rejected, naming the valid ones.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    /// The topic of each registered source, in registry order (an empty
    /// topic: the source is disabled). Read with [`TopicSettings::sources`].
    source_topics: Vec<(SourceKind, String)>,
    /// How the audit topic's messages are wrapped: `native` (the API
    /// server's webhook or log backend), `eks_cloudwatch`,
    /// `aks_event_hubs` or `gke_cloud_logging` (see
    /// `crate::decode::envelope`).
    pub k8s_audit_format: AuditFormat,
    /// Where alerts are produced.
    pub alerts: String,
    /// Where undecodable messages and rule failures are produced.
    pub dead_letter: String,
    /// Where events behind the watermark are reported (they are still
    /// evaluated by per-event rules, but not retained for correlation).
    pub late_events: String,
    /// Where checkpoints are written (one partition, compacted): see
    /// `crate::kafka::checkpoint`.
    pub checkpoints: String,
    /// Where durable rule state is changelogged (compacted, any number of
    /// partitions): the first-seen rules' combinations, see
    /// `crate::kafka::state`. Read at start when a first-seen rule is
    /// loaded.
    pub state: String,
    /// With `correlation.placement = "repartition"`: where the first stage
    /// forwards the events correlation rules use, by correlation key, and
    /// the second stage reads them (any number of partitions: the most
    /// instances that can share correlation; time-based retention longer
    /// than the longest rule window). Vigil creates no topic.
    pub repartition: String,
    /// One partition, time-based retention: the log of the correlation
    /// leader election when `correlation.placement = "leader"` (see
    /// `crate::leader`).
    pub correlation_lease: String,
}

/// Why a `[topics]` key cannot be set; serde reports the text (with the
/// wording of its own unknown-field errors for an unknown key).
#[derive(Debug, thiserror::Error)]
enum TopicKeyError {
    /// Neither a registered source nor one of [`TOPIC_KEYS`]; `valid` is
    /// every key that is.
    #[error("unknown field `{key}` in [topics], expected one of {}", valid.join(", "))]
    UnknownKey {
        key: String,
        valid: Vec<&'static str>,
    },
    /// `k8s_audit_format` names no format.
    #[error(transparent)]
    AuditFormat(#[from] UnknownAuditFormat),
}

/// The keys of `[topics]` besides the source names.
const TOPIC_KEYS: [&str; 8] = [
    "k8s_audit_format",
    "alerts",
    "dead_letter",
    "late_events",
    "checkpoints",
    "state",
    "repartition",
    "correlation_lease",
];

impl<'de> Deserialize<'de> for TopicSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(deserializer)?;
        let mut topics = TopicSettings::default();
        for (key, value) in raw {
            topics.set(&key, value).map_err(serde::de::Error::custom)?;
        }
        Ok(topics)
    }
}

impl TopicSettings {
    /// Set one `[topics]` key.
    fn set(&mut self, key: &str, value: String) -> Result<(), TopicKeyError> {
        match key {
            "k8s_audit_format" => self.k8s_audit_format = value.parse()?,
            "alerts" => self.alerts = value,
            "dead_letter" => self.dead_letter = value,
            "late_events" => self.late_events = value,
            "checkpoints" => self.checkpoints = value,
            "state" => self.state = value,
            "repartition" => self.repartition = value,
            "correlation_lease" => self.correlation_lease = value,
            _ => match registry::resolve(key) {
                Ok(kind) => self.set_source_topic(kind, value),
                Err(_) => {
                    return Err(TopicKeyError::UnknownKey {
                        key: key.to_string(),
                        valid: registry::kinds()
                            .map(SourceKind::table_name)
                            .chain(TOPIC_KEYS)
                            .collect(),
                    });
                }
            },
        }
        Ok(())
    }

    /// The topic of `source` (empty: disabled).
    pub fn source_topic(&self, source: SourceKind) -> &str {
        self.source_topics
            .iter()
            .find(|(k, _)| *k == source)
            .map_or("", |(_, t)| t.as_str())
    }

    /// Read `source` from `topic` (empty: disable it). `source` is a
    /// registered source.
    pub fn set_source_topic(&mut self, source: SourceKind, topic: impl Into<String>) {
        let topic = topic.into();
        match self.source_topics.iter_mut().find(|(k, _)| *k == source) {
            Some((_, t)) => *t = topic,
            None => self.source_topics.push((source, topic)),
        }
    }
}

fn default_correlation_lease_topic() -> String {
    "vigil-correlation-lease".into()
}

fn default_alerts_topic() -> String {
    "vigil-alerts".into()
}
fn default_dead_letter_topic() -> String {
    "vigil-dead-letter".into()
}
fn default_late_events_topic() -> String {
    "vigil-late-events".into()
}
fn default_checkpoints_topic() -> String {
    "vigil-checkpoints".into()
}
fn default_state_topic() -> String {
    "vigil-state".into()
}
fn default_repartition_topic() -> String {
    "vigil-repartition".into()
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            source_topics: registry::specs()
                .map(|spec| (spec.kind, spec.default_topic.to_string()))
                .collect(),
            k8s_audit_format: AuditFormat::Native,
            alerts: default_alerts_topic(),
            dead_letter: default_dead_letter_topic(),
            late_events: default_late_events_topic(),
            checkpoints: default_checkpoints_topic(),
            state: default_state_topic(),
            repartition: default_repartition_topic(),
            correlation_lease: default_correlation_lease_topic(),
        }
    }
}

impl TopicSettings {
    /// The topics Vigil writes: alerts, dead letters, late events,
    /// checkpoints and rule state.
    pub fn outputs(&self) -> [&str; 5] {
        [
            &self.alerts,
            &self.dead_letter,
            &self.late_events,
            &self.checkpoints,
            &self.state,
        ]
    }

    /// The enabled sources and their topics, in registry order.
    pub fn sources(&self) -> Vec<(SourceKind, String)> {
        self.source_topics
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .cloned()
            .collect()
    }
}

/// Micro-batching: a batch closes at `max_events` messages or `max_wait_ms`
/// after its first message, whichever comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_max_events() -> usize {
    5000
}
fn default_max_wait_ms() -> u64 {
    500
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_events: default_max_events(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

impl BatchSettings {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

/// Where rules are read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    #[serde(default = "default_rules_dir")]
    pub dir: PathBuf,
    /// Site overlays, applied over `dir` in order: lists, macros, lookup
    /// tables, overrides, exceptions and rules of the site's own (see
    /// `crate::rules::pack`).
    #[serde(default)]
    pub overlays: Vec<PathBuf>,
    /// Exceptions (allow-list) file; unset: `exceptions.toml` in `dir` if
    /// it exists (see `crate::rules::exceptions`).
    #[serde(default)]
    pub exceptions: Option<PathBuf>,
    /// Reload the rules on SIGHUP and when a file under `dir` or an overlay changes
    /// (see `crate::reload`).
    #[serde(default = "default_true")]
    pub reload: bool,
    /// Time budget of one rule's evaluation over one batch, in
    /// milliseconds: beyond it the evaluation is cancelled and reported as
    /// a `rule_error` dead letter (see `crate::rules::budget`).
    #[serde(default = "default_max_eval_ms")]
    pub max_eval_ms: u64,
    /// Where first-seen rules keep their combinations.
    #[serde(default)]
    pub first_seen: FirstSeenSettings,
}

/// How first-seen rules keep their combinations (see
/// `crate::rules::first_seen`): in memory, and past `memory_combinations`
/// in a local spill file when `spill_dir` is set. The state topic stays
/// the durable copy; the spill file is made empty at each start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstSeenSettings {
    /// Combinations one rule (with `placement = "repartition"`: one rule in
    /// one repartition partition) holds at most, memory and spill file
    /// together; past it the oldest tenth is forgotten.
    #[serde(default = "default_max_combinations")]
    pub max_combinations: usize,
    /// A local directory for the spill file (`first-seen.redb`); unset:
    /// memory only.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// With `spill_dir`: combinations one rule keeps in memory (24 bytes
    /// each); past it the oldest tenth moves to the file.
    #[serde(default = "default_memory_combinations")]
    pub memory_combinations: usize,
    /// With `spill_dir`: the spill file's page cache, in MiB, for all rules.
    #[serde(default = "default_spill_cache_mb")]
    pub spill_cache_mb: usize,
}

fn default_max_combinations() -> usize {
    crate::rules::first_seen::DEFAULT_MAX_ENTRIES
}
fn default_memory_combinations() -> usize {
    1_000_000
}
fn default_spill_cache_mb() -> usize {
    vigil_state::DEFAULT_CACHE_BYTES >> 20
}

impl Default for FirstSeenSettings {
    fn default() -> Self {
        FirstSeenSettings {
            max_combinations: default_max_combinations(),
            spill_dir: None,
            memory_combinations: default_memory_combinations(),
            spill_cache_mb: default_spill_cache_mb(),
        }
    }
}

impl FirstSeenSettings {
    /// The engine's storage: opens (and empties) the spill file if set.
    pub fn storage(&self) -> Result<crate::rules::first_seen::FirstSeenStorage> {
        use crate::rules::first_seen::{FirstSeenStorage, SpillStorage};
        let spill = match &self.spill_dir {
            None => None,
            Some(dir) => Some(SpillStorage {
                store: vigil_state::SpillStore::create(dir, self.spill_cache_mb << 20)?,
                memory_entries: self.memory_combinations,
            }),
        };
        Ok(FirstSeenStorage {
            max_entries: self.max_combinations,
            spill,
        })
    }
}

fn default_true() -> bool {
    true
}

fn default_rules_dir() -> PathBuf {
    PathBuf::from("sql-rules")
}

fn default_max_eval_ms() -> u64 {
    5000
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            dir: default_rules_dir(),
            overlays: Vec::new(),
            exceptions: None,
            reload: true,
            max_eval_ms: default_max_eval_ms(),
            first_seen: FirstSeenSettings::default(),
        }
    }
}

impl RuleSettings {
    /// The layers the rule set is read from.
    pub fn layers(&self) -> crate::rules::Layers {
        crate::rules::Layers {
            base: self.dir.clone(),
            overlays: self.overlays.clone(),
            exceptions: self.exceptions.clone(),
        }
    }

    pub fn max_eval(&self) -> Duration {
        Duration::from_millis(self.max_eval_ms)
    }
}

/// Input limits (see [`DecodeLimits`] for what each bounds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default = "default_max_events_per_message")]
    pub max_events_per_message: usize,
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
    #[serde(default = "default_max_nesting_depth")]
    pub max_nesting_depth: usize,
    #[serde(default = "default_max_event_time_ahead_ms")]
    pub max_event_time_ahead_ms: u64,
    /// Largest record Vigil produces (key and value): alerts, dead letters
    /// and late events are cut to fit (see `pipeline::commit`), so that no
    /// input can make a record the producer or broker refuses.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

/// Under librdkafka's default `message.max.bytes` (1,000,000) and Kafka's
/// default `max.message.bytes` (1,048,588), with room for the framing.
fn default_max_record_bytes() -> usize {
    990_000
}

fn default_max_message_bytes() -> usize {
    DecodeLimits::default().max_message_bytes
}
fn default_max_events_per_message() -> usize {
    DecodeLimits::default().max_events_per_message
}
fn default_max_field_bytes() -> usize {
    DecodeLimits::default().max_field_bytes
}
fn default_max_nesting_depth() -> usize {
    DecodeLimits::default().max_nesting_depth
}
fn default_max_event_time_ahead_ms() -> u64 {
    DecodeLimits::default().max_event_time_ahead_ms
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_message_bytes: default_max_message_bytes(),
            max_events_per_message: default_max_events_per_message(),
            max_field_bytes: default_max_field_bytes(),
            max_nesting_depth: default_max_nesting_depth(),
            max_event_time_ahead_ms: default_max_event_time_ahead_ms(),
            max_record_bytes: default_max_record_bytes(),
        }
    }
}

impl LimitSettings {
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_message_bytes: self.max_message_bytes,
            max_events_per_message: self.max_events_per_message,
            max_field_bytes: self.max_field_bytes,
            max_nesting_depth: self.max_nesting_depth,
            max_event_time_ahead_ms: self.max_event_time_ahead_ms,
        }
    }
}

impl Settings {
    /// Load from an optional TOML file, then `VIGIL__` environment variables,
    /// and validate.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                bail!("configuration file {} does not exist", path.display());
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("VIGIL__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("VIGIL")
                .separator("__")
                .source(Some(env)),
        );
        let raw = builder.build().context("reading the configuration")?;
        let mut settings: Settings = raw.try_deserialize().context("invalid configuration")?;
        settings.kafka.properties = settings
            .kafka
            .properties
            .into_iter()
            .map(|(k, v)| (k.replace('_', "."), v))
            .collect();
        settings.validate()?;
        Ok(settings)
    }

    /// Check values the types alone cannot.
    pub fn validate(&self) -> Result<()> {
        self.kafka.validate()?;
        if self.topics.sources().is_empty() {
            let names: Vec<String> = registry::kinds().map(|k| format!("topics.{k}")).collect();
            bail!(
                "invalid configuration: every source topic is empty; enable at least one of {}",
                names.join(", ")
            );
        }
        if self.correlation.placement == crate::correlate::Placement::Repartition
            && self.topics.repartition.is_empty()
        {
            bail!("invalid configuration: correlation.placement = \"repartition\" needs topics.repartition");
        }
        let outputs = self.topics.outputs();
        if outputs.iter().any(|t| t.is_empty()) {
            bail!("invalid configuration: topics.alerts, topics.dead_letter, topics.late_events, topics.checkpoints and topics.state must be set");
        }
        let sources = self.topics.sources();
        for (i, (_, t)) in sources.iter().enumerate() {
            if sources[..i].iter().any(|(_, u)| u == t) {
                bail!("invalid configuration: topic {t:?} is used by two sources");
            }
            if outputs.contains(&t.as_str()) {
                bail!("invalid configuration: topic {t:?} is both a source and an output");
            }
        }
        if !(1..=1_000_000).contains(&self.batch.max_events) {
            bail!(
                "invalid configuration: batch.max_events must be between 1 and 1000000, got {}",
                self.batch.max_events
            );
        }
        if self.batch.max_wait_ms == 0 {
            bail!("invalid configuration: batch.max_wait_ms must be at least 1");
        }
        if self.correlation.max_retained_events == 0 {
            bail!("invalid configuration: correlation.max_retained_events must be positive");
        }
        if self.correlation.max_state_rows == 0 || self.correlation.max_alert_events == 0 {
            bail!("invalid configuration: correlation.max_state_rows and correlation.max_alert_events must be positive");
        }
        let l = &self.limits;
        if l.max_message_bytes == 0
            || l.max_events_per_message == 0
            || l.max_field_bytes == 0
            || l.max_nesting_depth == 0
        {
            bail!("invalid configuration: limits.max_message_bytes, limits.max_events_per_message, limits.max_field_bytes and limits.max_nesting_depth must be positive");
        }
        if l.max_nesting_depth > 128 {
            // serde_json refuses deeper input anyway, with a less clear reason.
            bail!(
                "invalid configuration: limits.max_nesting_depth must be at most 128, got {}",
                l.max_nesting_depth
            );
        }
        if l.max_record_bytes < 4096 {
            bail!(
                "invalid configuration: limits.max_record_bytes must be at least 4096, got {}",
                l.max_record_bytes
            );
        }
        if self.rules.max_eval_ms == 0 {
            bail!("invalid configuration: rules.max_eval_ms must be at least 1");
        }
        let f = &self.rules.first_seen;
        if f.max_combinations < 10 || f.memory_combinations < 10 {
            bail!("invalid configuration: rules.first_seen.max_combinations and rules.first_seen.memory_combinations must be at least 10");
        }
        self.http.address()?;
        if self.http.ready_max_poll_gap_ms == 0 {
            bail!("invalid configuration: http.ready_max_poll_gap_ms must be at least 1");
        }
        if !(1..=10_000_000).contains(&self.console.max_alerts) {
            bail!(
                "invalid configuration: console.max_alerts must be between 1 and 10000000, got {}",
                self.console.max_alerts
            );
        }
        crate::outputs::settings::validate(&self.outputs, &self.routing, |var| {
            std::env::var(var).ok()
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.kafka.brokers, None);
        assert_eq!(s.kafka.group_id, "vigil");
        assert_eq!(s.topics.alerts, "vigil-alerts");
        assert_eq!(s.batch.max_events, 5000);
        assert_eq!(s.topics.sources().len(), 3);
    }

    #[test]
    fn repartition_placement_takes_either_delivery_mode() {
        for delivery in ["at_least_once", "exactly_once"] {
            let s = Settings::load_from(
                None,
                env(&[
                    ("VIGIL__CORRELATION__PLACEMENT", "repartition"),
                    ("VIGIL__KAFKA__DELIVERY", delivery),
                ]),
            );
            assert!(s.is_ok(), "{delivery}: {:#}", s.unwrap_err());
        }
    }

    #[test]
    fn file_then_environment_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"a:9092\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n[batch]\nmax_events = 10\n[topics]\nfalco = \"\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            env(&[
                ("VIGIL__KAFKA__BROKERS", "b:9092"),
                ("VIGIL__BATCH__MAX_WAIT_MS", "42"),
                ("VIGIL__KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers.as_deref(), Some("b:9092"));
        assert_eq!(s.batch.max_events, 10);
        assert_eq!(s.batch.max_wait_ms, 42);
        assert_eq!(
            s.kafka
                .properties
                .get("security.protocol")
                .map(String::as_str),
            Some("SASL_SSL")
        );
        assert_eq!(
            s.kafka.properties.get("sasl.password").map(String::as_str),
            Some("hunter2")
        );
        assert!(s
            .topics
            .sources()
            .iter()
            .all(|(k, _)| *k != SourceKind::Falco));
        let printed = format!("{s:?}");
        assert!(
            !printed.contains("hunter2"),
            "secrets must not be printed: {printed}"
        );
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn rejects_invalid_values_with_a_clear_message() {
        let e = Settings::load_from(None, env(&[("VIGIL__BATCH__MAX_EVENTS", "0")])).unwrap_err();
        assert!(format!("{e:#}").contains("batch.max_events"), "{e:#}");
        let e =
            Settings::load_from(None, env(&[("VIGIL__BATCH__MAX_EVENTS", "many")])).unwrap_err();
        assert!(format!("{e:#}").contains("invalid configuration"), "{e:#}");
        let e = Settings::load_from(None, env(&[("VIGIL__TOPICS__FALCO", "vigil-alerts")]))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("both a source and an output"),
            "{e:#}"
        );
    }

    #[test]
    fn limits_and_rule_budget_from_the_environment_and_their_bounds() {
        let s = Settings::load_from(
            None,
            env(&[
                ("VIGIL__LIMITS__MAX_FIELD_BYTES", "1000"),
                ("VIGIL__LIMITS__MAX_NESTING_DEPTH", "20"),
                ("VIGIL__LIMITS__MAX_EVENT_TIME_AHEAD_MS", "60000"),
                ("VIGIL__RULES__MAX_EVAL_MS", "250"),
            ]),
        )
        .unwrap();
        let l = s.limits.decode_limits();
        assert_eq!(
            (
                l.max_field_bytes,
                l.max_nesting_depth,
                l.max_event_time_ahead_ms
            ),
            (1000, 20, 60_000)
        );
        assert_eq!(s.rules.max_eval(), Duration::from_millis(250));
        let d = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(d.rules.max_eval_ms, 5000);
        assert_eq!(d.limits.max_field_bytes, 262_144);
        for (key, value, expected) in [
            (
                "VIGIL__LIMITS__MAX_NESTING_DEPTH",
                "200",
                "limits.max_nesting_depth must be at most 128",
            ),
            (
                "VIGIL__LIMITS__MAX_FIELD_BYTES",
                "0",
                "limits.max_field_bytes",
            ),
            (
                "VIGIL__RULES__MAX_EVAL_MS",
                "0",
                "rules.max_eval_ms must be at least 1",
            ),
        ] {
            let e = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
            assert!(format!("{e:#}").contains(expected), "{key}={value}: {e:#}");
        }
    }

    #[test]
    fn correlation_state_bounds_come_from_the_environment_and_must_be_positive() {
        let s = Settings::load_from(
            None,
            env(&[
                ("VIGIL__CORRELATION__MAX_STATE_ROWS", "5000"),
                ("VIGIL__CORRELATION__INCREMENTAL", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(s.correlation.max_state_rows, 5000);
        assert!(!s.correlation.incremental);
        assert_eq!(s.correlation.max_alert_events, 100);
        let e = Settings::load_from(None, env(&[("VIGIL__CORRELATION__MAX_ALERT_EVENTS", "0")]))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("correlation.max_alert_events must be positive"),
            "{e:#}"
        );
    }

    #[test]
    fn first_seen_spill_comes_from_the_environment_and_opens_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let spill_dir = dir.path().join("spill");
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "VIGIL__RULES__FIRST_SEEN__SPILL_DIR",
                    spill_dir.to_str().unwrap(),
                ),
                ("VIGIL__RULES__FIRST_SEEN__MEMORY_COMBINATIONS", "5000"),
            ]),
        )
        .unwrap();
        let storage = s.rules.first_seen.storage().unwrap();
        let spill = storage.spill.expect("a spill store");
        assert_eq!(spill.memory_entries, 5000);
        assert_eq!(storage.max_entries, 10_000_000);
        assert!(spill_dir.join(vigil_state::SPILL_FILE).exists());
        assert!(Settings::default()
            .rules
            .first_seen
            .storage()
            .unwrap()
            .spill
            .is_none());
        let e = Settings::load_from(
            None,
            env(&[("VIGIL__RULES__FIRST_SEEN__MAX_COMBINATIONS", "3")]),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("rules.first_seen.max_combinations"),
            "{e:#}"
        );
    }

    #[test]
    fn rejects_properties_that_would_break_delivery_guarantees() {
        let e = Settings::load_from(
            None,
            env(&[("VIGIL__KAFKA__PROPERTIES__ENABLE_AUTO_COMMIT", "true")]),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("kafka.properties.enable.auto.commit"),
            "{e:#}"
        );
    }

    #[test]
    fn rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, "[batch]\nmax_event = 10\n").unwrap();
        let e = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(format!("{e:#}").contains("max_event"), "{e:#}");
    }

    /// Source topics are keyed by the registry's table names: a misspelt
    /// source is an error naming the valid keys, never a source silently
    /// left unsubscribed.
    #[test]
    fn source_topics_come_from_the_registry() {
        let s = Settings::load_from(
            None,
            env(&[
                ("VIGIL__TOPICS__TETRAGON", "cilium-events"),
                ("VIGIL__TOPICS__FALCO", ""),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.topics.sources(),
            vec![
                (SourceKind::K8sAudit, "k8s-audit".to_string()),
                (SourceKind::Tetragon, "cilium-events".to_string()),
            ]
        );
        let e = Settings::load_from(None, env(&[("VIGIL__TOPICS__TETRAGONN", "t")])).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("unknown field `tetragonn` in [topics], expected one of k8s_audit, falco, tetragon, k8s_audit_format"),
            "{e}"
        );
        let e = Settings::load_from(None, env(&[("VIGIL__TOPICS__K8S_AUDIT_FORMAT", "eks")]))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains(
                "unknown audit format \"eks\": expected one of native, eks_cloudwatch, aks_event_hubs, gke_cloud_logging"
            ),
            "{e:#}"
        );
    }

    #[test]
    fn operations_sections_from_file_and_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.http.listen, "0.0.0.0:9464");
        assert_eq!(s.log.format, crate::telemetry::LogFormat::Auto);
        assert_eq!(s.tracing.otlp_endpoint, "");
        let s = Settings::load_from(
            None,
            env(&[
                ("VIGIL__HTTP__LISTEN", "127.0.0.1:9000"),
                ("VIGIL__LOG__FORMAT", "json"),
                ("VIGIL__TRACING__OTLP_ENDPOINT", "http://collector:4317"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.http.address().unwrap(),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(s.log.format, crate::telemetry::LogFormat::Json);
        assert_eq!(
            s.tracing.endpoint(None).as_deref(),
            Some("http://collector:4317")
        );
        let s = Settings::load_from(None, env(&[("VIGIL__HTTP__LISTEN", "")])).unwrap();
        assert_eq!(s.http.address().unwrap(), None);
        let e =
            Settings::load_from(None, env(&[("VIGIL__HTTP__LISTEN", "everywhere")])).unwrap_err();
        assert!(format!("{e:#}").contains("http.listen"), "{e:#}");
        let e = Settings::load_from(None, env(&[("VIGIL__LOG__FORMAT", "xml")])).unwrap_err();
        assert!(format!("{e:#}").contains("xml"), "{e:#}");
    }

    #[test]
    fn the_example_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vigil.example.toml");
        let s = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(s.rules.max_eval_ms, 5000);
        assert_eq!(s.limits.max_nesting_depth, 64);
    }

    #[test]
    fn missing_file_is_an_error() {
        let e =
            Settings::load_from(Some(Path::new("/nonexistent/vigil.toml")), env(&[])).unwrap_err();
        assert!(e.to_string().contains("does not exist"));
    }
}
