//! The read stage: the source's messages, collected into micro-batches and
//! decoded, on their way to the evaluation.
//!
//! It runs as a task of its own. Each batch it collects is decoded on a
//! blocking thread and handed over at once, decoding or decoded, so the
//! next batches are read and decoded while one is evaluated: decoding is
//! about half of the per-event work, and this puts it on the cores the
//! evaluation leaves idle. The channel to the evaluation holds one batch,
//! so at most three batches are in memory (one evaluated, one waiting,
//! one read and waiting to be handed over) and at most two decode at
//! once; a slow evaluation or delivery holds consumption back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::detect::{DecodedInput, Decoder};
use crate::health::Health;
use crate::kafka::{ConsumerHandle, KafkaSource, SourceBatch};
use crate::metrics::Metrics;

/// What the read stage hands to the evaluation, in order.
pub(super) enum Read {
    /// A batch, decoded.
    Batch(Box<ReadBatch>),
    /// Nothing arrived within the idle wait (or the run is stopping).
    Idle,
    /// The source is about to leave its consumer group and join it again
    /// (see [`KafkaSource::rejoin_due`]). Nothing more is read until the
    /// answer: deliver and commit everything received so far, drop every
    /// [`ConsumerHandle`], then answer.
    Rejoin(oneshot::Sender<()>),
}

/// One batch from the source, decoded.
pub(super) struct ReadBatch {
    /// Where each partition's batch ends (its messages went to `input`).
    pub batch: SourceBatch,
    /// How many messages it held.
    pub messages: usize,
    /// Its decode, running on a blocking thread.
    pub input: tokio::task::JoinHandle<DecodedInput>,
    /// The span of its decode, evaluation and delivery.
    pub span: tracing::Span,
    /// The consumer that read it: its offsets are committed through it.
    pub consumer: ConsumerHandle,
    /// Its number in the pending batches of [`crate::metrics::Metrics`]
    /// (`vigil_uncommitted_read_age_seconds`), when they are tracked.
    pub seq: Option<u64>,
}

/// How the read stage cuts batches (`batch.*` settings).
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchLimits {
    pub max_events: usize,
    /// After a batch's first message, how long to wait for it to fill.
    pub max_wait: Duration,
    /// How long to wait for a first message before reporting
    /// [`Read::Idle`].
    pub idle_wait: Duration,
}

/// Start the read stage on `source`. It ends when `stop` turns true (after
/// handing over what it read) or when the receiver is dropped.
pub(super) fn spawn(
    source: KafkaSource,
    decoder: Decoder,
    limits: BatchLimits,
    stop: watch::Receiver<bool>,
    health: Arc<Health>,
    pending: Option<Arc<Metrics>>,
) -> (mpsc::Receiver<Read>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(read(source, decoder, limits, stop, health, pending, tx));
    (rx, task)
}

async fn read(
    mut source: KafkaSource,
    decoder: Decoder,
    limits: BatchLimits,
    stop: watch::Receiver<bool>,
    health: Arc<Health>,
    pending: Option<Arc<Metrics>>,
    tx: mpsc::Sender<Read>,
) {
    read_until_done(&mut source, decoder, limits, stop, health, pending, tx).await;
    close(source).await;
}

/// Close the source's consumer, which leaves its group: librdkafka blocks
/// for that (up to its request timeout, or without end: see
/// [`crate::stopping`]), so off the async workers, and waited for at most
/// [`CLOSE_WAIT`]. A handle still held elsewhere (a batch in flight, a
/// membership listing) closes it when that is dropped instead.
async fn close(source: KafkaSource) {
    let _waiting = crate::stopping::waiting("closing the consumer (leaving its group)");
    let closing = tokio::task::spawn_blocking(move || drop(source));
    match tokio::time::timeout(CLOSE_WAIT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the consumer panicked"),
        // Nothing read is lost: what was not committed is read again by
        // the partitions' next owner, once the group drops this member.
        Err(_) => tracing::warn!(
            wait_s = CLOSE_WAIT.as_secs(),
            "the consumer did not leave its group in time; going on without it"
        ),
    }
}

/// How long a stopping read stage waits for its consumer to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Read until `stop` turns true (after handing over what was read) or the
/// receiver is dropped.
async fn read_until_done(
    source: &mut KafkaSource,
    decoder: Decoder,
    limits: BatchLimits,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
    pending: Option<Arc<Metrics>>,
    tx: mpsc::Sender<Read>,
) {
    loop {
        if source.rejoin_due().await {
            let (answer, answered) = oneshot::channel();
            if tx.send(Read::Rejoin(answer)).await.is_err() || answered.await.is_err() {
                return;
            }
            source.rejoin().await;
        }
        health.polled();
        let mut batch = source
            .next_batch(
                limits.max_events,
                limits.max_wait,
                limits.idle_wait,
                &mut stop,
            )
            .await;
        health.polled();
        if batch.messages.is_empty() {
            let stopping = *stop.borrow();
            if tx.send(Read::Idle).await.is_err() || stopping {
                return;
            }
            continue;
        }
        let messages = std::mem::take(&mut batch.messages);
        let count = messages.len();
        let span = batch_span(count);
        let (in_span, decoder) = (span.clone(), decoder.clone());
        // Off the async workers: they run the evaluation and the deliveries.
        let input =
            tokio::task::spawn_blocking(move || in_span.in_scope(|| decoder.decode(messages)));
        let read = ReadBatch {
            batch,
            messages: count,
            input,
            span,
            consumer: source.handle(),
            seq: pending.as_ref().map(|m| m.batch_read()),
        };
        if tx.send(Read::Batch(Box::new(read))).await.is_err() {
            return;
        }
    }
}

/// The span of one batch: its decode, evaluation and delivery.
fn batch_span(messages: usize) -> tracing::Span {
    tracing::info_span!(
        "batch",
        messages = messages as i64,
        alerts = tracing::field::Empty,
        dead_letters = tracing::field::Empty,
        trace_id = tracing::field::Empty
    )
}
