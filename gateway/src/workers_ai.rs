//! The Workers AI routes: `POST /ai/run/{model}` and its account-scoped
//! twin, with the `{"result", "success", "errors", "messages"}` envelope
//! and `data: {"response": ...}` events.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::Instrument;
use wick_proto::v1::{Finished, ToolCall};

use crate::error::{ApiError, Flavor};
use crate::request;
use crate::sse::{StreamFormat, StreamLabels};
use crate::state::{self, AppState};

/// Handles `POST /ai/run/{*model}` and
/// `POST /client/v4/accounts/{account_id}/ai/run/{*model}`.
pub async fn run(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    route: MatchedPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    let request_id = state.request_id(&headers);
    let model = params.get("model").cloned().unwrap_or_default();
    let outcome = async {
        let body = state.read_body(&headers, body, arrived).await?;
        let parsed = request::workers_ai(&model, &body)?;
        let answer = state
            .generate(parsed, &request_id, &headers, arrived)
            .await?;
        Ok((answer, WorkersAiStream))
    };
    let span = state::request_span(&request_id, &headers);
    let outcome = outcome.instrument(span).await;
    let labels = StreamLabels {
        request_id,
        route: route.as_str().to_string(),
        started: arrived.into_std(),
    };
    state::respond(
        outcome,
        Flavor::WorkersAi,
        labels,
        state.config.sse_keep_alive,
    )
}

/// Builds the non-streaming success envelope.
fn complete_body(text: &str, finished: &Finished) -> Value {
    let mut result = json!({"response": text, "usage": usage(finished)});
    if !finished.tool_calls.is_empty() {
        result["tool_calls"] = tool_calls(&finished.tool_calls);
    }
    json!({"result": result, "success": true, "errors": [], "messages": []})
}

/// Builds the usage counts in the shape both APIs share.
pub fn usage(finished: &Finished) -> Value {
    let usage = finished.usage.unwrap_or_default();
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

/// Builds tool calls with `arguments` as a JSON object. The scheduler only reports
/// calls whose arguments parse as an object; anything else is kept as the
/// original text so no output is lost.
fn tool_calls(calls: &[ToolCall]) -> Value {
    let calls = calls.iter().map(|call| {
        let arguments = serde_json::from_str(&call.arguments_json)
            .unwrap_or_else(|_| Value::String(call.arguments_json.clone()));
        json!({"name": call.name, "arguments": arguments})
    });
    Value::Array(calls.collect())
}

/// Workers AI's event shapes.
struct WorkersAiStream;

impl StreamFormat for WorkersAiStream {
    fn complete(&self, text: &str, finished: &Finished) -> Value {
        complete_body(text, finished)
    }

    fn delta(&mut self, text: &str) -> Vec<Value> {
        vec![json!({"response": text})]
    }

    fn finished(&mut self, finished: &Finished) -> Vec<Value> {
        let mut last = json!({"response": "", "usage": usage(finished)});
        if !finished.tool_calls.is_empty() {
            last["tool_calls"] = tool_calls(&finished.tool_calls);
        }
        vec![last]
    }

    fn failed(&self, error: &ApiError) -> Value {
        error.body(Flavor::WorkersAi)
    }
}
