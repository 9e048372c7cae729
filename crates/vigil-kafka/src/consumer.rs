//! The Kafka source: a consumer-group member reading every enabled source
//! topic and cutting the stream into micro-batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::checkpoint::Checkpoint;
use super::membership::MembershipWatch;
use super::observer::{ConsumerObserver, STATISTICS_INTERVAL_MS};
use crate::error::Doing;
use crate::{Error, KafkaSettings};
use vigil_model::source::{Origin, RawMessage, SourceKind};

/// Vigil's default for librdkafka's `fetch.wait.max.ms` (librdkafka's is
/// 500 ms): how long a broker may hold a fetch that finds no new data.
/// Kafka answers as soon as data arrives, but some Kafka-compatible
/// brokers (tansu among them) hold every fetch to this limit, and then
/// each batch, and each alert, waits for it. 100 ms bounds that delay at
/// the cost of up to ten empty fetches a second per broker on an idle
/// topic. `[kafka.properties]` overrides it.
pub const FETCH_WAIT_MAX_MS: &str = "100";

/// Vigil's default for librdkafka's `fetch.queue.backoff.ms` (librdkafka's
/// is 1000 ms): how long the client waits before fetching again once its
/// local queue holds `queued.min.messages` (100,000) messages. At 60,000
/// to 100,000 events/s the queue drains in about a second, so with a
/// one-second backoff it ran dry and the pipeline stalled until the next
/// fetch; 20 ms keeps it filled. `[kafka.properties]` overrides it.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// One micro-batch of consumed messages.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub messages: Vec<RawMessage>,
    /// One past the highest offset in the batch, per (topic, partition).
    pub next_offsets: BTreeMap<(String, i32), i64>,
    /// The group assignment its messages were read under (a count of
    /// assignments, see [`ConsumerObserver::assignments`]; 0 outside a
    /// group). A batch never spans two: after a rebalance each assigned
    /// partition is read again from its committed offset, so a new value
    /// tells the reader that state built from the old assignment is stale.
    pub assignment: u64,
}

/// The consumer that read a batch, for what comes after its evaluation:
/// committing its offsets for the group, and the group metadata of a
/// transactional commit. The consumer stays open while a handle lives:
/// drop every handle before [`KafkaSource::rejoin`].
#[derive(Clone)]
pub struct ConsumerHandle(Arc<StreamConsumer<ConsumerObserver>>);

impl ConsumerHandle {
    /// Commit `offsets` (from [`resume_offsets`]) for the group,
    /// synchronously: blocks for a broker round trip (at-least-once mode;
    /// in exactly-once mode offsets go into the batch's transaction
    /// instead).
    pub fn commit(&self, offsets: &TopicPartitionList) -> Result<(), Error> {
        if offsets.count() == 0 {
            return Ok(());
        }
        self.0
            .commit(offsets, CommitMode::Sync)
            .doing(|| "committing consumer offsets".into())
    }

    /// The partitions assigned now, each with the metadata of its
    /// committed offset (empty when none was committed). Blocks for a
    /// broker round trip.
    pub fn committed_metadata(&self) -> Result<BTreeMap<(String, i32), String>, Error> {
        let assignment = self
            .0
            .assignment()
            .doing(|| "reading the assignment".into())?;
        let committed = self
            .0
            .committed_offsets(assignment, std::time::Duration::from_secs(10))
            .doing(|| "reading the committed offsets".into())?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                (
                    (e.topic().to_string(), e.partition()),
                    e.metadata().to_string(),
                )
            })
            .collect())
    }

    /// How many group assignments the consumer has received (see
    /// [`SourceBatch::assignment`]).
    pub fn assignments(&self) -> u64 {
        self.0.context().assignments()
    }

    /// The consumer's group metadata (for transactional offset commits).
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.0.group_metadata()
    }
}

/// Consumer of the source topics.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<ConsumerObserver>>,
    topics: HashMap<String, SourceTopic>,
    /// Per partition, where per-event evaluation got before a restart
    /// (from the last checkpoint): messages below it only rebuild state.
    processed: BTreeMap<(String, i32), i64>,
    /// `"topic/partition"` of a manual assignment (empty in a group).
    partitions: Vec<String>,
    /// A message received under a newer assignment than the batch being
    /// collected: the first of the next batch.
    stashed: Option<RawMessage>,
    /// A partition's key in the offset maps (`processed`, a batch's next
    /// offsets), rebuilt in place for each record: looking a partition up
    /// does not allocate its topic's name again.
    offset_key: (String, i32),
    /// In a group: what it takes to rejoin it as a new member when another
    /// member left (see [`super::membership`]).
    rejoin: Option<Rejoin>,
}

