//! The outputs' consumer of the alerts topic: read a batch, enrich,
//! deliver, dead-letter, then commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::console::AlertWindow;
use super::enrich::{Enricher, Routed};
use super::settings::{self, StartAt};
use super::{Output, Outputs, OutputsError};
use crate::alert::Alert;
use crate::config::Settings;
use crate::kafka::{DeliveryMode, KafkaSink};
use crate::metrics::Metrics;

/// How long a batch waits for more alerts after its first.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// Where a batch's records were read, for the commit.
type Positions = BTreeMap<i32, i64>;

/// Build the outputs of `settings` (refusing a configuration that cannot
/// work, naming its key) and run them in a background task until `stop`,
/// keeping `window` (the console's) filled. `None` when there is neither
/// an output nor a window.
pub async fn start(
    settings: &Settings,
    brokers: &str,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    window: Option<Arc<AlertWindow>>,
) -> Result<Option<JoinHandle<Result<(), OutputsError>>>, OutputsError> {
    if settings.outputs.is_empty() && window.is_none() {
        return Ok(None);
    }
    let (outputs, consumer) = build(settings, brokers, metrics).await?;
    tracing::info!(
        outputs = outputs.outputs.len(),
        group = %settings.routing.group(&settings.kafka.group_id),
        topic = %settings.topics.alerts,
        "outputs started"
    );
    let max_batch = settings.routing.max_batch;
    Ok(Some(tokio::spawn(async move {
        run(outputs, consumer, max_batch, stop, window).await
    })))
}

async fn build(
    settings: &Settings,
    brokers: &str,
    metrics: Arc<Metrics>,
) -> Result<(Outputs, Arc<StreamConsumer>), OutputsError> {
    let endpoints = settings::validate(&settings.outputs, &settings.routing, |var| {
        std::env::var(var).ok()
    })?;
    let routing = &settings.routing;
    let enricher = Enricher::load(
        &settings.rules.layers(),
        &routing.cluster,
        &routing.team_lookup,
    )?;
    // Never transactional: an output's copies and dead letters are not
    // part of a detection batch.
    let mut kafka = settings.kafka.clone();
    kafka.delivery = DeliveryMode::AtLeastOnce;
    let sink = KafkaSink::new(&kafka, brokers, &[&settings.topics.dead_letter]).await?;
    let outputs = settings
        .outputs
        .iter()
        .zip(endpoints)
        .map(|(o, endpoint)| Output::new(o, endpoint, &sink))
        .collect::<Result<Vec<_>, _>>()?;
    let consumer = consumer(settings, brokers, routing.start)?;
    let outputs = Outputs::new(
        outputs,
        enricher,
        sink,
        settings.topics.dead_letter.clone(),
        metrics,
    );
    Ok((outputs, consumer))
}

fn consumer(
    settings: &Settings,
    brokers: &str,
    start: StartAt,
) -> Result<Arc<StreamConsumer>, OutputsError> {
    let mut config = crate::kafka::base_config(&settings.kafka, brokers);
    config
        .set("group.id", settings.routing.group(&settings.kafka.group_id))
        .set("client.id", "vigil-outputs")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", start.offset_reset());
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&settings.topics.alerts])?;
    Ok(Arc::new(consumer))
}

/// The loop: batches until `stop`, each delivered before its offsets are
/// committed.
pub async fn run(
    outputs: Outputs,
    consumer: Arc<StreamConsumer>,
    max_batch: usize,
    mut stop: watch::Receiver<bool>,
    window: Option<Arc<AlertWindow>>,
) -> Result<(), OutputsError> {
    loop {
        let Some((batch, positions)) =
            next_batch(&consumer, &outputs, max_batch, &mut stop).await?
        else {
            return Ok(());
        };
        // Shown before delivery: the console lists what was detected, also
        // while an output is still retrying.
        if let Some(window) = &window {
            window.add(&batch);
        }
        outputs.deliver(&batch, &stop).await?;
        commit(&consumer, positions).await;
    }
}

/// Read up to `max` alerts: wait for the first (or `stop`), then take what
/// comes within [`BATCH_WAIT`]. `None` once stopped with nothing read.
async fn next_batch(
    consumer: &StreamConsumer,
    outputs: &Outputs,
    max: usize,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<(Vec<Routed>, Positions)>, OutputsError> {
    let mut batch = Vec::new();
    let mut positions = Positions::new();
    let deadline = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(deadline);
    while batch.len() < max {
        if *stop.borrow() && positions.is_empty() {
            return Ok(None);
        }
        let message = tokio::select! {
            m = consumer.recv() => m,
            changed = stop.changed(), if positions.is_empty() => {
                if changed.is_err() {
                    // No one can ask to stop any more: nothing to wait for.
                    return Ok(None);
                }
                continue;
            }
            _ = &mut deadline, if !positions.is_empty() => break,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "the outputs' Kafka consumer");
                continue;
            }
        };
        if positions.is_empty() {
            deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + BATCH_WAIT);
        }
        positions.insert(message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        match read_alert(payload) {
            Some((alert, raw)) => batch.push(outputs.enricher.enrich(alert, raw)),
            None => {
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "a record of the alerts topic is not an alert: skipped"
                );
                outputs.metrics.output_unreadable();
            }
        }
    }
    Ok(Some((batch, positions)))
}

fn read_alert(payload: &[u8]) -> Option<(Alert, String)> {
    let text = std::str::from_utf8(payload).ok()?;
    let alert = serde_json::from_str(text).ok()?;
    Some((alert, text.to_string()))
}

/// Commit one past each partition's last record. A failed commit is
/// logged: the next one covers it, or the batch is delivered again after a
/// restart (at least once).
async fn commit(consumer: &Arc<StreamConsumer>, positions: Positions) {
    let mut list = TopicPartitionList::new();
    let topic = match consumer.subscription() {
        Ok(s) => s.elements().first().map(|e| e.topic().to_string()),
        Err(_) => None,
    };
    let Some(topic) = topic else { return };
    for (partition, offset) in positions {
        if list
            .add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
            .is_err()
        {
            return;
        }
    }
    let consumer = consumer.clone();
    let result =
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the outputs' offset commit failed"),
        Err(e) => tracing::warn!(error = %e, "the outputs' offset commit did not run"),
    }
}
