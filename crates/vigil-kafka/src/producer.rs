//! The Kafka sink: produces alerts and dead letters and waits until the
//! broker acknowledges every one of them; in exactly-once mode, inside one
//! transaction per batch together with the batch's checkpoint and consumer
//! offsets.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::error::Doing;
use crate::{DeliveryMode, Error, KafkaSettings};

/// How long one transactional call (begin, offsets, commit, abort) may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Ask the broker about the output topics once at start, so the first
/// batch's output does not wait for the producer to learn their leaders
/// (about half a second on the first delivery otherwise). A topic that is
/// missing is only warned about: its records wait for it (back-pressure),
/// as they would for a topic deleted later.
fn learn_output_topics(producer: &FutureProducer, topics: Vec<String>) {
    for topic in topics {
        match producer
            .client()
            .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(10)))
        {
            Ok(metadata) => {
                let missing = metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_some());
                if missing {
                    tracing::warn!(
                        topic,
                        "output topic not found; its records wait until it exists"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "looking up an output topic failed");
            }
        }
    }
}

/// How many partitions `topic` has; an error naming the topic when it does
/// not exist (Vigil creates no topic: see docs/operations.md).
pub fn partition_count(base: &ClientConfig, topic: &str) -> Result<u32, Error> {
    let producer: FutureProducer = base
        .create()
        .doing(|| "creating a Kafka client for metadata".into())?;
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))
        .doing(|| format!("looking up topic {topic:?}"))?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as u32)
        }
        _ => Err(Error::MissingTopic {
            what: "repartition topic (topics.repartition)".into(),
            topic: topic.to_string(),
            create_with: "as many partitions as instances may share correlation, e.g. 12; see docs/operations.md#repartitioned-correlation".into(),
        }),
    }
}

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction was aborted (or never began); nothing of it is
    /// visible to read_committed consumers and the same batch may be tried
    /// again in a new transaction.
    #[error("transaction aborted, can be retried: {0}")]
    Retriable(Error),
    /// The producer cannot continue (e.g. fenced by a newer instance with
    /// the same transactional.id). The process must restart; it resumes
    /// from the last committed transaction.
    #[error("transactional producer failed fatally: {0}")]
    Fatal(Error),
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    /// `None`: a tombstone (a compacted topic then drops the key).
    pub payload: Option<String>,
    /// `None`: the producer's partitioner picks it from the key.
    pub partition: Option<i32>,
}

impl OutRecord {
    pub fn new(topic: impl Into<String>, key: impl Into<String>, payload: String) -> OutRecord {
        OutRecord {
            topic: topic.into(),
            key: key.into(),
            payload: Some(payload),
            partition: None,
        }
    }

    /// A record for partition `partition` of `topic`.
    pub fn to_partition(
        topic: impl Into<String>,
        partition: i32,
        key: impl Into<String>,
        payload: String,
    ) -> OutRecord {
        OutRecord {
            partition: Some(partition),
            ..OutRecord::new(topic, key, payload)
        }
    }

    fn future(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut record = FutureRecord::to(&self.topic).key(self.key.as_bytes());
        if let Some(partition) = self.partition {
            record = record.partition(partition);
        }
        match &self.payload {
            Some(payload) => record.payload(payload.as_bytes()),
            None => record,
        }
    }
}

/// Idempotent producer (acks=all) for alerts and dead letters;
/// transactional in [`DeliveryMode::ExactlyOnce`]. Clones share the
/// producer.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    transactional: bool,
}

