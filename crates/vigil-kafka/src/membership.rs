//! Rejoining a consumer group after another member has left it.
//!
//! When a member dies, the group coordinator must notice its expired
//! session and rebalance, so the survivors get its partitions. Apache Kafka
//! does; tansu 0.6 does not reliably: when a survivor's heartbeat is what
//! finds the dead member, tansu removes it but keeps the group's formed
//! state (same generation, the old assignment, possibly the dead member as
//! the group leader). The survivor is told to rejoin, rejoins into that
//! same state and gets its old partitions back; the dead member's
//! partitions then belong to nobody, for good (read in tansu-broker 0.6.0,
//! `coordinator/group/administrator.rs`: `Inner<Formed>::heartbeat` and
//! `Inner<Formed>::join`). Leaving the group does move it to a new
//! generation with a live leader.
//!
//! So a member watches the group's membership (DescribeGroups) and, when a
//! member it saw before is gone, leaves the group and joins it again as a
//! new member: it closes its consumer (LeaveGroup) and creates a new one
//! (`KafkaSource`). The next generation is then formed by the live members
//! and assigns every partition. (An unsubscribe and subscribe on the same
//! consumer was not enough: librdkafka rejoined with its member id into
//! the same stale state.) Against a broker that rebalances by
//! itself this costs one more rebalance after each departure (with eager
//! assignment, a pause of the consumer of about one rebalance).
//!
//! Invariant: a departure is a member id that was in the previous listing
//! and is not in this one, other than this consumer's own ids (past and
//! present: its own rejoin changes its id and must not count).

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};

use crate::error::Doing;
use crate::Error;

/// How often the membership is listed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Watches the members of one consumer group, on behalf of one member.
#[derive(Debug)]
pub struct MembershipWatch {
    group: String,
    next_check: Instant,
    /// The listing in flight, if any.
    listing: Option<tokio::task::JoinHandle<Result<BTreeSet<String>, Error>>>,
    /// The other members at the last listing (`None` before the first, and
    /// after a rejoin: the next listing is the new baseline).
    others: Option<BTreeSet<String>>,
    /// Every member id this consumer has had.
    own_ids: BTreeSet<String>,
}

impl MembershipWatch {
    pub fn new(group: impl Into<String>) -> MembershipWatch {
        MembershipWatch {
            group: group.into(),
            next_check: Instant::now() + CHECK_INTERVAL,
            listing: None,
            others: None,
            own_ids: BTreeSet::new(),
        }
    }

    /// At most every [`CHECK_INTERVAL`]: list the group and report the
    /// members that left since the last listing (empty when none did, when
    /// it is not time yet, or when the listing failed: a failure is logged
    /// and the next check tries again). `consumer` is the member itself
    /// (its own ids are not counted).
    pub async fn departed<C: ConsumerContext + 'static>(
        &mut self,
        consumer: &Arc<StreamConsumer<C>>,
    ) -> Vec<String> {
        // The listing is a broker round trip (up to its 5 s timeout): it
        // runs in the background, and its result is read at a later call,
        // so that it never holds up a batch.
        let finished = self.listing.as_ref().is_some_and(|l| l.is_finished());
        if !finished {
            if self.listing.is_none() && Instant::now() >= self.next_check {
                self.next_check = Instant::now() + CHECK_INTERVAL;
                if let Some(id) = member_id(consumer) {
                    self.own_ids.insert(id);
                }
                let (consumer, group) = (consumer.clone(), self.group.clone());
                self.listing = Some(tokio::task::spawn_blocking(move || {
                    list_members(&consumer, &group)
                }));
            }
            return Vec::new();
        }
        let listing = self.listing.take().expect("a finished listing").await;
        if let Some(id) = member_id(consumer) {
            self.own_ids.insert(id);
        }
        let members = match listing {
            Ok(Ok(members)) => members,
            Ok(Err(e)) => {
                tracing::debug!(group = %self.group, error = %format!("{e:#}"), "listing the consumer group failed");
                return Vec::new();
            }
            Err(e) => {
                tracing::debug!(group = %self.group, error = %e, "listing the consumer group failed");
                return Vec::new();
            }
        };
        tracing::debug!(group = %self.group, ?members, own = ?self.own_ids, "consumer group members");
        let others: BTreeSet<String> = members
            .into_iter()
            .filter(|m| !self.own_ids.contains(m))
            .collect();
        // Our own id may be unknown at the first listing (before the join
        // completes) and so be among the previous "others": never a
        // departure, or we would rejoin for nothing and re-read a batch.
        let gone = match &self.others {
            Some(previous) => departed(previous, &others)
                .into_iter()
                .filter(|m| !self.own_ids.contains(m))
                .collect(),
            None => Vec::new(),
        };
        self.others = Some(others);
        gone
    }

    /// Forget the last listing (after this consumer rejoined: its next
    /// listing is the new baseline).
    pub fn reset(&mut self) {
        self.others = None;
        self.listing = None;
    }
}

/// The member ids in `previous` that are not in `current`.
pub fn departed(previous: &BTreeSet<String>, current: &BTreeSet<String>) -> Vec<String> {
    previous.difference(current).cloned().collect()
}

/// The member ids of `group`, as the coordinator lists them.
fn list_members<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    group: &str,
) -> Result<BTreeSet<String>, Error> {
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .doing(|| "describing the consumer group".into())?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members().iter().map(|m| m.id().to_string()))
        .collect())
}

/// This consumer's current member id (`None` before it first joined).
fn member_id<C: ConsumerContext>(consumer: &StreamConsumer<C>) -> Option<String> {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `consumer` (borrowed for this
    // call). rd_kafka_memberid returns NULL or a NUL-terminated copy that
    // the caller frees with rd_kafka_mem_free, which happens right after
    // the copy into a String.
    unsafe {
        let ptr = rdkafka::bindings::rd_kafka_memberid(rk);
        if ptr.is_null() {
            return None;
        }
        let id = CStr::from_ptr(ptr).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, ptr.cast());
        Some(id).filter(|id| !id.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_departure_is_a_member_missing_from_the_next_listing() {
        assert_eq!(
            departed(&set(&["a", "b"]), &set(&["a"])),
            vec!["b".to_string()]
        );
        assert!(
            departed(&set(&["a"]), &set(&["a", "c"])).is_empty(),
            "a member joining is not a departure"
        );
        assert_eq!(
            departed(&set(&["a", "b"]), &set(&["c"])),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(departed(&set(&[]), &set(&[])).is_empty());
    }
}
