//! The engine thread: owns the [`Engine`], applies commands at step
//! boundaries and steps while it has sequences.
//!
//! The engine is CPU-bound and blocking, so it runs on its own OS thread.
//! When idle it blocks on the command channel; while busy it drains the
//! channel without blocking before each step, so commands never wait for
//! more than one step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, error, info, trace, warn};
use wick_proto::trace_context;
use wick_proto::v1 as pb;

use super::convert;
use super::metrics::{StepNumbers, WorkerMetrics};
use crate::engine::{Engine, FinishReason};

/// Events of one Run stream, as the gRPC response stream carries them.
pub type EventSender = mpsc::Sender<Result<pb::WorkerEvent, Status>>;

/// A request from the gRPC side to the engine thread. Every command but
/// `Shutdown` names the Run stream it came from, so that commands still in
/// flight from a replaced stream are ignored.
pub enum Command {
    /// A new Run stream replaces the current one.
    Attach {
        stream: u64,
        events: EventSender,
    },
    Admit {
        stream: u64,
        admit: pb::Admit,
    },
    Release {
        stream: u64,
        sequence_id: u64,
    },
    /// The Run stream's command side ended: the scheduler is gone.
    Detach {
        stream: u64,
    },
    Shutdown,
}

/// State that `Describe` reads while the engine thread runs.
#[derive(Debug, Default)]
pub struct SharedState {
    pub kv_blocks_free: AtomicUsize,
}

struct EngineLoop {
    engine: Engine,
    name: String,
    metrics: WorkerMetrics,
    shared: Arc<SharedState>,
    /// The current Run stream: its id and where its events go.
    link: Option<(u64, EventSender)>,
    /// Live sequences and their spans, to release them all when the stream
    /// goes away, because the engine contract has no way to list them.
    /// Removing an entry drops its span, which ends it.
    live: HashMap<u64, tracing::Span>,
    /// Sequences released by command since the last step result.
    released: Vec<u64>,
    step: u64,
}

/// Runs the engine until `Shutdown` arrives or every command sender is
/// dropped.
pub fn run(
    engine: Engine,
    name: String,
    shared: Arc<SharedState>,
    commands: mpsc::Receiver<Command>,
) {
    let metrics = WorkerMetrics::new(&name);
    metrics.set_state(0, engine.kv_blocks_free(), engine.kv_blocks_total());
    let mut state = EngineLoop {
        engine,
        name,
        metrics,
        shared,
        link: None,
        live: HashMap::new(),
        released: Vec::new(),
        step: 0,
    };
    state.run(commands);
    info!(worker = %state.name, "engine thread stopped");
}

impl EngineLoop {
    fn run(&mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            if !self.engine.has_work() {
                self.report_idle();
                // Idle: sleep until the next command.
                match commands.blocking_recv() {
                    Some(command) => {
                        if !self.apply(command) {
                            return;
                        }
                    }
                    None => return,
                }
            }
            // Busy: take every command that is already waiting, then step.
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.apply(command) {
                            return;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if self.engine.has_work() {
                self.step();
            }
        }
    }

    /// Applies one command; returns false on `Shutdown`.
    fn apply(&mut self, command: Command) -> bool {
        match command {
            Command::Attach { stream, events } => {
                if let Some((old, _)) = &self.link {
                    info!(worker = %self.name, old_stream = old, new_stream = stream, "run stream replaced");
                }
                self.release_all();
                self.link = Some((stream, events));
            }
            Command::Admit { stream, admit } if self.is_current(stream) => self.admit(admit),
            Command::Release {
                stream,
                sequence_id,
            } if self.is_current(stream) => self.release(sequence_id),
            Command::Detach { stream } if self.is_current(stream) => {
                info!(worker = %self.name, stream, "run stream ended; releasing its sequences");
                self.release_all();
                self.link = None;
            }
            Command::Shutdown => {
                self.release_all();
                self.link = None;
                return false;
            }
            // A command of a replaced stream: its sequences are gone already.
            _ => {}
        }
        true
    }

    fn is_current(&self, stream: u64) -> bool {
        self.link.as_ref().is_some_and(|(id, _)| *id == stream)
    }

    fn admit(&mut self, mut admit: pb::Admit) {
        let sequence_id = admit.sequence_id;
        let prompt_tokens = admit.prompt_token_ids.len();
        let trace_context = std::mem::take(&mut admit.trace_context);
        match self.engine.admit(convert::sequence_request(admit)) {
            Ok(()) => {
                let span = self.sequence_span(sequence_id, prompt_tokens, &trace_context);
                debug!(parent: &span, worker = %self.name, sequence_id, prompt_tokens, "admitted");
                self.live.insert(sequence_id, span);
            }
            Err(error) => {
                self.metrics.rejected.inc();
                debug!(worker = %self.name, sequence_id, %error, "admit rejected");
                let event =
                    pb::worker_event::Event::Rejected(convert::rejected(sequence_id, &error));
                self.send(event);
            }
        }
    }