impl KafkaSink {
    /// Create the producer. In exactly-once mode this also registers the
    /// transactional id with the broker, which fences any older producer
    /// with the same id and aborts its open transaction. `outputs` are the
    /// topics it will write, looked up once so the first batch does not wait.
    pub async fn new(
        settings: &KafkaSettings,
        brokers: &str,
        outputs: &[&str],
    ) -> Result<KafkaSink, Error> {
        let mut config = super::base_config(settings, brokers);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            // Every batch's output is produced at once and then waited
            // for: lingering would only delay it (and the offsets commit
            // after it).
            .set("linger.ms", "0")
            .set("compression.type", "lz4");
        super::apply_properties(&mut config, settings);
        let transactional = settings.delivery == DeliveryMode::ExactlyOnce;
        if transactional {
            config.set("transactional.id", settings.transactional_id());
        }
        let producer: FutureProducer = config
            .create()
            .doing(|| "creating the Kafka producer".into())?;
        if transactional {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || p.init_transactions(Timeout::After(TXN_CALL_TIMEOUT)))
                .await
                .doing(|| "initialising transactions".into())?
                .doing(|| {
                    format!(
                        "initialising transactions (transactional.id {:?}); does the broker support Kafka transactions? \
                         (kafka.delivery = \"at_least_once\" works without them)",
                        settings.transactional_id()
                    )
                })?;
            tracing::info!(transactional_id = %settings.transactional_id(), "exactly-once delivery: transactions initialised");
        }
        let topics = outputs
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.to_string())
            .collect();
        let p = producer.clone();
        tokio::task::spawn_blocking(move || learn_output_topics(&p, topics))
            .await
            .doing(|| "looking up the output topics".into())?;
        Ok(KafkaSink {
            producer,
            transactional,
        })
    }

    /// Whether this sink commits batches in transactions.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Exactly-once: produce `records` and commit `offsets` for the
    /// consumer group `group` in one transaction. Either all of it becomes
    /// visible to read_committed consumers and the offsets are committed,
    /// or none of it. `group` may be `None` only without offsets.
    pub async fn deliver_transaction(
        &self,
        records: &[OutRecord],
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), TxnError> {
        debug_assert!(self.transactional);
        let result = self.try_transaction(records, offsets, group).await;
        if let Err(e) = &result {
            if matches!(e, TxnError::Retriable(_)) {
                let p = self.producer.clone();
                let aborted = tokio::task::spawn_blocking(move || {
                    p.abort_transaction(Timeout::After(TXN_CALL_TIMEOUT))
                })
                .await
                .doing(|| "aborting the failed transaction".into())
                .map_err(TxnError::Fatal)?;
                if let Err(abort_error) = aborted {
                    return Err(classify(abort_error, "aborting the failed transaction"));
                }
            }
        }
        result
    }

    async fn try_transaction(
        &self,
        records: &[OutRecord],
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), TxnError> {
        self.producer
            .begin_transaction()
            .map_err(|e| classify(e, "beginning a transaction"))?;
        let sends = records.iter().map(|r| {
            self.producer
                .send(r.future(), Timeout::After(Duration::from_secs(30)))
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                return Err(classify(e, "producing in a transaction"));
            }
        }
        let (p, offsets) = (self.producer.clone(), offsets.clone());
        tokio::task::spawn_blocking(move || {
            if offsets.count() > 0 {
                let group = group
                    .as_ref()
                    .ok_or(TxnError::Fatal(Error::NoGroupMetadata))?;
                p.send_offsets_to_transaction(&offsets, group, Timeout::After(TXN_CALL_TIMEOUT))
                    .map_err(|e| classify(e, "adding the consumer offsets to the transaction"))?;
            }
            p.commit_transaction(Timeout::After(TXN_CALL_TIMEOUT))
                .map_err(|e| classify(e, "committing the transaction"))
        })
        .await
        .doing(|| "committing the transaction".into())
        .map_err(TxnError::Fatal)?
    }

    /// Produce every record and wait for the broker's acknowledgement of
    /// each. Records that fail are retried with backoff, `attempts` times in
    /// all; the error names how many are still undelivered.
    pub async fn deliver(&self, records: &[OutRecord], attempts: u32) -> Result<(), Error> {
        let mut pending: Vec<&OutRecord> = records.iter().collect();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=attempts.max(1) {
            let futures = pending.iter().map(|r| {
                self.producer
                    .send(r.future(), Timeout::After(Duration::from_secs(30)))
            });
            let results = futures::future::join_all(futures).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for (record, result) in pending.iter().zip(results) {
                if let Err((e, _)) = result {
                    last_error = Some(e);
                    failed.push(*record);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            tracing::warn!(
                attempt,
                undelivered = failed.len(),
                error = %last_error.as_ref().expect("a failure has an error"),
                "producing to Kafka failed; retrying"
            );
            pending = failed;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        Err(Error::Undelivered {
            undelivered: pending.len(),
            attempts,
        })
    }

    pub fn flush(&self) {
        let _ = self.producer.flush(Timeout::After(Duration::from_secs(10)));
    }
}

/// Sort a failed transactional call into retriable (abort and try again)
/// or fatal (restart), following librdkafka's classification.
fn classify(e: KafkaError, doing: &str) -> TxnError {
    let fatal = match &e {
        KafkaError::Transaction(rd) => rd.is_fatal(),
        _ => false,
    };
    let error = Error::Kafka {
        doing: doing.to_string(),
        source: e,
    };
    if fatal {
        TxnError::Fatal(error)
    } else {
        TxnError::Retriable(error)
    }
}
