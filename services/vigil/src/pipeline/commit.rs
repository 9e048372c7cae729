//! The sink stage: makes each batch's output durable, then its progress
//! (see the delivery modes in [`super`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;
use tracing::Instrument;

use super::Role;
use crate::config::Settings;
use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::detect::{Detections, Detector};
use crate::kafka::{
    resume_offsets, Checkpoint, ConsumerHandle, KafkaSink, OutRecord, SourceBatch, TxnError,
};
use crate::metrics::Metrics;
use crate::stopping;

/// How long an offset commit may go unanswered before it counts as failed.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// How long a stopping service still tries to deliver a batch's output
/// (within the 60 s the deployment gives a stop; docs/alerts.md).
const STOP_DELIVERY_GRACE: Duration = Duration::from_secs(20);

/// Resolves [`STOP_DELIVERY_GRACE`] after `stop` turns true (never, if it
/// does not).
async fn grace_after_stop(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        // The sender is gone without a stop: nothing will ask for one.
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(STOP_DELIVERY_GRACE).await;
}

/// Makes each batch's results durable: its output records, the checkpoint
/// and the consumer offsets, in the order (at-least-once) or the
/// transaction (exactly-once) the delivery mode requires.
///
/// At-least-once, a batch's delivery runs as a task of its own
/// ([`InFlight`]) while the next batch is evaluated. One batch is in flight
/// at a time: the next one's delivery starts only after it has settled, so
/// no checkpoint is delivered before the alerts of every batch it covers.
pub(super) struct Committer<'a> {
    pub settings: &'a Settings,
    pub sink: &'a KafkaSink,
    /// The checkpoint as of the last prepared batch. A batch is prepared
    /// only after the one before it settled, and a failed delivery ends the
    /// run, so this is what the next checkpoint builds on.
    pub checkpoint: Checkpoint,
    pub role: Role,
    pub metrics: &'a Arc<Metrics>,
    pub stop: watch::Receiver<bool>,
    /// The first stage of `correlation.placement = "repartition"`: the
    /// repartition topic and its partition count.
    pub repartition: Option<(String, u32)>,
    /// Second stage, exactly-once: per repartition partition, the offset
    /// last committed under the current assignment. A tick's transaction
    /// commits them again with the emission metadata its alerts changed,
    /// so no alert is committed without what keeps it from being emitted
    /// again after a restart or a move.
    pub committed: BTreeMap<(String, i32), i64>,
    /// Second stage: where the lanes' state is changelogged and restored
    /// from.
    pub lane_state: Option<LaneState>,
}

/// Per repartition partition (`"topic/partition"`), how far each rule
/// emitted for it.
type EmittedByPartition = BTreeMap<String, BTreeMap<String, i64>>;

/// Where a second stage's lanes keep their state (first-seen state and
/// emission watermarks): partition `<p> % state_partitions` of
/// `topics.state` for repartition partition `<p>` (see `state::records`,
/// `state::emitted_records`).
pub(super) struct LaneState {
    pub base: rdkafka::ClientConfig,
    pub state_partitions: u32,
    /// Per repartition partition, the emission watermarks last written
    /// (only a change is written again).
    pub emitted_written: EmittedByPartition,
    /// Every source partition (`"topic/partition"`), announced to the
    /// lanes of each repartition partition assigned here.
    pub upstream: Vec<String>,
}

/// A batch's output, ready to deliver.
pub(super) struct Prepared {
    detections: Detections,
    /// Alerts, dead letters and late events.
    records: Vec<OutRecord>,
    /// First-seen state changes: delivered after `records`, so that no
    /// combination is stored as seen without its alert.
    state: Vec<OutRecord>,
    checkpoint: OutRecord,
    /// What to commit to the group once both are delivered.
    offsets: TopicPartitionList,
}