/// How a group member rejoins: a new consumer from the same configuration.
struct Rejoin {
    config: ClientConfig,
    observer: ConsumerObserver,
    watch: MembershipWatch,
    /// The last rejoin closed the old consumer but could not subscribe the
    /// new one: retried before the next batch.
    subscribe_pending: bool,
}

/// A tag unique to this process (its id and start time), for client ids.
fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{:x}", std::process::id(), started & 0xffff_ffff)
    })
}

impl KafkaSource {
    /// Create the consumer and subscribe to the topic of every source in
    /// `sources`, reporting assignment and lag to `observer`.
    ///
    /// Auto-commit is off: offsets are committed through a
    /// [`ConsumerHandle`] only after the batch's alerts are acknowledged.
    pub fn observed(
        settings: &KafkaSettings,
        brokers: &str,
        sources: &[(SourceKind, String)],
        checkpoint: Option<&Checkpoint>,
        observer: ConsumerObserver,
    ) -> Result<KafkaSource, Error> {
        let mut config = super::base_config(settings, brokers);
        config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // librdkafka's default, set so it is not left to one: records
            // of aborted or open transactions (exactly-once output of
            // another stage, e.g. forwarded rows) are never read.
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        super::apply_properties(&mut config, settings);
        // A client id of this process's own: the membership watch tells a
        // member that rejoined (same client) from one that left.
        let client = format!(
            "{}-{}",
            config.get("client.id").unwrap_or("vigil"),
            process_tag()
        );
        config.set("client.id", client);
        let consumer: StreamConsumer<ConsumerObserver> = config
            .create_with_context(observer.clone())
            .doing(|| "creating the Kafka consumer".into())?;
        let topics = topic_sources(sources);
        let names: Vec<&str> = topics.keys().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .doing(|| format!("subscribing to {names:?}"))?;
        let processed = checkpoint
            .map(Checkpoint::processed_offsets)
            .unwrap_or_default();
        let rejoin = Some(Rejoin {
            config,
            observer,
            watch: MembershipWatch::new(settings.group_id.clone()),
            subscribe_pending: false,
        });
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topics,
            processed,
            partitions: Vec::new(),
            stashed: None,
            offset_key: Default::default(),
            rejoin,
        })
    }

    /// A reader of every partition of every enabled source topic, outside
    /// any consumer group (the correlation leader: see
    /// `correlate::Placement::Leader`). It starts where `checkpoint.resume`
    /// says, or at the beginning; its progress lives in its checkpoints,
    /// not in committed offsets. Partitions added to a topic later are not
    /// read until the next leadership change.
    pub fn all_partitions(
        settings: &KafkaSettings,
        brokers: &str,
        sources: &[(SourceKind, String)],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<KafkaSource, Error> {
        let mut config = super::base_config(settings, brokers);
        config
            .set(
                "group.id",
                format!("{}-correlation-reader", settings.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        super::apply_properties(&mut config, settings);
        let observer = ConsumerObserver::unreported(sources.iter().map(|(_, t)| t.clone()));
        let consumer: StreamConsumer<ConsumerObserver> = config
            .create_with_context(observer)
            .doing(|| "creating the correlation reader".into())?;
        let topics = topic_sources(sources);
        let resume = checkpoint
            .map(Checkpoint::resume_offsets)
            .unwrap_or_default();
        let mut list = TopicPartitionList::new();
        for topic in topics.keys() {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .doing(|| format!("reading the partitions of {topic:?}"))?;
            for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    let offset = match resume.get(&(topic.clone(), p.id())) {
                        Some(o) => Offset::Offset(*o),
                        None => Offset::Beginning,
                    };
                    list.add_partition_offset(topic, p.id(), offset)
                        .doing(|| "building the assignment".into())?;
                }
            }
        }
        consumer
            .assign(&list)
            .doing(|| "assigning the source partitions to the correlation reader".into())?;
        let partitions = list
            .elements()
            .iter()
            .map(|e| format!("{}/{}", e.topic(), e.partition()))
            .collect();
        tracing::info!(
            partitions = list.count(),
            "correlation reader assigned every source partition"
        );
        let processed = checkpoint
            .map(Checkpoint::processed_offsets)
            .unwrap_or_default();
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topics,
            processed,
            partitions,
            stashed: None,
            offset_key: Default::default(),
            rejoin: None,
        })
    }

    /// The partitions of a manual assignment, as `"topic/partition"`.
    pub fn partitions(&self) -> &[String] {
        &self.partitions
    }

    /// Collect up to `max_events` messages, waiting at most `max_wait` after
    /// the first one. Returns early with what it has when `stop` resolves.
    /// An empty batch means nothing arrived within `idle_wait`.
    ///
    /// Messages the client already holds are taken even past a deadline,
    /// so with zero waits this takes what it has already fetched (up to
    /// `max_events`) without waiting for the broker.
    pub async fn next_batch(
        &mut self,
        max_events: usize,
        max_wait: Duration,
        idle_wait: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> SourceBatch {
        let mut batch = SourceBatch {
            assignment: self.assignments(),
            ..Default::default()
        };
        let mut deadline = Instant::now() + idle_wait;
        if let Some(first) = self.stashed.take() {
            self.add(&mut batch, first);
            deadline = Instant::now() + max_wait;
        }
        while batch.messages.len() < max_events {
            if *stop.borrow() {
                break;
            }
            // What the client already holds is taken without a clock
            // reading or a timer; only then do the deadlines count.
            let received = match self.consumer.recv().now_or_never() {
                Some(r) => r,
                None if Instant::now() >= deadline => break,
                None => tokio::select! {
                    r = self.consumer.recv() => r,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => break,
                },
            };
            let message = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    continue;
                }
            };
            let Some(SourceTopic {
                source,
                name: topic,
            }) = self.topics.get(message.topic()).cloned()
            else {
                tracing::warn!(
                    topic = message.topic(),
                    "message from an unexpected topic ignored"
                );
                continue;
            };
            if batch.messages.is_empty() {
                deadline = Instant::now() + max_wait;
            }
            let partition = message.partition();
            let offset = message.offset();
            set_offset_key(&mut self.offset_key, &topic, partition);
            let state_only = self
                .processed
                .get(&self.offset_key)
                .is_some_and(|p| offset < *p);
            let raw = RawMessage {
                source,
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                origin: Origin::Kafka {
                    topic,
                    partition,
                    offset,
                },
                timestamp_ms: message.timestamp().to_millis(),
                state_only,
            };
            // A rebalance happens inside the poll that returns the message:
            // the count read after it is the message's assignment.
            let assignment = self.assignments();
            if assignment != batch.assignment {
                if !batch.messages.is_empty() {
                    self.stashed = Some(raw);
                    break;
                }
                batch.assignment = assignment;
            }
            self.add(&mut batch, raw);
        }
        batch
    }

    fn add(&mut self, batch: &mut SourceBatch, message: RawMessage) {
        if let Origin::Kafka {
            topic,
            partition,
            offset,
        } = &message.origin
        {
            set_offset_key(&mut self.offset_key, topic, *partition);
            match batch.next_offsets.get_mut(&self.offset_key) {
                Some(next) => *next = offset + 1,
                None => {
                    batch
                        .next_offsets
                        .insert(self.offset_key.clone(), offset + 1);
                }
            }
        }
        batch.messages.push(message);
    }

    /// How many group assignments this source's consumers have received.
    fn assignments(&self) -> u64 {
        self.consumer.context().assignments()
    }

    /// Between batches: whether this member should leave the group and join
    /// again as a new member ([`KafkaSource::rejoin`]), because another
    /// member has left it. A coordinator that does not rebalance by itself
    /// then reassigns the departed member's partitions (see
    /// [`super::membership`]). Also retries a subscription a failed rejoin
    /// left pending.
    pub async fn rejoin_due(&mut self) -> bool {
        let Some(rejoin) = self.rejoin.as_mut() else {
            return false;
        };
        if rejoin.subscribe_pending {
            let names: Vec<&str> = self.topics.keys().map(String::as_str).collect();
            match self.consumer.subscribe(&names) {
                Ok(()) => rejoin.subscribe_pending = false,
                Err(e) => {
                    tracing::error!(error = %e, "subscribing the new consumer failed; retrying before the next batch")
                }
            }
            return false;
        }
        let gone = rejoin.watch.departed(&self.consumer).await;
        if gone.is_empty() {
            return false;
        }
        tracing::info!(departed = ?gone, "a member left the consumer group; rejoining as a new member so that its partitions are reassigned");
        true
    }

    /// Leave the group and join it again as a new member. The caller has
    /// committed everything it read, or leaves it to be re-read: messages
    /// read and not committed are their partitions' new owners' to read.
    pub async fn rejoin(&mut self) {
        let Some(rejoin) = self.rejoin.as_mut() else {
            return;
        };
        // Created first (no group traffic yet), so a failure keeps the old one.
        let fresh: StreamConsumer<ConsumerObserver> = match rejoin
            .config
            .create_with_context(rejoin.observer.clone())
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "creating a new consumer to rejoin the group failed; keeping the old one");
                return;
            }
        };
        // The old one leaves the group before the new one joins: joining
        // first could land in the stale generation again. Closing blocks.
        let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        if let Err(e) = tokio::task::spawn_blocking(move || drop(old)).await {
            tracing::warn!(error = %e, "closing the old consumer");
        }
        rejoin.watch.reset();
        let names: Vec<&str> = self.topics.keys().map(String::as_str).collect();
        if let Err(e) = self.consumer.subscribe(&names) {
            tracing::error!(error = %e, "subscribing the new consumer failed; retrying before the next batch");
            rejoin.subscribe_pending = true;
        }
    }

    /// A handle on the current consumer (see [`ConsumerHandle`]).
    pub fn handle(&self) -> ConsumerHandle {
        ConsumerHandle(self.consumer.clone())
    }

    /// Per-partition lag (high watermark − position) of the assignment.
    pub fn lag(&self) -> Result<Vec<(String, i32, i64)>, Error> {
        let assignment = self
            .consumer
            .assignment()
            .doing(|| "reading the assignment".into())?;
        let positions = self
            .consumer
            .position()
            .doing(|| "reading the positions".into())?;
        let mut out = Vec::new();
        for elem in assignment.elements() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(elem.topic(), elem.partition(), Duration::from_secs(5))
                .doing(|| format!("reading the end of {}/{}", elem.topic(), elem.partition()))?;
            let position = positions
                .find_partition(elem.topic(), elem.partition())
                .and_then(|p| p.offset().to_raw())
                .filter(|o| *o >= 0)
                .unwrap_or(0);
            out.push((
                elem.topic().to_string(),
                elem.partition(),
                (high - position).max(0),
            ));
        }
        Ok(out)
    }
}

