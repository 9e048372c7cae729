//! The correlation lease: leader election by records on a one-partition
//! topic, with plain produce and consume (no consumer-group protocol).
//!
//! Every candidate reads the whole lease partition in log order (assigned,
//! not subscribed) and appends three kinds of records, keyed by the
//! consumer group id:
//! * `claim` of term `t`: the first claim of a term higher than every term
//!   before it, in log order, makes its writer the holder of term `t`;
//!   later claims of a term already taken lose. The log order is the same
//!   for every reader, so every candidate agrees on the holder.
//! * `renew` of the current term, by its holder, every quarter of
//!   `correlation.lease_timeout_ms`;
//! * `release` of the current term, by its holder when it stops cleanly:
//!   the others may claim at once.
//!
//! Timing is measured on each reader's own clock, from when it *read* a
//! record, so clocks need not agree. A candidate claims term `t + 1` when
//! the holder of `t` has not been heard for the lease timeout (or released
//! it, or, after start, nothing was heard for a timeout). The holder
//! considers itself leader only while it has read back one of its own
//! records within half the timeout: a holder that cannot reach the broker
//! steps down before the others claim. Overlap is still possible (a
//! leader's batch in flight when it steps down); it repeats alerts under
//! the same ids, as at-least-once delivery does anyway.
//!
//! The topic grows by one record per renewal: give it time-based retention
//! (an hour is plenty; the records of the live holder are never older than
//! the renewal interval). Readers that find the start of the log deleted
//! take any term higher than theirs as a new claim.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Settings;

/// What a lease record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Claim,
    Renew,
    Release,
}

/// One record of the lease topic (its key is the consumer group id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The writer: unique per process.
    pub instance: String,
    pub term: u64,
    pub kind: Kind,
}

/// What one candidate knows of the lease from the records it has read.
///
/// Invariant: `term` is the highest term claimed in the records read so
/// far and `holder` the writer of its winning claim (`None` before any
/// claim, and after its release).
#[derive(Debug)]
pub struct LeaseState {
    me: String,
    timeout: Duration,
    term: u64,
    holder: Option<String>,
    /// When a record of the holder was last read (at start: the start).
    last_heard: Instant,
    /// The holder released its term: claim without waiting.
    released: bool,
    /// A claim this candidate appended and has not read back yet, and when.
    pending_claim: Option<(u64, Instant)>,
}

impl LeaseState {
    pub fn new(me: impl Into<String>, timeout: Duration, now: Instant) -> LeaseState {
        LeaseState {
            me: me.into(),
            timeout,
            term: 0,
            holder: None,
            last_heard: now,
            released: false,
            pending_claim: None,
        }
    }

    /// Apply the next record of the log, read at `now`.
    pub fn observe(&mut self, record: &LeaseRecord, now: Instant) {
        let from_holder = self.holder.as_deref() == Some(record.instance.as_str());
        match record.kind {
            // A renewal of a higher term: the claim was deleted by
            // retention; the renewal stands for it.
            Kind::Claim | Kind::Renew if record.term > self.term => {
                self.term = record.term;
                self.holder = Some(record.instance.clone());
                self.last_heard = now;
                self.released = false;
            }
            Kind::Renew if record.term == self.term && from_holder => self.last_heard = now,
            Kind::Release if record.term == self.term && from_holder => {
                self.holder = None;
                self.released = true;
            }
            // A claim of a term already taken lost; anything else is stale.
            _ => {}
        }
        if self
            .pending_claim
            .is_some_and(|(term, _)| self.term >= term)
        {
            self.pending_claim = None;
        }
    }

    /// The holder, if heard within the timeout.
    fn live_holder(&self, now: Instant) -> Option<&str> {
        self.holder
            .as_deref()
            .filter(|_| now.duration_since(self.last_heard) < self.timeout)
    }

    /// The term this candidate leads, if it holds the lease and has read
    /// its own record back within half the timeout.
    pub fn leading(&self, now: Instant) -> Option<u64> {
        let mine = self.holder.as_deref() == Some(self.me.as_str());
        (mine && now.duration_since(self.last_heard) < self.timeout / 2).then_some(self.term)
    }

    /// The term to claim now, if any: nobody holds the lease (it expired,
    /// was released, or nothing was heard for a timeout since start) and
    /// no claim of ours is in flight (one unread for a timeout is retried).
    /// Records the claim as in flight.
    pub fn claim(&mut self, now: Instant) -> Option<u64> {
        if self.live_holder(now).is_some() {
            return None;
        }
        let vacant = self.released || now.duration_since(self.last_heard) >= self.timeout;
        if !vacant {
            return None;
        }
        if self
            .pending_claim
            .is_some_and(|(_, at)| now.duration_since(at) < self.timeout)
        {
            return None;
        }
        let term = self.term + 1;
        self.pending_claim = Some((term, now));
        Some(term)
    }

