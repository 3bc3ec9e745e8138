//! The router: every route, and the layers around them.

use axum::extract::Request;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::{ApiError, Flavor};
use crate::state::AppState;
use crate::{auth, metrics, openai, readiness, workers_ai};

/// Builds the gateway's router over `state`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/ai/run/{*model}", post(workers_ai::run))
        .route(
            "/client/v4/accounts/{account_id}/ai/run/{*model}",
            post(workers_ai::run),
        )
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route(
            "/client/v4/accounts/{account_id}/ai/v1/completions",
            post(openai::completions),
        )
        .route(
            "/client/v4/accounts/{account_id}/ai/v1/chat/completions",
            post(openai::chat_completions),
        )
        .route(
            "/client/v4/accounts/{account_id}/ai/v1/models",
            get(openai::models),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));

    Router::new()
        .merge(api)
        .route("/healthz", get(readiness::healthz))
        .route("/readyz", get(readiness::readyz))
        .route("/metrics", get(metrics::serve_metrics))
        .fallback(route_not_found)
        .layer(middleware::from_fn(metrics::track))
        .with_state(state)
}

async fn route_not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    let error = ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: path.clone(),
    };
    error.into_response_for(Flavor::from_path(&path))
}
