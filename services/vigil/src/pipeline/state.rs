//! Durable first-seen state through the state topic (`topics.state`, see
//! [`crate::kafka::state`]): what a batch's changes become as records, and
//! the restore at start.
//!
//! Records, keyed under the consumer group:
//! * `<group>/first_seen/<rule>/<32 hex digits>` → the combination's
//!   last-seen time, seconds since the epoch, as decimal text; a tombstone
//!   when it is forgotten;
//! * `<group>/first_seen/<rule>/observed_since` → when the rule's learning
//!   began, the same way;
//! * with `correlation.placement = "repartition"`, the second stage's
//!   (`<group>` is then `<group_id>-correlate`) state per repartition
//!   partition `<p>`: `<group>/lane/<p>/first_seen/<rule>/...` as above,
//!   written to partition `<p> % <state partitions>` of the state topic, so
//!   that an instance given `<p>` reads that partition only
//!   ([`restore_lanes`]).
//!
//! A combination's records all have one key, so compaction keeps its
//! latest and they are read back in the order they were written.

use anyhow::{Context, Result};

use crate::detect::Detector;
use crate::kafka::OutRecord;
use crate::rules::engine::FirstSeenChanges;
use crate::rules::first_seen::{combination_hex, parse_combination, StateChange};

/// The key part after the rule for when its learning began.
const OBSERVED_SINCE: &str = "observed_since";

/// The key part after a lane's partition for its emission watermarks.
const EMITTED: &str = "emitted";

/// Changes restored per call into the detector (bounds the restore's
/// memory whatever the topic holds).
const RESTORE_CHUNK: usize = 10_000;

/// The records of a batch's first-seen changes; a lane's go to partition
/// `<p> % state_partitions` (the state topic's partition count, known
/// where lanes keep first-seen state).
pub(super) fn records(
    topic: &str,
    group: &str,
    changes: &[FirstSeenChanges],
    state_partitions: Option<u32>,
) -> Vec<OutRecord> {
    let mut records = Vec::new();
    for FirstSeenChanges {
        rule,
        partition,
        changes,
    } in changes
    {
        let (prefix, to) = match partition {
            Some(p) => (
                format!("{group}/lane/{p}/first_seen/{rule}"),
                state_partitions.map(|n| (*p as u32 % n.max(1)) as i32),
            ),
            None => (format!("{group}/first_seen/{rule}"), None),
        };
        for change in changes {
            let (what, payload) = match change {
                StateChange::Seen { combination, at } => {
                    (combination_hex(combination), Some(at.to_string()))
                }
                StateChange::Forgotten { combination } => (combination_hex(combination), None),
                StateChange::ObservedSince { at } => {
                    (OBSERVED_SINCE.to_string(), Some(at.to_string()))
                }
            };
            records.push(OutRecord {
                topic: topic.to_string(),
                key: format!("{prefix}/{what}"),
                payload,
                partition: to,
            });
        }
    }
    records
}

/// Second stage: the record of repartition partition `p`'s emission
/// watermarks (rule id → event time, ns), in partition
/// `p % state_partitions`.
pub(super) fn emitted_record(
    topic: &str,
    group: &str,
    (p, state_partitions): (i32, u32),
    emitted: &std::collections::BTreeMap<String, i64>,
) -> OutRecord {
    OutRecord {
        topic: topic.to_string(),
        key: format!("{group}/lane/{p}/{EMITTED}"),
        payload: Some(serde_json::to_string(emitted).expect("a map serializes")),
        partition: Some((p as u32 % state_partitions.max(1)) as i32),
    }
}

/// Why a state record cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum StateRecordError {
    #[error("key {0:?} is not first_seen/<rule>/<combination or observed_since>")]
    Key(String),
    #[error("value of {0:?} is not a time in seconds")]
    Value(String),
    #[error("value of {0:?} is not a map of rule ids to event times")]
    Emitted(String),
}

/// A state record (its key without the group) as a rule's change;
/// `Ok(None)` for a record of another kind of state.
pub(super) fn parse(
    key: &str,
    payload: Option<&[u8]>,
) -> Result<Option<(String, StateChange)>, StateRecordError> {
    let Some(rest) = key.strip_prefix("first_seen/") else {
        return Ok(None);
    };
    let bad_key = || StateRecordError::Key(key.to_string());
    let (rule, what) = rest.rsplit_once('/').ok_or_else(bad_key)?;
    let time = || -> Result<u32, StateRecordError> {
        payload
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| StateRecordError::Value(key.to_string()))
    };
    let change = if what == OBSERVED_SINCE {
        StateChange::ObservedSince { at: time()? }
    } else {
        let combination = parse_combination(what).ok_or_else(bad_key)?;
        match payload {
            None => StateChange::Forgotten { combination },
            Some(_) => StateChange::Seen {
                combination,
                at: time()?,
            },
        }
    };
    Ok(Some((rule.to_string(), change)))
}

