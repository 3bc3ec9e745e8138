//! Policy tests with fake workers: only capacities and step reports, no I/O.

use super::*;

const MODEL: &str = "test/model";

fn capacity(total_blocks: usize, max_sequences: usize) -> WorkerCapacity {
    WorkerCapacity {
        model: Arc::from(MODEL),
        block_size: 16,
        total_blocks,
        max_sequences,
        prefill_budget: 512,
    }
}

fn batcher(mode: BatchingMode, workers: &[WorkerCapacity]) -> Batcher {
    let mut batcher = Batcher::new(mode, 8, 1, workers.len());
    for (index, capacity) in workers.iter().enumerate() {
        batcher.worker_connected(index, capacity.clone());
    }
    batcher
}

fn enqueue(batcher: &mut Batcher, id: u64, tokens: usize) {
    batcher.enqueue(id, Arc::from(MODEL), tokens).unwrap();
}

#[test]
fn placement_prefers_most_free_blocks() {
    let mut batcher = batcher(
        BatchingMode::Continuous,
        &[capacity(10, 8), capacity(40, 8)],
    );
    enqueue(&mut batcher, 1, 100);
    assert_eq!(batcher.schedule(), vec![(1, 1)]);
    // Worker 1 now has 40 - 7 = 33 free blocks, still more than worker 0.
    enqueue(&mut batcher, 2, 16);
    assert_eq!(batcher.schedule(), vec![(2, 1)]);
    batcher.step_done(1);
    enqueue(&mut batcher, 3, 400);
    // 25 + 1 blocks do not fit in worker 0's 10, so worker 1 again.
    assert_eq!(batcher.schedule(), vec![(3, 1)]);
}

#[test]
fn placement_skips_other_models() {
    let mut other = capacity(100, 8);
    other.model = Arc::from("other/model");
    let mut batcher = batcher(BatchingMode::Continuous, &[other, capacity(10, 8)]);
    enqueue(&mut batcher, 1, 16);
    assert_eq!(batcher.schedule(), vec![(1, 1)]);
}

#[test]
fn queue_head_that_fits_nowhere_blocks_the_rest() {
    let mut batcher = batcher(BatchingMode::Continuous, &[capacity(4, 8)]);
    enqueue(&mut batcher, 1, 32); // 2 blocks + 1 reserve
    assert_eq!(batcher.schedule(), vec![(1, 0)]);
    batcher.step_done(0);
    enqueue(&mut batcher, 2, 32); // needs 3, only 2 free
    enqueue(&mut batcher, 3, 1); // would fit, but must wait its turn
    assert!(batcher.schedule().is_empty());
    assert_eq!(batcher.queue_len(), 2);
    batcher.finish(1);
    assert_eq!(batcher.schedule(), vec![(2, 0), (3, 0)]);
}

#[test]
fn prefill_budget_limits_admissions_per_step() {
    let mut cap = capacity(1000, 64);
    cap.prefill_budget = 100;
    let mut batcher = batcher(BatchingMode::Continuous, &[cap]);
    for id in 1..=4 {
        enqueue(&mut batcher, id, 40);
    }
    assert_eq!(batcher.schedule(), vec![(1, 0), (2, 0)]);
    assert!(
        batcher.schedule().is_empty(),
        "budget spent until the step ends"
    );
    batcher.step_done(0);
    assert_eq!(batcher.schedule(), vec![(3, 0), (4, 0)]);
}

#[test]
fn prompt_longer_than_budget_goes_alone() {
    let mut cap = capacity(1000, 64);
    cap.prefill_budget = 100;
    let mut batcher = batcher(BatchingMode::Continuous, &[cap]);
    enqueue(&mut batcher, 1, 300);
    enqueue(&mut batcher, 2, 10);
    assert_eq!(batcher.schedule(), vec![(1, 0)]);
    batcher.step_done(0);
    assert_eq!(batcher.schedule(), vec![(2, 0)]);
}

#[test]
fn batch_sequence_limit_is_respected() {
    let mut batcher = batcher(BatchingMode::Continuous, &[capacity(1000, 2)]);
    for id in 1..=3 {
        enqueue(&mut batcher, id, 8);
    }
    assert_eq!(batcher.schedule(), vec![(1, 0), (2, 0)]);
    batcher.finish(2);
    batcher.step_done(0);
    assert_eq!(batcher.schedule(), vec![(3, 0)]);
}

#[test]
fn generated_tokens_grow_the_account() {
    let mut batcher = batcher(BatchingMode::Continuous, &[capacity(3, 8)]);
    enqueue(&mut batcher, 1, 16);
    assert_eq!(batcher.schedule(), vec![(1, 0)]);
    assert_eq!(batcher.used_blocks(0), 1);
    batcher.token_generated(0, 1);
    assert_eq!(batcher.used_blocks(0), 2);
}

