//! The streaming service: Kafka source → decode → evaluate → Kafka sink.
//!
//! Three stages, one batch at a time through each, in order:
//! 1. **read** ([`read`], a task of its own): collect a micro-batch from the
//!    source topics and decode it on a blocking thread, while the batch
//!    before it is evaluated;
//! 2. **evaluate** ([`Detector::evaluate`]): per-event and correlation
//!    rules;
//! 3. **sink** ([`commit`]): make the batch's output durable, then its
//!    progress:
//!    * at-least-once (default): produce its alerts and dead letters and
//!      wait for the broker's acks (retrying; while this fails nothing more
//!      is consumed: back-pressure), then the checkpoint, then commit the
//!      offsets. A crash in between re-delivers the batch: its alerts are
//!      produced again with the same deterministic ids. This runs as a task
//!      while the next batch is evaluated; the next batch's delivery starts
//!      only after it has settled, so at most one batch is in flight and
//!      while a delivery fails at most three more batches are read;
//!    * exactly-once (`kafka.delivery = "exactly_once"`): output, checkpoint
//!      and offsets in one Kafka transaction, before the next batch is
//!      evaluated. A crash aborts the open transaction; the restarted
//!      process redoes the batch. Each stage of the repartition placement
//!      has its own transactional producer; a second-stage tick commits
//!      its alerts with the repartition offsets and their emission
//!      metadata (see `commit::Committer::committed`).
//!
//! So an offset is committed only after (or atomically with) everything
//! its message caused. With no input, a wall-clock tick still advances the
//! watermark of idle partitions, so windows of a quiet stream close.
//!
//! The first-seen rules' state is changelogged to the state topic (see
//! [`state`]), after the batch's alerts and before its offsets, and read
//! back at start. Correlation state is not written anywhere: it is rebuilt
//! from the source topics. The committed offset is the lowest one still
//! retained, and the commit's metadata says how far per-event evaluation got and up to which
//! watermark each correlation rule has emitted (see
//! [`crate::kafka::Checkpoint`]), so a restart re-reads just enough to
//! rebuild open windows without re-emitting closed ones.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Settings;
use crate::detect::{Detections, Detector};
use crate::health::Health;
use crate::kafka::{checkpoint, ConsumerObserver, KafkaSink, KafkaSource, SourceBatch};
use crate::metrics::Metrics;
use crate::telemetry;
use commit::{Committer, DeliveryOutcome, InFlight};
use read::{BatchLimits, Read, ReadBatch};

mod commit;
mod read;
mod state;

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
    /// The second stage of `correlate::Placement::Repartition`: a member
    /// of the group `kafka.group_id` (the caller's settings name
    /// `<group_id>-correlate`) over `topics.repartition`.
    Correlating,
}