/// A batch being delivered by its own task (at-least-once): its records,
/// then its checkpoint, then its offsets commit.
pub(super) struct InFlight {
    delivery: tokio::task::JoinHandle<Result<()>>,
    detections: Detections,
    /// When its evaluation started and its message count, for the
    /// `batch_duration` metric (`None` for the output of a tick).
    batch: Option<(std::time::Instant, usize)>,
    /// Its number among the pending batches (see [`Metrics::batch_read`]).
    seq: Option<u64>,
}

#[cfg(test)]
impl InFlight {
    /// A batch (with no output) whose delivery is the task `delivery`.
    pub fn delivering(delivery: tokio::task::JoinHandle<Result<()>>) -> InFlight {
        InFlight {
            delivery,
            detections: Detections::default(),
            batch: None,
            seq: None,
        }
    }

    pub fn is_delivered(&self) -> bool {
        self.delivery.is_finished()
    }
}

/// How a delivery task ended.
pub(super) type DeliveryOutcome = std::result::Result<Result<()>, tokio::task::JoinError>;

impl InFlight {
    /// Wait for the delivery task to end (cancel safe: the task runs on
    /// whether or not this is awaited). Hand its outcome to
    /// [`Committer::settled`].
    pub async fn delivered(&mut self) -> DeliveryOutcome {
        (&mut self.delivery).await
    }
}