/// What a lane's state record holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LaneRecord {
    FirstSeen(String, StateChange),
    Emitted(std::collections::BTreeMap<String, i64>),
}

/// A lane's state record (its key without the group) as its repartition
/// partition and what it holds; `Ok(None)` for any other record.
pub(super) fn parse_lane(
    key: &str,
    payload: Option<&[u8]>,
) -> Result<Option<(i32, LaneRecord)>, StateRecordError> {
    let Some(rest) = key.strip_prefix("lane/") else {
        return Ok(None);
    };
    let bad_key = || StateRecordError::Key(key.to_string());
    let (partition, rest) = rest.split_once('/').ok_or_else(bad_key)?;
    let partition = partition.parse().map_err(|_| bad_key())?;
    if rest == EMITTED {
        let emitted = payload
            .and_then(|p| serde_json::from_slice(p).ok())
            .ok_or_else(|| StateRecordError::Emitted(key.to_string()))?;
        return Ok(Some((partition, LaneRecord::Emitted(emitted))));
    }
    let (rule, change) = parse(rest, payload)?.ok_or_else(bad_key)?;
    Ok(Some((partition, LaneRecord::FirstSeen(rule, change))))
}

/// What a restore found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Restored {
    pub records: u64,
    /// Records of rules not loaded now (removed, or no longer first-seen).
    pub unknown_rule: u64,
    pub unreadable: u64,
}

/// Read the state topic whole and restore the detector's first-seen rules
/// from it, before the first batch.
pub(super) async fn restore(
    base: &rdkafka::ClientConfig,
    topic: &str,
    group: &str,
    detector: &mut Detector,
) -> Result<Restored> {
    let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<(String, StateChange)>>(4);
    let reader = {
        let (base, topic, group) = (base.clone(), topic.to_string(), group.to_string());
        tokio::task::spawn_blocking(move || read_with(&base, &topic, &group, None, parse, chunks))
    };
    let mut restored = Restored::default();
    while let Some(chunk) = received.recv().await {
        // One lookup of the rule per chunk; a rule's changes keep their
        // order.
        let mut by_rule: std::collections::BTreeMap<String, Vec<StateChange>> = Default::default();
        for (rule, change) in chunk {
            by_rule.entry(rule).or_default().push(change);
        }
        for (rule, changes) in by_rule {
            let count = changes.len() as u64;
            if !detector.restore_first_seen(&rule, changes) {
                restored.unknown_rule += count;
            }
        }
    }
    let (records, unreadable) = reader.await.context("the state reader panicked")??;
    restored.records = records;
    restored.unreadable = unreadable;
    Ok(restored)
}

/// Second stage: restore the lanes' state (first-seen state, emission
/// watermarks) of the repartition partitions `partitions` (of
/// `repartition_topic`), newly assigned here, from the state partitions
/// their records were written to, before their next batch.
pub(super) async fn restore_lanes(
    base: &rdkafka::ClientConfig,
    (topic, state_partitions): (&str, u32),
    group: &str,
    (repartition_topic, partitions): (&str, &[i32]),
    detector: &mut Detector,
) -> Result<Restored> {
    let wanted: std::collections::BTreeSet<i32> = partitions.iter().copied().collect();
    let only: Vec<i32> = wanted
        .iter()
        .map(|p| (*p as u32 % state_partitions.max(1)) as i32)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<(i32, LaneRecord)>>(4);
    let reader = {
        let (base, topic, group) = (base.clone(), topic.to_string(), group.to_string());
        tokio::task::spawn_blocking(move || {
            read_with(&base, &topic, &group, Some(&only), parse_lane, chunks)
        })
    };
    let mut restored = Restored::default();
    while let Some(chunk) = received.recv().await {
        let mut by_lane: std::collections::BTreeMap<(i32, String), Vec<StateChange>> =
            Default::default();
        for (partition, record) in chunk.into_iter().filter(|c| wanted.contains(&c.0)) {
            match record {
                LaneRecord::FirstSeen(rule, change) => {
                    by_lane.entry((partition, rule)).or_default().push(change)
                }
                LaneRecord::Emitted(emitted) => {
                    detector.restore_lane_emitted((repartition_topic, partition), &emitted)
                }
            }
        }
        for ((partition, rule), changes) in by_lane {
            let count = changes.len() as u64;
            if !detector.restore_lane_first_seen((repartition_topic, partition), &rule, changes) {
                restored.unknown_rule += count;
            }
        }
    }
    let (records, unreadable) = reader.await.context("the state reader panicked")??;
    restored.records = records;
    restored.unreadable = unreadable;
    Ok(restored)
}

/// How a state record's key and payload read as a `T` (`Ok(None)`: not
/// one of them).
type Parse<T> = fn(&str, Option<&[u8]>) -> Result<Option<T>, StateRecordError>;

