//! Durable first-seen state through the state topic (`topics.state`, see
//! [`crate::kafka::state`]): what a batch's changes become as records, and
//! the restore at start.
//!
//! Records, keyed under the consumer group:
//! * `<group>/first_seen/<rule>/<32 hex digits>` → the combination's
//!   last-seen time, seconds since the epoch, as decimal text; a tombstone
//!   when it is forgotten;
//! * `<group>/first_seen/<rule>/observed_since` → when the rule's learning
//!   began, the same way.
//!
//! A combination's records all have one key, so compaction keeps its
//! latest and they are read back in the order they were written.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::detect::Detector;
use crate::kafka::OutRecord;
use crate::rules::first_seen::{Combination, StateChange};

/// The key part after the rule for when its learning began.
const OBSERVED_SINCE: &str = "observed_since";

/// Changes restored per call into the detector (bounds the restore's
/// memory whatever the topic holds).
const RESTORE_CHUNK: usize = 10_000;

/// The records of a batch's first-seen changes.
pub(super) fn records(
    topic: &str,
    group: &str,
    changes: &[(Arc<str>, Vec<StateChange>)],
) -> Vec<OutRecord> {
    let mut records = Vec::new();
    for (rule, changes) in changes {
        for change in changes {
            let (what, payload) = match change {
                StateChange::Seen { combination, at } => (hex(combination), Some(at.to_string())),
                StateChange::Forgotten { combination } => (hex(combination), None),
                StateChange::ObservedSince { at } => {
                    (OBSERVED_SINCE.to_string(), Some(at.to_string()))
                }
            };
            records.push(OutRecord {
                topic: topic.to_string(),
                key: format!("{group}/first_seen/{rule}/{what}"),
                payload,
                partition: None,
            });
        }
    }
    records
}

fn hex(combination: &Combination) -> String {
    format!("{:016x}{:016x}", combination[0], combination[1])
}

/// Why a state record cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum StateRecordError {
    #[error("key {0:?} is not first_seen/<rule>/<combination or observed_since>")]
    Key(String),
    #[error("value of {0:?} is not a time in seconds")]
    Value(String),
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
        let combination = parse_hex(what).ok_or_else(bad_key)?;
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

fn parse_hex(text: &str) -> Option<Combination> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let word = |range: std::ops::Range<usize>| u64::from_str_radix(&text[range], 16).ok();
    Some([word(0..16)?, word(16..32)?])
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
        tokio::task::spawn_blocking(move || read(&base, &topic, &group, chunks))
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

/// The blocking read: parsed changes to `chunks`, in order; the records
/// read and those that could not be.
fn read(
    base: &rdkafka::ClientConfig,
    topic: &str,
    group: &str,
    chunks: tokio::sync::mpsc::Sender<Vec<(String, StateChange)>>,
) -> Result<(u64, u64)> {
    let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
    let mut unreadable = 0;
    let mut closed = false;
    let records = crate::kafka::state::read_all(base, topic, group, |key, payload| {
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
    use super::*;

    fn round_trip(change: StateChange) -> StateChange {
        let records = records("t", "g", &[(Arc::from("k8s.first_x"), vec![change])]);
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
            &[(Arc::from("r"), vec![StateChange::Forgotten { combination }])],
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
