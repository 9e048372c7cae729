//! Alert outputs (docs/outputs.md): Alertmanager, signed webhooks and
//! Kafka topics by severity or team, fed by their own consumer of the
//! alerts topic.
//!
//! The outputs' consumer group is not the detection pipeline's, so a slow
//! or failing endpoint delays only its own deliveries, never detection.
//! Per batch of alerts read: enrich each ([`enrich`]), deliver to every
//! output whose filter takes it (the outputs concurrently, each with its
//! retries), produce an `output_error` dead letter for each alert an
//! output gave up on and wait for the broker's acknowledgement, and only
//! then commit the batch's offsets. So every alert reaches each output
//! that takes it, or the dead-letter topic, at least once; the alert id is
//! the idempotency key. The same consumer keeps the console's window of
//! recent alerts ([`console`]).

pub mod alertmanager;
pub mod console;
mod consumer;
pub mod enrich;
pub mod filter;
pub mod kafka_route;
pub mod retry;
pub mod settings;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::dead_letter::DeadLetter;
use crate::kafka::{KafkaSink, OutRecord};
use crate::metrics::Metrics;
pub use consumer::{run, start};
use enrich::Routed;
use filter::Filter;
use retry::{AttemptError, DeliveryError};
use settings::{Endpoint, OutputSettings, RetrySettings};

/// Webhook requests (or Kafka records) in flight per output.
const CONCURRENCY: usize = 8;

/// What can stop the outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    /// A configuration key with a value that cannot work.
    #[error("invalid configuration: {key}: {why}")]
    Config { key: String, why: String },
    #[error("reading the rule pack for enrichment: {0}")]
    RulePack(String),
    #[error("building the HTTP client of output {output:?}: {source}")]
    HttpClient {
        output: String,
        source: reqwest::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::kafka::Error),
    #[error("the outputs' Kafka consumer: {0}")]
    Consumer(#[from] rdkafka::error::KafkaError),
    #[error(
        "stopping with undelivered dead letters of the outputs: their alerts will be read again"
    )]
    Undelivered,
}

/// One configured output.
pub struct Output {
    pub name: String,
    filter: Filter,
    retry: RetrySettings,
    sender: Sender,
}

enum Sender {
    Alertmanager(alertmanager::Alertmanager),
    Webhook(webhook::Webhook),
    Kafka(kafka_route::KafkaRoute),
}

/// An alert an output gave up on.
pub struct Failure<'a> {
    pub routed: &'a Routed,
    pub output: &'a str,
    pub error: DeliveryError,
}

