//! Kafka I/O: the consumer that feeds the pipeline and the producer that
//! writes alerts and dead letters. Both use librdkafka through rdkafka.
//!
//! Depends on the model only: the service passes in its settings, topics
//! and where to report assignment and lag ([`ConsumerReport`]).

pub mod checkpoint;
mod consumer;
mod error;
pub mod membership;
pub mod observer;
mod producer;
mod settings;
pub mod state;

pub use checkpoint::Checkpoint;
pub use consumer::{
    resume_offsets, ConsumerHandle, KafkaSource, SourceBatch, FETCH_QUEUE_BACKOFF_MS,
    FETCH_WAIT_MAX_MS,
};
pub use error::Error;
pub use observer::{ConsumerObserver, ConsumerReport, PartitionOffsets};
pub use producer::{partition_count, KafkaSink, OutRecord, TxnError};
pub use settings::{is_secret_property, DeliveryMode, KafkaSettings, PROTECTED_PROPERTIES};

use rdkafka::ClientConfig;

use error::Doing;

/// librdkafka configuration shared by consumer and producer: the brokers
/// and every pass-through property. Callers set their own settings on top
/// and then call [`apply_properties`] again, so a user's property wins over
/// Vigil's defaults; the properties Vigil's delivery guarantees depend on
/// are rejected when the configuration is loaded
/// ([`PROTECTED_PROPERTIES`]).
pub fn base_config(settings: &KafkaSettings, brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config.set("client.id", "vigil");
    apply_properties(&mut config, settings);
    config
}

/// Set every pass-through property on `config`.
pub fn apply_properties(config: &mut ClientConfig, settings: &KafkaSettings) {
    for (k, v) in &settings.properties {
        config.set(k, v);
    }
}

/// Fail unless `topic` exists with at least one partition. Vigil never
/// creates its internal topics (the broker may not auto-create them, and
/// their settings matter): `what` names the topic in the error and
/// `create_with` says how to create it.
pub fn require_topic<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
    topic: &str,
    what: &str,
    create_with: &str,
) -> Result<(), Error> {
    let metadata = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .doing(|| format!("reading metadata of the {what} {topic:?}"))?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if !exists {
        return Err(Error::MissingTopic {
            what: what.into(),
            topic: topic.into(),
            create_with: create_with.into(),
        });
    }
    Ok(())
}
