//! One generation from the HTTP handlers' side: starting it on the
//! scheduler, reading its events as [`Chunk`]s under the request deadline,
//! and collecting them for a non-streaming response.

use std::time::Duration;

use axum::http::HeaderMap;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tonic::Streaming;
use wick_proto::v1::generate_event::Event;
use wick_proto::v1::{Finished, GenerateEvent, GenerateRequest};

use crate::error::ApiError;
use crate::upstream::{find_model, Scheduler};

/// A piece of a generation as a handler receives it.
#[derive(Debug)]
pub enum Chunk {
    /// New text, never empty.
    Delta(String),
    /// The generation ended normally; this is the last chunk.
    Finished(Finished),
    /// The generation failed after it started; this is the last chunk.
    Failed(ApiError),
}

/// A started generation. Dropping it drops the gRPC stream, which cancels
/// the request on the scheduler; that is how a client disconnect reaches
/// the scheduler.
pub struct Generation {
    /// An event read ahead while the handler still could respond with an
    /// HTTP error status.
    first: Option<GenerateEvent>,
    events: Streaming<GenerateEvent>,
    deadline: Instant,
    retry_after_secs: u32,
    /// Becomes true when the gateway's shutdown grace period is over, which
    /// ends the generation with an error.
    closing: watch::Receiver<bool>,
    done: bool,
}

/// Settings that shape one generation call.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    pub deadline: Instant,
    /// How long to wait for the first event before responding anyway, so an
    /// early rejection still gets its HTTP status.
    pub early_error_window: Duration,
    pub retry_after_secs: u32,
}

/// Sends `request` to the scheduler and waits briefly for its first event.
///
/// # Errors
/// Every failure known before the first text arrives: a rejection status
/// (invalid argument, unknown model, queue full, no worker after
/// retries), an error event as first event, or the deadline.
pub async fn start(
    scheduler: &Scheduler,
    request: GenerateRequest,
    headers: &HeaderMap,
    limits: CallLimits,
    closing: watch::Receiver<bool>,
) -> Result<Generation, ApiError> {
    let model = request.model.clone();
    let retry = limits.retry_after_secs;
    let mut events = call_with_retries(scheduler, request, headers, limits.deadline)
        .await
        .map_err(|status| ApiError::from_status(&status, &model, retry))?;

    let window = limits
        .early_error_window
        .min(limits.deadline.saturating_duration_since(Instant::now()));
    let first = match timeout(window, events.message()).await {
        Err(_) => None,
        Ok(Err(status)) => return Err(ApiError::from_status(&status, &model, retry)),
        Ok(Ok(None)) => return Err(early_end_error()),
        Ok(Ok(Some(GenerateEvent {
            event: Some(Event::Error(error)),
        }))) => {
            return Err(ApiError::from_event(&error, retry));
        }
        Ok(Ok(Some(event))) => Some(event),
    };
    Ok(Generation {
        first,
        events,
        deadline: limits.deadline,
        retry_after_secs: retry,
        closing,
        done: false,
    })
}

/// Delays before each new attempt of a `Generate` call that failed with
/// UNAVAILABLE. A scheduler that restarts, or that waits for its first
/// worker, is back within a few hundred milliseconds.
const UNAVAILABLE_RETRY_DELAYS: [Duration; 2] =
    [Duration::from_millis(200), Duration::from_millis(600)];

/// Calls `Generate`, and calls it again after UNAVAILABLE, which the
/// scheduler returns before it queues anything, so no request runs twice.
async fn call_with_retries(
    scheduler: &Scheduler,
    request: GenerateRequest,
    headers: &HeaderMap,
    deadline: Instant,
) -> Result<Streaming<GenerateEvent>, tonic::Status> {
    let mut delays = UNAVAILABLE_RETRY_DELAYS.iter();
    loop {
        let call = scheduler.generate(request.clone(), headers, deadline);
        let status = match timeout_at(deadline, call).await {
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(
                    "the gateway's request timeout passed",
                ))
            }
            Ok(Ok(events)) => return Ok(events),
            Ok(Err(status)) => status,
        };
        let retry_at = delays.next().map(|delay| Instant::now() + *delay);
        match retry_at {
            Some(retry_at) if status.code() == tonic::Code::Unavailable && retry_at < deadline => {
                tracing::debug!(request_id = %request.request_id, message = status.message(), "scheduler unavailable; retrying");
                tokio::time::sleep_until(retry_at).await;
            }
            _ => return Err(status),
        }
    }
}

