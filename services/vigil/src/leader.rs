//! Correlation across the instances of a consumer group
//! (`correlation.placement = "leader"`).
//!
//! A correlation rule needs every event of its key, but a consumer group
//! spreads the source partitions over the instances. With this placement,
//! every instance runs the per-event rules on the partitions the group
//! gives it, and exactly one instance, the leader, runs the correlation
//! rules over every partition of the source topics.
//!
//! Election: each instance is a member of the consumer group
//! `<group_id>-correlation-lease` on the one-partition topic
//! `topics.correlation_lease` (no records are ever written to it). The
//! member the group assigns that partition is the leader. When it dies, its
//! session expires, the group reassigns the partition, and the new leader
//! rebuilds the correlation state from the old leader's checkpoint
//! (checkpoint key `<group_id>-correlation`, which records where to resume
//! reading, per partition, and up to which watermark each rule emitted).
//! When an instance loses the partition without dying (a rebalance), it
//! finishes its batch and stops correlating; the brief overlap with the new
//! leader can produce an alert twice, with the same id (at-least-once).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;

use crate::config::Settings;
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::pipeline::{self, Role, RunOptions};
use crate::rules;

/// How often leadership is re-checked.
const LEASE_POLL: Duration = Duration::from_millis(500);

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
pub async fn run(settings: &Settings, brokers: &str, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Result<()> {
    let mut config = crate::kafka::base_config(&settings.kafka, brokers);
    config
        .set("group.id", format!("{}-correlation-lease", settings.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    crate::kafka::apply_properties(&mut config, &settings.kafka);
    let lease: Arc<StreamConsumer> = Arc::new(config.create().context("creating the correlation lease consumer")?);
    let topic = settings.topics.correlation_lease.as_str();
    lease.subscribe(&[topic]).with_context(|| format!("subscribing to the correlation lease topic {topic:?}"))?;
    let leader = leader_settings(settings);
    let mut stop_rx = stop.clone();
    while !*stop_rx.borrow() {
        if !holds_lease(&lease, &mut stop_rx).await {
            continue;
        }
        tracing::info!(topic, "correlation leadership acquired: correlating every source partition");
        if let Err(e) = term(settings, &leader, brokers, &metrics, &lease, &stop).await {
            // Logged now, not at exit: the per-event loop goes on meanwhile.
            // The next term starts from the last checkpoint.
            tracing::error!(error = %format!("{e:#}"), "correlation leader failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tracing::info!("correlation leadership ended");
    }
    Ok(())
}

/// One term as leader: compile the correlation rules, then run them over
/// every source partition until the process stops or the lease moves away.
async fn term(
    settings: &Settings,
    leader: &Settings,
    brokers: &str,
    metrics: &Arc<Metrics>,
    lease: &Arc<StreamConsumer>,
    stop: &watch::Receiver<bool>,
) -> Result<()> {
    {
        let (_, engine) =
            rules::load_split_rule_set(&settings.rules.dir, settings.rules.exceptions.as_deref(), settings.correlation.clone())
                .await
                .map_err(anyhow::Error::new)
                .context("compiling the correlation rules")?;
        let detector = Detector::new(engine, settings.limits.decode_limits(), metrics.clone()).without_input_reports();
        tracing::info!("correlation rules compiled; starting the leader's run loop");
        // The term ends when the process stops or the lease moves away.
        let (term_tx, term_rx) = watch::channel(false);
        let watcher = {
            let (lease, mut stop) = (lease.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    if *stop.borrow() || !holds_lease(&lease, &mut stop).await {
                        let _ = term_tx.send(true);
                        return;
                    }
                }
            })
        };
        let options = RunOptions { role: Role::CorrelationLeader, ..Default::default() };
        let result = pipeline::run(leader, brokers, detector, term_rx, options).await;
        watcher.abort();
        result.context("the correlation leader's run loop")?;
    }
    Ok(())
}

/// Drive the lease consumer for one poll interval; whether this instance
/// now holds the lease partition.
async fn holds_lease(lease: &StreamConsumer, stop: &mut watch::Receiver<bool>) -> bool {
    // Polling is what keeps this member in the group and runs rebalances;
    // no record ever arrives.
    tokio::select! {
        _ = lease.recv() => {}
        _ = tokio::time::sleep(LEASE_POLL) => {}
        _ = stop.changed() => {}
    }
    lease.assignment().map(|a| a.count() > 0).unwrap_or(false)
}
