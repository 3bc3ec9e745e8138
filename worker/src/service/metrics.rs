//! Worker metrics in the process-wide Prometheus registry. Every series
//! carries a `worker` label, because `wick serve` runs several workers in
//! one process.

use std::sync::OnceLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

struct Families {
    running: IntGaugeVec,
    blocks_used: IntGaugeVec,
    blocks_total: IntGaugeVec,
    steps: IntCounterVec,
    step_seconds: HistogramVec,
    tokens: IntCounterVec,
    prefill_tokens: IntCounterVec,
    preemptions: IntCounterVec,
    rejected: IntCounterVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    // The names are fixed and registered once, so registration cannot fail.
    FAMILIES.get_or_init(|| Families {
        running: register_int_gauge_vec!(
            "wick_worker_running_sequences",
            "Sequences in the worker's batch",
            &["worker"]
        )
        .expect("metric registered once"),
        blocks_used: register_int_gauge_vec!(
            "wick_worker_kv_blocks_used",
            "KV-cache blocks in use",
            &["worker"]
        )
        .expect("metric registered once"),
        blocks_total: register_int_gauge_vec!(
            "wick_worker_kv_blocks_total",
            "KV-cache blocks in all",
            &["worker"]
        )
        .expect("metric registered once"),
        steps: register_int_counter_vec!(
            "wick_worker_steps_total",
            "Forward passes run",
            &["worker"]
        )
        .expect("metric registered once"),
        step_seconds: register_histogram_vec!(
            "wick_worker_step_duration_seconds",
            "Wall time of one forward pass over the batch, in seconds",
            &["worker"],
            prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
        )
        .expect("metric registered once"),
        tokens: register_int_counter_vec!(
            "wick_worker_tokens_generated_total",
            "Tokens sampled",
            &["worker"]
        )
        .expect("metric registered once"),
        prefill_tokens: register_int_counter_vec!(
            "wick_worker_prefill_tokens_total",
            "Prompt tokens computed",
            &["worker"]
        )
        .expect("metric registered once"),
        preemptions: register_int_counter_vec!(
            "wick_worker_preemptions_total",
            "Sequences released because KV blocks ran out",
            &["worker"]
        )
        .expect("metric registered once"),
        rejected: register_int_counter_vec!(
            "wick_worker_admits_rejected_total",
            "Admit commands the engine could not take",
            &["worker"]
        )
        .expect("metric registered once"),
    })
}

/// The series of one worker.
pub struct WorkerMetrics {
    running: IntGauge,
    blocks_used: IntGauge,
    blocks_total: IntGauge,
    steps: IntCounter,
    step_seconds: prometheus::Histogram,
    tokens: IntCounter,
    prefill_tokens: IntCounter,
    preemptions: IntCounter,
    pub rejected: IntCounter,
}

/// The numbers of one step, for metrics.
pub struct StepNumbers {
    pub running: usize,
    pub blocks_free: usize,
    pub blocks_total: usize,
    pub tokens: usize,
    pub prefill_tokens: usize,
    pub preempted: usize,
    pub seconds: f64,
}

impl WorkerMetrics {
    pub fn new(worker: &str) -> Self {
        let f = families();
        WorkerMetrics {
            running: f.running.with_label_values(&[worker]),
            blocks_used: f.blocks_used.with_label_values(&[worker]),
            blocks_total: f.blocks_total.with_label_values(&[worker]),
            steps: f.steps.with_label_values(&[worker]),
            step_seconds: f.step_seconds.with_label_values(&[worker]),
            tokens: f.tokens.with_label_values(&[worker]),
            prefill_tokens: f.prefill_tokens.with_label_values(&[worker]),
            preemptions: f.preemptions.with_label_values(&[worker]),
            rejected: f.rejected.with_label_values(&[worker]),
        }
    }

    /// Records the batch and KV-cache state, with or without a step.
    pub fn set_state(&self, running: usize, blocks_free: usize, blocks_total: usize) {
        self.running.set(running as i64);
        self.blocks_total.set(blocks_total as i64);
        self.blocks_used
            .set(blocks_total.saturating_sub(blocks_free) as i64);
    }

    pub fn record_step(&self, step: &StepNumbers) {
        self.set_state(step.running, step.blocks_free, step.blocks_total);
        self.steps.inc();
        self.step_seconds.observe(step.seconds);
        self.tokens.inc_by(step.tokens as u64);
        self.prefill_tokens.inc_by(step.prefill_tokens as u64);
        self.preemptions.inc_by(step.preempted as u64);
    }
}