/// Run the service until `stop` turns true (or the idle exit).
///
/// On stop, the batch being collected is finished, its output delivered and
/// its offsets committed before returning; an output not delivered within
/// 20 s of the stop request ends the run with an error, uncommitted
/// (`commit::deliver`).
pub async fn run(
    settings: &Settings,
    brokers: &str,
    mut detector: Detector,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    options: RunOptions,
) -> Result<Arc<Metrics>> {
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
    // A first stage of the repartitioned placement keeps no first-seen
    // state of its own: the second stage's lanes do (restored per
    // partition as they are assigned, `follow_assignment`).
    let first_stage = options.role == Role::GroupMember
        && settings.correlation.placement == crate::correlate::Placement::Repartition;
    if !first_stage
        && detector
            .engine()
            .rules()
            .any(|r| r.meta.first_seen.is_some())
    {
        let restored = state::restore(
            &base,
            &settings.topics.state,
            &settings.kafka.group_id,
            &mut detector,
        )
        .await
        .context("restoring first-seen state")?;
        tracing::info!(
            records = restored.records,
            unknown_rule = restored.unknown_rule,
            unreadable = restored.unreadable,
            "first-seen state restored"
        );
    }
    let health = options.health.clone().unwrap_or_default();
    let sources = match options.role {
        // The kind is a placeholder: a repartition record names its own
        // source in its header (`Decoder::decode_forwarded`).
        Role::Correlating => vec![(
            crate::source::SourceKind::K8sAudit,
            settings.topics.repartition.clone(),
        )],
        _ => settings.topics.sources(),
    };
    let observer = ConsumerObserver::new(
        Arc::new(ServiceReport {
            metrics: metrics.clone(),
            health: health.clone(),
        }),
        sources.iter().map(|(_, t)| t.clone()),
    );
    let source = match options.role {
        Role::GroupMember | Role::Correlating => KafkaSource::observed(
            &settings.kafka,
            brokers,
            &sources,
            restored.as_ref(),
            observer,
        )?,
        Role::CorrelationLeader => {
            let source =
                KafkaSource::all_partitions(&settings.kafka, brokers, &sources, restored.as_ref())?;
            // Every partition holds the watermark back from the start, not
            // only once it has delivered: otherwise the first partition to
            // deliver would make the others' events late.
            detector.register_partitions(source.partitions());
            source
        }
    };
    let repartition = repartition_target(settings, &base, options.role).await?;
    if repartition.is_some() {
        detector.register_partitions(&source_partitions(&base, &sources).await?);
    }
    let mut outputs = settings.topics.outputs().to_vec();
    if let Some((topic, _)) = &repartition {
        outputs.push(topic);
    }
    let sink = KafkaSink::new(&settings.kafka, brokers, &outputs).await?;
    let lane_state = lane_state(settings, &base, options.role).await?;
    let mut committer = Committer {
        settings,
        sink: &sink,
        checkpoint: restored.unwrap_or_default(),
        metrics: &metrics,
        role: options.role,
        stop: stop.clone(),
        repartition: repartition.clone(),
        committed: Default::default(),
        lane_state,
    };
    let idle_wait = options
        .exit_when_idle
        .map(|d| d.min(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    let limits = BatchLimits {
        max_events: settings.batch.max_events,
        max_wait: settings.batch.max_wait(),
        idle_wait,
    };
    tracing::info!(brokers, rules = detector.engine().rules().count(), delivery = ?settings.kafka.delivery, "pipeline started");
    // Progress and what is pending are the group member's: the leader's
    // progress is in its checkpoints.
    let pending = (options.role == Role::GroupMember).then(|| metrics.clone());
    tracing::info!(role = ?options.role, repartition = ?repartition, "run loop starting");
    let (mut reads, reader) = read::spawn(
        source,
        detector.decoder(),
        limits,
        stop.clone(),
        health.clone(),
        pending,
    );
    let evaluated = evaluate(
        &mut reads,
        &mut detector,
        &mut committer,
        &stop,
        idle_wait,
        options.exit_when_idle,
    )
    .await;
    // The read stage ends on stop, or once nothing receives what it reads;
    // joined so that the consumer is closed (it leaves its group) before
    // this returns.
    drop(reads);
    reader.await.context("the read stage panicked")?;
    evaluated?;
    let _waiting = crate::stopping::waiting("flushing the producer");
    sink.flush();
    tracing::info!(summary = %metrics.summary(), "pipeline stopped");
    Ok(metrics)
}

/// Where the first stage of `correlation.placement = "repartition"`
/// forwards events: the repartition topic and its partition count (checked
/// at start: a missing topic is an error naming it). `None` for any other
/// placement or role.
async fn repartition_target(
    settings: &Settings,
    base: &rdkafka::ClientConfig,
    role: Role,
) -> Result<Option<(String, u32)>> {
    if role != Role::GroupMember
        || settings.correlation.placement != crate::correlate::Placement::Repartition
    {
        return Ok(None);
    }
    let (base, topic) = (base.clone(), settings.topics.repartition.clone());
    let count = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || crate::kafka::partition_count(&base, &topic))
            .await
            .context("looking up the repartition topic")??
    };
    Ok(Some((topic, count)))
}

/// A second stage: where its lanes' state is changelogged (the state
/// topic must exist; its partition count says which partition holds a
/// repartition partition's records).
async fn lane_state(
    settings: &Settings,
    base: &rdkafka::ClientConfig,
    role: Role,
) -> Result<Option<commit::LaneState>> {
    if role != Role::Correlating {
        return Ok(None);
    }
    let (config, topic) = (base.clone(), settings.topics.state.clone());
    let state_partitions =
        tokio::task::spawn_blocking(move || crate::kafka::state::partition_count(&config, &topic))
            .await
            .context("looking up the state topic")??;
    Ok(Some(commit::LaneState {
        base: base.clone(),
        state_partitions,
        emitted_written: Default::default(),
        upstream: source_partitions(base, &settings.topics.sources()).await?,
    }))
}

