//! The gateway's client of the scheduler: a lazily connected gRPC channel
//! for `Generate`, `ListModels` and the standard health check.

use std::time::Duration;

use axum::http::HeaderMap;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use wick_proto::trace_context;
use wick_proto::v1::generation_client::GenerationClient;
use wick_proto::v1::{GenerateEvent, GenerateRequest, ListModelsRequest, ModelInfo};

use crate::GatewayError;

/// The W3C trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// A handle on the scheduler; cheap to clone, all clones share one channel.
#[derive(Clone, Debug)]
pub struct Scheduler {
    generation: GenerationClient<Channel>,
    health: HealthClient<Channel>,
}

impl Scheduler {
    /// Creates the channel without connecting, so a scheduler that is down
    /// at start only makes the gateway report not ready.
    ///
    /// # Errors
    /// [`GatewayError::InvalidSchedulerUrl`] when `url` is not a valid URI.
    pub fn connect_lazy(url: &str, connect_timeout: Duration) -> Result<Self, GatewayError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|source| GatewayError::InvalidSchedulerUrl {
                url: url.to_string(),
                source,
            })?
            .connect_timeout(connect_timeout);
        let channel = endpoint.connect_lazy();
        Ok(Self {
            generation: GenerationClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }

    /// Starts a generation. `deadline` is sent as the gRPC timeout.
    ///
    /// The call carries the current span's trace context, so the
    /// scheduler's span is a child of the gateway's request span. When no
    /// context is propagated (trace export off), the caller's own trace
    /// headers from `headers` are forwarded unchanged instead.
    ///
    /// # Errors
    /// The scheduler's status when it rejects the request before streaming.
    pub async fn generate(
        &self,
        request: GenerateRequest,
        headers: &HeaderMap,
        deadline: Instant,
    ) -> Result<Streaming<GenerateEvent>, tonic::Status> {
        let mut call = tonic::Request::new(request);
        call.set_timeout(deadline.saturating_duration_since(Instant::now()));
        if !trace_context::inject_metadata(&tracing::Span::current(), call.metadata_mut()) {
            copy_trace_headers(headers, call.metadata_mut());
        }
        let response = self.generation.clone().generate(call).await?;
        Ok(response.into_inner())
    }

    /// Lists the models the connected workers serve, waiting at most
    /// `timeout`.
    ///
    /// # Errors
    /// The scheduler's status, UNAVAILABLE when it cannot be reached, or
    /// DEADLINE_EXCEEDED past `timeout`.
    pub async fn list_models(&self, timeout: Duration) -> Result<Vec<ModelInfo>, tonic::Status> {
        let mut request = tonic::Request::new(ListModelsRequest {});
        request.set_timeout(timeout);
        let mut client = self.generation.clone();
        let call = client.list_models(request);
        let response = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("ListModels timed out"))??;
        Ok(response.into_inner().models)
    }

    /// Returns whether the scheduler reports `service` as SERVING.
    ///
    /// # Errors
    /// The status of a failed check (UNAVAILABLE when unreachable,
    /// NOT_FOUND when the scheduler does not know `service`).
    pub async fn is_serving(&self, service: &str) -> Result<bool, tonic::Status> {
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        let response = self.health.clone().check(request).await?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    }
}

/// Returns the trace context the HTTP caller sent, as the parent of the
/// gateway's request span.
pub fn caller_trace_context(headers: &HeaderMap) -> opentelemetry::Context {
    let mut metadata = MetadataMap::new();
    copy_trace_headers(headers, &mut metadata);
    trace_context::extract_metadata(&metadata)
}

/// Copies the W3C trace context headers that are valid metadata values.
fn copy_trace_headers(headers: &HeaderMap, metadata: &mut MetadataMap) {
    for name in TRACE_HEADERS {
        let value = headers.get(name).and_then(|value| value.to_str().ok());
        if let Some(value) = value.and_then(|value| MetadataValue::try_from(value).ok()) {
            metadata.insert(name, value);
        }
    }
}

/// Finds a model by id or alias; an empty name selects the first model,
/// as the scheduler selects its default model for an empty name.
pub fn find_model<'a>(models: &'a [ModelInfo], name: &str) -> Option<&'a ModelInfo> {
    if name.is_empty() {
        return models.first();
    }
    models
        .iter()
        .find(|model| model.id == name || model.aliases.iter().any(|alias| alias == name))
}
