//! The batching loop: one task that owns the queue, the worker accounts and
//! every live sequence, and reacts to requests, cancellations and worker
//! events. Decisions live in [`Batcher`]; this file does the I/O.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{debug, info, warn};
use wick_proto::v1 as pb;

use crate::batcher::{Batcher, Cancelled, WorkerCapacity};
use crate::catalog::Catalog;
use crate::error::RequestError;
use crate::metrics::metrics;
use crate::sequence::{Progress, Sequence};

/// Commands to one worker's Run stream. Unbounded because their number is
/// bounded by the live sequences: at most one admit and one release each.
pub type CommandSender = mpsc::UnboundedSender<pb::WorkerCommand>;

pub enum LoopEvent {
    Submit {
        sequence: Box<Sequence>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    WorkerUp {
        worker: usize,
        epoch: u64,
        describe: Box<pb::DescribeResponse>,
        tokenizer: Arc<tokenizers::Tokenizer>,
        commands: CommandSender,
    },
    Worker {
        worker: usize,
        epoch: u64,
        event: pb::worker_event::Event,
    },
    WorkerLost {
        worker: usize,
        epoch: u64,
        reason: String,
    },
    /// Rejects new requests from now on and fires `drained` once every
    /// accepted request has ended.
    Drain { drained: oneshot::Sender<()> },
    /// Ends every live request with `SHUTTING_DOWN` and stops the loop.
    Shutdown,
}

struct WorkerSlot {
    url: String,
    /// The connection the slot belongs to; events of older ones are stale.
    epoch: u64,
    commands: Option<CommandSender>,
}

/// Settings of the batching loop that come from the scheduler's config.
pub struct LoopSettings {
    pub prefill_budget: Option<usize>,
    pub no_worker_timeout: Duration,
}

pub struct EventLoop {
    batcher: Batcher,
    sequences: HashMap<u64, Sequence>,
    workers: Vec<WorkerSlot>,
    catalog: Arc<RwLock<Catalog>>,
    health: HealthReporter,
    settings: LoopSettings,
    admissions: u64,
    /// When queued requests end for lack of a worker serving their model;
    /// `None` while every queued request has one.
    unserved_deadline: Option<Instant>,
    /// Set once shutdown starts; new requests are rejected from then on.
    draining: bool,
    /// Fired once draining and no accepted request is left.
    drained: Option<oneshot::Sender<()>>,
}

impl EventLoop {
    pub fn new(
        batcher: Batcher,
        urls: &[String],
        catalog: Arc<RwLock<Catalog>>,
        health: HealthReporter,
        settings: LoopSettings,
    ) -> Self {
        let workers = urls
            .iter()
            .map(|url| WorkerSlot {
                url: url.clone(),
                epoch: 0,
                commands: None,
            })
            .collect();
        EventLoop {
            batcher,
            sequences: HashMap::new(),
            workers,
            catalog,
            health,
            settings,
            admissions: 0,
            unserved_deadline: None,
            draining: false,
            drained: None,
        }
    }

    /// Runs until `Shutdown` or until every event sender is gone.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<LoopEvent>,
        mut cancels: mpsc::UnboundedReceiver<u64>,
    ) {
        loop {
            tokio::select! {
                // Cancellations first, so a dropped request is not admitted
                // by an event that is handled in the same turn.
                biased;
                Some(id) = cancels.recv() => self.cancel(id),
                event = events.recv() => match event {
                    None | Some(LoopEvent::Shutdown) => break,
                    Some(event) => self.handle(event).await,
                },
                () = sleep_until(self.unserved_deadline) => self.fail_unserved(),
            }
            for (id, worker) in self.batcher.schedule() {
                self.admit(id, worker);
            }
            self.update_unserved_deadline();
            metrics().queue_length.set(self.batcher.queue_len() as i64);
            if self.draining && self.sequences.is_empty() {
                if let Some(drained) = self.drained.take() {
                    info!("drained: every accepted request has ended");
                    let _ = drained.send(());
                }
            }
        }
        self.shut_down();
    }

    /// Starts the no-worker countdown when a queued request first lacks a
    /// worker for its model, and stops it once none does.
    fn update_unserved_deadline(&mut self) {
        if !self.batcher.has_unserved() {
            self.unserved_deadline = None;
        } else if self.unserved_deadline.is_none() {
            self.unserved_deadline = Some(Instant::now() + self.settings.no_worker_timeout);
        }
    }

