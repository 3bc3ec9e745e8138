//! Errors of the HTTP layer, and the one place that maps them to HTTP
//! statuses, Workers AI and OpenAI error bodies, and SSE error events.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use wick_proto::v1::error::Code as EventErrorCode;

/// The API a route belongs to, which fixes the shape of its error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `/ai/run/...`: the Workers AI envelope with numeric codes.
    WorkersAi,
    /// `/v1/...` and `.../ai/v1/...`: `{"error": {"message", "type", ...}}`.
    OpenAi,
}

impl Flavor {
    /// Picks the flavor from a request path, for layers that run before a
    /// handler (authentication, unknown routes).
    pub fn from_path(path: &str) -> Self {
        if path.starts_with("/v1/") || path.contains("/ai/v1/") {
            Flavor::OpenAi
        } else {
            Flavor::WorkersAi
        }
    }
}

/// A failed request, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON, fails the schema or breaks a rule of the
    /// API. `param` is the JSON pointer of the offending value, if any.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("unsupported content type {content_type:?}: send the body as JSON with Content-Type: application/json")]
    UnsupportedMediaType { content_type: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no such model {model:?}: {detail}")]
    ModelNotFound { model: String, detail: String },
    #[error("the model {model:?} does not serve the LoRA adapter {adapter:?}")]
    LoraNotServed { model: String, adapter: String },
    #[error("missing or invalid API key: send it as Authorization: Bearer KEY")]
    Unauthorized,
    #[error("the scheduler is out of capacity ({message}); retry after {retry_after_secs} s")]
    Overloaded {
        message: String,
        retry_after_secs: u32,
    },
    #[error(
        "no worker is ready to serve the request ({message}); retry after {retry_after_secs} s"
    )]
    Unavailable {
        message: String,
        retry_after_secs: u32,
    },
    #[error("request timed out before generation finished: {message}")]
    Timeout { message: String },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl ApiError {
    /// Builds an [`ApiError::InvalidRequest`] about the value at `pointer`.
    pub fn invalid(pointer: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(pointer.to_string()),
        }
    }

    /// Maps a gRPC status from the scheduler's `Generate` or `ListModels`.
    /// `model` is the model the request named, for the not-found message.
    pub fn from_status(status: &tonic::Status, model: &str, retry_after_secs: u32) -> Self {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ApiError::InvalidRequest {
                message,
                param: None,
            },
            tonic::Code::NotFound => ApiError::ModelNotFound {
                model: model.to_string(),
                detail: message,
            },
            tonic::Code::ResourceExhausted => ApiError::Overloaded {
                message,
                retry_after_secs: retry_after_from(status).unwrap_or(retry_after_secs),
            },
            tonic::Code::Unavailable => ApiError::Unavailable {
                message,
                retry_after_secs,
            },
            tonic::Code::DeadlineExceeded => ApiError::Timeout { message },
            _ => ApiError::Internal {
                message: format!("scheduler returned {:?}: {message}", status.code()),
            },
        }
    }

    /// Maps an `Error` event that ended a stream after it started.
    pub fn from_event(error: &wick_proto::v1::Error, retry_after_secs: u32) -> Self {
        let message = error.message.clone();
        match EventErrorCode::try_from(error.code).unwrap_or(EventErrorCode::Unspecified) {
            EventErrorCode::DeadlineExceeded => ApiError::Timeout { message },
            EventErrorCode::WorkerLost
            | EventErrorCode::ShuttingDown
            | EventErrorCode::NoWorker => ApiError::Unavailable {
                message,
                retry_after_secs,
            },
            EventErrorCode::Internal | EventErrorCode::Unspecified => {
                ApiError::Internal { message }
            }
        }
    }

    /// Returns the HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::LoraNotServed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Returns the HTTP status on a route of `flavor`. Workers AI returns
    /// 400 for an unknown model where OpenAI returns 404.
    pub fn status_for(&self, flavor: Flavor) -> StatusCode {
        match (self, flavor) {
            (ApiError::ModelNotFound { .. }, Flavor::WorkersAi) => StatusCode::BAD_REQUEST,
            _ => self.status(),
        }
    }

    /// Returns the numeric code of the Workers AI envelope. Codes 5000 (internal
    /// error) and 10000 (authentication) are not in Workers AI's error
    /// table; 10000 is the Cloudflare API's code for a bad token.
    pub fn workers_ai_code(&self) -> u32 {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::UnsupportedMediaType { .. } => 5006,
            ApiError::PayloadTooLarge { .. } => 3006,
            ApiError::ModelNotFound { .. } | ApiError::RouteNotFound { .. } => 5007,
            ApiError::LoraNotServed { .. } => 5005,
            ApiError::Unauthorized => 10000,
            ApiError::Overloaded { .. } | ApiError::Unavailable { .. } => 3040,
            ApiError::Timeout { .. } => 3007,
            ApiError::Internal { .. } => 5000,
        }
    }

    /// Returns the `type` and `code` strings of the OpenAI error object.
    fn openai_type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::InvalidRequest { .. } => ("invalid_request_error", "invalid_value"),
            ApiError::UnsupportedMediaType { .. } => {
                ("invalid_request_error", "unsupported_media_type")
            }
            ApiError::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            ApiError::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            ApiError::LoraNotServed { .. } => ("invalid_request_error", "lora_not_served"),
            ApiError::RouteNotFound { .. } => ("invalid_request_error", "unknown_url"),
            ApiError::Unauthorized => ("authentication_error", "invalid_api_key"),
            ApiError::Overloaded { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            ApiError::Unavailable { .. } => ("server_error", "service_unavailable"),
            ApiError::Timeout { .. } => ("timeout_error", "timeout"),
            ApiError::Internal { .. } => ("server_error", "internal_error"),
        }
    }

    /// Builds the JSON error body on a route of `flavor`. SSE error events
    /// carry the same object.
    pub fn body(&self, flavor: Flavor) -> Value {
        let message = self.to_string();
        match flavor {
            Flavor::WorkersAi => json!({
                "success": false,
                "result": null,
                "errors": [{"code": self.workers_ai_code(), "message": message}],
                "messages": [],
            }),
            Flavor::OpenAi => {
                let (kind, code) = self.openai_type_and_code();
                let param = match self {
                    ApiError::InvalidRequest { param, .. } => {
                        param.as_deref().map(pointer_to_param)
                    }
                    _ => None,
                };
                json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
            }
        }
    }

    fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ApiError::Overloaded {
                retry_after_secs, ..
            }
            | ApiError::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Renders the error as a complete HTTP response for `flavor`.
    pub fn into_response_for(self, flavor: Flavor) -> Response {
        let mut response = (self.status_for(flavor), axum::Json(self.body(flavor))).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// An error bound to the API flavor of the route that raised it, so that a
/// handler can return it with `?`.
#[derive(Debug)]
pub struct RouteError(pub Flavor, pub ApiError);

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        self.1.into_response_for(self.0)
    }
}

