//! Checkpoints: the small state a restart needs beyond committed offsets.
//!
//! Correlation state itself is not stored: it is rebuilt by re-reading the
//! source topics from the committed offsets, which never pass the oldest
//! event correlation still retains. What a restart also needs, and offsets
//! cannot say, is kept in a checkpoint record produced to the checkpoint
//! topic (key: the consumer group id) after each batch's alerts are
//! acknowledged and before its offsets are committed:
//!
//! * `processed`: per partition, one past the last message per-event rules
//!   evaluated. Re-read messages below it only rebuild correlation state
//!   (no per-event alerts, dead letters or late-event reports again).
//! * `emitted`: per correlation rule, the watermark up to which it emitted.
//!   Windows ending at or before it are not emitted again.
//!
//! (Kafka can carry this in offset-commit metadata, but not every
//! Kafka-compatible broker returns that metadata; a topic works everywhere.)

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::Doing;
use crate::Error;

/// One checkpoint record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u32,
    /// `"topic/partition"` -> one past the last evaluated offset.
    pub processed: BTreeMap<String, i64>,
    /// Correlation rule id -> emission watermark (ns since the epoch).
    pub emitted: BTreeMap<String, i64>,
    /// `"topic/partition"` -> where a restart must resume reading. Written
    /// only by a reader without a consumer group (the correlation leader,
    /// which reads every partition), whose progress has no committed
    /// offsets to live in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resume: BTreeMap<String, i64>,
}

impl Checkpoint {
    /// `processed` keyed by (topic, partition).
    pub fn processed_offsets(&self) -> BTreeMap<(String, i32), i64> {
        parse_keys(&self.processed)
    }

    /// `resume` keyed by (topic, partition).
    pub fn resume_offsets(&self) -> BTreeMap<(String, i32), i64> {
        parse_keys(&self.resume)
    }

    /// Record where a restart must resume (see [`Checkpoint::resume`]).
    pub fn set_resume(&mut self, offsets: &BTreeMap<(String, i32), i64>) {
        for ((topic, partition), offset) in offsets {
            self.resume.insert(format!("{topic}/{partition}"), *offset);
        }
    }

    /// Fold a batch in: `processed` only moves forward.
    pub fn advance(
        &mut self,
        next_offsets: &BTreeMap<(String, i32), i64>,
        emitted: BTreeMap<String, i64>,
    ) {
        self.v = 1;
        for ((topic, partition), next) in next_offsets {
            let e = self
                .processed
                .entry(format!("{topic}/{partition}"))
                .or_insert(*next);
            *e = (*e).max(*next);
        }
        self.emitted = emitted;
    }
}

fn parse_keys(map: &BTreeMap<String, i64>) -> BTreeMap<(String, i32), i64> {
    map.iter()
        .filter_map(|(k, v)| {
            let (topic, partition) = k.rsplit_once('/')?;
            Some(((topic.to_string(), partition.parse().ok()?), *v))
        })
        .collect()
}

/// Read the latest checkpoint of `group` from partition 0 of `topic`.
///
/// Scans at most the last `tail` records (the topic should be compacted;
/// one record is written per batch).
pub fn read_latest(
    base: &ClientConfig,
    topic: &str,
    group: &str,
    tail: i64,
) -> Result<Option<Checkpoint>, Error> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("{group}-checkpoint-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .doing(|| "creating the checkpoint reader".into())?;
    super::require_topic(
        &consumer,
        topic,
        "checkpoint topic",
        "1 partition, cleanup.policy=compact",
    )?;
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .doing(|| format!("reading the end of the checkpoint topic {topic:?}"))?;
    if high <= low {
        return Ok(None);
    }
    let start = (high - tail).max(low);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(start))
        .doing(|| "building the checkpoint assignment".into())?;
    consumer
        .assign(&list)
        .doing(|| format!("assigning the checkpoint topic {topic:?}"))?;
    let mut latest = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut position = start;
    while position < high {
        if std::time::Instant::now() > deadline {
            return Err(Error::CheckpointTimeout {
                topic: topic.into(),
                position,
                high,
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.doing(|| "reading the checkpoint topic".into())?;
        position = message.offset() + 1;
        if message.key() != Some(group.as_bytes()) {
            continue;
        }
        let Some(payload) = message.payload() else {
            continue;
        };
        match serde_json::from_slice::<Checkpoint>(payload) {
            Ok(cp) => latest = Some(cp),
            Err(e) => {
                tracing::warn!(offset = message.offset(), error = %e, "skipping an unreadable checkpoint")
            }
        }
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_only_moves_forward_and_round_trips() {
        let mut cp = Checkpoint::default();
        let mut next = BTreeMap::new();
        next.insert(("k8s-audit".to_string(), 3), 100);
        cp.advance(&next, BTreeMap::from([("r".to_string(), 42)]));
        next.insert(("k8s-audit".to_string(), 3), 50);
        next.insert(("a/b".to_string(), 0), 7);
        cp.advance(&next, BTreeMap::new());
        let offsets = cp.processed_offsets();
        assert_eq!(offsets[&("k8s-audit".to_string(), 3)], 100);
        assert_eq!(offsets[&("a/b".to_string(), 0)], 7);
        let json = serde_json::to_string(&cp).unwrap();
        assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), cp);
    }
}