impl Generation {
    /// Returns the next chunk, or `None` after the last one.
    pub async fn next(&mut self) -> Option<Chunk> {
        while !self.done {
            let event = match self.first.take() {
                Some(event) => Ok(Ok(Some(event))),
                None => {
                    tokio::select! {
                        event = timeout_at(self.deadline, self.events.message()) => event,
                        _ = self.closing.wait_for(|closing| *closing) => {
                            self.done = true;
                            return Some(Chunk::Failed(shutdown_error(self.retry_after_secs)));
                        }
                    }
                }
            };
            let chunk = match event {
                Err(_) => Chunk::Failed(deadline_error()),
                Ok(Err(status)) => {
                    Chunk::Failed(ApiError::from_status(&status, "", self.retry_after_secs))
                }
                Ok(Ok(None)) => Chunk::Failed(early_end_error()),
                Ok(Ok(Some(GenerateEvent { event: None }))) => continue,
                Ok(Ok(Some(GenerateEvent {
                    event: Some(Event::Delta(delta)),
                }))) if delta.text.is_empty() => continue,
                Ok(Ok(Some(GenerateEvent {
                    event: Some(Event::Delta(delta)),
                }))) => return Some(Chunk::Delta(delta.text)),
                Ok(Ok(Some(GenerateEvent {
                    event: Some(Event::Finished(finished)),
                }))) => Chunk::Finished(finished),
                Ok(Ok(Some(GenerateEvent {
                    event: Some(Event::Error(error)),
                }))) => Chunk::Failed(ApiError::from_event(&error, self.retry_after_secs)),
            };
            self.done = true;
            return Some(chunk);
        }
        None
    }

    /// Reads the whole generation into its text and final event.
    ///
    /// # Errors
    /// The error that ended the generation, if it failed.
    pub async fn collect(mut self) -> Result<(String, Finished), ApiError> {
        let mut text = String::new();
        while let Some(chunk) = self.next().await {
            match chunk {
                Chunk::Delta(delta) => text.push_str(&delta),
                Chunk::Finished(finished) => return Ok((text, finished)),
                Chunk::Failed(error) => return Err(error),
            }
        }
        Err(early_end_error())
    }
}

/// Checks that the model serves `adapter`, before a request naming it is
/// queued.
///
/// # Errors
/// [`ApiError::LoraNotServed`] naming the adapter, or the mapped status
/// when the scheduler cannot list its models.
pub async fn check_lora(
    scheduler: &Scheduler,
    model: &str,
    adapter: &str,
    limits: CallLimits,
) -> Result<(), ApiError> {
    let retry_after_secs = limits.retry_after_secs;
    let remaining = limits.deadline.saturating_duration_since(Instant::now());
    let models = scheduler
        .list_models(remaining)
        .await
        .map_err(|status| ApiError::from_status(&status, model, retry_after_secs))?;
    let served = find_model(&models, model)
        .is_some_and(|info| info.lora_adapters.iter().any(|name| name == adapter));
    if served {
        Ok(())
    } else {
        Err(ApiError::LoraNotServed {
            model: model.to_string(),
            adapter: adapter.to_string(),
        })
    }
}

fn deadline_error() -> ApiError {
    ApiError::Timeout {
        message: "the gateway's request timeout passed".to_string(),
    }
}

fn shutdown_error(retry_after_secs: u32) -> ApiError {
    ApiError::Unavailable {
        message: "the gateway is shutting down".to_string(),
        retry_after_secs,
    }
}

fn early_end_error() -> ApiError {
    ApiError::Internal {
        message: "the scheduler closed the stream without a final event".to_string(),
    }
}
