//! The Kafka source: a consumer-group member reading every enabled source
//! topic and cutting the stream into micro-batches.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::config::Settings;
use crate::source::{Origin, RawMessage, SourceKind};

/// One micro-batch of consumed messages.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub messages: Vec<RawMessage>,
    /// Next offset to commit per (topic, partition): one past the highest
    /// offset in the batch.
    pub next_offsets: BTreeMap<(String, i32), i64>,
}

/// Consumer of the source topics.
pub struct KafkaSource {
    consumer: StreamConsumer,
    topics: HashMap<String, SourceKind>,
}

impl KafkaSource {
    /// Create the consumer and subscribe to every enabled source topic.
    ///
    /// Auto-commit is off: offsets are committed by [`KafkaSource::commit`]
    /// only after the batch's alerts are acknowledged.
    pub fn new(settings: &Settings, brokers: &str) -> Result<KafkaSource> {
        let mut config = super::base_config(&settings.kafka, brokers);
        config
            .set("group.id", &settings.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let consumer: StreamConsumer = config.create().context("creating the Kafka consumer")?;
        let topics: HashMap<String, SourceKind> =
            settings.topics.sources().into_iter().map(|(kind, topic)| (topic, kind)).collect();
        let names: Vec<&str> = topics.keys().map(String::as_str).collect();
        consumer.subscribe(&names).with_context(|| format!("subscribing to {names:?}"))?;
        Ok(KafkaSource { consumer, topics })
    }

    /// Collect up to `max_events` messages, waiting at most `max_wait` after
    /// the first one. Returns early with what it has when `stop` resolves.
    /// An empty batch means nothing arrived within `idle_wait`.
    pub async fn next_batch(
        &self,
        max_events: usize,
        max_wait: Duration,
        idle_wait: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> SourceBatch {
        let mut batch = SourceBatch::default();
        let mut deadline = Instant::now() + idle_wait;
        while batch.messages.len() < max_events {
            if *stop.borrow() {
                break;
            }
            let received = tokio::select! {
                r = self.consumer.recv() => r,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => break,
            };
            let message = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    continue;
                }
            };
            let topic = message.topic().to_string();
            let Some(&source) = self.topics.get(&topic) else {
                tracing::warn!(topic, "message from an unexpected topic ignored");
                continue;
            };
            if batch.messages.is_empty() {
                deadline = Instant::now() + max_wait;
            }
            let partition = message.partition();
            let offset = message.offset();
            batch.next_offsets.insert((topic.clone(), partition), offset + 1);
            batch.messages.push(RawMessage {
                source,
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                origin: Origin::Kafka { topic, partition, offset },
                timestamp_ms: message.timestamp().to_millis(),
            });
        }
        batch
    }

    /// Commit `next_offsets` synchronously.
    pub fn commit(&self, next_offsets: &BTreeMap<(String, i32), i64>) -> Result<()> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next_offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .context("building the offset list")?;
        }
        self.consumer.commit(&list, CommitMode::Sync).context("committing consumer offsets")
    }

    /// Per-partition lag (high watermark − position) of the assignment.
    pub fn lag(&self) -> Result<Vec<(String, i32, i64)>> {
        let assignment = self.consumer.assignment()?;
        let positions = self.consumer.position()?;
        let mut out = Vec::new();
        for elem in assignment.elements() {
            let (_, high) =
                self.consumer.fetch_watermarks(elem.topic(), elem.partition(), Duration::from_secs(5))?;
            let position = positions
                .find_partition(elem.topic(), elem.partition())
                .and_then(|p| p.offset().to_raw())
                .filter(|o| *o >= 0)
                .unwrap_or(0);
            out.push((elem.topic().to_string(), elem.partition(), (high - position).max(0)));
        }
        Ok(out)
    }
}
