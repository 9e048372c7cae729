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

use std::collections::{BTreeMap, BTreeSet};
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
    listing: Option<tokio::task::JoinHandle<Result<BTreeMap<String, String>, Error>>>,
    /// The other members at the last listing, by member id with their
    /// client id (`None` before the first, and after a rejoin: the next
    /// listing is the new baseline).
    others: Option<BTreeMap<String, String>>,
    /// Every member id this consumer has had.
    own_ids: BTreeSet<String>,
    /// Members missing from the last listing, with their client ids: a
    /// departure once the next listing confirms it (a listing taken during
    /// a rebalance can miss a member that is rejoining).
    missing: BTreeMap<String, String>,
}

impl MembershipWatch {
    pub fn new(group: impl Into<String>) -> MembershipWatch {
        MembershipWatch {
            group: group.into(),
            next_check: Instant::now() + CHECK_INTERVAL,
            listing: None,
            others: None,
            own_ids: BTreeSet::new(),
            missing: BTreeMap::new(),
        }
    }

    /// At most every [`CHECK_INTERVAL`]: list the group and report the
    /// members that left (missing from two listings in a row; empty when none did, when
    /// it is not time yet, or when the listing failed: a failure is logged
    /// and the next check tries again). `consumer` is the member itself
    /// (its own ids are not counted).
    ///
    /// A member whose client is still in the group is not reported: it
    /// rejoined as a new member (as every member here does on a report;
    /// each process's consumers have a client id of their own, see
    /// `KafkaSource::observed`), and that join rebalanced the group.
    /// Reporting it would make members that rejoin make each other rejoin
    /// without end.
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
        let others: BTreeMap<String, String> = members
            .into_iter()
            .filter(|(m, _)| !self.own_ids.contains(m))
            .collect();
        // Our own id may be unknown at the first listing (before the join
        // completes) and so be among the previous "others": never a
        // departure, or we would rejoin for nothing and re-read a batch.
        let clients: BTreeSet<&String> = others.values().collect();
        let gone: Vec<String> = self
            .missing
            .iter()
            .filter(|(id, client)| !others.contains_key(*id) && !clients.contains(client))
            .map(|(id, _)| id.clone())
            .collect();
        self.missing = match &self.others {
            Some(previous) => departed(previous, &others)
                .into_iter()
                .filter(|m| !self.own_ids.contains(m))
                .map(|m| {
                    let client = previous[&m].clone();
                    (m, client)
                })
                .collect(),
            None => BTreeMap::new(),
        };
        self.others = Some(others);
        gone
    }

    /// Forget the last listing (after this consumer rejoined: its next
    /// listing is the new baseline).
    pub fn reset(&mut self) {
        self.others = None;
        self.missing.clear();
        self.listing = None;
    }
}

/// The members (id → client id) in `previous` that are not in `current`
/// and whose client is not in `current` either (a client that rejoined as
/// a new member has not left).
pub fn departed(
    previous: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Vec<String> {
    let clients: BTreeSet<&String> = current.values().collect();
    previous
        .iter()
        .filter(|(id, client)| !current.contains_key(*id) && !clients.contains(client))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The members of `group` as the coordinator lists them: member id →
/// client id.
fn list_members<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    group: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .doing(|| "describing the consumer group".into())?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| {
            g.members()
                .iter()
                .map(|m| (m.id().to_string(), client_of(m.id(), m.client_id())))
        })
        .collect())
}

/// A member's client id: as listed, or (when the coordinator lists none,
/// as tansu 0.6 does) the member id without the UUID the coordinator
/// appends to the client id (`<client.id>-<uuid>`, as Apache Kafka and
/// tansu make them).
fn client_of(member_id: &str, client_id: &str) -> String {
    if !client_id.is_empty() {
        return client_id.to_string();
    }
    match member_id.len().checked_sub(37) {
        Some(cut)
            if member_id.is_char_boundary(cut)
                && member_id[cut..].starts_with('-')
                && member_id[cut + 1..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '-') =>
        {
            member_id[..cut].to_string()
        }
        _ => member_id.to_string(),
    }
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

    fn members(ids: &[(&str, &str)]) -> BTreeMap<String, String> {
        ids.iter()
            .map(|(m, c)| (m.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn a_departure_is_a_member_whose_client_is_gone_from_the_next_listing() {
        assert_eq!(
            departed(&members(&[("a", "x"), ("b", "y")]), &members(&[("a", "x")])),
            vec!["b".to_string()]
        );
        assert!(
            departed(&members(&[("a", "x")]), &members(&[("a", "x"), ("c", "z")])).is_empty(),
            "a member joining is not a departure"
        );
        assert_eq!(
            departed(&members(&[("a", "x"), ("b", "y")]), &members(&[("c", "z")])),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(
            departed(
                &members(&[("a", "x"), ("b", "y")]),
                &members(&[("a", "x"), ("b2", "y")])
            )
            .is_empty(),
            "a client that rejoined as a new member has not left"
        );
        assert!(departed(&members(&[]), &members(&[])).is_empty());
    }

    #[test]
    fn a_client_is_named_by_its_member_id_when_not_listed() {
        let id = "vigil-17244-8a0763ff-88487a1b-ef03-48f8-89e6-6c1bcbec34a9";
        assert_eq!(client_of(id, ""), "vigil-17244-8a0763ff");
        assert_eq!(client_of(id, "listed"), "listed");
        assert_eq!(client_of("short", ""), "short");
    }
}
