//! The embedded demo: with no Kafka configured, `vigil run` starts
//! librdkafka's in-process mock broker, produces the bundled sample events
//! to the source topics, runs the real pipeline against it until the input
//! is drained, then reads the alerts and dead letters back from their topics
//! and prints them.
//!
//! Everything between the topics is the production code path; only the
//! broker is in-process. The mock broker keeps nothing after exit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::Settings;
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::pipeline::{self, RunOptions};
use crate::source::SourceKind;

/// Sample file (under the samples directory) of a source: named after
/// its default topic. A source without one produces no sample events.
pub fn sample_file(source: SourceKind) -> String {
    format!(
        "{}.jsonl",
        vigil_sources::registry::expect(source).default_topic
    )
}

/// What the demo read back from the output topics.
#[derive(Debug, Default)]
pub struct DemoOutput {
    pub alerts: Vec<String>,
    pub dead_letters: Vec<String>,
}

/// Run the demo. Alerts are printed to stdout as JSON lines.
pub async fn run_demo(
    settings: &Settings,
    samples: &Path,
    detector: Detector,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    health: Option<Arc<crate::health::Health>>,
) -> Result<(DemoOutput, Arc<Metrics>)> {
    let cluster = MockCluster::new(1).context("starting the embedded mock Kafka broker")?;
    let brokers = cluster.bootstrap_servers();
    tracing::info!(
        brokers,
        "embedded mock Kafka broker started (no kafka.brokers configured)"
    );
    for (_, topic) in settings.topics.sources() {
        cluster.create_topic(&topic, 1, 1)?;
    }
    cluster.create_topic(&settings.topics.alerts, 1, 1)?;
    cluster.create_topic(&settings.topics.dead_letter, 1, 1)?;
    cluster.create_topic(&settings.topics.late_events, 1, 1)?;
    cluster.create_topic(&settings.topics.checkpoints, 1, 1)?;
    cluster.create_topic(&settings.topics.state, 1, 1)?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("creating the demo producer")?;
    let mut produced = 0usize;
    for (source, topic) in settings.topics.sources() {
        let path = samples.join(sample_file(source));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic).payload(line),
                    Timeout::After(Duration::from_secs(10)),
                )
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("producing samples to {topic}"))?;
            produced += 1;
        }
    }
    if produced == 0 {
        bail!("no sample events found in {}", samples.display());
    }
    tracing::info!(events = produced, samples = %samples.display(), "sample events produced");

    let options = RunOptions {
        exit_when_idle: Some(Duration::from_secs(3)),
        health,
        ..Default::default()
    };
    let metrics = pipeline::run(settings, &brokers, detector, metrics, stop, options).await?;

    let output = DemoOutput {
        alerts: read_topic(&brokers, &settings.topics.alerts)?,
        dead_letters: read_topic(&brokers, &settings.topics.dead_letter)?,
    };
    drop(cluster);
    Ok((output, metrics))
}

/// Read every message of partition 0 of `topic`, from the beginning.
fn read_topic(brokers: &str, topic: &str) -> Result<Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vigil-demo-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < high && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    if (out.len() as i64) < high {
        bail!("read {} of {high} messages from {topic}", out.len());
    }
    Ok(out)
}
