//! One streaming client request: posts a body, reads the Server-Sent Events
//! and records when text arrived and how many tokens the gateway counted.

use std::fmt;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Client, Url};
use serde_json::Value;
use tracing::debug;

/// Timings and size of one request that streamed to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// Time to first token: from sending the request to the first event
    /// carrying text (or to the first event at all when none carries text).
    pub ttft: Duration,
    /// From sending the request to `data: [DONE]`.
    pub e2e: Duration,
    /// `usage.completion_tokens` of the final event. One event may carry
    /// several tokens, so this is not the number of events.
    pub output_tokens: u64,
    /// Gaps between consecutive events carrying text.
    pub inter_token_gaps: Vec<Duration>,
}

/// Cause of a request that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// The gateway returned this non-success HTTP status.
    Status(u16),
    /// No connection could be made.
    Connect,
    /// The request did not end within the time limit.
    Timeout,
    /// The response started but its stream was not a complete one.
    Stream(StreamFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamFailure {
    /// An event carried `error` or a non-empty `errors`.
    ErrorEvent,
    /// An event's data was neither JSON nor `[DONE]`.
    InvalidEvent,
    /// The connection ended before `data: [DONE]`.
    NoDone,
    /// `[DONE]` came without an earlier event carrying
    /// `usage.completion_tokens`.
    MissingUsage,
    /// Reading the body failed.
    Transport,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(code) => write!(f, "http {code}"),
            Failure::Connect => f.write_str("connect failed"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Stream(StreamFailure::ErrorEvent) => f.write_str("stream error event"),
            Failure::Stream(StreamFailure::InvalidEvent) => f.write_str("stream invalid event"),
            Failure::Stream(StreamFailure::NoDone) => f.write_str("stream ended before [DONE]"),
            Failure::Stream(StreamFailure::MissingUsage) => f.write_str("stream missing usage"),
            Failure::Stream(StreamFailure::Transport) => f.write_str("stream read failed"),
        }
    }
}

/// Sends one streaming request and waits for its end, at most `timeout`.
///
/// Returns the request's timings, or the [`Failure`] that ended it.
pub async fn send(
    client: &Client,
    endpoint: &Url,
    body: &Value,
    timeout: Duration,
) -> Result<Completed, Failure> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, stream_request(client, endpoint, body, started)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn stream_request(
    client: &Client,
    endpoint: &Url,
    body: &Value,
    started: Instant,
) -> Result<Completed, Failure> {
    let response = client
        .post(endpoint.clone())
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(body)
        .send()
        .await
        .map_err(|error| {
            debug!(%error, "request failed before a response");
            if error.is_connect() {
                Failure::Connect
            } else {
                Failure::Stream(StreamFailure::Transport)
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }

    let mut events = response.bytes_stream().eventsource();
    let mut timing = StreamTiming::default();
    let mut output_tokens = None;
    while let Some(event) = events.next().await {
        let event = event.map_err(|error| {
            debug!(%error, "stream read failed");
            Failure::Stream(StreamFailure::Transport)
        })?;
        let arrived = started.elapsed();
        if event.data.trim() == "[DONE]" {
            let output_tokens =
                output_tokens.ok_or(Failure::Stream(StreamFailure::MissingUsage))?;
            return Ok(timing.finish(arrived, output_tokens));
        }
        let payload: Value = serde_json::from_str(&event.data)
            .map_err(|_| Failure::Stream(StreamFailure::InvalidEvent))?;
        if is_error_event(&payload) {
            return Err(Failure::Stream(StreamFailure::ErrorEvent));
        }
        let has_text = payload
            .get("response")
            .and_then(Value::as_str)
            .is_some_and(|text| !text.is_empty());
        timing.record_event(arrived, has_text);
        if let Some(count) = payload
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            output_tokens = Some(count);
        }
    }
    Err(Failure::Stream(StreamFailure::NoDone))
}

fn is_error_event(payload: &Value) -> bool {
    let has_errors = payload
        .get("errors")
        .and_then(Value::as_array)
        .is_some_and(|errors| !errors.is_empty());
    let has_error = payload.get("error").is_some_and(|error| !error.is_null());
    has_errors || has_error
}

/// Arrival times of a stream's events, as offsets from sending the request.
#[derive(Debug, Default)]
struct StreamTiming {
    first_event: Option<Duration>,
    first_text: Option<Duration>,
    last_text: Option<Duration>,
    inter_token_gaps: Vec<Duration>,
}

impl StreamTiming {
    fn record_event(&mut self, arrived: Duration, has_text: bool) {
        self.first_event.get_or_insert(arrived);
        if !has_text {
            return;
        }
        self.first_text.get_or_insert(arrived);
        if let Some(last) = self.last_text {
            self.inter_token_gaps.push(arrived - last);
        }
        self.last_text = Some(arrived);
    }

    fn finish(self, done: Duration, output_tokens: u64) -> Completed {
        Completed {
            ttft: self.first_text.or(self.first_event).unwrap_or(done),
            e2e: done,
            output_tokens,
            inter_token_gaps: self.inter_token_gaps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn timing_counts_text_events_only() {
        let mut timing = StreamTiming::default();
        timing.record_event(ms(5), false);
        timing.record_event(ms(20), true);
        timing.record_event(ms(30), true);
        timing.record_event(ms(45), true);
        timing.record_event(ms(50), false);
        let completed = timing.finish(ms(51), 7);
        assert_eq!(completed.ttft, ms(20));
        assert_eq!(completed.e2e, ms(51));
        assert_eq!(completed.output_tokens, 7);
        assert_eq!(completed.inter_token_gaps, vec![ms(10), ms(15)]);
    }

    #[test]
    fn timing_without_text_uses_first_event() {
        let mut timing = StreamTiming::default();
        timing.record_event(ms(8), false);
        assert_eq!(timing.finish(ms(9), 1).ttft, ms(8));
        assert_eq!(StreamTiming::default().finish(ms(9), 0).ttft, ms(9));
    }

    #[test]
    fn error_events_detected() {
        assert!(is_error_event(
            &serde_json::json!({"errors": [{"code": 3007}]})
        ));
        assert!(is_error_event(&serde_json::json!({"error": "worker lost"})));
        assert!(!is_error_event(
            &serde_json::json!({"response": "a", "errors": []})
        ));
        assert!(!is_error_event(
            &serde_json::json!({"response": "a", "error": null})
        ));
    }
}
