//! One request on its way through the scheduler: its tokens, and the
//! output side that turns sampled tokens into `GenerateEvent`s.
//!
//! Text goes token → [`IncrementalDecoder`] (complete UTF-8 only) →
//! [`StopMatcher`] (keeps back a possible stop-string start) → client. The
//! end-of-sequence token is counted in usage but never decoded, so it never
//! reaches the client. When `max_tokens` ends in the middle of a multi-byte
//! character, the incomplete character is dropped from the text (the
//! decoder's rule), while `token_ids` still carry every generated id.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;
use tracing::debug;
use wick_proto::trace_context;
use wick_proto::v1 as pb;

use crate::detokenizer::IncrementalDecoder;
use crate::metrics::metrics;
use crate::stop::{StopMatcher, StopOutcome};

pub type EventSender = mpsc::Sender<Result<pb::GenerateEvent, Status>>;

/// The event loop's next action after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The sequence goes on.
    Running,
    /// The sequence ended on the worker (end of sequence, length, context);
    /// the worker already released it.
    EndedOnWorker,
    /// The scheduler ended it (stop string) and the worker must release it.
    EndedHere,
    /// The client is gone; the worker must release it.
    ClientGone,
}

/// Everything the scheduler holds for one request.
pub struct Sequence {
    /// The id on workers, unique for the scheduler's lifetime.
    pub id: u64,
    pub request_id: String,
    pub model: Arc<str>,
    pub prompt: Vec<u32>,
    pub generated: Vec<u32>,
    pub sampling: pb::SequenceSampling,
    pub max_tokens: u32,
    pub eos_token_ids: Vec<u32>,
    pub tools: Vec<pb::Tool>,
    /// The worker running it, if any.
    pub worker: Option<usize>,
    /// Increases with every admission, to order sequences by age.
    pub admitted_order: u64,
    /// True once a text delta reached the client; from then on the
    /// sequence cannot move to another worker unseen.
    pub streamed: bool,
    /// The request's span, parent of every log line about it and of the
    /// worker's span for each admission.
    pub span: tracing::Span,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    events: EventSender,
    /// Ids sampled since the last delta.
    pending_ids: Vec<u32>,
    /// All text sent, for tool-call parsing.
    text: String,
    accepted_at: Instant,
    first_token_at: Option<Instant>,
}

/// The parts of a new sequence that the service prepares.
pub struct NewSequence {
    pub id: u64,
    pub request_id: String,
    pub model: Arc<str>,
    pub tokenizer: Arc<tokenizers::Tokenizer>,
    pub prompt: Vec<u32>,
    pub sampling: pb::SequenceSampling,
    pub max_tokens: u32,
    pub eos_token_ids: Vec<u32>,
    pub stop: Vec<String>,
    pub tools: Vec<pb::Tool>,
    pub events: EventSender,
    /// The trace context of the `Generate` call, parent of the span.
    pub trace_parent: opentelemetry::Context,
}

impl Sequence {
    pub fn new(new: NewSequence) -> Self {
        let span =
            tracing::info_span!("request", request_id = %new.request_id, sequence_id = new.id);
        trace_context::set_parent(&span, new.trace_parent);
        Sequence {
            id: new.id,
            request_id: new.request_id,
            model: new.model,
            prompt: new.prompt,
            generated: Vec::new(),
            sampling: new.sampling,
            max_tokens: new.max_tokens,
            eos_token_ids: new.eos_token_ids,
            tools: new.tools,
            worker: None,
            admitted_order: 0,
            streamed: false,
            span,
            decoder: IncrementalDecoder::new(new.tokenizer),
            stop: StopMatcher::new(new.stop),
            events: new.events,
            pending_ids: Vec::new(),
            text: String::new(),
            accepted_at: Instant::now(),
            first_token_at: None,
        }
    }

    /// Prompt plus generated tokens: what a (re-)admission prefills.
    pub fn tokens(&self) -> usize {
        self.prompt.len() + self.generated.len()
    }

    /// Builds the command that admits this sequence to a worker, carrying
    /// the span's trace context.
    pub fn admit_command(&self) -> pb::Admit {
        pb::Admit {
            sequence_id: self.id,
            prompt_token_ids: self.prompt.clone(),
            generated_token_ids: self.generated.clone(),
            sampling: Some(self.sampling),
            max_new_tokens: self.max_tokens,
            stop_token_ids: Vec::new(),
            trace_context: trace_context::inject_map(&self.span),
        }
    }