/// Turns a JSON pointer (`/messages/0/content`) into OpenAI's dotted
/// parameter form (`messages.0.content`).
fn pointer_to_param(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// Reads a `retry-after` value in seconds from the status metadata, where
/// the scheduler may suggest one.
fn retry_after_from(status: &tonic::Status) -> Option<u32> {
    status
        .metadata()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_status_differs_by_flavor() {
        let error = ApiError::from_status(&tonic::Status::not_found("no"), "m", 1);
        assert_eq!(error.status_for(Flavor::WorkersAi), StatusCode::BAD_REQUEST);
        assert_eq!(error.status_for(Flavor::OpenAi), StatusCode::NOT_FOUND);
        assert_eq!(error.workers_ai_code(), 5007);
    }

    #[test]
    fn resource_exhausted_maps_to_429() {
        let error = ApiError::from_status(&tonic::Status::resource_exhausted("full"), "", 3);
        assert_eq!(error.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.workers_ai_code(), 3040);
        let response = error.into_response_for(Flavor::WorkersAi);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn openai_param_is_dotted() {
        let body = ApiError::invalid("/messages/0/content", "bad").body(Flavor::OpenAi);
        assert_eq!(body["error"]["param"], "messages.0.content");
    }

    #[test]
    fn flavor_follows_path() {
        assert_eq!(Flavor::from_path("/v1/models"), Flavor::OpenAi);
        assert_eq!(
            Flavor::from_path("/client/v4/accounts/a/ai/v1/chat/completions"),
            Flavor::OpenAi
        );
        assert_eq!(
            Flavor::from_path("/ai/run/@cf/microsoft/phi-2"),
            Flavor::WorkersAi
        );
    }
}
