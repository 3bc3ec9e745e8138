//! The OpenAI-compatible routes: `/v1/completions`,
//! `/v1/chat/completions` and `/v1/models`, also served under
//! `/client/v4/accounts/{account_id}/ai/v1/` as Workers AI does.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::Instrument;
use wick_proto::v1::{FinishReason, Finished, ToolCall};

use crate::error::{ApiError, Flavor};
use crate::openai_request::{self, OpenAiParsed};
use crate::sse::{StreamFormat, StreamLabels};
use crate::state::{self, log_error, AppState};
use crate::workers_ai::usage;

/// The two OpenAI generation endpoints, which differ only in shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Completion,
    Chat,
}

/// Handles `POST /v1/completions`.
pub async fn completions(
    state: State<AppState>,
    route: MatchedPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(Endpoint::Completion, state, route, headers, body).await
}

/// Handles `POST /v1/chat/completions`.
pub async fn chat_completions(
    state: State<AppState>,
    route: MatchedPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(Endpoint::Chat, state, route, headers, body).await
}

async fn handle(
    endpoint: Endpoint,
    State(state): State<AppState>,
    route: MatchedPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    let request_id = state.request_id(&headers);
    let outcome = async {
        let body = state.read_body(&headers, body, arrived).await?;
        let parsed = match endpoint {
            Endpoint::Completion => openai_request::completion(&body)?,
            Endpoint::Chat => openai_request::chat(&body)?,
        };
        let OpenAiParsed {
            parsed,
            model,
            include_usage,
        } = parsed;
        let shape = Shape::new(endpoint, &request_id, model, include_usage);
        let answer = state
            .generate(parsed, &request_id, &headers, arrived)
            .await?;
        Ok((answer, shape))
    };
    let span = state::request_span(&request_id, &headers);
    let outcome = outcome.instrument(span).await;
    let labels = StreamLabels {
        request_id,
        route: route.as_str().to_string(),
        started: arrived.into_std(),
    };
    state::respond(outcome, Flavor::OpenAi, labels, state.config.sse_keep_alive)
}

/// Handles `GET /v1/models`: every model id and alias the workers serve.
pub async fn models(State(state): State<AppState>) -> Response {
    match state
        .scheduler
        .list_models(state.config.request_timeout)
        .await
    {
        Ok(models) => {
            let entries = models.iter().flat_map(|model| {
                std::iter::once(&model.id).chain(&model.aliases).map(
                    |id| json!({"id": id, "object": "model", "created": 0, "owned_by": "wick"}),
                )
            });
            Json(json!({"object": "list", "data": entries.collect::<Vec<_>>()})).into_response()
        }
        Err(status) => {
            let error = ApiError::from_status(&status, "", state.config.retry_after_secs);
            log_error("", &error);
            error.into_response_for(Flavor::OpenAi)
        }
    }
}

/// The fields every response object of one request shares, and the state
/// of its chunk stream.
struct Shape {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Whether the chat stream already sent the chunk that names the role.
    role_sent: bool,
}

impl Shape {
    fn new(endpoint: Endpoint, request_id: &str, model: String, include_usage: bool) -> Self {
        let prefix = match endpoint {
            Endpoint::Completion => "cmpl",
            Endpoint::Chat => "chatcmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{request_id}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            model,
            include_usage,
            role_sent: false,
        }
    }

    fn object(&self, streaming: bool) -> &'static str {
        match (self.endpoint, streaming) {
            (Endpoint::Completion, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    /// Wraps `choices` in one streaming chunk.
    fn chunk(&self, choices: Value, model: &str) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": model,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }
}

impl StreamFormat for Shape {
    fn complete(&self, text: &str, finished: &Finished) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason(finished)})
            }
            Endpoint::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !finished.tool_calls.is_empty() {
                    message["tool_calls"] =
                        openai_tool_calls(&self.id, &finished.tool_calls, false);
                }
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(finished)})
            }
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": model_name(&self.model, finished),
            "choices": [choice],
            "usage": usage(finished),
        })
    }

    fn delta(&mut self, text: &str) -> Vec<Value> {
        let choice = match self.endpoint {
            Endpoint::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null})
            }
            Endpoint::Chat => {
                let mut delta = json!({"content": text});
                if !self.role_sent {
                    self.role_sent = true;
                    delta["role"] = json!("assistant");
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null})
            }
        };
        vec![self.chunk(json!([choice]), &self.model.clone())]
    }

    fn finished(&mut self, finished: &Finished) -> Vec<Value> {
        let model = model_name(&self.model, finished);
        let choice = match self.endpoint {
            Endpoint::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason(finished)})
            }
            Endpoint::Chat => {
                let mut delta = json!({});
                if !self.role_sent {
                    delta["role"] = json!("assistant");
                }
                if !finished.tool_calls.is_empty() {
                    delta["tool_calls"] = openai_tool_calls(&self.id, &finished.tool_calls, true);
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason(finished)})
            }
        };
        let mut chunks = vec![self.chunk(json!([choice]), &model)];
        if self.include_usage {
            let mut last = self.chunk(json!([]), &model);
            last["usage"] = usage(finished);
            chunks.push(last);
        }
        chunks
    }

    fn failed(&self, error: &ApiError) -> Value {
        error.body(Flavor::OpenAi)
    }
}

/// Returns the scheduler's model id when it sent one, else the requested
/// name.
fn model_name(requested: &str, finished: &Finished) -> String {
    if finished.model.is_empty() {
        requested.to_string()
    } else {
        finished.model.clone()
    }
}

fn finish_reason(finished: &Finished) -> &'static str {
    match FinishReason::try_from(finished.reason).unwrap_or(FinishReason::Unspecified) {
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Stop | FinishReason::Unspecified => "stop",
    }
}

/// Builds OpenAI tool calls, whose `arguments` is JSON text. Streaming chunks
/// also carry each call's `index`.
fn openai_tool_calls(response_id: &str, calls: &[ToolCall], streaming: bool) -> Value {
    let calls = calls.iter().enumerate().map(|(index, call)| {
        let mut value = json!({
            "id": format!("call_{index}_{response_id}"),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json},
        });
        if streaming {
            value["index"] = json!(index);
        }
        value
    });
    Value::Array(calls.collect())
}