    /// Creates the span of one admission of a sequence, from admit to its
    /// end on this worker, in the scheduler's trace for the request. A
    /// preempted sequence that comes back gets a new span.
    fn sequence_span(
        &self,
        sequence_id: u64,
        prompt_tokens: usize,
        trace_context: &HashMap<String, String>,
    ) -> tracing::Span {
        let span = tracing::info_span!(
            "sequence",
            worker = %self.name,
            sequence_id,
            prompt_tokens,
            outcome = tracing::field::Empty,
        );
        trace_context::set_parent(&span, trace_context::extract_map(trace_context));
        span
    }

    /// Ends a live sequence's span with `outcome`; returns false when the
    /// sequence is not live.
    fn end_sequence(&mut self, sequence_id: u64, outcome: &'static str) -> bool {
        match self.live.remove(&sequence_id) {
            Some(span) => {
                span.record("outcome", outcome);
                true
            }
            None => false,
        }
    }

    fn release(&mut self, sequence_id: u64) {
        // Unknown ids are fine: the sequence may have finished in the step
        // that crossed this command.
        if self.end_sequence(sequence_id, "released") {
            self.engine.release(sequence_id);
            self.released.push(sequence_id);
            debug!(worker = %self.name, sequence_id, "released");
        }
    }

    fn release_all(&mut self) {
        for (id, span) in self.live.drain() {
            span.record("outcome", "released");
            self.engine.release(id);
        }
        self.released.clear();
        self.publish_state();
    }

    fn publish_state(&self) {
        let free = self.engine.kv_blocks_free();
        self.shared.kv_blocks_free.store(free, Ordering::Relaxed);
        self.metrics.set_state(
            self.engine.running_sequences(),
            free,
            self.engine.kv_blocks_total(),
        );
    }

    /// Reports releases that no step will report because the batch is now
    /// empty, so the scheduler's view of free blocks stays current.
    fn report_idle(&mut self) {
        self.publish_state();
        if self.released.is_empty() {
            return;
        }
        let result = self.step_result(Default::default(), 0);
        self.send(pb::worker_event::Event::Step(result));
    }

    fn step(&mut self) {
        let started = Instant::now();
        let output = match self.engine.step() {
            Ok(output) => output,
            Err(error) => return self.fail_step(error),
        };
        self.step += 1;
        for token in &output.tokens {
            if let Some(finish) = token.finish {
                self.end_sequence(token.sequence_id, finish_outcome(finish));
            }
        }
        for id in &output.preempted {
            self.end_sequence(*id, "preempted");
        }
        let duration = started.elapsed();
        self.metrics.record_step(&StepNumbers {
            running: self.engine.running_sequences(),
            blocks_free: self.engine.kv_blocks_free(),
            blocks_total: self.engine.kv_blocks_total(),
            tokens: output.tokens.len(),
            prefill_tokens: output.prefill_tokens,
            preempted: output.preempted.len(),
            seconds: duration.as_secs_f64(),
        });
        self.shared
            .kv_blocks_free
            .store(self.engine.kv_blocks_free(), Ordering::Relaxed);
        trace!(worker = %self.name, step = self.step, tokens = output.tokens.len(), "step");
        let result = self.step_result(output, duration.as_micros() as u64);
        self.send(pb::worker_event::Event::Step(result));
    }

    fn step_result(
        &mut self,
        output: crate::engine::StepOutput,
        duration_us: u64,
    ) -> pb::StepResult {
        pb::StepResult {
            step: self.step,
            tokens: output.tokens.iter().map(convert::sampled_token).collect(),
            preempted: output.preempted,
            kv_blocks_free: self.engine.kv_blocks_free() as u32,
            kv_blocks_total: self.engine.kv_blocks_total() as u32,
            running_sequences: self.engine.running_sequences() as u32,
            prefill_tokens: output.prefill_tokens as u32,
            decode_tokens: output.decode_tokens as u32,
            duration_us,
            released: std::mem::take(&mut self.released),
        }
    }

    /// A forward pass failed: the batch's state is unknown, so every
    /// sequence is released and the Run stream ends with the error. The
    /// scheduler then treats this worker as lost and reconnects.
    fn fail_step(&mut self, error: crate::EngineError) {
        error!(worker = %self.name, step = self.step, %error, "forward pass failed; releasing all sequences");
        if let Some((_, events)) = self.link.take() {
            let _ = events.blocking_send(Err(Status::internal(format!(
                "forward pass failed: {error}"
            ))));
        }
        self.release_all();
    }

    /// Sends an event to the current Run stream. A failed send means the
    /// scheduler is gone, so its sequences are released.
    fn send(&mut self, event: pb::worker_event::Event) {
        let Some((stream, events)) = &self.link else {
            return;
        };
        let message = pb::WorkerEvent { event: Some(event) };
        if events.blocking_send(Ok(message)).is_err() {
            warn!(worker = %self.name, stream, "run stream closed; releasing its sequences");
            self.link = None;
            self.release_all();
        }
    }
}

/// Returns the `outcome` of the span of a sequence that the engine ended.
fn finish_outcome(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Eos => "eos",
        FinishReason::Length => "length",
        FinishReason::Context => "context",
    }
}
