//! The state topic: a compacted changelog of durable rule state (the
//! first-seen rules' combinations), read whole at start.
//!
//! Records are keyed `<group>/<what>`; the latest record of a key is its
//! value and a tombstone (no payload) removes it, as compaction does. Every
//! partition is read from its start to the end it had when reading began,
//! one partition after the other, each in offset order: the records of one
//! key are in one partition (the key picks it), so they are visited in the
//! order they were written. A partition is read to the watermark it had
//! when its reading began, and on while records keep coming without a
//! pause (at most [`DRAIN_LIMIT`] more).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::Doing;
use crate::Error;

/// How the state topic must be created (named in the error when missing).
pub const CREATE_WITH: &str = "cleanup.policy=compact, any number of partitions";

/// Records read past the watermark taken at start, at most.
const DRAIN_LIMIT: i64 = 100_000;

/// How long reading the state topic may stall without progress.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Visit every record of `group` in `topic`, each partition in offset
/// order: `visit(key without the "<group>/" prefix, payload)` (`None`: a
/// tombstone). Returns how many records were visited.
pub fn read_all(
    base: &ClientConfig,
    topic: &str,
    group: &str,
    visit: impl FnMut(&str, Option<&[u8]>),
) -> Result<u64, Error> {
    read_partitions(base, topic, group, None, visit)
}

/// How many partitions the state topic has (an error naming how to
/// create it when it is missing).
pub fn partition_count(base: &ClientConfig, topic: &str) -> Result<u32, Error> {
    let consumer: BaseConsumer = base
        .create()
        .doing(|| "creating a Kafka client for metadata".into())?;
    Ok(partition_ids(&consumer, topic)?.len() as u32)
}

/// The state topic's partition ids (an error naming how to create it when
/// it is missing).
fn partition_ids(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, Error> {
    super::require_topic(consumer, topic, "state topic", CREATE_WITH)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .doing(|| format!("reading metadata of the state topic {topic:?}"))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// As [`read_all`], over the partitions `only` of `topic` (all when
/// `None`): a second stage restores the state of the repartition
/// partitions assigned to it from the state partitions their records are
/// written to (`repartition partition % state partitions`).
pub fn read_partitions(
    base: &ClientConfig,
    topic: &str,
    group: &str,
    only: Option<&[i32]>,
    mut visit: impl FnMut(&str, Option<&[u8]>),
) -> Result<u64, Error> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("{group}-state-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .doing(|| "creating the state reader".into())?;
    let partitions: Vec<i32> = partition_ids(&consumer, topic)?
        .into_iter()
        .filter(|p| only.is_none_or(|only| only.contains(p)))
        .collect();
    let prefix = format!("{group}/");
    let mut visited = 0;
    for partition in partitions {
        visited += read_partition(&consumer, topic, partition, &prefix, &mut visit)?;
    }
    Ok(visited)
}

fn read_partition(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    prefix: &str,
    visit: &mut impl FnMut(&str, Option<&[u8]>),
) -> Result<u64, Error> {
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .doing(|| format!("reading the end of the state topic {topic:?}/{partition}"))?;
    if high <= low {
        return Ok(0);
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(low))
        .doing(|| "building the state assignment".into())?;
    consumer
        .assign(&list)
        .doing(|| format!("assigning the state topic {topic:?}"))?;
    let mut position = low;
    let mut visited = 0;
    let mut progress = Instant::now();
    loop {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // The end is where the watermark was and nothing more is
            // coming: records of a batch the broker has not counted in its
            // watermark yet (tansu reports one past the batch's first
            // record) are read too.
            if position >= high {
                break;
            }
            if progress.elapsed() > STALL_LIMIT {
                return Err(Error::StateTimeout {
                    topic: topic.into(),
                    partition,
                    position,
                    high,
                });
            }
            continue;
        };
        let message = message.doing(|| "reading the state topic".into())?;
        position = message.offset() + 1;
        progress = Instant::now();
        if let Some(key) = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(prefix))
        {
            visit(key, message.payload());
            visited += 1;
        }
        if position >= high.saturating_add(DRAIN_LIMIT) {
            // Other instances are still writing: what they write next is
            // newer than this start needs.
            break;
        }
    }
    Ok(visited)
}