impl Committer<'_> {
    /// Deliver a batch's output and commit its offsets (through `consumer`,
    /// the one that read the batch) before returning. The batch in flight,
    /// if any, must have settled. A batch without offsets (a tick's
    /// output) needs no consumer.
    pub async fn commit(
        &mut self,
        consumer: Option<&ConsumerHandle>,
        detections: Detections,
        batch: &SourceBatch,
        detector: &Detector,
    ) -> Result<()> {
        let prepared = self.prepare(detections, batch, detector)?;
        if !self.sink.is_transactional() {
            let in_flight = self.start(consumer, prepared, tracing::Span::current(), None, None);
            return self.settle(Some(in_flight)).await;
        }
        let Prepared {
            detections,
            mut records,
            state,
            checkpoint,
            offsets,
        } = prepared;
        records.extend(state);
        records.push(checkpoint);
        deliver_transaction(
            self.sink,
            consumer,
            &records,
            &offsets,
            &self.stop,
            self.metrics,
        )
        .instrument(tracing::info_span!(
            "deliver",
            records = records.len() as i64,
            transaction = true
        ))
        .await?;
        Metrics::add(&self.metrics.commits, 1);
        // A tick's offsets are a batch's committed again: no progress.
        if offsets.count() > 0 && !batch.next_offsets.is_empty() {
            self.metrics.committed(offset_list(&offsets));
        }
        self.delivered(&detections);
        Ok(())
    }

    /// The group assignment changed: offsets committed under the old one
    /// are not this member's to commit again.
    pub fn reassigned(&mut self) {
        self.committed.clear();
        if let Some(lanes) = &mut self.lane_state {
            lanes.emitted_written.clear();
        }
    }

    /// The batch's records, its checkpoint and the offsets to commit. Reads
    /// the correlation state the batch left, so it runs right after the
    /// batch is evaluated, and after the batch before it settled.
    pub fn prepare(
        &mut self,
        mut detections: Detections,
        batch: &SourceBatch,
        detector: &Detector,
    ) -> Result<Prepared> {
        let settings = self.settings;
        // First: an event it cannot forward becomes a dead letter (an alert,
        // an alert of this batch).
        let repartitioned = match &self.repartition {
            Some((topic, partitions)) => repartition_records(
                topic,
                *partitions,
                settings.limits.max_record_bytes,
                &mut detections,
                self.metrics,
            ),
            None => Vec::new(),
        };
        let mut records = output_records(settings, &mut detections, self.metrics);
        records.extend(repartitioned);
        let mut state = super::state::records(
            &settings.topics.state,
            &settings.kafka.group_id,
            &std::mem::take(&mut detections.state_changes),
            self.lane_state.as_ref().map(|l| l.state_partitions),
        );
        // Second stage: how far each rule emitted for each partition, for
        // the offsets' metadata and the state topic.
        let emitted = detector
            .engine()
            .lanes()
            .map(|l| l.emitted_by_partition())
            .unwrap_or_default();
        if let Some(lanes) = &mut self.lane_state {
            state.extend(emitted_records(settings, lanes, &emitted));
        }
        // The checkpoint may say the batch was evaluated only together with
        // (at-least-once: after) the acknowledgement of its output.
        let mut checkpoint = self.checkpoint.clone();
        checkpoint.advance(&batch.next_offsets, detector.engine().emitted_watermarks());
        let retained = detector.engine().retained_offsets();
        let mut offsets = resume_offsets(self.next_offsets(batch), &retained)?;
        if self.role == Role::Correlating {
            if self.sink.is_transactional() {
                self.committed.extend(
                    offset_list(&offsets)
                        .into_iter()
                        .map(|(t, p, o)| ((t, p), o)),
                );
            }
            emission_metadata(&mut offsets, &emitted);
        }
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
        let checkpoint_record = OutRecord::new(
            &settings.topics.checkpoints,
            &settings.kafka.group_id,
            serde_json::to_string(&checkpoint).expect("checkpoints serialize"),
        );
        self.checkpoint = checkpoint;
        Ok(Prepared {
            detections,
            records,
            state,
            checkpoint: checkpoint_record,
            offsets,
        })
    }

    /// Where the batch ends per partition; for a tick of the second stage
    /// in exactly-once mode, where the last batches ended (see
    /// [`Committer::committed`]).
    fn next_offsets<'b>(&'b self, batch: &'b SourceBatch) -> &'b BTreeMap<(String, i32), i64> {
        let recommit = batch.next_offsets.is_empty()
            && self.role == Role::Correlating
            && self.sink.is_transactional();
        if recommit {
            &self.committed
        } else {
            &batch.next_offsets
        }
    }

    /// Start delivering a prepared batch (at-least-once) in a task of its
    /// own: its records, then its checkpoint, then the offsets commit.
    pub fn start(
        &self,
        consumer: Option<&ConsumerHandle>,
        prepared: Prepared,
        span: tracing::Span,
        batch: Option<(std::time::Instant, usize)>,
        seq: Option<u64>,
    ) -> InFlight {
        let (sink, stop, metrics) = (self.sink.clone(), self.stop.clone(), self.metrics.clone());
        let consumer = consumer.cloned();
        let Prepared {
            detections,
            records,
            state,
            checkpoint,
            offsets,
        } = prepared;
        let delivery = tokio::spawn(
            async move {
                let waiting = stopping::waiting("producing a batch's alerts, checkpoint and state");
                deliver(&sink, &records, &stop, &metrics)
                    .instrument(tracing::info_span!(
                        "deliver",
                        records = records.len() as i64
                    ))
                    .await?;
                if !state.is_empty() {
                    deliver(&sink, &state, &stop, &metrics)
                        .instrument(tracing::info_span!(
                            "deliver",
                            records = state.len() as i64,
                            state = true
                        ))
                        .await?;
                }
                deliver(&sink, std::slice::from_ref(&checkpoint), &stop, &metrics)
                    .instrument(tracing::info_span!(
                        "deliver",
                        records = 1,
                        checkpoint = true
                    ))
                    .await?;
                drop(waiting);
                // A synchronous commit blocks for a round trip: off the
                // async workers.
                let _waiting = stopping::waiting("committing a batch's offsets");
                let span = tracing::info_span!("commit");
                let progress = offset_list(&offsets);
                let commit = tokio::task::spawn_blocking(move || {
                    span.in_scope(|| {
                        if offsets.count() == 0 {
                            return anyhow::Ok(());
                        }
                        committing(consumer.as_ref())?.commit(&offsets)?;
                        Ok(())
                    })
                });
                // librdkafka's synchronous commit has no timeout of its own
                // (it waits for a group coordinator without end): one that
                // does not answer counts as failed, and the pipeline goes on.
                let committed = match tokio::time::timeout(COMMIT_WAIT, commit).await {
                    Ok(joined) => joined.context("the offset commit panicked")?,
                    Err(_) => Err(anyhow::anyhow!(
                        "no answer within {} s",
                        COMMIT_WAIT.as_secs()
                    )),
                };
                match committed {
                    Ok(()) => {
                        Metrics::add(&metrics.commits, 1);
                        if !progress.is_empty() {
                            metrics.committed(progress);
                        }
                    }
                    // Not data loss: the next successful commit covers
                    // these offsets, or after a restart the batch is
                    // re-read (and, per the checkpoint, only rebuilds
                    // state). So is an unanswered commit that completes
                    // after a later one: it moves the offset back.
                    Err(e) => {
                        Metrics::add(&metrics.commit_failures, 1);
                        tracing::warn!(error = %format!("{e:#}"), "offset commit failed");
                    }
                }
                Ok(())
            }
            .instrument(span),
        );
        InFlight {
            delivery,
            detections,
            batch,
            seq,
        }
    }

    /// Wait until the batch in flight, if any, is delivered and committed.
    pub async fn settle(&mut self, in_flight: Option<InFlight>) -> Result<()> {
        let Some(mut in_flight) = in_flight else {
            return Ok(());
        };
        let outcome = in_flight.delivered().await;
        self.settled(in_flight, outcome)
    }

    /// Account for a batch whose delivery task has ended with `outcome`
    /// (from [`InFlight::delivered`]): an error ends the pipeline.
    pub fn settled(&mut self, in_flight: InFlight, outcome: DeliveryOutcome) -> Result<()> {
        outcome.context("the delivery task panicked")??;
        self.delivered(&in_flight.detections);
        if let Some(seq) = in_flight.seq {
            self.metrics.batch_finished(seq);
        }
        if let Some((started, messages)) = in_flight.batch {
            self.metrics.batch_done(messages, started.elapsed());
            tracing::debug!(
                alerts = in_flight.detections.alerts.len(),
                dead_letters = in_flight.detections.dead_letters.len(),
                "batch done"
            );
        }
        Ok(())
    }

    fn delivered(&self, detections: &Detections) {
        for alert in &detections.alerts {
            self.metrics.alert_delivered(&alert.rule_id, alert.severity);
        }
        for dl in &detections.dead_letters {
            self.metrics.dead_letter_delivered(dl.kind);
        }
    }
}

