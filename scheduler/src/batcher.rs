//! The batching policy: the waiting queue, one KV-block account per worker,
//! and the admission decisions. Pure state, no I/O, so the event loop
//! (`event_loop`) does the talking and this file can be tested with fake
//! workers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::config::BatchingMode;

/// The policy's view of one connected worker.
#[derive(Debug, Clone)]
pub struct WorkerCapacity {
    /// The model the worker serves.
    pub model: Arc<str>,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in all.
    pub total_blocks: usize,
    /// Maximum sequences in one step.
    pub max_sequences: usize,
    /// Prompt tokens the scheduler may admit to this worker per step.
    pub prefill_budget: usize,
}

#[derive(Debug)]
struct WorkerAccount {
    capacity: WorkerCapacity,
    /// Running sequences and their current length (prompt plus generated).
    running: HashMap<u64, usize>,
    /// Prompt tokens admitted since the worker's last step result.
    prefill_spent: usize,
    /// Set after the worker rejected an admit for room; no admissions until
    /// its next step result.
    held: bool,
    /// Static mode: set while a new batch is being filled in one
    /// `schedule` pass; the batch stays closed after that pass.
    filling: bool,
}

impl WorkerAccount {
    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.capacity.block_size)
    }

    fn used_blocks(&self) -> usize {
        self.running.values().map(|&t| self.blocks_for(t)).sum()
    }

    fn free_blocks(&self) -> usize {
        self.capacity
            .total_blocks
            .saturating_sub(self.used_blocks())
    }
}

#[derive(Debug, Clone)]
struct Waiting {
    id: u64,
    model: Arc<str>,
    /// Prompt plus already generated tokens, all of which are prefilled.
    tokens: usize,
}

/// The queue was full; the request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    pub max_queue: usize,
}

/// The place a cancelled sequence was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Queued,
    /// Running on this worker, which must be sent a release for it.
    Running(usize),
    Unknown,
}

/// Queue and worker accounts, owned by the event loop.
#[derive(Debug)]
pub struct Batcher {
    mode: BatchingMode,
    max_queue: usize,
    /// Blocks kept free for a sequence's first decode tokens on top of its
    /// prompt, so a new admission is not preempted on its next step.
    decode_reserve_blocks: usize,
    queue: VecDeque<Waiting>,
    /// Indexed by the worker's position in the configured worker list;
    /// `None` while that worker is disconnected.
    workers: Vec<Option<WorkerAccount>>,
}

