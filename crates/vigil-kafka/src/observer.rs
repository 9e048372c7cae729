//! The source consumer's librdkafka callbacks: partition assignment (for
//! readiness and the `vigil_assigned_partitions` gauge) and statistics (for
//! the per-partition `vigil_consumer_fetch_lag` and
//! `vigil_consumer_committed_lag` gauges).
//!
//! librdkafka calls these from the thread that polls the consumer; they
//! only store atomics.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::{Partition, Statistics};

/// How often librdkafka emits statistics (Vigil's default; a
/// `statistics.interval.ms` in `kafka.properties` overrides it, `0` turns
/// the lag gauges off).
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Where a consumer reports its assignment and lag (the service's metrics
/// and readiness). Called from librdkafka's polling thread: keep it cheap.
pub trait ConsumerReport: Send + Sync {
    /// Per assigned partition of a source topic, what the last statistics
    /// said about its offsets.
    fn consumer_lag(&self, lags: Vec<PartitionOffsets>);
    /// After a rebalance: how many partitions are assigned, and whether
    /// the group was joined (an empty assignment still is a join).
    fn assignment(&self, partitions: usize, joined: bool);
}

/// A report that goes nowhere (tools and tests).
pub struct NoReport;

impl ConsumerReport for NoReport {
    fn consumer_lag(&self, _: Vec<PartitionOffsets>) {}
    fn assignment(&self, _: usize, _: bool) {}
}

/// Consumer context recording assignment and lag.
#[derive(Clone)]
pub struct ConsumerObserver {
    report: Arc<dyn ConsumerReport>,
    /// Source topics: statistics of other topics are ignored.
    topics: HashSet<String>,
    /// How many assignments this observer's consumers have received: a
    /// new value means the partitions (and where they are read from) may
    /// have changed.
    assignments: Arc<AtomicU64>,
}

impl ConsumerObserver {
    pub fn new(report: Arc<dyn ConsumerReport>, topics: impl IntoIterator<Item = String>) -> Self {
        ConsumerObserver {
            report,
            topics: topics.into_iter().collect(),
            assignments: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The number of assignments received so far (see
    /// [`crate::SourceBatch::assignment`]).
    pub fn assignments(&self) -> u64 {
        self.assignments.load(Ordering::Acquire)
    }

    /// An observer that reports nowhere.
    pub fn unreported(topics: impl IntoIterator<Item = String>) -> Self {
        Self::new(Arc::new(NoReport), topics)
    }
}

/// One assigned partition in a statistics report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// The partition's end: last stable offset (under read_committed),
    /// else high watermark. `None` while librdkafka does not know it.
    pub end: Option<i64>,
    /// Fetch lag ([`partition_lag`]): messages not yet handed to Vigil.
    pub fetch_lag: Option<i64>,
    /// The group's committed offset as this consumer knows it (fetched at
    /// assignment, updated by its own commits; a transactional commit
    /// through the producer does not update it). `None` before any.
    pub committed: Option<i64>,
    /// The partition's log start offset (`None` while unknown): where an
    /// uncommitted group starts (`auto.offset.reset=earliest`).
    pub log_start: Option<i64>,
}

impl PartitionOffsets {
    /// Messages not yet processed as Kafka tooling measures a group's lag:
    /// end − committed offset, where `committed` is the higher of the
    /// statistics' and `known` (what the caller itself committed, e.g. in
    /// a transaction the consumer does not see). Before any commit, from
    /// the log start. `None` while the end or both starts are unknown.
    pub fn committed_lag(&self, known: Option<i64>) -> Option<i64> {
        let end = self.end?;
        let committed = match (self.committed, known) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let from = committed.or(self.log_start)?;
        Some((end - from).max(0))
    }
}

/// The end of a partition: last stable offset under read_committed, else
/// the high watermark; `None` while unknown.
fn partition_end(p: &Partition) -> Option<i64> {
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    (end >= 0).then_some(end)
}

/// Messages of a partition not yet read by Vigil: its end (last stable
/// offset under read_committed, else high watermark) minus the position
/// (one past the last message handed to Vigil; before the first, the
/// committed offset, else the log start). `None` while librdkafka does not
/// know the end yet.
pub fn partition_lag(p: &Partition) -> Option<i64> {
    let end = partition_end(p)?;
    let position = [p.app_offset, p.committed_offset, p.lo_offset]
        .into_iter()
        .find(|o| *o >= 0)?;
    Some((end - position).max(0))
}

impl ClientContext for ConsumerObserver {
    fn stats(&self, statistics: Statistics) {
        let mut lags = Vec::new();
        for (name, topic) in &statistics.topics {
            if !self.topics.contains(name) {
                continue;
            }
            for (id, partition) in &topic.partitions {
                // -1 is librdkafka's internal unassigned partition; `desired`
                // marks the partitions this member was assigned.
                if *id < 0 || !partition.desired {
                    continue;
                }
                lags.push(PartitionOffsets {
                    topic: name.clone(),
                    partition: *id,
                    end: partition_end(partition),
                    fetch_lag: partition_lag(partition),
                    committed: (partition.committed_offset >= 0)
                        .then_some(partition.committed_offset),
                    log_start: (partition.lo_offset >= 0).then_some(partition.lo_offset),
                });
            }
        }
        self.report.consumer_lag(lags);
    }
}

impl ConsumerContext for ConsumerObserver {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        match rebalance {
            // An empty assignment still means the group was joined: an
            // instance beyond the partition count is a ready standby.
            Rebalance::Assign(list) => {
                self.assignments.fetch_add(1, Ordering::AcqRel);
                self.report.assignment(assigned.max(list.count()), true);
                tracing::info!(
                    partitions = assigned.max(list.count()),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(list) => {
                self.report.assignment(assigned, assigned > 0);
                tracing::info!(
                    revoked = list.count(),
                    remaining = assigned,
                    "partitions revoked"
                );
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "consumer group rebalance failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition as librdkafka reports it before anything is known.
    fn unknown() -> Partition {
        Partition {
            app_offset: -1001,
            committed_offset: -1001,
            lo_offset: -1,
            hi_offset: -1,
            ls_offset: -1,
            desired: true,
            ..Default::default()
        }
    }

    #[test]
    fn lag_is_end_minus_position_with_fallbacks() {
        // Position known: last stable offset wins over the high watermark.
        assert_eq!(
            partition_lag(&Partition {
                app_offset: 40,
                hi_offset: 100,
                ls_offset: 90,
                ..unknown()
            }),
            Some(50)
        );
        assert_eq!(
            partition_lag(&Partition {
                app_offset: 40,
                hi_offset: 100,
                ..unknown()
            }),
            Some(60)
        );
        // Nothing read yet: from the committed offset, else the log start.
        assert_eq!(
            partition_lag(&Partition {
                committed_offset: 10,
                hi_offset: 100,
                ..unknown()
            }),
            Some(90)
        );
        assert_eq!(
            partition_lag(&Partition {
                lo_offset: 5,
                hi_offset: 100,
                ..unknown()
            }),
            Some(95)
        );
        // End unknown, or position past a stale end.
        assert_eq!(
            partition_lag(&Partition {
                app_offset: 40,
                ..unknown()
            }),
            None
        );
        assert_eq!(
            partition_lag(&Partition {
                app_offset: 120,
                hi_offset: 100,
                ..unknown()
            }),
            Some(0)
        );
    }

    #[test]
    fn committed_lag_is_end_minus_the_highest_known_commit() {
        let p = PartitionOffsets {
            topic: "t".into(),
            partition: 0,
            end: Some(100),
            fetch_lag: Some(0),
            committed: Some(60),
            log_start: Some(5),
        };
        assert_eq!(p.committed_lag(None), Some(40));
        // A commit the consumer did not see (transactional) counts.
        assert_eq!(p.committed_lag(Some(90)), Some(10));
        // A later commit by another member (fetched at assignment) wins.
        assert_eq!(p.committed_lag(Some(50)), Some(40));
        // Never committed: from the log start, where the group starts.
        let fresh = PartitionOffsets {
            committed: None,
            ..p.clone()
        };
        assert_eq!(fresh.committed_lag(None), Some(95));
        assert_eq!(
            PartitionOffsets {
                log_start: None,
                ..fresh.clone()
            }
            .committed_lag(None),
            None
        );
        assert_eq!(
            PartitionOffsets { end: None, ..p }.committed_lag(None),
            None
        );
    }
}
