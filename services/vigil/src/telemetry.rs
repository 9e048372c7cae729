//! Logs and traces.
//!
//! Logs go to stderr (stdout carries alerts in the demo and replay): JSON
//! lines when stderr is not a terminal (a container), human-readable text on
//! a terminal; `log.format` overrides. `RUST_LOG` filters them (default
//! `info`).
//!
//! Traces: when an OTLP endpoint is configured (`tracing.otlp_endpoint` or
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported over
//! OTLP/gRPC in batches. The span tree of one micro-batch:
//!
//! ```text
//! batch                      (messages, alerts, dead_letters, trace_id)
//! ├── decode                 (source, messages, events, failures)  one per source
//! ├── rule                   (rule, source, matches)               one per per-event rule
//! ├── correlate              (alerts)                              correlation rules
//! │   └── rule               (rule, matches)                       one per correlation rule run
//! ├── deliver                (records)                             alerts + dead letters
//! ├── deliver                (records)                             the checkpoint
//! └── commit
//! ```
//!
//! The trace id of the `batch` span is written into every alert of the
//! batch ([`crate::alert::Alert::trace_id`]). The exporter's own failures
//! (collector unreachable) are reported by the OpenTelemetry SDK's internal
//! log and never block the pipeline: spans are queued and dropped when the
//! queue is full.
//!
//! The exported span filter is independent of `RUST_LOG`: spans of the
//! `vigil` crate at `info` and above are exported even when logs are set to
//! `warn`.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `[log]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text when it is.
    #[default]
    Auto,
    Json,
    Text,
}

impl LogFormat {
    /// Whether to write JSON, given whether stderr is a terminal.
    pub fn is_json(self, stderr_is_terminal: bool) -> bool {
        match self {
            LogFormat::Auto => !stderr_is_terminal,
            LogFormat::Json => true,
            LogFormat::Text => false,
        }
    }
}

/// `[tracing]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/gRPC endpoint (`http://otel-collector:4317`). Empty: use
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; if that is unset too, no export.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans (`OTEL_SERVICE_NAME` wins).
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "vigil".into()
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: String::new(),
            service_name: default_service_name(),
        }
    }
}

impl TracingSettings {
    /// The endpoint to export to: the configuration key, else the standard
    /// environment variable (passed in for tests), else none.
    pub fn endpoint(&self, env_endpoint: Option<String>) -> Option<String> {
        let configured = self.otlp_endpoint.trim();
        if !configured.is_empty() {
            return Some(configured.to_string());
        }
        env_endpoint
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
    }
}

/// Handle of the installed telemetry: flushes spans on [`Telemetry::shutdown`].
#[must_use = "call shutdown() before exiting so queued spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export queued spans and stop the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: flushing OpenTelemetry spans at exit failed: {e}");
            }
        }
    }
}

/// Install the global subscriber: logs per `log`, and OTLP export when
/// `tracing_settings` is given and names an endpoint (the offline tools
/// pass `None`: they export nothing). Must run inside a Tokio runtime (the
/// gRPC client needs one).
pub fn init(log: &LogSettings, tracing_settings: Option<&TracingSettings>) -> Result<Telemetry> {
    let endpoint = tracing_settings
        .and_then(|t| t.endpoint(std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()));
    let provider = match (&endpoint, tracing_settings) {
        (Some(endpoint), Some(t)) => Some(otlp_provider(endpoint, &t.service_name)?),
        _ => None,
    };
    // Not an `Option` layer: a `None` layer beside per-layer filters made
    // the subscriber drop events some `RUST_LOG` directives enable (seen
    // with `info,librdkafka=warn`: `pipeline started` never logged).
    let otel_layer = match provider.as_ref() {
        Some(p) => tracing_opentelemetry::layer()
            .with_tracer(p.tracer("vigil"))
            .with_filter(Targets::new().with_target("vigil", tracing::Level::INFO))
            .boxed(),
        None => tracing_subscriber::layer::Identity::new().boxed(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = if log.format.is_json(std::io::stderr().is_terminal()) {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer)
        .try_init()
        .context("installing the log subscriber")?;
    if let Some(endpoint) = endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

/// A tracer provider exporting to `endpoint` over OTLP/gRPC in batches.
fn otlp_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("creating the OTLP exporter for {endpoint}"))?;
    // OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, read by the default
    // resource detectors, override this name.
    let mut resource = Resource::builder().with_service_name(service_name.to_string());
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(name);
    }
    resource = resource.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The OpenTelemetry trace id of `span` (32 lowercase hex digits), or `None`
/// when the span is not exported (tracing disabled, or not sampled).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    (span_context.is_valid() && span_context.is_sampled())
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests;