/// Every partition of the source topics, as `"topic/partition"`.
async fn source_partitions(
    base: &rdkafka::ClientConfig,
    sources: &[(crate::source::SourceKind, String)],
) -> Result<Vec<String>> {
    let mut all = Vec::new();
    for (_, topic) in sources {
        let (base, name) = (base.clone(), topic.clone());
        let count =
            tokio::task::spawn_blocking(move || crate::kafka::partition_count(&base, &name))
                .await
                .context("looking up a source topic")?;
        match count {
            Ok(count) => all.extend((0..count).map(|p| format!("{topic}/{p}"))),
            // The consumer waits for a missing source topic as before; its
            // partitions count for the lanes from their first marks.
            Err(crate::kafka::Error::MissingTopic { .. }) => {
                tracing::warn!(topic = %topic, "source topic not found: its partitions hold the correlation watermark only once read");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(all)
}

/// The evaluate stage: evaluate what the read stage hands over, in order,
/// and hand the output to the sink stage ([`Committer`]).
///
/// At-least-once, batch N's delivery runs while batch N+1 is evaluated;
/// batch N+1's starts once batch N's has settled.
async fn evaluate(
    reads: &mut tokio::sync::mpsc::Receiver<Read>,
    detector: &mut Detector,
    committer: &mut Committer<'_>,
    stop: &watch::Receiver<bool>,
    idle_wait: Duration,
    exit_when_idle: Option<Duration>,
) -> Result<()> {
    let mut idle_for = Duration::ZERO;
    let mut seen_any = false;
    let mut in_flight: Option<InFlight> = None;
    let mut assignment = None;
    // Second stage: the consumer of the last batch, whose group a tick's
    // emission is committed to (exactly-once, see `Committer::committed`).
    let mut last_consumer: Option<crate::kafka::ConsumerHandle> = None;
    loop {
        let read = match next_step(reads, &mut in_flight).await {
            Step::Delivered(delivered, outcome) => {
                committer.settled(*delivered, outcome)?;
                continue;
            }
            Step::Read(Some(read)) => read,
            Step::Read(None) => break,
        };
        let batch = match read {
            Read::Batch(batch) => batch,
            Read::Rejoin(answer) => {
                // The consumer leaves its group: first deliver and commit
                // what it read (the batch in flight holds its last handle).
                committer.settle(in_flight.take()).await?;
                if committer.role == Role::Correlating {
                    // A new member: its partitions are read again from
                    // their committed offsets and restored from their
                    // metadata, whichever instance owned them meanwhile.
                    last_consumer = None;
                    assignment = None;
                    detector.assigned(Default::default());
                    committer.reassigned();
                }
                let _ = answer.send(());
                continue;
            }
            Read::Idle => {
                // Nothing new: the batch in flight settles first, so the
                // tick's output is delivered after it, in order.
                committer.settle(in_flight.take()).await?;
                // No input: event time stands still, but wall-clock time
                // still advances the watermark of idle partitions, so the
                // last windows of a quiet stream close (see
                // `correlate::watermark`).
                let span = tracing::info_span!(
                    "tick",
                    alerts = tracing::field::Empty,
                    trace_id = tracing::field::Empty
                );
                if let Some(consumer) = &last_consumer {
                    // Only the lanes of partitions still owned may emit.
                    let current = consumer.assignments();
                    follow_assignment(consumer, current, &mut assignment, detector, committer)
                        .await?;
                }
                let waiting = crate::stopping::waiting("evaluating the rules on an idle tick");
                let mut detections = detector.tick().instrument(span.clone()).await;
                drop(waiting);
                if !detections.alerts.is_empty()
                    || !detections.dead_letters.is_empty()
                    || !detections.state_changes.is_empty()
                {
                    stamp_trace(&span, &mut detections);
                    committer
                        .commit(
                            last_consumer.as_ref(),
                            detections,
                            &SourceBatch::default(),
                            detector,
                        )
                        .instrument(span)
                        .await?;
                }
                if *stop.borrow() {
                    break;
                }
                idle_for += idle_wait;
                if let Some(limit) = exit_when_idle {
                    if seen_any && idle_for >= limit {
                        tracing::info!("no input for {limit:?}; stopping");
                        break;
                    }
                }
                continue;
            }
        };
        seen_any = true;
        idle_for = Duration::ZERO;
        let started = std::time::Instant::now();
        let ReadBatch {
            batch,
            messages,
            input,
            span,
            consumer,
            seq,
        } = *batch;
        if committer.role == Role::Correlating {
            follow_assignment(
                &consumer,
                batch.assignment,
                &mut assignment,
                detector,
                committer,
            )
            .await?;
            last_consumer = Some(consumer.clone());
        } else if committer.repartition.is_some() && assignment != Some(batch.assignment) {
            // A first stage with a new assignment: the lanes made since
            // hear of the partitions not read yet (see
            // `Detector::register_partitions`).
            assignment = Some(batch.assignment);
            detector.announce_partitions();
        }
        let waiting = crate::stopping::waiting("decoding and evaluating a batch");
        let input = input.await.context("the decode stage panicked")?;
        let mut detections = detector.evaluate(input).instrument(span.clone()).await;
        drop(waiting);
        if let (Some(seq), Some((earliest, _))) = (seq, detections.event_time_range) {
            committer.metrics.batch_event_time(seq, earliest);
        }
        stamp_trace(&span, &mut detections);
        // One delivery at a time, in order: the previous batch's first.
        committer.settle(in_flight.take()).await?;
        if committer.sink.is_transactional() {
            committer
                .commit(Some(&consumer), detections, &batch, detector)
                .instrument(span.clone())
                .await?;
            committer.metrics.batch_done(messages, started.elapsed());
            if let Some(seq) = seq {
                committer.metrics.batch_finished(seq);
            }
            tracing::debug!("batch done");
        } else {
            let prepared = committer.prepare(detections, &batch, detector)?;
            in_flight = Some(committer.start(
                Some(&consumer),
                prepared,
                span,
                Some((started, messages)),
                seq,
            ));
        }
    }
    committer.settle(in_flight.take()).await
}

/// Second stage: when the group assignment is no longer `known`, hand the
/// detector the new one. Each partition is read again from its committed
/// offset under it, and its lanes start from what was emitted for it and
/// from the first-seen state changelogged for it.
async fn follow_assignment(
    consumer: &crate::kafka::ConsumerHandle,
    current: u64,
    known: &mut Option<u64>,
    detector: &mut Detector,
    committer: &mut Committer<'_>,
) -> Result<()> {
    if *known == Some(current) {
        return Ok(());
    }
    let new = detector.assigned(assigned_emission(consumer).await?);
    committer.reassigned();
    *known = Some(current);
    let Some(lanes) = &committer.lane_state else {
        return Ok(());
    };
    detector.announce_upstream_to(&new, &lanes.upstream);
    let settings = committer.settings;
    let topic = &settings.topics.repartition;
    let partitions: Vec<i32> = new
        .iter()
        .filter_map(|p| {
            p.strip_prefix(topic.as_str())?
                .strip_prefix('/')?
                .parse()
                .ok()
        })
        .collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let restored = state::restore_lanes(
        &lanes.base,
        (&settings.topics.state, lanes.state_partitions),
        &settings.kafka.group_id,
        (topic, &partitions),
        detector,
    )
    .await
    .context("restoring the state of assigned repartition partitions")?;
    tracing::info!(
        ?partitions,
        records = restored.records,
        unknown_rule = restored.unknown_rule,
        unreadable = restored.unreadable,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state of assigned partitions restored"
    );
    Ok(())
}

/// The repartition partitions assigned to `consumer`, each with how far
/// each rule emitted for it (the metadata of its committed offset, see
/// [`commit::emission_metadata`]).
async fn assigned_emission(
    consumer: &crate::kafka::ConsumerHandle,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>> {
    let consumer = consumer.clone();
    let committed = tokio::task::spawn_blocking(move || consumer.committed_metadata())
        .await
        .context("reading the committed offsets panicked")??;
    let assigned = committed
        .into_iter()
        .map(|((topic, partition), metadata)| {
            let emitted = serde_json::from_str(&metadata).unwrap_or_else(|e| {
                if !metadata.is_empty() {
                    tracing::warn!(topic, partition, error = %e, "unreadable emission metadata on a committed offset: windows may be emitted again");
                }
                Default::default()
            });
            (format!("{topic}/{partition}"), emitted)
        })
        .collect();
    tracing::info!(?assigned, "repartition partitions assigned");
    Ok(assigned)
}

/// What the evaluate stage does next.
enum Step {
    /// The batch in flight was delivered (or its delivery failed).
    Delivered(Box<InFlight>, DeliveryOutcome),
    /// The read stage handed this over (`None`: it has ended).
    Read(Option<Read>),
}

/// Wait for the delivery in flight to end or for the next read, whichever
/// comes first (the delivery when both are ready). A delivery is accounted
/// (metrics, errors) as soon as it ends: a stream that pauses would
/// otherwise leave its last batch unaccounted until the read stage's next
/// idle tick.
async fn next_step(
    reads: &mut tokio::sync::mpsc::Receiver<Read>,
    in_flight: &mut Option<InFlight>,
) -> Step {
    let Some(delivering) = in_flight.as_mut() else {
        return Step::Read(reads.recv().await);
    };
    tokio::select! {
        biased;
        outcome = delivering.delivered() => {
            Step::Delivered(
                Box::new(in_flight.take().expect("a batch in flight")),
                outcome,
            )
        }
        read = reads.recv() => Step::Read(read),
    }
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

/// The consumer's assignment and lag, reported to the service's metrics
/// and readiness.
struct ServiceReport {
    metrics: Arc<Metrics>,
    health: Arc<crate::health::Health>,
}

impl crate::kafka::ConsumerReport for ServiceReport {
    fn consumer_lag(&self, lags: Vec<crate::kafka::PartitionOffsets>) {
        self.metrics.set_consumer_lag(lags);
    }

    fn assignment(&self, partitions: usize, joined: bool) {
        self.health.set_assigned(joined);
        self.metrics.set_assigned_partitions(partitions);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// The evaluate stage's next step, or a failure if it has not come
    /// within 30 s (the steps below are all ready at once; this bounds a
    /// hang, it measures nothing).
    async fn step(reads: &mut mpsc::Receiver<Read>, in_flight: &mut Option<InFlight>) -> Step {
        tokio::time::timeout(Duration::from_secs(30), next_step(reads, in_flight))
            .await
            .expect("the evaluate stage waits for nothing that is coming")
    }

    #[tokio::test]
    async fn a_delivery_is_accounted_when_it_ends_though_no_read_comes() {
        // The read stage is open and has nothing to hand over.
        let (_tx, mut reads) = mpsc::channel::<Read>(1);
        let mut in_flight = Some(InFlight::delivering(tokio::spawn(async { Ok(()) })));
        assert!(matches!(
            step(&mut reads, &mut in_flight).await,
            Step::Delivered(_, Ok(Ok(())))
        ));
        assert!(
            in_flight.is_none(),
            "the delivered batch is no longer in flight"
        );
    }

    #[tokio::test]
    async fn a_failed_delivery_is_reported_when_it_ends() {
        let (_tx, mut reads) = mpsc::channel::<Read>(1);
        let failing = tokio::spawn(async { Err(anyhow::anyhow!("the broker refused the alerts")) });
        let mut in_flight = Some(InFlight::delivering(failing));
        match step(&mut reads, &mut in_flight).await {
            Step::Delivered(_, Ok(Err(e))) => {
                assert_eq!(e.to_string(), "the broker refused the alerts")
            }
            _ => panic!("the failed delivery is the next step"),
        }
    }

    #[tokio::test]
    async fn a_read_is_taken_while_the_delivery_runs_on() {
        let (tx, mut reads) = mpsc::channel::<Read>(1);
        let (_release, released) = oneshot::channel::<()>();
        let delivery = tokio::spawn(async move {
            let _ = released.await;
            Ok(())
        });
        let mut in_flight = Some(InFlight::delivering(delivery));
        tx.send(Read::Idle).await.unwrap();
        assert!(matches!(
            step(&mut reads, &mut in_flight).await,
            Step::Read(Some(Read::Idle))
        ));
        assert!(in_flight.is_some(), "the delivery is still in flight");
    }

    #[tokio::test]
    async fn when_both_are_ready_the_delivery_is_accounted_first() {
        let (tx, mut reads) = mpsc::channel::<Read>(1);
        let delivered = InFlight::delivering(tokio::spawn(async { Ok(()) }));
        while !delivered.is_delivered() {
            tokio::task::yield_now().await;
        }
        let mut in_flight = Some(delivered);
        tx.send(Read::Idle).await.unwrap();
        assert!(matches!(
            step(&mut reads, &mut in_flight).await,
            Step::Delivered(_, Ok(Ok(())))
        ));
        assert!(matches!(
            step(&mut reads, &mut in_flight).await,
            Step::Read(Some(Read::Idle))
        ));
        drop(tx);
        assert!(matches!(
            step(&mut reads, &mut in_flight).await,
            Step::Read(None)
        ));
    }
}