    #[cfg(test)]
    pub fn term(&self) -> u64 {
        self.term
    }
}

/// Take part in the election until `stop`, publishing on `leading` the term
/// this instance leads (`None` while it does not). On stop, a holder
/// releases its term.
pub async fn elect(
    settings: &Settings,
    brokers: &str,
    stop: watch::Receiver<bool>,
    leading: watch::Sender<Option<u64>>,
) -> Result<()> {
    let timeout = Duration::from_millis(settings.correlation.lease_timeout_ms);
    if timeout < Duration::from_millis(100) {
        bail!(
            "correlation.lease_timeout_ms must be at least 100 (is {})",
            settings.correlation.lease_timeout_ms
        );
    }
    let topic = settings.topics.correlation_lease.clone();
    let key = settings.kafka.group_id.clone();
    let me = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
    let (consumer, producer) = clients(settings, brokers, &topic, timeout)?;
    tracing::info!(
        topic,
        instance = me,
        "taking part in the correlation leader election"
    );

    let mut state = LeaseState::new(me.clone(), timeout, Instant::now());
    let renew_every = timeout / 4;
    let mut last_sent = Instant::now()
        .checked_sub(timeout)
        .unwrap_or_else(Instant::now);
    let mut tick = tokio::time::interval((timeout / 8).max(Duration::from_millis(50)));
    let mut stop = stop;
    loop {
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) if message.key() == Some(key.as_bytes()) => {
                    match message.payload().map(serde_json::from_slice::<LeaseRecord>) {
                        Some(Ok(record)) => state.observe(&record, Instant::now()),
                        Some(Err(e)) => tracing::warn!(offset = message.offset(), error = %e, "skipping an unreadable lease record"),
                        None => {}
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the correlation lease topic"),
            },
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        let now = Instant::now();
        if *stop.borrow() {
            if let Some(term) = state.leading(now) {
                leading.send_replace(None);
                let release = LeaseRecord {
                    instance: me.clone(),
                    term,
                    kind: Kind::Release,
                };
                if let Err(e) = append(&producer, &topic, &key, &release).await {
                    tracing::warn!(error = %format!("{e:#}"), "releasing the correlation lease failed; it expires instead");
                }
            }
            return Ok(());
        }
        let term = state.leading(now);
        leading.send_if_modified(|current| {
            let changed = *current != term;
            *current = term;
            changed
        });
        let record = if let Some(term) = term {
            (now.duration_since(last_sent) >= renew_every).then(|| LeaseRecord {
                instance: me.clone(),
                term,
                kind: Kind::Renew,
            })
        } else {
            state.claim(now).map(|term| LeaseRecord {
                instance: me.clone(),
                term,
                kind: Kind::Claim,
            })
        };
        if let Some(record) = record {
            if record.kind == Kind::Claim {
                tracing::info!(
                    term = record.term,
                    "no live correlation leader: claiming the lease"
                );
            }
            last_sent = now;
            // A failed append is retried by the next renewal or claim; a
            // holder that cannot renew steps down (`LeaseState::leading`).
            if let Err(e) = append(&producer, &topic, &key, &record).await {
                tracing::warn!(error = %format!("{e:#}"), kind = ?record.kind, "appending to the correlation lease topic failed");
            }
        }
    }
}

