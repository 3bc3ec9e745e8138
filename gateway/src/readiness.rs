//! Liveness and readiness. Readiness is state: a background task calls the
//! scheduler's `grpc.health.v1` Check at a fixed interval, and
//! `GET /readyz` returns the last result.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// Starts the readiness poller; the caller aborts the task at shutdown.
pub fn spawn_poller(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(state.config.readiness_poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let check = state.scheduler.is_serving(&state.config.health_service);
            let ready = match tokio::time::timeout(state.config.connect_timeout, check).await {
                Ok(Ok(serving)) => serving,
                Ok(Err(status)) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "scheduler health check failed");
                    false
                }
                Err(_) => false,
            };
            let was_ready = state.ready.swap(ready, Ordering::Relaxed);
            if ready != was_ready {
                tracing::info!(ready, scheduler = %state.config.scheduler_url, "gateway readiness changed");
            }
        }
    })
}

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 while the scheduler reports a ready worker, else 503.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let reason = format!(
            "the scheduler at {} is unreachable or reports no ready worker",
            state.config.scheduler_url
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response()
    }
}