    /// Takes one sampled token and streams the text it completes.
    pub fn push_token(&mut self, token: u32, finish: pb::SequenceFinish) -> Progress {
        if self.first_token_at.is_none() {
            self.first_token_at = Some(Instant::now());
            metrics()
                .time_to_first_token
                .observe(self.accepted_at.elapsed().as_secs_f64());
        }
        metrics().tokens_generated.inc();
        self.generated.push(token);
        let is_eos = finish == pb::SequenceFinish::Eos || self.eos_token_ids.contains(&token);
        if is_eos {
            // A model end-of-sequence id always comes with a finish flag; a
            // bare one would still be live on the worker.
            let progress = if finish == pb::SequenceFinish::None {
                Progress::EndedHere
            } else {
                Progress::EndedOnWorker
            };
            return self.finish(pb::FinishReason::Stop, progress);
        }
        self.pending_ids.push(token);
        let delta = match self.decoder.push(token) {
            Ok(delta) => delta.unwrap_or_default(),
            Err(error) => return self.fail(&format!("detokenizing token {token} failed: {error}")),
        };
        let outcome = self.stop.push(&delta);
        let gone = match outcome {
            StopOutcome::Stopped(text) => {
                if self.send_delta(text) {
                    return Progress::ClientGone;
                }
                return self.finish_now(pb::FinishReason::Stop, Progress::EndedHere);
            }
            StopOutcome::Continue(text) => self.send_delta(text),
        };
        if gone {
            return Progress::ClientGone;
        }
        let ended_on_worker = matches!(
            finish,
            pb::SequenceFinish::Length | pb::SequenceFinish::Context
        );
        if ended_on_worker || self.generated.len() >= self.max_tokens as usize {
            let progress = if ended_on_worker {
                Progress::EndedOnWorker
            } else {
                Progress::EndedHere
            };
            return self.finish(pb::FinishReason::Length, progress);
        }
        Progress::Running
    }

    /// Sends `text` with the pending ids; returns true when the client is
    /// gone. Empty text is held back with its ids.
    fn send_delta(&mut self, text: String) -> bool {
        if text.is_empty() {
            return false;
        }
        self.text.push_str(&text);
        self.streamed = true;
        let delta = pb::TextDelta {
            text,
            token_ids: std::mem::take(&mut self.pending_ids),
        };
        self.send(pb::generate_event::Event::Delta(delta))
    }

    /// Flushes held-back text, then ends the stream with `Finished`.
    fn finish(&mut self, reason: pb::FinishReason, progress: Progress) -> Progress {
        let tail = match self.decoder.finish() {
            Ok(tail) => tail.unwrap_or_default(),
            Err(error) => return self.fail(&format!("detokenizing failed: {error}")),
        };
        let mut reason = reason;
        let text = match self.stop.push(&tail) {
            StopOutcome::Stopped(text) => {
                reason = pb::FinishReason::Stop;
                text
            }
            StopOutcome::Continue(text) => text + &self.stop.finish(),
        };
        if self.send_delta(text) {
            return Progress::ClientGone;
        }
        self.finish_now(reason, progress)
    }

    /// Sends the last event: leftover ids, tool calls and usage.
    fn finish_now(&mut self, mut reason: pb::FinishReason, progress: Progress) -> Progress {
        if !self.pending_ids.is_empty() {
            let ids = std::mem::take(&mut self.pending_ids);
            let delta = pb::TextDelta {
                text: String::new(),
                token_ids: ids,
            };
            if self.send(pb::generate_event::Event::Delta(delta)) {
                return Progress::ClientGone;
            }
        }
        let tool_calls: Vec<pb::ToolCall> = crate::tool_call::parse(&self.text, &self.tools)
            .into_iter()
            .collect();
        if !tool_calls.is_empty() {
            reason = pb::FinishReason::ToolCalls;
        }
        let prompt_tokens = self.prompt.len() as u32;
        let completion_tokens = self.generated.len() as u32;
        let finished = pb::Finished {
            reason: reason as i32,
            usage: Some(pb::Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            }),
            tool_calls,
            request_id: self.request_id.clone(),
            model: self.model.to_string(),
        };
        self.record_timing();
        let outcome = reason
            .as_str_name()
            .trim_start_matches("FINISH_REASON_")
            .to_ascii_lowercase();
        metrics().requests.with_label_values(&[&outcome]).inc();
        debug!(parent: &self.span, request_id = %self.request_id, completion_tokens, outcome, "finished");
        if self.send(pb::generate_event::Event::Finished(finished)) {
            return Progress::ClientGone;
        }
        progress
    }

    fn record_timing(&self) {
        if let Some(first) = self.first_token_at {
            let later_tokens = self.generated.len().saturating_sub(1);
            if later_tokens > 0 {
                let per_token = first.elapsed().as_secs_f64() / later_tokens as f64;
                metrics().time_per_output_token.observe(per_token);
            }
        }
    }

    /// Ends the stream with an error event; the worker must release the
    /// sequence if it still runs.
    pub fn fail_with(&mut self, code: pb::error::Code, message: String) {
        let outcome = match code {
            pb::error::Code::WorkerLost => "worker_lost",
            _ => "failed",
        };
        metrics().requests.with_label_values(&[outcome]).inc();
        let error = pb::Error {
            code: code as i32,
            message,
        };
        self.send(pb::generate_event::Event::Error(error));
    }

    fn fail(&mut self, message: &str) -> Progress {
        self.fail_with(pb::error::Code::Internal, message.to_string());
        Progress::EndedHere
    }

    /// Sends one event; returns true when the client is gone. The channel
    /// has room for one event per token plus a few, so it is never full.
    fn send(&self, event: pb::generate_event::Event) -> bool {
        let message = pb::GenerateEvent { event: Some(event) };
        self.events.try_send(Ok(message)).is_err()
    }
}
