//! Vigil: streaming SIEM detection for Kubernetes.
//!
//! The pipeline reads as source → decode → evaluate → sink:
//!
//! * [`source`]: the kinds of event stream and where a message came from;
//!   [`kafka`] consumes them from Kafka.
//! * [`decode`]: raw JSON messages → Arrow record batches in the declared
//!   [`schema`] of their source; undecodable messages become dead letters.
//! * [`rules`]: SQL rules with a metadata header, planned once with
//!   DataFusion and evaluated per micro-batch into [`alert`]s.
//! * [`kafka`]: alerts and dead letters produced back to Kafka; offsets
//!   committed only after they are acknowledged ([`pipeline`]).
//!
//! [`leader`] elects the instance that runs the correlation rules when
//! several share a consumer group.
//!
//! [`replay`] runs decode and evaluate over a file without Kafka;
//! [`embedded`] runs the whole service against an in-process broker.
//! [`gen`] generates realistic synthetic events with injected attacks
//! (the benchmarks, `benchmarks/` at the repository root, run on them).
//!
//! Operations: [`metrics`] (Prometheus registry), [`health`] (readiness),
//! [`http`] (the `/metrics`, `/healthz`, `/readyz` server) and
//! [`telemetry`] (logs, OpenTelemetry traces); [`stopping`] reports what
//! a slow stop waits for.
//!
//! [`outputs`] delivers the alerts topic to Alertmanager, webhooks and
//! Kafka topics by severity or team, with its own consumer group.

pub mod cli;
pub mod config;
pub mod embedded;
pub mod gen;
pub mod health;
pub mod http;
pub use vigil_kafka as kafka;
pub mod leader;
pub mod metrics;
pub mod outputs;
pub mod pipeline;
pub mod reload;
pub mod repartition;
pub mod replay;
pub mod stopping;
pub mod telemetry;

// The data model lives in its own crate (no DataFusion, no tokio); its
// modules keep their paths here.
pub use vigil_model::{alert, dead_letter, forward, source};
// Schemas and decoders: the sources crate.
pub use vigil_sources::{decode, registry, schema};
// The detection engine.
pub use vigil_engine::{correlate, detect, functions, observe, rules};