impl Output {
    /// Build the output of `settings`, whose endpoint `endpoint` was
    /// validated; `sink` produces the Kafka outputs' records.
    pub fn new(
        settings: &OutputSettings,
        endpoint: Endpoint,
        sink: &KafkaSink,
    ) -> Result<Output, OutputsError> {
        let client = || {
            reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.retry.timeout_ms))
                .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|source| OutputsError::HttpClient {
                    output: settings.name.clone(),
                    source,
                })
        };
        let sender = match endpoint {
            Endpoint::Alertmanager {
                alerts_url,
                resolve_after,
            } => Sender::Alertmanager(alertmanager::Alertmanager {
                client: client()?,
                alerts_url,
                resolve_after,
            }),
            Endpoint::Webhook {
                url,
                secret,
                signature_header,
            } => Sender::Webhook(webhook::Webhook {
                client: client()?,
                url,
                secret,
                signature_header,
            }),
            Endpoint::Kafka {
                topic,
                unowned_team,
            } => Sender::Kafka(kafka_route::KafkaRoute {
                sink: sink.clone(),
                topic,
                unowned_team,
            }),
        };
        Ok(Output {
            name: settings.name.clone(),
            filter: settings.filter.clone(),
            retry: settings.retry.clone(),
            sender,
        })
    }

    /// Deliver the alerts of `batch` this output takes; return those it
    /// gave up on.
    pub async fn deliver<'a>(&'a self, batch: &'a [Routed], metrics: &Metrics) -> Vec<Failure<'a>> {
        let taken: Vec<&Routed> = batch
            .iter()
            .filter(|r| self.filter.accepts(&r.alert))
            .collect();
        if taken.is_empty() {
            return Vec::new();
        }
        let failures: Vec<(&Routed, DeliveryError)> = match &self.sender {
            // One request for the batch: Alertmanager takes a list.
            Sender::Alertmanager(am) => {
                match am.send(&taken, &self.retry, self.on_retry(metrics)).await {
                    Ok(()) => Vec::new(),
                    Err(e) => taken.iter().map(|r| (*r, e.clone())).collect(),
                }
            }
            Sender::Webhook(_) | Sender::Kafka(_) => {
                let mut sends = Vec::with_capacity(taken.len());
                for r in &taken {
                    sends.push(self.deliver_one(r, metrics));
                }
                futures::stream::iter(sends)
                    .buffer_unordered(CONCURRENCY)
                    .filter_map(std::future::ready)
                    .collect()
                    .await
            }
        };
        self.count(&taken, failures.len(), metrics);
        failures
            .into_iter()
            .map(|(routed, error)| Failure {
                routed,
                output: &self.name,
                error,
            })
            .collect()
    }

    fn on_retry<'m>(&'m self, metrics: &'m Metrics) -> impl FnMut(&AttemptError) + 'm {
        move |e| {
            tracing::warn!(output = %self.name, error = %e, "output delivery failed; retrying");
            metrics.output_retried(&self.name);
        }
    }

    /// One alert, with retries; `None` when delivered.
    async fn deliver_one<'r>(
        &self,
        r: &'r Routed,
        metrics: &Metrics,
    ) -> Option<(&'r Routed, DeliveryError)> {
        let on_retry = self.on_retry(metrics);
        let sent = match &self.sender {
            Sender::Alertmanager(am) => am.send(&[r], &self.retry, on_retry).await,
            Sender::Webhook(hook) => hook.send(r, &self.retry, on_retry).await,
            Sender::Kafka(route) => route.send(r, &self.retry, on_retry).await,
        };
        sent.err().map(|e| (r, e))
    }

    fn count(&self, taken: &[&Routed], failed: usize, metrics: &Metrics) {
        let delivered = taken.len() - failed;
        if delivered > 0 {
            let newest = taken
                .iter()
                .filter_map(|r| chrono::DateTime::parse_from_rfc3339(&r.alert.detected_at).ok())
                .max();
            let lag = newest.map_or(0.0, |t| {
                (chrono::Utc::now() - t.to_utc()).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics.output_delivered(&self.name, delivered as u64, lag);
        }
        for _ in 0..failed {
            metrics.output_failed(&self.name);
        }
    }
}

/// Every output, and where their failures go.
pub struct Outputs {
    pub outputs: Vec<Output>,
    pub enricher: enrich::Enricher,
    sink: KafkaSink,
    dead_letter_topic: String,
    metrics: Arc<Metrics>,
}

impl Outputs {
    pub fn new(
        outputs: Vec<Output>,
        enricher: enrich::Enricher,
        sink: KafkaSink,
        dead_letter_topic: String,
        metrics: Arc<Metrics>,
    ) -> Outputs {
        Outputs {
            outputs,
            enricher,
            sink,
            dead_letter_topic,
            metrics,
        }
    }

    /// Deliver `batch` to every output, then dead-letter what could not
    /// be delivered. Returns once every dead letter is acknowledged; gives
    /// up (an error, the batch uncommitted) only when `stop` is set while
    /// the dead-letter topic refuses them.
    pub async fn deliver(
        &self,
        batch: &[Routed],
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), OutputsError> {
        let per_output =
            futures::future::join_all(self.outputs.iter().map(|o| o.deliver(batch, &self.metrics)))
                .await;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let records: Vec<OutRecord> = per_output
            .into_iter()
            .flatten()
            .map(|f| {
                tracing::error!(output = f.output, alert_id = %f.routed.alert.alert_id, error = %f.error, "alert not delivered: dead-lettered");
                let reason = format!("output {}: {}", f.output, f.error);
                let dl = DeadLetter::output_error(&f.routed.alert, &f.routed.raw, f.output, reason, now);
                OutRecord::new(self.dead_letter_topic.clone(), dl.key(), dl.to_json())
            })
            .collect();
        self.dead_letter(&records, stop).await
    }

    async fn dead_letter(
        &self,
        records: &[OutRecord],
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), OutputsError> {
        if records.is_empty() {
            return Ok(());
        }
        loop {
            match self.sink.deliver(records, 5).await {
                Ok(()) => {
                    for _ in records {
                        self.metrics
                            .dead_letter_delivered(crate::dead_letter::DeadLetterKind::OutputError);
                    }
                    return Ok(());
                }
                Err(e) if *stop.borrow() => {
                    tracing::error!(error = %e, "dead letters of the outputs not delivered");
                    return Err(OutputsError::Undelivered);
                }
                Err(e) => {
                    tracing::error!(error = %e, "dead letters of the outputs not delivered; retrying")
                }
            }
        }
    }
}
