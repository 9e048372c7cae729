//! The streaming service: Kafka source → decode → evaluate → Kafka sink,
//! with at-least-once delivery.
//!
//! One loop, one batch at a time:
//! 1. collect a micro-batch from the source topics;
//! 2. decode and evaluate it ([`Detector`]);
//! 3. produce its alerts and dead letters and wait for the broker's acks
//!    (retrying; while this fails nothing more is consumed: back-pressure);
//! 4. commit the batch's offsets.
//!
//! So an offset is committed only after everything its message caused is
//! durable. A crash between 3 and 4 re-delivers the batch: its alerts are
//! produced again with the same deterministic ids (at-least-once).
//!
//! Correlation state is not written anywhere: it is rebuilt from the source
//! topics. The committed offset is the lowest one still retained, and the
//! commit's metadata says how far per-event evaluation got and up to which
//! watermark each correlation rule has emitted (see
//! [`crate::kafka::Checkpoint`]), so a restart re-reads just enough to
//! rebuild open windows without re-emitting closed ones.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::config::Settings;
use crate::dead_letter::DeadLetterKind;
use crate::detect::Detector;
use crate::kafka::{checkpoint, KafkaSink, KafkaSource, OutRecord};
use crate::metrics::Metrics;

/// When the run loop stops on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop after this long without input, once at least one message was
    /// processed (the embedded demo uses this). `None`: run until stopped.
    pub exit_when_idle: Option<Duration>,
}

/// Run the service until `stop` turns true (or the idle exit).
///
/// On stop, the batch being collected is finished, its output delivered and
/// its offsets committed before returning.
pub async fn run(
    settings: &Settings,
    brokers: &str,
    mut detector: Detector,
    mut stop: watch::Receiver<bool>,
    options: RunOptions,
) -> Result<Arc<Metrics>> {
    let metrics = detector.metrics().clone();
    let base = crate::kafka::base_config(&settings.kafka, brokers);
    let restored = checkpoint::read_latest(&base, &settings.topics.checkpoints, &settings.kafka.group_id, 1000)?;
    if let Some(cp) = &restored {
        tracing::info!(partitions = cp.processed.len(), rules = cp.emitted.len(), "resuming from checkpoint");
        detector.restore_emitted(&cp.emitted);
    }
    let mut checkpoint = restored.unwrap_or_default();
    let mut source = KafkaSource::new(settings, brokers, Some(&checkpoint))?;
    let sink = KafkaSink::new(settings, brokers)?;
    let idle_wait = options.exit_when_idle.map(|d| d.min(Duration::from_secs(1))).unwrap_or(Duration::from_secs(1));
    let mut idle_for = Duration::ZERO;
    let mut seen_any = false;
    tracing::info!(brokers, rules = detector.engine().rules().count(), "pipeline started");
    loop {
        let batch = source.next_batch(settings.batch.max_events, settings.batch.max_wait(), idle_wait, &mut stop).await;
        if batch.messages.is_empty() {
            if *stop.borrow() {
                break;
            }
            idle_for += idle_wait;
            if let Some(limit) = options.exit_when_idle {
                if seen_any && idle_for >= limit {
                    tracing::info!("no input for {limit:?}; stopping");
                    break;
                }
            }
            continue;
        }
        seen_any = true;
        idle_for = Duration::ZERO;
        let span = tracing::info_span!("batch", messages = batch.messages.len());
        let _guard = span.enter();
        let detections = detector.process(batch.messages).await;

        let mut records = Vec::with_capacity(detections.alerts.len() + detections.dead_letters.len());
        for alert in &detections.alerts {
            records.push(OutRecord {
                topic: settings.topics.alerts.clone(),
                key: alert.alert_id.clone(),
                payload: alert.to_json(),
            });
        }
        for dl in &detections.dead_letters {
            let topic = match dl.kind {
                DeadLetterKind::LateEvent => &settings.topics.late_events,
                DeadLetterKind::DecodeError | DeadLetterKind::RuleError => &settings.topics.dead_letter,
            };
            records.push(OutRecord { topic: topic.clone(), key: dl.key(), payload: dl.to_json() });
        }
        deliver(&sink, &records, &stop, &metrics).await?;
        for alert in &detections.alerts {
            metrics.count_alert(&alert.rule_id);
        }
        Metrics::add(&metrics.alerts_produced, detections.alerts.len() as u64);
        Metrics::add(&metrics.dead_letters_produced, detections.dead_letters.len() as u64);
        Metrics::add(&metrics.batches, 1);
        // Only now that the batch's alerts are acknowledged may the
        // checkpoint say its messages were evaluated.
        checkpoint.advance(&batch.next_offsets, detector.engine().correlator().emitted_watermarks());
        let record = OutRecord {
            topic: settings.topics.checkpoints.clone(),
            key: settings.kafka.group_id.clone(),
            payload: serde_json::to_string(&checkpoint).expect("checkpoints serialize"),
        };
        deliver(&sink, std::slice::from_ref(&record), &stop, &metrics).await?;
        let retained = detector.engine().correlator().retained_offsets();
        match source.commit(&batch.next_offsets, &retained) {
            Ok(()) => Metrics::add(&metrics.commits, 1),
            // Not data loss: the next successful commit covers these offsets,
            // or after a restart the batch is re-read (and, per the
            // checkpoint, only rebuilds state).
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "offset commit failed"),
        }
        tracing::debug!(alerts = detections.alerts.len(), dead_letters = detections.dead_letters.len(), "batch done");
    }
    sink.flush();
    tracing::info!(summary = %metrics.summary(), "pipeline stopped");
    Ok(metrics)
}

/// Produce `records` and wait for their acknowledgement, retrying while the
/// broker refuses them. Nothing is consumed meanwhile (back-pressure). Gives
/// up only when asked to stop, without committing.
async fn deliver(sink: &KafkaSink, records: &[OutRecord], stop: &watch::Receiver<bool>, metrics: &Metrics) -> Result<()> {
    loop {
        match sink.deliver(records, 5).await {
            Ok(()) => {
                Metrics::set(&metrics.output_blocked, 0);
                return Ok(());
            }
            Err(e) => {
                Metrics::set(&metrics.output_blocked, 1);
                Metrics::add(&metrics.delivery_retries, 1);
                tracing::error!(error = %e, "output not delivered; consumption paused until the broker accepts it");
                if *stop.borrow() {
                    return Err(e).context("stopping with undelivered output: its offsets were not committed and will be re-consumed");
                }
            }
        }
    }
}
