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
use tracing::Instrument;

use crate::config::Settings;
use crate::dead_letter::DeadLetterKind;
use crate::detect::Detector;
use crate::health::Health;
use crate::kafka::{checkpoint, ConsumerObserver, KafkaSink, KafkaSource, OutRecord};
use crate::metrics::Metrics;
use crate::telemetry;

/// When the run loop stops on its own, and where it reports readiness.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this long without input, once at least one message was
    /// processed (the embedded demo uses this). `None`: run until stopped.
    pub exit_when_idle: Option<Duration>,
    /// Readiness state served on `/readyz` (a private one when `None`).
    pub health: Option<Arc<Health>>,
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
    let health = options.health.clone().unwrap_or_default();
    let observer =
        ConsumerObserver::new(metrics.clone(), health.clone(), settings.topics.sources().into_iter().map(|(_, t)| t));
    let mut source = KafkaSource::observed(settings, brokers, Some(&checkpoint), observer)?;
    let sink = KafkaSink::new(settings, brokers)?;
    let idle_wait = options.exit_when_idle.map(|d| d.min(Duration::from_secs(1))).unwrap_or(Duration::from_secs(1));
    let mut idle_for = Duration::ZERO;
    let mut seen_any = false;
    tracing::info!(brokers, rules = detector.engine().rules().count(), "pipeline started");
    loop {
        if *stop.borrow() {
            health.set_stopping();
        }
        health.polled();
        let batch = source.next_batch(settings.batch.max_events, settings.batch.max_wait(), idle_wait, &mut stop).await;
        health.polled();
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
        let started = std::time::Instant::now();
        let batch_messages = batch.messages.len();
        let span = tracing::info_span!(
            "batch",
            messages = batch_messages as i64,
            alerts = tracing::field::Empty,
            dead_letters = tracing::field::Empty,
            trace_id = tracing::field::Empty
        );
        let mut detections = detector.process(batch.messages).instrument(span.clone()).await;
        // Alerts name the trace of the batch that produced them.
        let trace_id = telemetry::trace_id(&span);
        if let Some(id) = &trace_id {
            span.record("trace_id", id.as_str());
        }
        span.record("alerts", detections.alerts.len() as i64).record("dead_letters", detections.dead_letters.len() as i64);
        for alert in &mut detections.alerts {
            alert.trace_id = trace_id.clone();
        }

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
        deliver(&sink, &records, &stop, &metrics)
            .instrument(tracing::info_span!(parent: &span, "deliver", records = records.len() as i64))
            .await?;
        for alert in &detections.alerts {
            metrics.alert_delivered(&alert.rule_id, alert.severity);
        }
        for dl in &detections.dead_letters {
            metrics.dead_letter_delivered(dl.kind);
        }
        // Only now that the batch's alerts are acknowledged may the
        // checkpoint say its messages were evaluated.
        checkpoint.advance(&batch.next_offsets, detector.engine().correlator().emitted_watermarks());
        let record = OutRecord {
            topic: settings.topics.checkpoints.clone(),
            key: settings.kafka.group_id.clone(),
            payload: serde_json::to_string(&checkpoint).expect("checkpoints serialize"),
        };
        deliver(&sink, std::slice::from_ref(&record), &stop, &metrics)
            .instrument(tracing::info_span!(parent: &span, "deliver", records = 1, checkpoint = true))
            .await?;
        let retained = detector.engine().correlator().retained_offsets();
        let committed = tracing::info_span!(parent: &span, "commit").in_scope(|| source.commit(&batch.next_offsets, &retained));
        match committed {
            Ok(()) => Metrics::add(&metrics.commits, 1),
            // Not data loss: the next successful commit covers these offsets,
            // or after a restart the batch is re-read (and, per the
            // checkpoint, only rebuilds state).
            Err(e) => {
                Metrics::add(&metrics.commit_failures, 1);
                span.in_scope(|| tracing::warn!(error = %format!("{e:#}"), "offset commit failed"));
            }
        }
        metrics.batch_done(batch_messages, started.elapsed());
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
                metrics.set_delivery_paused(false);
                return Ok(());
            }
            Err(e) => {
                Metrics::add(&metrics.delivery_retries, 1);
                metrics.set_delivery_paused(true);
                tracing::error!(error = %e, "output not delivered; consumption paused until the broker accepts it");
                if *stop.borrow() {
                    return Err(e).context("stopping with undelivered output: its offsets were not committed and will be re-consumed");
                }
            }
        }
    }
}