#[test]
fn preempted_sequences_return_to_the_front_oldest_first() {
    let mut batcher = batcher(BatchingMode::Continuous, &[capacity(100, 8)]);
    for id in 1..=3 {
        enqueue(&mut batcher, id, 16);
    }
    assert_eq!(batcher.schedule().len(), 3);
    enqueue(&mut batcher, 4, 16);
    // The worker reports its preemptions youngest first: 3, then 2.
    batcher.requeue_front(3, Arc::from(MODEL), 20);
    batcher.requeue_front(2, Arc::from(MODEL), 20);
    assert_eq!(batcher.running_on(0), vec![1]);
    batcher.step_done(0);
    let order: Vec<u64> = batcher.schedule().into_iter().map(|(id, _)| id).collect();
    assert_eq!(order, vec![2, 3, 4]);
}

#[test]
fn queue_bound_rejects_at_once() {
    let mut batcher = Batcher::new(BatchingMode::Continuous, 2, 1, 0);
    enqueue(&mut batcher, 1, 4);
    enqueue(&mut batcher, 2, 4);
    let full = batcher.enqueue(3, Arc::from(MODEL), 4);
    assert_eq!(full, Err(QueueFull { max_queue: 2 }));
    assert_eq!(batcher.queue_len(), 2);
}

#[test]
fn no_worker_means_nothing_is_admitted() {
    let mut batcher = Batcher::new(BatchingMode::Continuous, 4, 1, 1);
    enqueue(&mut batcher, 1, 4);
    assert!(batcher.schedule().is_empty());
    batcher.worker_connected(0, capacity(10, 4));
    assert_eq!(batcher.schedule(), vec![(1, 0)]);
}

#[test]
fn cancel_removes_from_queue_or_worker() {
    let mut batcher = batcher(BatchingMode::Continuous, &[capacity(2, 8)]);
    enqueue(&mut batcher, 1, 16);
    enqueue(&mut batcher, 2, 16);
    assert_eq!(batcher.schedule(), vec![(1, 0)]);
    assert_eq!(batcher.cancel(2), Cancelled::Queued);
    assert_eq!(batcher.cancel(1), Cancelled::Running(0));
    assert_eq!(batcher.cancel(1), Cancelled::Unknown);
    assert_eq!(batcher.queue_len(), 0);
    assert_eq!(batcher.used_blocks(0), 0);
}

#[test]
fn worker_loss_returns_its_sequences() {
    let mut batcher = batcher(
        BatchingMode::Continuous,
        &[capacity(10, 8), capacity(10, 8)],
    );
    enqueue(&mut batcher, 1, 16);
    enqueue(&mut batcher, 2, 16);
    assert_eq!(batcher.schedule(), vec![(1, 0), (2, 1)]);
    assert_eq!(batcher.worker_lost(0), vec![1]);
    batcher.requeue_front(1, Arc::from(MODEL), 16);
    batcher.step_done(1);
    assert_eq!(batcher.schedule(), vec![(1, 1)]);
}

#[test]
fn static_mode_waits_for_the_batch_to_drain() {
    let mut batcher = batcher(BatchingMode::Static, &[capacity(100, 8)]);
    enqueue(&mut batcher, 1, 8);
    enqueue(&mut batcher, 2, 8);
    assert_eq!(batcher.schedule(), vec![(1, 0), (2, 0)]);
    batcher.step_done(0);
    enqueue(&mut batcher, 3, 8);
    assert!(batcher.schedule().is_empty(), "batch still running");
    batcher.finish(1);
    assert!(batcher.schedule().is_empty(), "batch only partly drained");
    batcher.finish(2);
    assert_eq!(batcher.schedule(), vec![(3, 0)]);
}

#[test]
fn sequential_mode_runs_one_per_worker() {
    let mut batcher = batcher(
        BatchingMode::Sequential,
        &[capacity(100, 8), capacity(100, 8)],
    );
    for id in 1..=3 {
        enqueue(&mut batcher, id, 8);
    }
    assert_eq!(batcher.schedule(), vec![(1, 0), (2, 1)]);
    batcher.finish(2);
    assert_eq!(batcher.schedule(), vec![(3, 1)]);
}

#[test]
fn unserved_requests_are_taken_oldest_first() {
    let mut batcher = batcher(BatchingMode::Sequential, &[capacity(100, 8)]);
    enqueue(&mut batcher, 1, 16);
    assert_eq!(batcher.schedule(), vec![(1, 0)]);
    enqueue(&mut batcher, 2, 16);
    batcher.enqueue(3, Arc::from("other/model"), 16).unwrap();
    enqueue(&mut batcher, 4, 16);
    assert!(batcher.has_unserved(), "no worker serves other/model");

    assert_eq!(batcher.take_unserved(), vec![3]);
    assert!(!batcher.has_unserved());
    assert_eq!(batcher.queue_len(), 2);

    // Once the only worker is lost, every queued request lacks one.
    assert_eq!(batcher.worker_lost(0), vec![1]);
    assert!(batcher.has_unserved());
    assert_eq!(batcher.take_unserved(), vec![2, 4]);
    assert_eq!(batcher.queue_len(), 0);
}
