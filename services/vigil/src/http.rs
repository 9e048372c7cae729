//! The operations HTTP server: `/metrics` (Prometheus text), `/healthz`
//! (liveness) and `/readyz` (readiness, see [`crate::health`]); with
//! `console.enabled`, the read-only alert console at `/console`
//! ([`crate::outputs::console`]).
//!
//! It serves only these read-only endpoints, binds the address of
//! `http.listen` (`""` disables it) and runs beside the pipeline on the same
//! runtime. A bind failure stops the service at start: probes and scrapes
//! would otherwise fail with no hint why.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::health::Health;
use crate::metrics::Metrics;

/// `[http]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port` to listen on; `""` disables the server. Use
    /// `127.0.0.1:9464` to serve only local clients.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `/readyz` fails when the consume loop has not polled the source for
    /// longer than this.
    #[serde(default = "default_ready_max_poll_gap_ms")]
    pub ready_max_poll_gap_ms: u64,
}

/// The default port: 9464, the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}
fn default_ready_max_poll_gap_ms() -> u64 {
    30_000
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: default_listen(),
            ready_max_poll_gap_ms: default_ready_max_poll_gap_ms(),
        }
    }
}

impl HttpSettings {
    /// The address to bind, `None` when disabled.
    pub fn address(&self) -> Result<Option<SocketAddr>> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen
            .parse()
            .map(Some)
            .with_context(|| format!("invalid configuration: http.listen {listen:?} is not an IP:port address (or \"\" to disable)"))
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router (separate from binding, for tests).
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(not) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", not.0.join("; ")),
        ),
    }
}

/// Bind `addr` and serve in a background task. Returns the bound address
/// (the real port when `addr` has port 0).
pub async fn start(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<SocketAddr> {
    start_with(addr, metrics, health, Router::new()).await
}

/// [`start`], also serving the routes of `extra` (the alert console).
pub async fn start_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    extra: Router,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the HTTP server (metrics, health) to {addr} (http.listen)")
    })?;
    let bound = listener
        .local_addr()
        .context("reading the HTTP server's address")?;
    let app = router(metrics, health).merge(extra);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP server (metrics, health) stopped");
        }
    });
    tracing::info!(addr = %bound, "HTTP server listening: /metrics /healthz /readyz");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        Metrics::add(&metrics.commits, 4);
        let addr = start(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            health.clone(),
        )
        .await
        .unwrap();
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.lines().any(|l| l == "vigil_commits_total 4"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("rules not loaded"), "{body}");
        health.set_rules_loaded(true);
        health.set_assigned(true);
        health.polled();
        assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));
        assert_eq!(get(addr, "/nope").await.0, 404);
    }

    #[test]
    fn listen_address_parses_or_disables() {
        let mut s = HttpSettings::default();
        assert_eq!(s.address().unwrap().unwrap().port(), 9464);
        s.listen = String::new();
        assert_eq!(s.address().unwrap(), None);
        s.listen = "localhost:80".into();
        assert!(format!("{:#}", s.address().unwrap_err()).contains("http.listen"));
    }
}
