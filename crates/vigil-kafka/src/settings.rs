//! Configuration of the Kafka connection (`[kafka]`, documented in
//! docs/configuration.md#kafka): brokers, group, pass-through librdkafka
//! properties and the delivery guarantee.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::Error;

/// Connection to Kafka.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers (`host:port,...`). Unset: `vigil run` starts the
    /// embedded demo broker instead.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Consumer group id.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// librdkafka properties passed through to the consumer and the producer
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// How a batch's output and progress reach Kafka: see [`DeliveryMode`].
    #[serde(default)]
    pub delivery: DeliveryMode,
    /// `transactional.id` of the producer in `exactly_once` mode. It must be
    /// unique per running instance and stable across its restarts (a
    /// StatefulSet pod name): a restarted instance with the same id fences
    /// its predecessor and aborts its open transaction at once; with a new
    /// id the open transaction blocks read_committed consumers until the
    /// broker's transaction timeout. Default: `<group_id>-<hostname>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
}

/// Delivery guarantee of alerts, dead letters, checkpoints and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Output is produced and acknowledged, then the checkpoint, then the
    /// offsets are committed. A crash in between re-delivers a batch: its
    /// alerts are produced again with the same ids. Works with every
    /// Kafka-compatible broker.
    #[default]
    AtLeastOnce,
    /// Output, checkpoint and offsets of a batch are committed in one Kafka
    /// transaction: a read_committed consumer of the alerts topic sees each
    /// alert exactly once, also across crashes. Needs a broker with
    /// transaction support (Apache Kafka; not tansu 0.6).
    ExactlyOnce,
}

fn default_group_id() -> String {
    "vigil".into()
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: None,
            group_id: default_group_id(),
            properties: BTreeMap::new(),
            delivery: DeliveryMode::default(),
            transactional_id: None,
        }
    }
}

impl KafkaSettings {
    /// The producer's `transactional.id` in exactly-once mode.
    pub fn transactional_id(&self) -> String {
        if let Some(id) = self
            .transactional_id
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            return id.to_string();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "vigil".into());
        format!("{}-{host}", self.group_id)
    }
}

/// librdkafka properties Vigil sets itself because its delivery guarantees
/// depend on them: offsets are committed by Vigil after output is
/// acknowledged, and output is produced idempotently with acks=all.
pub const PROTECTED_PROPERTIES: [&str; 9] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
    "isolation.level",
];

/// Property names whose values are secrets: never logged or printed.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.ends_with(".pem") || n.contains("key")
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_property(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("properties", &properties)
            .field("delivery", &self.delivery)
            .field("transactional_id", &self.transactional_id)
            .finish()
    }
}

impl KafkaSettings {
    /// Check values the types alone cannot.
    pub fn validate(&self) -> Result<(), Error> {
        if self.group_id.trim().is_empty() {
            return Err(Error::Config("kafka.group_id is empty".into()));
        }
        if self.brokers.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err(Error::Config(
                "kafka.brokers is empty (leave it unset to run the embedded demo)".into(),
            ));
        }
        if let Some(k) = self
            .properties
            .keys()
            .find(|k| PROTECTED_PROPERTIES.contains(&k.as_str()))
        {
            return Err(Error::Config(format!("kafka.properties.{k} is set by Vigil (use kafka.brokers / kafka.group_id, or leave it: delivery guarantees depend on it)")));
        }
        Ok(())
    }
}