impl Batcher {
    pub fn new(
        mode: BatchingMode,
        max_queue: usize,
        decode_reserve_blocks: usize,
        workers: usize,
    ) -> Self {
        Batcher {
            mode,
            max_queue,
            decode_reserve_blocks,
            queue: VecDeque::new(),
            workers: (0..workers).map(|_| None).collect(),
        }
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn running_on(&self, worker: usize) -> Vec<u64> {
        match &self.workers[worker] {
            Some(account) => account.running.keys().copied().collect(),
            None => Vec::new(),
        }
    }

    /// KV blocks the policy counts as used on `worker`.
    pub fn used_blocks(&self, worker: usize) -> usize {
        self.workers[worker]
            .as_ref()
            .map_or(0, WorkerAccount::used_blocks)
    }

    /// Queues a new request at the back.
    ///
    /// Errors with [`QueueFull`] when `max_queue` requests are waiting.
    pub fn enqueue(&mut self, id: u64, model: Arc<str>, tokens: usize) -> Result<(), QueueFull> {
        if self.queue.len() >= self.max_queue {
            return Err(QueueFull {
                max_queue: self.max_queue,
            });
        }
        self.queue.push_back(Waiting { id, model, tokens });
        Ok(())
    }

    /// Queues a sequence that already waited its turn (preempted, rejected
    /// for room, or its worker was lost) at the front. This may push the
    /// queue past `max_queue`, because the request was accepted earlier and
    /// turning it away now would fail a client that did nothing wrong.
    pub fn requeue_front(&mut self, id: u64, model: Arc<str>, tokens: usize) {
        self.remove_running(id);
        self.queue.push_front(Waiting { id, model, tokens });
    }

    /// Removes a sequence wherever it is.
    pub fn cancel(&mut self, id: u64) -> Cancelled {
        if let Some(pos) = self.queue.iter().position(|w| w.id == id) {
            self.queue.remove(pos);
            return Cancelled::Queued;
        }
        match self.remove_running(id) {
            Some(worker) => Cancelled::Running(worker),
            None => Cancelled::Unknown,
        }
    }

    /// Returns whether a queued sequence waits for a model that no
    /// connected worker serves.
    pub fn has_unserved(&self) -> bool {
        self.queue
            .iter()
            .any(|waiting| !self.serves(&waiting.model))
    }

    /// Removes the queued sequences whose model no connected worker serves
    /// and returns their ids, oldest first.
    pub fn take_unserved(&mut self) -> Vec<u64> {
        let (unserved, served): (VecDeque<Waiting>, VecDeque<Waiting>) =
            std::mem::take(&mut self.queue)
                .into_iter()
                .partition(|waiting| !self.serves(&waiting.model));
        self.queue = served;
        unserved.into_iter().map(|waiting| waiting.id).collect()
    }

    fn serves(&self, model: &str) -> bool {
        self.workers
            .iter()
            .flatten()
            .any(|account| *account.capacity.model == *model)
    }

    /// Forgets a running sequence that ended on its worker.
    pub fn finish(&mut self, id: u64) {
        self.remove_running(id);
    }

    fn remove_running(&mut self, id: u64) -> Option<usize> {
        for (index, slot) in self.workers.iter_mut().enumerate() {
            if let Some(account) = slot {
                if account.running.remove(&id).is_some() {
                    return Some(index);
                }
            }
        }
        None
    }

    pub fn worker_connected(&mut self, worker: usize, capacity: WorkerCapacity) {
        self.workers[worker] = Some(WorkerAccount {
            capacity,
            running: HashMap::new(),
            prefill_spent: 0,
            held: false,
            filling: false,
        });
    }

    /// Drops a worker's account and returns its running sequences in no
    /// particular order.
    pub fn worker_lost(&mut self, worker: usize) -> Vec<u64> {
        match self.workers[worker].take() {
            Some(account) => account.running.into_keys().collect(),
            None => Vec::new(),
        }
    }

    /// Starts a new step on `worker`: its prefill budget is available again.
    pub fn step_done(&mut self, worker: usize) {
        if let Some(account) = &mut self.workers[worker] {
            account.prefill_spent = 0;
            account.held = false;
        }
    }

    /// Admits nothing more to `worker` until its next step result.
    pub fn hold_until_step(&mut self, worker: usize) {
        if let Some(account) = &mut self.workers[worker] {
            account.held = true;
        }
    }

    /// Counts one generated token of a running sequence.
    pub fn token_generated(&mut self, worker: usize, id: u64) {
        if let Some(account) = &mut self.workers[worker] {
            if let Some(tokens) = account.running.get_mut(&id) {
                *tokens += 1;
            }
        }
    }

    /// Admits waiting sequences, first come first served, and returns
    /// `(sequence, worker)` pairs for the caller to send. Stops at the first
    /// sequence that fits nowhere: skipping it would let short requests
    /// starve a long one forever.
    pub fn schedule(&mut self) -> Vec<(u64, usize)> {
        let mut admitted = Vec::new();
        while let Some(head) = self.queue.front() {
            let Some(worker) = self.place(head) else {
                break;
            };
            let head = self.queue.pop_front().expect("front() just returned it");
            let mode = self.mode;
            let account = self.workers[worker]
                .as_mut()
                .expect("place() picks live workers");
            if mode == BatchingMode::Static && account.running.is_empty() {
                account.filling = true;
            }
            account.running.insert(head.id, head.tokens);
            account.prefill_spent += head.tokens;
            admitted.push((head.id, worker));
        }
        for account in self.workers.iter_mut().flatten() {
            account.filling = false;
        }
        admitted
    }

    /// Picks the worker for `waiting`: among the workers of its model that
    /// can take it now, the one with the most free KV blocks, so load
    /// spreads and long prompts land where they are least likely to cause
    /// preemption.
    fn place(&self, waiting: &Waiting) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (index, slot) in self.workers.iter().enumerate() {
            let Some(account) = slot else { continue };
            if account.capacity.model != waiting.model || !self.can_take(account, waiting) {
                continue;
            }
            let free = account.free_blocks();
            if best.is_none_or(|(_, best_free)| free > best_free) {
                best = Some((index, free));
            }
        }
        best.map(|(index, _)| index)
    }

    fn can_take(&self, account: &WorkerAccount, waiting: &Waiting) -> bool {
        let running = account.running.len();
        let mode_allows = match self.mode {
            // A new batch starts only once the previous one fully drained.
            BatchingMode::Static => running == 0 || account.filling,
            BatchingMode::Sequential => running == 0,
            BatchingMode::Continuous => true,
        };
        if !mode_allows || account.held || running >= account.capacity.max_sequences {
            return false;
        }
        // The budget limits how much prefill lands in one step; a prompt
        // longer than the whole budget still goes in when the budget is
        // untouched, and the worker feeds it in chunks.
        if account.prefill_spent > 0
            && account.prefill_spent + waiting.tokens > account.capacity.prefill_budget
        {
            return false;
        }
        let needed = account.blocks_for(waiting.tokens) + self.decode_reserve_blocks;
        needed <= account.free_blocks()
    }
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
