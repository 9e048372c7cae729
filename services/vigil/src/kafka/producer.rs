//! The Kafka sink: produces alerts and dead letters and waits until the
//! broker acknowledges every one of them.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::Settings;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    pub payload: String,
}

/// Idempotent producer (acks=all) for alerts and dead letters.
pub struct KafkaSink {
    producer: FutureProducer,
}

impl KafkaSink {
    pub fn new(settings: &Settings, brokers: &str) -> Result<KafkaSink> {
        let mut config = super::base_config(&settings.kafka, brokers);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        super::apply_properties(&mut config, &settings.kafka);
        let producer: FutureProducer = config.create().context("creating the Kafka producer")?;
        Ok(KafkaSink { producer })
    }

    /// Produce every record and wait for the broker's acknowledgement of
    /// each. Records that fail are retried with backoff, `attempts` times in
    /// all; the error names how many are still undelivered.
    pub async fn deliver(&self, records: &[OutRecord], attempts: u32) -> Result<()> {
        let mut pending: Vec<&OutRecord> = records.iter().collect();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=attempts.max(1) {
            let futures = pending.iter().map(|r| {
                self.producer.send(
                    FutureRecord::to(&r.topic).key(r.key.as_bytes()).payload(r.payload.as_bytes()),
                    Timeout::After(Duration::from_secs(30)),
                )
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
        bail!("{} record(s) still undelivered after {attempts} attempts", pending.len())
    }

    pub fn flush(&self) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(Timeout::After(Duration::from_secs(10)));
    }
}
