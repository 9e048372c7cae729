//! Kafka I/O: the consumer that feeds the pipeline and the producer that
//! writes alerts and dead letters. Both use librdkafka through rdkafka.

pub mod checkpoint;
mod consumer;
mod producer;

pub use checkpoint::Checkpoint;
pub use consumer::{resume_offsets, KafkaSource, SourceBatch};
pub use producer::{KafkaSink, OutRecord};

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// librdkafka configuration shared by consumer and producer: the brokers,
/// then every pass-through property (which may override anything).
pub fn base_config(settings: &KafkaSettings, brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config.set("client.id", "vigil");
    for (k, v) in &settings.properties {
        config.set(k, v);
    }
    config
}
