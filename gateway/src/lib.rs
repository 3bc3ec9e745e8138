//! wick's HTTP gateway: the Workers AI and OpenAI-compatible APIs in front
//! of the scheduler's gRPC `Generate`.
//!
//! A request flows through these modules in order:
//!
//! - [`routes`]: the router, API-key and metrics layers.
//! - [`body`]: content type, size limit and JSON parsing.
//! - [`schema`]: JSON Schema validation (`gateway/schema/*.json`) with
//!   messages naming the path and the rule.
//! - [`request`] and [`openai_request`]: schema-valid bodies to
//!   `GenerateRequest`, with the rules the schema leaves open.
//! - [`state`], [`generation`] and [`upstream`]: the call to the scheduler,
//!   its deadline, early errors and event reading.
//! - [`workers_ai`] and [`openai`]: response bodies and streaming shapes.
//! - [`sse`]: Server-Sent Events framing, keep-alive and `[DONE]`.
//! - [`error`]: the one mapping of errors to HTTP statuses and bodies.
//! - [`auth`], [`readiness`], [`metrics`]: API keys, `/healthz` and
//!   `/readyz`, Prometheus metrics.
//!
//! The `wick` binary builds a [`GatewayConfig`] from its flags and calls
//! [`run`]; tests call [`serve`] on a listener bound to port 0.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod generation;
pub mod metrics;
pub mod openai;
pub mod openai_request;
pub mod readiness;
pub mod request;
pub mod routes;
pub mod schema;
pub mod sse;
pub mod state;
pub mod upstream;
pub mod workers_ai;

use std::future::Future;
use std::net::SocketAddr;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

pub use config::GatewayConfig;
pub use error::{ApiError, Flavor};

/// Failures that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway setting {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("invalid scheduler URL {url:?}: {source}")]
    InvalidSchedulerUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("failed to bind the HTTP address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `config.http_addr` and serves until `shutdown` completes.
///
/// # Errors
/// [`GatewayError::Bind`] when the address cannot be bound, and the errors
/// of [`serve`].
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let addr = config.http_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })?;
    serve(listener, config, shutdown).await
}

/// Serves the gateway on `listener` until `shutdown` completes, then lets
/// open requests finish. Generations still running after
/// `config.shutdown_grace` end with an error. The scheduler is connected
/// lazily: when it is down, the gateway starts anyway and reports not
/// ready.
///
/// # Errors
/// [`GatewayError::InvalidConfig`] for a setting out of range,
/// [`GatewayError::InvalidSchedulerUrl`] for a malformed scheduler URL and
/// [`GatewayError::Serve`] when the server fails.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    config.validate()?;
    let scheduler =
        upstream::Scheduler::connect_lazy(&config.scheduler_url, config.connect_timeout)?;
    let scheduler_url = config.scheduler_url.clone();
    let grace = config.shutdown_grace;
    let state = state::AppState::new(config, scheduler);
    let poller = readiness::spawn_poller(state.clone());
    let app = routes::router(state.clone());

    let local_addr = listener.local_addr().ok();
    tracing::info!(addr = ?local_addr, scheduler = %scheduler_url, "gateway listening");
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    // Each SSE event is a small write; without TCP_NODELAY, Nagle's
    // algorithm delays it until the client's delayed ACK.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "failed to set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled.send(());
    });
    // Graceful shutdown waits for every open response, and an SSE stream
    // can run for minutes, so open generations are ended after the grace
    // period. Their clients get an error event or a 503.
    let cutter = tokio::spawn(async move {
        if on_signal.await.is_ok() {
            tokio::time::sleep(grace).await;
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "ending open generations at the end of the shutdown grace period"
            );
            state.close_generations();
        }
    });
    let result = server.await;
    cutter.abort();
    poller.abort();
    tracing::info!(addr = ?local_addr, "gateway stopped");
    result.map_err(GatewayError::Serve)
}
