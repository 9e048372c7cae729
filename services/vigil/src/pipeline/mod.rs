//! The streaming service: Kafka source → decode → evaluate → Kafka sink.
//!
//! One loop, one batch at a time:
//! 1. collect a micro-batch from the source topics;
//! 2. decode and evaluate it ([`Detector`]);
//! 3. make its output durable, then its progress:
//!    * at-least-once (default): produce its alerts and dead letters and
//!      wait for the broker's acks (retrying; while this fails nothing more
//!      is consumed: back-pressure), then the checkpoint, then commit the
//!      offsets. A crash in between re-delivers the batch: its alerts are
//!      produced again with the same deterministic ids;
//!    * exactly-once (`kafka.delivery = "exactly_once"`): output, checkpoint
//!      and offsets in one Kafka transaction. A crash aborts the open
//!      transaction; the restarted process redoes the batch.
//!
//! So an offset is committed only after (or atomically with) everything
//! its message caused. With no input, a wall-clock tick still advances the
//! watermark of idle partitions, so windows of a quiet stream close.
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
use rdkafka::TopicPartitionList;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Settings;
use crate::dead_letter::DeadLetterKind;
use crate::detect::{Detections, Detector};
use crate::health::Health;
use crate::kafka::{
    checkpoint, resume_offsets, Checkpoint, ConsumerObserver, KafkaSink, KafkaSource, OutRecord,
    SourceBatch, TxnError,
};
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
    /// How this loop reads its input.
    pub role: Role,
}

/// How a run loop reads the source topics and records its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// A member of the consumer group `kafka.group_id`: it reads the
    /// partitions the group assigns it and commits offsets to the group.
    #[default]
    GroupMember,
    /// The correlation leader: it reads every partition, outside any
    /// group, and keeps where to resume in its checkpoints
    /// (`correlate::Placement::Leader`).
    CorrelationLeader,
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
    // Blocking librdkafka calls: off the async workers.
    let restored = {
        let (base, topic, key) = (
            base.clone(),
            settings.topics.checkpoints.clone(),
            settings.kafka.group_id.clone(),
        );
        tokio::task::spawn_blocking(move || checkpoint::read_latest(&base, &topic, &key, 1000))
            .await
            .context("reading the checkpoint")??
    };
    tracing::debug!(key = %settings.kafka.group_id, found = restored.is_some(), "checkpoint read");
    if let Some(cp) = &restored {
        tracing::info!(
            partitions = cp.processed.len(),
            rules = cp.emitted.len(),
            "resuming from checkpoint"
        );
        detector.restore_emitted(&cp.emitted);
    }
    let health = options.health.clone().unwrap_or_default();
    let observer = ConsumerObserver::new(
        metrics.clone(),
        health.clone(),
        settings.topics.sources().into_iter().map(|(_, t)| t),
    );
    let mut source = match options.role {
        Role::GroupMember => KafkaSource::observed(settings, brokers, restored.as_ref(), observer)?,
        Role::CorrelationLeader => {
            let source = KafkaSource::all_partitions(settings, brokers, restored.as_ref())?;
            // Every partition holds the watermark back from the start, not
            // only once it has delivered: otherwise the first partition to
            // deliver would make the others' events late.
            detector.register_partitions(source.partitions());
            source
        }
    };
    let sink = KafkaSink::new(settings, brokers).await?;
    let mut committer = Committer {
        settings,
        sink: &sink,
        checkpoint: restored.unwrap_or_default(),
        metrics: &metrics,
        role: options.role,
    };
    let idle_wait = options
        .exit_when_idle
        .map(|d| d.min(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    let mut idle_for = Duration::ZERO;
    let mut seen_any = false;
    tracing::info!(brokers, rules = detector.engine().rules().count(), delivery = ?settings.kafka.delivery, "pipeline started");
    loop {
        if *stop.borrow() {
            health.set_stopping();
        }
        health.polled();
        let mut batch = source
            .next_batch(
                settings.batch.max_events,
                settings.batch.max_wait(),
                idle_wait,
                &mut stop,
            )
            .await;
        health.polled();
        if batch.messages.is_empty() {
            // No input: event time stands still, but wall-clock time still
            // advances the watermark of idle partitions, so the last
            // windows of a quiet stream close (see `correlate::watermark`).
            let span = tracing::info_span!(
                "tick",
                alerts = tracing::field::Empty,
                trace_id = tracing::field::Empty
            );
            let mut detections = detector.tick().instrument(span.clone()).await;
            if !detections.alerts.is_empty() || !detections.dead_letters.is_empty() {
                stamp_trace(&span, &mut detections);
                committer
                    .commit(
                        &source,
                        &detections,
                        &SourceBatch::default(),
                        &detector,
                        &stop,
                    )
                    .instrument(span)
                    .await?;
            }
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
        let messages = std::mem::take(&mut batch.messages);
        let mut detections = detector.process(messages).instrument(span.clone()).await;
        stamp_trace(&span, &mut detections);
        committer
            .commit(&source, &detections, &batch, &detector, &stop)
            .instrument(span.clone())
            .await?;
        metrics.batch_done(batch_messages, started.elapsed());
        tracing::debug!(
            alerts = detections.alerts.len(),
            dead_letters = detections.dead_letters.len(),
            "batch done"
        );
    }
    sink.flush();
    tracing::info!(summary = %metrics.summary(), "pipeline stopped");
    Ok(metrics)
}

/// Alerts name the trace of the batch (or tick) that produced them; the
/// span records the counts.
fn stamp_trace(span: &tracing::Span, detections: &mut Detections) {
    let trace_id = telemetry::trace_id(span);
    if let Some(id) = &trace_id {
        span.record("trace_id", id.as_str());
    }
    span.record("alerts", detections.alerts.len() as i64)
        .record("dead_letters", detections.dead_letters.len() as i64);
    for alert in &mut detections.alerts {
        alert.trace_id = trace_id.clone();
    }
}

/// Makes one batch's results durable: its output records, the checkpoint
/// and the consumer offsets, in the order (at-least-once) or the
/// transaction (exactly-once) the delivery mode requires.
struct Committer<'a> {
    settings: &'a Settings,
    sink: &'a KafkaSink,
    /// The checkpoint as of the last committed batch.
    checkpoint: Checkpoint,
    role: Role,
    metrics: &'a Metrics,
}

impl Committer<'_> {
    async fn commit(
        &mut self,
        source: &KafkaSource,
        detections: &Detections,
        batch: &SourceBatch,
        detector: &Detector,
        stop: &watch::Receiver<bool>,
    ) -> Result<()> {
        let settings = self.settings;
        let mut records = output_records(settings, detections);
        let correlator = detector.engine().correlator();
        // The checkpoint may say the batch was evaluated only together with
        // (at-least-once: after) the acknowledgement of its output.
        let mut checkpoint = self.checkpoint.clone();
        checkpoint.advance(&batch.next_offsets, correlator.emitted_watermarks());
        let retained = correlator.retained_offsets();
        let mut offsets = resume_offsets(&batch.next_offsets, &retained)?;
        if self.role == Role::CorrelationLeader {
            // No group to commit to: where to resume goes into the
            // checkpoint, which is delivered with (or after) the output.
            let resume = batch
                .next_offsets
                .iter()
                .map(|(key, next)| {
                    (
                        key.clone(),
                        retained.get(key).map_or(*next, |r| (*r).min(*next)),
                    )
                })
                .collect();
            checkpoint.set_resume(&resume);
            offsets = TopicPartitionList::new();
        }
        let checkpoint_record = OutRecord {
            topic: settings.topics.checkpoints.clone(),
            key: settings.kafka.group_id.clone(),
            payload: serde_json::to_string(&checkpoint).expect("checkpoints serialize"),
        };
        if self.sink.is_transactional() {
            records.push(checkpoint_record);
            deliver_transaction(self.sink, source, &records, &offsets, stop, self.metrics)
                .instrument(tracing::info_span!(
                    "deliver",
                    records = records.len() as i64,
                    transaction = true
                ))
                .await?;
            Metrics::add(&self.metrics.commits, 1);
        } else {
            deliver(self.sink, &records, stop, self.metrics)
                .instrument(tracing::info_span!(
                    "deliver",
                    records = records.len() as i64
                ))
                .await?;
            deliver(
                self.sink,
                std::slice::from_ref(&checkpoint_record),
                stop,
                self.metrics,
            )
            .instrument(tracing::info_span!(
                "deliver",
                records = 1,
                checkpoint = true
            ))
            .await?;
            match tracing::info_span!("commit").in_scope(|| source.commit_offsets(&offsets)) {
                Ok(()) => Metrics::add(&self.metrics.commits, 1),
                // Not data loss: the next successful commit covers these
                // offsets, or after a restart the batch is re-read (and, per
                // the checkpoint, only rebuilds state).
                Err(e) => {
                    Metrics::add(&self.metrics.commit_failures, 1);
                    tracing::warn!(error = %format!("{e:#}"), "offset commit failed");
                }
            }
        }
        self.checkpoint = checkpoint;
        for alert in &detections.alerts {
            self.metrics.alert_delivered(&alert.rule_id, alert.severity);
        }
        for dl in &detections.dead_letters {
            self.metrics.dead_letter_delivered(dl.kind);
        }
        Ok(())
    }
}

