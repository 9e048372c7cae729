//! Correlation across the instances of a consumer group
//! (`correlation.placement = "leader"`).
//!
//! A correlation rule needs every event of its key, but a consumer group
//! spreads the source partitions over the instances. With this placement,
//! every instance runs the per-event rules on the partitions the group
//! gives it, and exactly one instance, the leader, runs the correlation
//! rules over every partition of the source topics.
//!
//! Election ([`lease`]): by records on the one-partition topic
//! `topics.correlation_lease`, read in log order by every instance and
//! appended with plain produce requests: the first claim of a new term wins,
//! the holder renews every quarter of `correlation.lease_timeout_ms`, and
//! when it has not been heard for that long another instance claims the
//! next term. No consumer-group protocol is involved, so the election does
//! not depend on how a broker rebalances groups (tansu 0.6 did not reliably
//! hand a dead member's partitions to a survivor: see
//! [`crate::kafka::membership`]). The new leader rebuilds the correlation
//! state from the old leader's checkpoint (checkpoint key
//! `<group_id>-correlation`, which records where to resume reading, per
//! partition, and up to which watermark each rule emitted).
//!
//! When an instance stops leading without dying (it could not renew, or it
//! stops), it finishes its batch and stops correlating; the brief overlap
//! with the new leader can produce an alert twice, with the same id
//! (at-least-once). A leader that stops cleanly releases the lease, so the
//! next one takes over at once instead of after the timeout.

mod lease;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::config::Settings;
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::pipeline::{self, Role, RunOptions};
use crate::rules;

/// The settings of the leader's run loop: its own checkpoint key and, in
/// exactly-once mode, its own transactional id.
pub fn leader_settings(settings: &Settings) -> Settings {
    let mut s = settings.clone();
    s.kafka.transactional_id = Some(format!("{}-correlation", settings.kafka.transactional_id()));
    s.kafka.group_id = format!("{}-correlation", settings.kafka.group_id);
    s
}

/// Take part in the election until `stop`; run the correlation rules while
/// leader. Each term starts from the checkpoint with freshly compiled rules.
pub async fn run(
    settings: &Settings,
    brokers: &str,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let (leading_tx, mut leading) = watch::channel(None);
    let elector = {
        let (settings, brokers, stop) = (settings.clone(), brokers.to_string(), stop.clone());
        tokio::spawn(async move { lease::elect(&settings, &brokers, stop, leading_tx).await })
    };
    let leader = leader_settings(settings);
    let mut stop_rx = stop.clone();
    loop {
        tokio::select! {
            became = leading.wait_for(Option::is_some) => if became.is_err() { break }, // the elector ended
            _ = stop_rx.wait_for(|s| *s) => break,
        }
        let term = *leading.borrow();
        tracing::info!(
            term,
            "correlation leadership acquired: correlating every source partition"
        );
        if let Err(e) =
            term_as_leader(settings, &leader, brokers, &metrics, leading.clone(), &stop).await
        {
            // Logged now, not at exit: the per-event loop goes on meanwhile.
            // The next term starts from the last checkpoint.
            tracing::error!(error = %format!("{e:#}"), "correlation leader failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tracing::info!(term, "correlation leadership ended");
    }
    elector
        .await
        .context("the correlation leader election task")?
        .context("the correlation leader election")
}

/// One term as leader: compile the correlation rules, then run them over
/// every source partition until the process stops or the lease is lost.
async fn term_as_leader(
    settings: &Settings,
    leader: &Settings,
    brokers: &str,
    metrics: &Arc<Metrics>,
    mut leading: watch::Receiver<Option<u64>>,
    stop: &watch::Receiver<bool>,
) -> Result<()> {
    let (_, engine) =
        rules::load_split_rule_set(&settings.rules.layers(), settings.correlation.clone())
            .await
            .map_err(anyhow::Error::new)
            .context("compiling the correlation rules")?;
    let detector = Detector::new(engine, settings.limits.decode_limits(), metrics.clone())
        .with_audit_format(settings.topics.k8s_audit_format)
        .without_input_reports();
    tracing::info!("correlation rules compiled; starting the leader's run loop");
    // The term ends when the process stops or the lease is lost.
    let (term_tx, term_rx) = watch::channel(false);
    let watcher = {
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = leading.wait_for(Option::is_none) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            let _ = term_tx.send(true);
        })
    };
    let options = RunOptions {
        role: Role::CorrelationLeader,
        ..Default::default()
    };
    let result = pipeline::run(leader, brokers, detector, metrics.clone(), term_rx, options).await;
    watcher.abort();
    result.context("the correlation leader's run loop")?;
    Ok(())
}