/// Second stage: each committed repartition partition's offset carries how
/// far each rule emitted for it (JSON, rule id → watermark ns), so the
/// instance it moves to does not emit those windows again from a partial
/// re-read (`RuleLanes::assign`).
fn emission_metadata(offsets: &mut TopicPartitionList, emitted: &EmittedByPartition) {
    for element in offsets.elements().iter_mut() {
        let key = format!("{}/{}", element.topic(), element.partition());
        if let Some(e) = emitted.get(&key) {
            element.set_metadata(serde_json::to_string(e).expect("a map serializes"));
        }
    }
}

/// Second stage: the emission watermarks of each repartition partition
/// whose watermarks changed since they were last written, as state
/// records. The offsets' metadata carries them too, but a broker may drop
/// it (tansu 0.6 does, docs/reliability.md); a compacted topic keeps them.
/// Written with (at-least-once: after) the alerts they cover.
fn emitted_records(
    settings: &Settings,
    lanes: &mut LaneState,
    by_partition: &EmittedByPartition,
) -> Vec<OutRecord> {
    let mut records = Vec::new();
    for (partition, emitted) in by_partition {
        if emitted.is_empty() || lanes.emitted_written.get(partition) == Some(emitted) {
            continue;
        }
        let Some(p) = partition
            .rsplit_once('/')
            .and_then(|(_, p)| p.parse::<i32>().ok())
        else {
            continue;
        };
        records.push(super::state::emitted_record(
            &settings.topics.state,
            &settings.kafka.group_id,
            (p, lanes.state_partitions),
            emitted,
        ));
        lanes
            .emitted_written
            .insert(partition.clone(), emitted.clone());
    }
    records
}

