//! Streaming a generation as Server-Sent Events: one `data:` event per
//! text delta in the route's shape, a final event, then `data: [DONE]`,
//! with keep-alive comments while no text arrives.
//!
//! A failure after the headers went out becomes one event carrying the
//! route's error object, followed by `[DONE]`, and the stream closes.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use wick_proto::v1::Finished;

use crate::error::ApiError;
use crate::generation::{Chunk, Generation};
use crate::metrics::METRICS;

/// The response shapes of one API: the body of a complete response and
/// the event payloads of a streamed one.
pub trait StreamFormat: Send + 'static {
    /// Builds the body of a non-streaming response.
    fn complete(&self, text: &str, finished: &Finished) -> Value;
    /// Builds the payloads for a piece of new text.
    fn delta(&mut self, text: &str) -> Vec<Value>;
    /// Builds the payloads after the last text: finish reason, usage, tool
    /// calls.
    fn finished(&mut self, finished: &Finished) -> Vec<Value>;
    /// Builds the payload that reports a failure after the stream started.
    fn failed(&self, error: &ApiError) -> Value;
}

/// Identifies a stream in logs and metrics.
pub struct StreamLabels {
    pub request_id: String,
    pub route: String,
    /// When the HTTP request arrived.
    pub started: Instant,
}

/// Builds the SSE response for `generation`.
pub fn respond<F: StreamFormat>(
    generation: Generation,
    format: F,
    labels: StreamLabels,
    keep_alive: Duration,
) -> Response {
    let events = events(generation, format, labels);
    let keep_alive = KeepAlive::new().interval(keep_alive).text("keep-alive");
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    // nginx and similar proxies buffer responses unless this header is set.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Keeps the active-stream gauge and the duration metric right however the
/// stream ends, including when the client disconnects and the stream is
/// dropped half-read.
struct StreamGuard {
    labels: StreamLabels,
    first_text_sent: bool,
    completed: bool,
}

impl StreamGuard {
    fn new(labels: StreamLabels) -> Self {
        METRICS.active_streams.inc();
        Self {
            labels,
            first_text_sent: false,
            completed: false,
        }
    }

    fn record_first_text(&mut self) {
        if !self.first_text_sent {
            self.first_text_sent = true;
            let seconds = self.labels.started.elapsed().as_secs_f64();
            METRICS
                .time_to_first_byte
                .with_label_values(&[self.labels.route.as_str()])
                .observe(seconds);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        METRICS.active_streams.dec();
        let seconds = self.labels.started.elapsed().as_secs_f64();
        METRICS
            .duration
            .with_label_values(&[self.labels.route.as_str()])
            .observe(seconds);
        if !self.completed {
            tracing::debug!(request_id = %self.labels.request_id, "client disconnected; upstream stream dropped");
        }
    }
}

struct State<F> {
    generation: Generation,
    format: F,
    guard: StreamGuard,
}

fn events<F: StreamFormat>(
    generation: Generation,
    format: F,
    labels: StreamLabels,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let state = State {
        generation,
        format,
        guard: StreamGuard::new(labels),
    };
    stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let chunk = state.generation.next().await?;
        let payloads = match chunk {
            Chunk::Delta(text) => {
                state.guard.record_first_text();
                let payloads = state.format.delta(&text);
                return Some((to_events(payloads, false), Some(state)));
            }
            Chunk::Finished(finished) => state.format.finished(&finished),
            Chunk::Failed(error) => {
                tracing::warn!(request_id = %state.guard.labels.request_id, %error, "generation failed after the stream started");
                vec![state.format.failed(&error)]
            }
        };
        state.guard.completed = true;
        // Ending with `None` drops the state, and the guard, right after
        // the final events.
        Some((to_events(payloads, true), None))
    })
    .flat_map(stream::iter)
}

fn to_events(payloads: Vec<Value>, done: bool) -> Vec<Result<Event, Infallible>> {
    let mut events: Vec<_> = payloads
        .iter()
        .map(|payload| Ok(Event::default().data(payload.to_string())))
        .collect();
    if done {
        events.push(Ok(Event::default().data("[DONE]")));
    }
    events
}
