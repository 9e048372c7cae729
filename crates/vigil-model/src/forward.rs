//! Records of the repartition topic (`correlation.placement =
//! "repartition"`, docs/architecture.md#repartitioned-correlation).
//!
//! The first stage (every instance, over the source partitions it owns)
//! forwards each event a correlation rule can use to the partition of the
//! repartition topic its correlation key hashes to, one record per rule
//! and event ([`Forward::Row`]), each alert of a per-event rule that folds
//! its alerts (`-- suppress`) to the partition of its suppression key, and
//! the rows of a first-seen rule to the partition of their combination
//! ([`Forward::Alert`]), and after each batch a watermark mark per
//! source partition to every partition ([`Forward::Mark`]). The second
//! stage (every instance, over the repartition partitions the group gives
//! it) rebuilds the rule's input from them.
//!
//! A record is one JSON header line, `\n`, then the event's message as it
//! was decoded (for a row; nothing for a mark). The message is forwarded
//! whole, not its decoded row, so the second stage decodes it with the
//! same decoder and the rule sees exactly the row the first stage saw.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::source::Origin;

/// The header of a repartition record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Forward {
    /// An event for one correlation rule.
    Row {
        /// The correlation rule the event is forwarded for: only that
        /// rule's state takes it in (another rule's key may put the same
        /// event in another partition).
        rule: String,
        /// The source table (`k8s_audit`, `tetragon`, ...).
        source: String,
        /// Where the event was consumed: alerts name it, and the second
        /// stage drops a row it has already taken from the same partition
        /// (a re-delivered source batch).
        from: Origin,
        /// The event's index within its message (audit `EventList`s).
        item: u32,
        /// The source record's timestamp (event time of an event without
        /// its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_ms: Option<i64>,
    },
    /// An alert of a per-event rule with `-- suppress`, to fold with the
    /// other alerts of its suppression key: the record's body is the
    /// alert's JSON, and its partition that of the rule and key, so one
    /// instance folds every alert of a key, in event-time order.
    Alert {
        /// The per-event rule that raised the alert.
        rule: String,
        /// Where the alert's event was consumed (re-deliveries are dropped
        /// as for a row).
        from: Origin,
        /// The event time of the alert's event.
        event_time_ns: i64,
        /// For a first-seen rule (`-- first_seen`): the row's combination,
        /// whose partition this is. The second stage alerts only when the
        /// combination is new for the whole group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_seen: Option<FirstSeenRow>,
    },
    /// Every row of source partition `partition` with a lower event time
    /// than this has been forwarded before this record.
    Mark {
        /// `"topic/partition"` of the source.
        partition: String,
        /// The highest event time the first stage has read from it.
        event_time_ns: i64,
    },
}

/// What the second stage needs of a first-seen rule's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstSeenRow {
    /// The row's value combination: the first 128 bits of its BLAKE3 hash,
    /// as 32 hex digits.
    pub combination: String,
    /// When the first stage's instance began observing the rule's source
    /// (seconds since the epoch): the group learns from the earliest.
    pub observed_since: u32,
    /// `false` when an exception matched the row: it counts as seen, but
    /// raises nothing.
    pub raise: bool,
}

/// Why a repartition record cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("a repartition record has no header line")]
    NoHeader,
    #[error("the header of a repartition record is invalid: {0}")]
    Header(String),
}

impl Forward {
    /// The record: the header line, then `message` (empty for a mark).
    pub fn encode(&self, message: &[u8]) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a header serializes");
        out.push(b'\n');
        out.extend_from_slice(message);
        out
    }

    /// The header and the forwarded message of a record.
    pub fn decode(record: &[u8]) -> Result<(Forward, &[u8]), ForwardError> {
        let split = record
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(ForwardError::NoHeader)?;
        let header = serde_json::from_slice(&record[..split])
            .map_err(|e| ForwardError::Header(e.to_string()))?;
        Ok((header, &record[split + 1..]))
    }
}

/// The partition of the repartition topic a key goes to: the same on every
/// instance and every build (the first four bytes of the key's SHA-256, a
/// well-mixed hash already in this crate's dependencies, not a
/// process-seeded one), so all events of one key meet in one partition.
pub fn partition_of_key(key: &[u8], partitions: u32) -> i32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(key);
    let hash = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    (hash % partitions.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_with_its_message() {
        let row = Forward::Row {
            rule: "k8s.exec_then_secret_read".into(),
            source: "k8s_audit".into(),
            from: Origin::Kafka {
                topic: "audit".into(),
                partition: 3,
                offset: 42,
            },
            item: 1,
            timestamp_ms: Some(1_700_000_000_000),
        };
        let message = b"{\"kind\":\"Event\",\"note\":\"a\\nb\"}\n";
        let record = row.encode(message);
        let (header, body) = Forward::decode(&record).unwrap();
        assert_eq!(header, row);
        assert_eq!(body, message, "the message is forwarded byte for byte");
    }

    #[test]
    fn an_alert_round_trips_with_its_json() {
        let alert = Forward::Alert {
            rule: "k8s.privileged_pod".into(),
            from: Origin::Kafka {
                topic: "audit".into(),
                partition: 1,
                offset: 7,
            },
            event_time_ns: 9,
            first_seen: None,
        };
        let seen = Forward::Alert {
            rule: "k8s.first_exec_in_namespace".into(),
            from: Origin::Kafka {
                topic: "audit".into(),
                partition: 0,
                offset: 3,
            },
            event_time_ns: 10,
            first_seen: Some(FirstSeenRow {
                combination: "0123456789abcdef0123456789abcdef".into(),
                observed_since: 1_700_000_000,
                raise: false,
            }),
        };
        for alert in [alert, seen] {
            let record = alert.encode(b"{\"alert_id\":\"a\"}");
            let (header, body) = Forward::decode(&record).unwrap();
            assert_eq!(header, alert);
            assert_eq!(body, b"{\"alert_id\":\"a\"}");
        }
    }

    #[test]
    fn a_mark_has_no_message() {
        let mark = Forward::Mark {
            partition: "audit/0".into(),
            event_time_ns: 5,
        };
        let record = mark.encode(b"");
        let (header, body) = Forward::decode(&record).unwrap();
        assert_eq!(header, mark);
        assert!(body.is_empty());
    }

    #[test]
    fn a_record_without_header_or_with_a_bad_one_is_refused() {
        assert_eq!(Forward::decode(b"{}"), Err(ForwardError::NoHeader));
        assert!(matches!(
            Forward::decode(b"{\"kind\":\"row\"}\n{}"),
            Err(ForwardError::Header(_))
        ));
    }

    #[test]
    fn keys_spread_over_partitions_and_equal_keys_meet() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let key = format!("user-{i}");
            let p = partition_of_key(key.as_bytes(), 4);
            assert_eq!(p, partition_of_key(key.as_bytes(), 4));
            counts[p as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
