//! State shared by all handlers, and the steps every generation route
//! takes: request id, LoRA check, start, then stream or collect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use wick_proto::trace_context;
use wick_proto::v1::Finished;

use crate::body::read_json;
use crate::config::GatewayConfig;
use crate::error::{ApiError, Flavor};
use crate::generation::{self, CallLimits, Generation};
use crate::request::Parsed;
use crate::sse::{self, StreamFormat, StreamLabels};
use crate::upstream::{caller_trace_context, Scheduler};

/// Maximum length of a client-sent `x-request-id` that is kept. Longer ones
/// are replaced, so logs and traces stay readable.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Handler state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    pub scheduler: Scheduler,
    /// Whether the last health check found the scheduler serving.
    pub ready: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
    /// Set to true when the shutdown grace period is over, which ends every
    /// open generation.
    closing: Arc<watch::Sender<bool>>,
    /// Start time of the process in nanoseconds, so generated ids differ
    /// between gateway replicas and restarts.
    id_prefix: u64,
}

/// The result of a generation, in the form the client requested.
pub enum Answer {
    Stream(Box<Generation>),
    Complete { text: String, finished: Finished },
}

impl AppState {
    pub fn new(config: GatewayConfig, scheduler: Scheduler) -> Self {
        let id_prefix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Self {
            config: Arc::new(config),
            scheduler,
            ready: Arc::new(AtomicBool::new(false)),
            next_id: Arc::new(AtomicU64::new(0)),
            closing: Arc::new(watch::Sender::new(false)),
            id_prefix,
        }
    }

    /// Ends every open generation with an error, so their responses finish
    /// and the server can stop.
    pub fn close_generations(&self) {
        self.closing.send_replace(true);
    }

    /// Returns the client's `x-request-id` when it is short printable
    /// ASCII, otherwise a new id unique to this process.
    pub fn request_id(&self, headers: &HeaderMap) -> String {
        let client_id = headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok());
        match client_id {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_REQUEST_ID_LEN
                    && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                id.to_string()
            }
            _ => {
                let sequence = self.next_id.fetch_add(1, Ordering::Relaxed);
                format!("{:x}-{sequence}", self.id_prefix)
            }
        }
    }

    /// Reads the request body as JSON within the request deadline, so a
    /// client that sends its body slowly cannot hold a connection forever.
    ///
    /// # Errors
    /// The errors of [`read_json`], and [`ApiError::Timeout`] past the
    /// deadline.
    pub async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
        arrived: Instant,
    ) -> Result<Value, ApiError> {
        let deadline = arrived + self.config.request_timeout;
        let read = read_json(headers, body, self.config.max_body_bytes);
        tokio::time::timeout_at(deadline, read)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::Timeout {
                    message: "the request body did not arrive in time".to_string(),
                })
            })
    }

    /// Runs a parsed request: checks its LoRA adapter, starts it on the
    /// scheduler and, unless it streams, waits for the whole response.
    ///
    /// # Errors
    /// Every failure before streaming starts, or during a non-streaming
    /// generation, as an [`ApiError`].
    pub async fn generate(
        &self,
        parsed: Parsed,
        request_id: &str,
        headers: &HeaderMap,
        arrived: Instant,
    ) -> Result<Answer, ApiError> {
        let Parsed {
            mut request,
            stream,
        } = parsed;
        request.request_id = request_id.to_string();
        let retry_after_secs = self.config.retry_after_secs;
        let limits = CallLimits {
            deadline: arrived + self.config.request_timeout,
            early_error_window: self.config.sse_keep_alive,
            retry_after_secs,
        };
        if !request.lora.is_empty() {
            generation::check_lora(&self.scheduler, &request.model, &request.lora, limits).await?;
        }
        tracing::debug!(request_id, model = %request.model, stream, "sending to scheduler");
        let generation = generation::start(
            &self.scheduler,
            request,
            headers,
            limits,
            self.closing.subscribe(),
        )
        .await?;
        if stream {
            return Ok(Answer::Stream(Box::new(generation)));
        }
        let (text, finished) = generation.collect().await?;
        Ok(Answer::Complete { text, finished })
    }
}

/// Creates the span of one HTTP generation request, parented on the trace
/// context in the caller's headers when it sent one.
pub fn request_span(request_id: &str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("request", request_id = %request_id);
    trace_context::set_parent(&span, caller_trace_context(headers));
    span
}

/// Logs an error returned to the client: client mistakes at debug, and
/// failures of the gateway or the cluster at warn.
pub fn log_error(request_id: &str, error: &ApiError) {
    if error.status().is_server_error() {
        tracing::warn!(request_id, %error, "request failed");
    } else {
        tracing::debug!(request_id, %error, "request rejected");
    }
}

/// Turns the outcome of a generation route into its HTTP response: a JSON
/// body, an SSE stream in `format`'s shapes, or the error in `flavor`'s
/// shape.
pub fn respond<F: StreamFormat>(
    outcome: Result<(Answer, F), ApiError>,
    flavor: Flavor,
    labels: StreamLabels,
    keep_alive: std::time::Duration,
) -> Response {
    let request_id = HeaderValue::from_str(&labels.request_id).ok();
    let mut response = match outcome {
        Ok((Answer::Complete { text, finished }, format)) => {
            Json(format.complete(&text, &finished)).into_response()
        }
        Ok((Answer::Stream(generation), format)) => {
            sse::respond(*generation, format, labels, keep_alive)
        }
        Err(error) => {
            log_error(&labels.request_id, &error);
            error.into_response_for(flavor)
        }
    };
    // Echoed so a client can quote the id that the logs and traces carry.
    if let Some(request_id) = request_id {
        response.headers_mut().insert("x-request-id", request_id);
    }
    response
}