/// The reader of the lease partition (from its start) and the writer.
fn clients(
    settings: &Settings,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(StreamConsumer, FutureProducer)> {
    let mut config = crate::kafka::base_config(&settings.kafka, brokers);
    config
        .set(
            "group.id",
            format!("{}-correlation-lease-reader", settings.kafka.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    crate::kafka::apply_properties(&mut config, &settings.kafka);
    let consumer: StreamConsumer = config
        .create()
        .context("creating the correlation lease reader")?;
    crate::kafka::require_topic(
        &consumer,
        topic,
        "correlation lease topic",
        "1 partition, time-based retention",
    )?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .context("building the lease assignment")?;
    consumer
        .assign(&list)
        .context("assigning the correlation lease partition")?;

    let mut config = crate::kafka::base_config(&settings.kafka, brokers);
    config.set("acks", "all").set("linger.ms", "0").set(
        "message.timeout.ms",
        timeout.as_millis().max(1000).to_string(),
    );
    crate::kafka::apply_properties(&mut config, &settings.kafka);
    // Never transactional: a lease record must be visible at once.
    config.remove("transactional.id");
    let producer: FutureProducer = config
        .create()
        .context("creating the correlation lease writer")?;
    Ok((consumer, producer))
}

/// Append one record and wait for the broker's acknowledgement.
async fn append(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    record: &LeaseRecord,
) -> Result<()> {
    let payload = serde_json::to_string(record).expect("lease records serialize");
    producer
        .send(
            FutureRecord::to(topic)
                .partition(0)
                .key(key)
                .payload(&payload),
            Duration::ZERO,
        )
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("appending a lease record to {topic:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn rec(instance: &str, term: u64, kind: Kind) -> LeaseRecord {
        LeaseRecord {
            instance: instance.into(),
            term,
            kind,
        }
    }

    #[test]
    fn the_first_claim_of_a_new_term_wins_in_log_order() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("a", T, t0);
        let mut b = LeaseState::new("b", T, t0);
        // Both claim term 1 after a quiet timeout; b's claim is first in the log.
        assert_eq!(a.claim(t0 + T), Some(1));
        assert_eq!(b.claim(t0 + T), Some(1));
        for s in [&mut a, &mut b] {
            s.observe(&rec("b", 1, Kind::Claim), t0 + T);
            s.observe(&rec("a", 1, Kind::Claim), t0 + T);
        }
        assert_eq!(b.leading(t0 + T), Some(1));
        assert_eq!(a.leading(t0 + T), None);
        assert_eq!(a.term(), 1);
        // a's claim was read back (lost): a does not claim while b is live.
        assert_eq!(a.claim(t0 + T + T / 2), None);
    }

    #[test]
    fn a_candidate_waits_one_timeout_after_start_before_claiming() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("a", T, t0);
        assert_eq!(a.claim(t0 + T / 2), None);
        assert_eq!(a.claim(t0 + T), Some(1));
        // In flight: not claimed again until it is read back or a timeout passed.
        assert_eq!(a.claim(t0 + T + T / 2), None);
        assert_eq!(a.claim(t0 + 2 * T), Some(1));
    }

    #[test]
    fn a_silent_holder_expires_and_the_next_term_is_claimed() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("a", T, t0);
        a.observe(&rec("b", 3, Kind::Claim), t0);
        a.observe(&rec("b", 3, Kind::Renew), t0 + T / 2);
        assert_eq!(a.claim(t0 + T), None, "renewed half a timeout ago");
        assert_eq!(a.claim(t0 + T / 2 + T), Some(4));
        a.observe(&rec("a", 4, Kind::Claim), t0 + 2 * T);
        assert_eq!(a.leading(t0 + 2 * T), Some(4));
        // A late renewal of the old term changes nothing.
        a.observe(&rec("b", 3, Kind::Renew), t0 + 2 * T);
        assert_eq!(a.leading(t0 + 2 * T), Some(4));
    }

    #[test]
    fn a_holder_that_does_not_read_its_renewals_back_steps_down_before_others_claim() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("a", T, t0);
        let mut b = LeaseState::new("b", T, t0);
        for s in [&mut a, &mut b] {
            s.observe(&rec("a", 1, Kind::Claim), t0);
        }
        assert_eq!(a.leading(t0 + T / 4), Some(1));
        assert_eq!(
            a.leading(t0 + T / 2),
            None,
            "a stops leading at half the timeout"
        );
        assert_eq!(b.claim(t0 + T / 2), None, "b waits for the whole timeout");
        assert_eq!(b.claim(t0 + T), Some(2));
    }

    #[test]
    fn a_release_lets_the_others_claim_at_once() {
        let t0 = Instant::now();
        let mut b = LeaseState::new("b", T, t0);
        b.observe(&rec("a", 1, Kind::Claim), t0);
        assert_eq!(b.claim(t0 + T / 10), None);
        b.observe(&rec("x", 1, Kind::Release), t0 + T / 10);
        assert_eq!(b.claim(t0 + T / 10), None, "only the holder releases");
        b.observe(&rec("a", 1, Kind::Release), t0 + T / 10);
        assert_eq!(b.claim(t0 + T / 10), Some(2));
    }

    #[test]
    fn a_renewal_of_a_higher_term_stands_for_a_claim_deleted_by_retention() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("a", T, t0);
        a.observe(&rec("b", 7, Kind::Renew), t0);
        assert_eq!(a.term(), 7);
        assert_eq!(a.claim(t0 + T / 2), None, "b is live");
    }

    #[test]
    fn records_round_trip_as_json() {
        let r = rec("123-00ff", 9, Kind::Release);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"instance":"123-00ff","term":9,"kind":"release"}"#);
        assert_eq!(serde_json::from_str::<LeaseRecord>(&json).unwrap(), r);
    }
}