/// The records a batch's detections produce: alerts, dead letters, late
/// events, each to its topic.
fn output_records(settings: &Settings, detections: &Detections) -> Vec<OutRecord> {
    let mut records =
        Vec::with_capacity(detections.alerts.len() + detections.dead_letters.len() + 1);
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
        records.push(OutRecord {
            topic: topic.clone(),
            key: dl.key(),
            payload: dl.to_json(),
        });
    }
    records
}

/// Commit `records` and `offsets` in one transaction, retrying aborted
/// transactions while the broker refuses them (nothing is consumed
/// meanwhile). A fatal producer error (fenced by a newer instance) ends the
/// run: the restarted process resumes from the last committed transaction.
async fn deliver_transaction(
    sink: &KafkaSink,
    source: &KafkaSource,
    records: &[OutRecord],
    offsets: &TopicPartitionList,
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Fresh each attempt: after a rebalance the group generation
        // changed, and a commit with the old one is rejected (zombie
        // fencing, KIP-447).
        let group = source
            .group_metadata()
            .context("the consumer has no group metadata for a transactional offset commit")?;
        match sink.deliver_transaction(records, offsets, group).await {
            Ok(()) => {
                metrics.set_delivery_paused(false);
                return Ok(());
            }
            Err(TxnError::Fatal(e)) => {
                return Err(e).context("exactly-once delivery cannot continue; restart to resume from the last committed batch")
            }
            Err(TxnError::Retriable(e)) => {
                Metrics::add(&metrics.delivery_retries, 1);
                metrics.set_delivery_paused(true);
                tracing::error!(error = %format!("{e:#}"), "transaction aborted; retrying the batch, consumption paused");
                if *stop.borrow() {
                    return Err(e).context("stopping with an uncommitted batch: it will be re-consumed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Produce `records` and wait for their acknowledgement, retrying while the
/// broker refuses them. Nothing is consumed meanwhile (back-pressure). Gives
/// up only when asked to stop, without committing.
async fn deliver(
    sink: &KafkaSink,
    records: &[OutRecord],
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<()> {
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