    /// Ends the queued requests that no connected worker could serve for the
    /// whole no-worker timeout.
    fn fail_unserved(&mut self) {
        self.unserved_deadline = None;
        let timeout = self.settings.no_worker_timeout;
        for id in self.batcher.take_unserved() {
            let Some(mut sequence) = self.sequences.remove(&id) else {
                continue;
            };
            warn!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, model = %sequence.model, timeout_secs = timeout.as_secs_f64(), "no worker for the queued request");
            let message = format!(
                "no worker serving model {} was connected for {:.1} s while the request waited; retry later",
                sequence.model,
                timeout.as_secs_f64()
            );
            sequence.fail_with(pb::error::Code::NoWorker, message);
        }
    }

    async fn drain(&mut self, drained: oneshot::Sender<()>) {
        info!(
            live = self.sequences.len(),
            "draining: accepted requests finish, new ones are rejected"
        );
        self.draining = true;
        self.drained = Some(drained);
        self.update_health().await;
    }

    async fn handle(&mut self, event: LoopEvent) {
        match event {
            LoopEvent::Submit { sequence, reply } => self.submit(*sequence, reply),
            LoopEvent::Drain { drained } => self.drain(drained).await,
            LoopEvent::WorkerUp {
                worker,
                epoch,
                describe,
                tokenizer,
                commands,
            } => {
                self.worker_up(worker, epoch, &describe, tokenizer, commands)
                    .await
            }
            LoopEvent::Worker {
                worker,
                epoch,
                event,
            } if self.workers[worker].epoch == epoch => match event {
                pb::worker_event::Event::Step(step) => self.step(worker, step),
                pb::worker_event::Event::Rejected(rejected) => self.rejected(worker, rejected),
            },
            LoopEvent::WorkerLost {
                worker,
                epoch,
                reason,
            } if self.workers[worker].epoch == epoch => self.worker_lost(worker, &reason).await,
            // Stale events of an older connection to the same worker.
            LoopEvent::Worker { .. } | LoopEvent::WorkerLost { .. } | LoopEvent::Shutdown => {}
        }
    }

    fn submit(&mut self, sequence: Sequence, reply: oneshot::Sender<Result<(), RequestError>>) {
        let id = sequence.id;
        if self.draining {
            debug!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, "rejected: draining");
            let _ = reply.send(Err(RequestError::ShuttingDown));
            return;
        }
        let result = self
            .batcher
            .enqueue(id, Arc::clone(&sequence.model), sequence.tokens());
        match result {
            Ok(()) => {
                debug!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, prompt_tokens = sequence.prompt.len(), "queued");
                self.sequences.insert(id, sequence);
                // A dropped reply means the client left while the request
                // was on its way here, and its cancellation may already
                // have been handled as an unknown id.
                if reply.send(Ok(())).is_err() {
                    self.cancel(id);
                }
            }
            Err(full) => {
                metrics().requests.with_label_values(&["queue_full"]).inc();
                let _ = reply.send(Err(RequestError::QueueFull {
                    max_queue: full.max_queue,
                }));
            }
        }
    }

    fn admit(&mut self, id: u64, worker: usize) {
        let Some(sequence) = self.sequences.get_mut(&id) else {
            return;
        };
        self.admissions += 1;
        sequence.worker = Some(worker);
        sequence.admitted_order = self.admissions;
        debug!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, worker = %self.workers[worker].url, tokens = sequence.tokens(), "admitted");
        let command = pb::worker_command::Command::Admit(sequence.admit_command());
        // A failed send means the link just broke; its WorkerLost event
        // follows and handles this sequence with the others.
        self.send(worker, command);
    }

    fn send(&self, worker: usize, command: pb::worker_command::Command) {
        if let Some(commands) = &self.workers[worker].commands {
            let _ = commands.send(pb::WorkerCommand {
                command: Some(command),
            });
        }
    }

    fn release(&self, worker: usize, id: u64) {
        let release = pb::Release { sequence_id: id };
        self.send(worker, pb::worker_command::Command::Release(release));
    }

    fn cancel(&mut self, id: u64) {
        let Some(sequence) = self.sequences.remove(&id) else {
            return;
        };
        match self.batcher.cancel(id) {
            Cancelled::Running(worker) => self.release(worker, id),
            Cancelled::Queued | Cancelled::Unknown => {}
        }
        metrics().requests.with_label_values(&["cancelled"]).inc();
        debug!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, "cancelled by the client");
    }

    fn step(&mut self, worker: usize, step: pb::StepResult) {
        self.batcher.step_done(worker);
        let url = self.workers[worker].url.as_str();
        let used = step.kv_blocks_total.saturating_sub(step.kv_blocks_free);
        metrics()
            .kv_blocks_used
            .with_label_values(&[url])
            .set(used as i64);
        metrics()
            .kv_blocks_total
            .with_label_values(&[url])
            .set(step.kv_blocks_total as i64);
        metrics()
            .running
            .with_label_values(&[url])
            .set(step.running_sequences as i64);
        for token in &step.tokens {
            self.token(worker, token);
        }
        for &id in &step.preempted {
            self.requeue(id, "preempted");
        }
    }

    fn token(&mut self, worker: usize, token: &pb::SampledToken) {
        let id = token.sequence_id;
        let Some(sequence) = self.sequences.get_mut(&id) else {
            return;
        };
        if sequence.worker != Some(worker) {
            return;
        }
        self.batcher.token_generated(worker, id);
        let finish = pb::SequenceFinish::try_from(token.finish).unwrap_or(pb::SequenceFinish::None);
        match sequence.push_token(token.token_id, finish) {
            Progress::Running => {}
            Progress::EndedOnWorker => {
                self.batcher.finish(id);
                self.sequences.remove(&id);
            }
            Progress::EndedHere | Progress::ClientGone => {
                self.release(worker, id);
                self.batcher.finish(id);
                self.sequences.remove(&id);
            }
        }
    }

    /// Queues a sequence again at the front; it is recomputed from its
    /// prompt and generated tokens, which the client does not see again.
    fn requeue(&mut self, id: u64, why: &str) {
        let Some(sequence) = self.sequences.get_mut(&id) else {
            return;
        };
        sequence.worker = None;
        metrics().preemptions.inc();
        debug!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, why, "queued again");
        let model = Arc::clone(&sequence.model);
        self.batcher.requeue_front(id, model, sequence.tokens());
    }

    fn rejected(&mut self, worker: usize, rejected: pb::Rejected) {
        let id = rejected.sequence_id;
        let no_room = rejected.reason == pb::rejected::Reason::NoRoom as i32;
        let others_running = self
            .batcher
            .running_on(worker)
            .iter()
            .any(|&other| other != id);
        if no_room && others_running {
            // The worker's own account disagrees with ours; wait for its
            // next step, which frees room, before admitting there again.
            self.requeue(id, "rejected for room");
            self.batcher.hold_until_step(worker);
            return;
        }
        // An idle worker that has no room, or a malformed admit, will never
        // take this sequence.
        self.batcher.finish(id);
        if let Some(mut sequence) = self.sequences.remove(&id) {
            warn!(parent: &sequence.span, request_id = %sequence.request_id, sequence_id = id, worker = %self.workers[worker].url, message = %rejected.message, "worker rejected the sequence");
            let message = format!(
                "worker {} rejected the request: {}",
                self.workers[worker].url, rejected.message
            );
            sequence.fail_with(pb::error::Code::Internal, message);
        }
    }

    async fn worker_up(
        &mut self,
        worker: usize,
        epoch: u64,
        describe: &pb::DescribeResponse,
        tokenizer: Arc<tokenizers::Tokenizer>,
        commands: CommandSender,
    ) {
        let model = self
            .catalog
            .write()
            .expect("catalog lock is never poisoned: no code panics while holding it")
            .add_worker(worker, describe, tokenizer);
        let capacity = WorkerCapacity {
            model,
            block_size: describe.kv_block_size.max(1) as usize,
            total_blocks: describe.kv_blocks_total as usize,
            max_sequences: describe.max_batch_sequences.max(1) as usize,
            prefill_budget: self
                .settings
                .prefill_budget
                .unwrap_or(describe.max_step_tokens.max(1) as usize),
        };
        self.batcher.worker_connected(worker, capacity);
        let slot = &mut self.workers[worker];
        slot.epoch = epoch;
        slot.commands = Some(commands);
        info!(worker = %slot.url, model = %describe.model_id, kv_blocks = describe.kv_blocks_total, "worker connected");
        self.update_health().await;
    }

    async fn worker_lost(&mut self, worker: usize, reason: &str) {
        let url = self.workers[worker].url.clone();
        self.workers[worker].commands = None;
        self.catalog
            .write()
            .expect("catalog lock is never poisoned: no code panics while holding it")
            .remove_worker(worker);
        let mut lost: Vec<u64> = self.batcher.worker_lost(worker);
        lost.sort_by_key(|id| self.sequences.get(id).map_or(0, |s| s.admitted_order));
        warn!(worker = %url, reason, sequences = lost.len(), "worker lost");
        // Youngest first, so the oldest ends up at the front of the queue.
        for &id in lost.iter().rev() {
            let streamed = self.sequences.get(&id).is_some_and(|s| s.streamed);
            if !streamed {
                self.requeue(id, "worker lost");
                continue;
            }
            if let Some(mut sequence) = self.sequences.remove(&id) {
                let message = format!("worker {url} was lost while generating: {reason}");
                sequence.fail_with(pb::error::Code::WorkerLost, message);
            }
        }
        metrics().running.with_label_values(&[&url]).set(0);
        self.update_health().await;
    }

    async fn update_health(&mut self) {
        let connected = self.workers.iter().filter(|w| w.commands.is_some()).count();
        metrics().workers_connected.set(connected as i64);
        let status = if connected > 0 && !self.draining {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in ["", "wick.v1.Generation"] {
            self.health.set_service_status(service, status).await;
        }
    }

    /// Ends every live request with a `SHUTTING_DOWN` error event.
    fn shut_down(&mut self) {
        let ids: Vec<u64> = self.sequences.keys().copied().collect();
        for id in ids {
            if let Some(worker) = self.sequences.get(&id).and_then(|s| s.worker) {
                self.release(worker, id);
            }
            if let Some(mut sequence) = self.sequences.remove(&id) {
                sequence.fail_with(
                    pb::error::Code::ShuttingDown,
                    "the scheduler is shutting down".into(),
                );
            }
        }
        info!("batching loop stopped");
    }
}

/// Completes at `deadline`, or never when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
