//! The source consumer's librdkafka callbacks: partition assignment (for
//! readiness and the `vigil_assigned_partitions` gauge) and statistics (for
//! the per-partition `vigil_consumer_lag` gauge).
//!
//! librdkafka calls these from the thread that polls the consumer; they
//! only store atomics.

use std::collections::HashSet;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::{Partition, Statistics};

/// How often librdkafka emits statistics (Vigil's default; a
/// `statistics.interval.ms` in `kafka.properties` overrides it, `0` turns
/// the lag gauge off).
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Where a consumer reports its assignment and lag (the service's metrics
/// and readiness). Called from librdkafka's polling thread: keep it cheap.
pub trait ConsumerReport: Send + Sync {
    /// Per assigned partition of a source topic: (topic, partition, lag).
    fn consumer_lag(&self, lags: Vec<(String, i32, i64)>);
    /// After a rebalance: how many partitions are assigned, and whether
    /// the group was joined (an empty assignment still is a join).
    fn assignment(&self, partitions: usize, joined: bool);
}

/// A report that goes nowhere (tools and tests).
pub struct NoReport;

impl ConsumerReport for NoReport {
    fn consumer_lag(&self, _: Vec<(String, i32, i64)>) {}
    fn assignment(&self, _: usize, _: bool) {}
}

/// Consumer context recording assignment and lag.
#[derive(Clone)]
pub struct ConsumerObserver {
    report: Arc<dyn ConsumerReport>,
    /// Source topics: statistics of other topics are ignored.
    topics: HashSet<String>,
}

impl ConsumerObserver {
    pub fn new(report: Arc<dyn ConsumerReport>, topics: impl IntoIterator<Item = String>) -> Self {
        ConsumerObserver {
            report,
            topics: topics.into_iter().collect(),
        }
    }

    /// An observer that reports nowhere.
    pub fn unreported(topics: impl IntoIterator<Item = String>) -> Self {
        Self::new(Arc::new(NoReport), topics)
    }
}

/// Messages of a partition not yet read by Vigil: its end (last stable
/// offset under read_committed, else high watermark) minus the position
/// (one past the last message handed to Vigil; before the first, the
/// committed offset, else the log start). `None` while librdkafka does not
/// know the end yet.
pub fn partition_lag(p: &Partition) -> Option<i64> {
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    if end < 0 {
        return None;
    }
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
                if let Some(lag) = partition_lag(partition) {
                    lags.push((name.clone(), *id, lag));
                }
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
}