/// The blocking read of `topic` (its partitions `only`, all when
/// `None`): the records `parse` reads to `chunks`, in order; the records
/// read and those that could not be.
fn read_with<T: Send>(
    base: &rdkafka::ClientConfig,
    topic: &str,
    group: &str,
    only: Option<&[i32]>,
    parse: Parse<T>,
    chunks: tokio::sync::mpsc::Sender<Vec<T>>,
) -> Result<(u64, u64)> {
    let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
    let mut unreadable = 0;
    let mut closed = false;
    let records =
        crate::kafka::state::read_partitions(base, topic, group, only, |key, payload| {
            match parse(key, payload) {
                Ok(Some(change)) => chunk.push(change),
                Ok(None) => {}
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(error = %e, "skipping an unreadable state record");
                }
            }
            if chunk.len() >= RESTORE_CHUNK && !closed {
                closed = chunks.blocking_send(std::mem::take(&mut chunk)).is_err();
            }
        })?;
    if !chunk.is_empty() && !closed {
        let _ = chunks.blocking_send(chunk);
    }
    Ok((records, unreadable))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn changes(rule: &str, partition: Option<i32>, change: StateChange) -> Vec<FirstSeenChanges> {
        vec![FirstSeenChanges {
            rule: Arc::from(rule),
            partition,
            changes: vec![change],
        }]
    }

    fn round_trip(change: StateChange) -> StateChange {
        let records = records("t", "g", &changes("k8s.first_x", None, change), None);
        assert_eq!(records.len(), 1);
        let key = records[0]
            .key
            .strip_prefix("g/")
            .expect("keyed under the group");
        let (rule, back) = parse(key, records[0].payload.as_deref().map(str::as_bytes))
            .unwrap()
            .unwrap();
        assert_eq!(rule, "k8s.first_x");
        back
    }

    #[test]
    fn every_change_reads_back_as_written() {
        let combination = [0x0123_4567_89ab_cdef, u64::MAX];
        for change in [
            StateChange::Seen {
                combination,
                at: 1_767_225_600,
            },
            StateChange::Forgotten { combination },
            StateChange::ObservedSince { at: 7 },
        ] {
            assert_eq!(round_trip(change), change);
        }
        let tombstone = &records(
            "t",
            "g",
            &changes("r", None, StateChange::Forgotten { combination }),
            None,
        )[0];
        assert_eq!(
            tombstone.payload, None,
            "a forgotten combination is a tombstone"
        );
        assert_eq!(
            tombstone.key,
            "g/first_seen/r/0123456789abcdefffffffffffffffff"
        );
    }

    #[test]
    fn a_lanes_change_reads_back_with_its_partition_from_the_state_partition_it_went_to() {
        let change = StateChange::Seen {
            combination: [1, 2],
            at: 9,
        };
        let written = records("t", "g", &changes("r", Some(7), change), Some(3));
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].partition, Some(1), "7 % 3");
        let key = written[0].key.strip_prefix("g/").unwrap();
        assert_eq!(
            parse_lane(key, written[0].payload.as_deref().map(str::as_bytes)),
            Ok(Some((7, LaneRecord::FirstSeen("r".to_string(), change))))
        );
        let emitted = std::collections::BTreeMap::from([("k8s.burst".to_string(), 42i64)]);
        let record = emitted_record("t", "g", (4, 3), &emitted);
        assert_eq!(record.partition, Some(1), "4 % 3");
        assert_eq!(
            parse_lane(
                record.key.strip_prefix("g/").unwrap(),
                record.payload.as_deref().map(str::as_bytes)
            ),
            Ok(Some((4, LaneRecord::Emitted(emitted))))
        );
        assert_eq!(
            parse(key, Some(b"9")),
            Ok(None),
            "the instance's own restore leaves lane records alone"
        );
        assert!(matches!(
            parse_lane("lane/x/first_seen/r/observed_since", Some(b"1")),
            Err(StateRecordError::Key(_))
        ));
    }

    #[test]
    fn unreadable_records_are_named_and_other_state_is_left_alone() {
        assert_eq!(parse("correlation/x", Some(b"1")), Ok(None));
        assert!(matches!(
            parse("first_seen/r/xyz", Some(b"1")),
            Err(StateRecordError::Key(_))
        ));
        assert!(matches!(
            parse("first_seen/noslash", Some(b"1")),
            Err(StateRecordError::Key(_))
        ));
        let hex = "0".repeat(32);
        assert!(matches!(
            parse(&format!("first_seen/r/{hex}"), Some(b"soon")),
            Err(StateRecordError::Value(_))
        ));
        assert!(matches!(
            parse("first_seen/r/observed_since", None),
            Err(StateRecordError::Value(_))
        ));
    }
}