/// The first stage's repartition records: each forwarded event to the
/// partition of its key, then the batch's marks to every partition (after
/// the events: a mark promises that the events before it were sent). An
/// event too large for the record limit is not forwarded: it becomes a
/// rule-error dead letter, delivered with the batch; an alert too large to
/// forward for folding is raised here, unfolded.
fn repartition_records(
    topic: &str,
    partitions: u32,
    limit: usize,
    detections: &mut Detections,
    metrics: &Metrics,
) -> Vec<OutRecord> {
    let routed = std::mem::take(&mut detections.routed);
    let mut records =
        Vec::with_capacity(routed.len() + detections.marks.len() * partitions as usize);
    for event in routed {
        if event.record.len() + event.rule.len() > limit {
            if let Some(alert) = event.alert {
                // Raised here, unfolded (and cut to the limit on delivery),
                // rather than lost.
                detections.alerts.push(*alert);
                continue;
            }
            detections.dead_letters.push(DeadLetter::rule_error(
                event.source,
                event.rule.to_string(),
                vec![event.origin.clone()],
                format!(
                    "an event of {} bytes is over limits.max_record_bytes and cannot be forwarded for correlation",
                    event.record.len()
                ),
                crate::detect::now_ns(),
            ));
            continue;
        }
        let partition = crate::forward::partition_of_key(&event.key, partitions);
        metrics.repartitioned(&event.rule, 1);
        records.push(OutRecord::to_partition(
            topic,
            partition,
            &*event.rule,
            event.record,
        ));
    }
    for (source_partition, event_time_ns) in std::mem::take(&mut detections.marks) {
        let mark = crate::forward::Forward::Mark {
            partition: source_partition.clone(),
            event_time_ns,
        };
        let payload = String::from_utf8(mark.encode(b"")).expect("a mark is JSON");
        for partition in 0..partitions as i32 {
            records.push(OutRecord::to_partition(
                topic,
                partition,
                &source_partition,
                payload.clone(),
            ));
        }
        metrics.repartition_marks(u64::from(partitions));
    }
    records
}