/// The offsets to commit: per partition of the batch, the lower of one past
/// the batch and the lowest offset still retained for correlation.
pub fn resume_offsets(
    next_offsets: &BTreeMap<(String, i32), i64>,
    retained: &BTreeMap<(String, i32), i64>,
) -> Result<TopicPartitionList, Error> {
    let mut list = TopicPartitionList::new();
    for (key, next) in next_offsets {
        let resume = retained.get(key).map_or(*next, |r| (*r).min(*next));
        list.add_partition_offset(&key.0, key.1, Offset::Offset(resume))
            .doing(|| "building the offset list".into())?;
    }
    Ok(list)
}

/// Make `key` the offset-map key of `topic`'s `partition`, reusing its
/// string's allocation.
fn set_offset_key(key: &mut (String, i32), topic: &str, partition: i32) {
    key.0.clear();
    key.0.push_str(topic);
    key.1 = partition;
}

/// The source a topic's events are, and its name as the messages read
/// from it carry it (one shared copy).
#[derive(Clone)]
struct SourceTopic {
    source: SourceKind,
    name: Arc<str>,
}

/// The source of each topic, by the topic's name.
fn topic_sources(sources: &[(SourceKind, String)]) -> HashMap<String, SourceTopic> {
    sources
        .iter()
        .map(|(source, topic)| {
            let name = Arc::from(topic.as_str());
            (
                topic.clone(),
                SourceTopic {
                    source: *source,
                    name,
                },
            )
        })
        .collect()
}
