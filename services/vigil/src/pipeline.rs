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
//! produced again with the same deterministic ids.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::config::Settings;
use crate::detect::Detector;
use crate::kafka::{KafkaSink, KafkaSource, OutRecord};
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
    let source = KafkaSource::new(settings, brokers)?;
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
            records.push(OutRecord { topic: settings.topics.dead_letter.clone(), key: dl.key(), payload: dl.to_json() });
        }
        loop {
            match sink.deliver(&records, 5).await {
                Ok(()) => break,
                Err(e) => {
                    Metrics::add(&metrics.delivery_retries, 1);
                    tracing::error!(error = %e, "alerts not delivered; consumption paused until the broker accepts them");
                    if *stop.borrow() {
                        return Err(e).context("stopping with undelivered alerts: their offsets were not committed and will be re-consumed");
                    }
                }
            }
        }
        for alert in &detections.alerts {
            metrics.count_alert(&alert.rule_id);
        }
        Metrics::add(&metrics.alerts_produced, detections.alerts.len() as u64);
        Metrics::add(&metrics.dead_letters_produced, detections.dead_letters.len() as u64);
        Metrics::add(&metrics.batches, 1);
        match source.commit(&batch.next_offsets) {
            Ok(()) => Metrics::add(&metrics.commits, 1),
            // Not data loss: the next successful commit covers these offsets,
            // or after a restart the batch is re-processed (same alert ids).
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "offset commit failed"),
        }
        tracing::debug!(alerts = detections.alerts.len(), dead_letters = detections.dead_letters.len(), "batch done");
    }
    sink.flush();
    tracing::info!(summary = %metrics.summary(), "pipeline stopped");
    Ok(metrics)
}