/// The records a batch's detections produce: alerts, dead letters, late
/// events, each to its topic, each within `limits.max_record_bytes` (see
/// `vigil_model::fit`: a record over the producer's or broker's limit would
/// be retried forever and stall the pipeline). An alert that cannot be
/// made to fit becomes a small `rule_error` dead letter naming it; the
/// detections are changed to match, so the metrics count what is sent.
fn output_records(
    settings: &Settings,
    detections: &mut Detections,
    metrics: &Metrics,
) -> Vec<OutRecord> {
    let limit = settings.limits.max_record_bytes;
    let mut records =
        Vec::with_capacity(detections.alerts.len() + detections.dead_letters.len() + 1);
    let mut unfit = Vec::new();
    detections.alerts.retain(|alert| {
        let key = alert.alert_id.clone();
        match alert.to_json_within(limit.saturating_sub(key.len())) {
            Ok(fitted) => {
                if fitted.cut {
                    metrics.record_cut("alert");
                }
                records.push(OutRecord::new(&settings.topics.alerts, key, fitted.json));
                true
            }
            Err(too_large) => {
                metrics.record_cut("alert_replaced");
                tracing::error!(alert_id = %alert.alert_id, rule = %alert.rule_id, error = %too_large, "an alert cannot fit the record limit; it goes to the dead-letter topic");
                unfit.push(DeadLetter::rule_error(
                    alert.source,
                    alert.rule_id.clone(),
                    alert.events.iter().map(|e| e.origin.clone()).collect(),
                    format!("{too_large} (alert id {})", alert.alert_id),
                    crate::detect::now_ns(),
                ));
                false
            }
        }
    });
    detections.dead_letters.extend(unfit);
    detections.dead_letters.retain(|dl| {
        let topic = match dl.kind {
            DeadLetterKind::LateEvent => &settings.topics.late_events,
            DeadLetterKind::DecodeError
            | DeadLetterKind::RuleError
            | DeadLetterKind::OutputError => &settings.topics.dead_letter,
        };
        let key = dl.key();
        match dl.to_json_within(limit.saturating_sub(key.len())) {
            Ok(fitted) => {
                if fitted.cut {
                    metrics.record_cut(match dl.kind {
                        DeadLetterKind::LateEvent => "late_event",
                        _ => "dead_letter",
                    });
                }
                records.push(OutRecord::new(topic, key, fitted.json));
                true
            }
            // Only with a limit of a few hundred bytes (validation refuses
            // less than 4096): nothing smaller is left to send.
            Err(too_large) => {
                tracing::error!(error = %too_large, "a dead letter cannot fit the record limit; dropped");
                false
            }
        }
    });
    records
}

/// Commit `records` and `offsets` in one transaction, retrying aborted
/// transactions while the broker refuses them (nothing is consumed
/// meanwhile). A fatal producer error (fenced by a newer instance) ends the
/// run: the restarted process resumes from the last committed transaction.
async fn deliver_transaction(
    sink: &KafkaSink,
    consumer: Option<&ConsumerHandle>,
    records: &[OutRecord],
    offsets: &TopicPartitionList,
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<()> {
    let _waiting = stopping::waiting("a transaction of a batch's alerts, checkpoint and offsets");
    let mut backoff = Duration::from_millis(100);
    loop {
        // Fresh each attempt: after a rebalance the group generation
        // changed, and a commit with the old one is rejected (zombie
        // fencing, KIP-447).
        let group =
            if offsets.count() == 0 {
                None
            } else {
                Some(committing(consumer)?.group_metadata().context(
                    "the consumer has no group metadata for a transactional offset commit",
                )?)
            };
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

/// `(topic, partition, offset)` of a list of offsets to commit.
fn offset_list(offsets: &TopicPartitionList) -> Vec<(String, i32, i64)> {
    offsets
        .elements()
        .iter()
        .filter_map(|e| {
            e.offset()
                .to_raw()
                .map(|o| (e.topic().to_string(), e.partition(), o))
        })
        .collect()
}

/// The consumer that commits a batch's offsets: only a batch without
/// offsets (a tick's output) comes without one.
fn committing(consumer: Option<&ConsumerHandle>) -> Result<&ConsumerHandle> {
    consumer.context("offsets to commit, but no consumer to commit them through")
}

/// Produce `records` and wait for their acknowledgement, retrying while the
/// broker refuses them. Nothing is consumed meanwhile (back-pressure). Gives
/// up only when asked to stop, without committing: after a round of
/// attempts fails, or [`STOP_DELIVERY_GRACE`] after the stop request,
/// whichever comes first (a round can take minutes: each attempt waits up
/// to librdkafka's `message.timeout.ms`).
async fn deliver(
    sink: &KafkaSink,
    records: &[OutRecord],
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<()> {
    loop {
        let delivered = tokio::select! {
            delivered = sink.deliver(records, 5) => delivered,
            () = grace_after_stop(stop.clone()) => {
                return Err(anyhow::anyhow!(
                    "stopping with undelivered output: not delivered within {} s of the stop request; its offsets were not committed and will be re-consumed",
                    STOP_DELIVERY_GRACE.as_secs()
                ));
            }
        };
        match delivered {
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
