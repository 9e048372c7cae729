//! Where generated events go: JSON lines on a writer, or the source topics
//! of a Kafka cluster at a target rate.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::watch;

use crate::config::TopicSettings;
use crate::source::SourceKind;
use vigil_gen::{GeneratedEvent, Generator, InjectedAttack};

/// Counts of what was emitted.
#[derive(Debug, Default, Clone)]
pub struct GenSummary {
    pub events: u64,
    pub bytes: u64,
    /// Events per source.
    pub per_source: std::collections::BTreeMap<SourceKind, u64>,
    pub attacks: Vec<InjectedAttack>,
}

impl GenSummary {
    fn count(&mut self, e: &GeneratedEvent) {
        self.events += 1;
        self.bytes += e.payload.len() as u64;
        *self.per_source.entry(e.source).or_default() += 1;
        if let Some(m) = e.manifest_entry() {
            self.attacks.push(m);
        }
    }

    /// Expected alerts: one per rule of every injected attack.
    pub fn expected_alerts(&self) -> usize {
        self.attacks.iter().map(|a| a.rules.len()).sum()
    }
}

/// Paces a loop to `rate` events per second (0: unpaced), in steps of
/// about 10 ms so that bursts stay small.
pub struct Pacer {
    rate: u64,
    start: Instant,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        Pacer {
            rate,
            start: Instant::now(),
        }
    }

    /// Wait until `sent` events are due.
    pub async fn wait(&self, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed + Duration::from_millis(10) {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Write `count` events (0: unbounded) as JSON lines, one event a line.
pub fn write_jsonl(
    generator: &mut Generator,
    count: u64,
    out: &mut dyn Write,
) -> Result<GenSummary> {
    let mut summary = GenSummary::default();
    while count == 0 || summary.events < count {
        let e = generator.next_event();
        out.write_all(&e.payload)
            .and_then(|_| out.write_all(b"\n"))
            .context("writing events")?;
        summary.count(&e);
    }
    out.flush().context("writing events")?;
    Ok(summary)
}

/// Most records awaiting their delivery report before production waits.
const MAX_IN_FLIGHT: usize = 50_000;

/// Produce `count` events (0: until `stop`), or until `events` ends, to
/// their source topics at `rate` events/s (0: as fast as the broker takes
/// them), keyed by the user or pod they are about. Every record's delivery is awaited; any
/// failure ends the run with an error (after the in-flight ones settle).
///
/// `events` is a [`Generator`], or events generated beforehand (the
/// benchmark's latency run, so that generating them does not share the
/// CPU with what is measured). `on_sent` sees each event when it is
/// handed to the producer (the benchmark records produce times with it).
pub async fn produce(
    producer: &FutureProducer,
    topics: &TopicSettings,
    mut events: impl Iterator<Item = GeneratedEvent>,
    count: u64,
    rate: u64,
    stop: watch::Receiver<bool>,
    mut on_sent: impl FnMut(&GeneratedEvent),
) -> Result<GenSummary> {
    let mut summary = GenSummary::default();
    let mut in_flight = FuturesUnordered::new();
    let mut failures = 0u64;
    let mut first_error = None;
    let pacer = Pacer::new(rate);
    while (count == 0 || summary.events < count) && !*stop.borrow() && failures == 0 {
        let Some(e) = events.next() else { break };
        pacer.wait(summary.events).await;
        let topic = topics.source_topic(e.source);
        if topic.is_empty() {
            bail!("source {} has no topic configured", e.source);
        }
        let mut record = FutureRecord::to(topic)
            .key(e.key.as_bytes())
            .payload(&e.payload);
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                // The local queue is full: let deliveries complete, retry.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    match in_flight.next().await {
                        Some(done) => settle(done, &mut failures, &mut first_error),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        };
        on_sent(&e);
        summary.count(&e);
        in_flight.push(delivery);
        // Bound what is out; settle what is done without waiting.
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(r) = in_flight.next().await {
                settle(r, &mut failures, &mut first_error);
            }
        }
        if summary.events % 1024 == 0 {
            while let Some(Some(r)) = futures::FutureExt::now_or_never(in_flight.next()) {
                settle(r, &mut failures, &mut first_error);
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        settle(r, &mut failures, &mut first_error);
    }
    if let Some(e) = first_error {
        bail!("{failures} events were not delivered; first error: {e}");
    }
    Ok(summary)
}

type Delivery = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

fn settle(r: Delivery, failures: &mut u64, first_error: &mut Option<String>) {
    let error = match r {
        Ok(Ok(_)) => return,
        Ok(Err((e, _))) => e.to_string(),
        Err(_) => "the producer was dropped before delivery".to_string(),
    };
    *failures += 1;
    first_error.get_or_insert(error);
}

/// A producer for generated load: lz4, batching for throughput, acks=all.
pub fn load_producer(base: &ClientConfig) -> Result<FutureProducer> {
    let mut config = base.clone();
    config
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("acks", "all");
    config.create().context("creating the Kafka producer")
}
