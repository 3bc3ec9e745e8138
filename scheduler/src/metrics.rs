//! Scheduler metrics in the process-wide Prometheus registry
//! (`wick_scheduler_*`). The binary serves the registry.

use std::sync::OnceLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

pub struct Metrics {
    pub queue_length: IntGauge,
    /// Running sequences per worker URL.
    pub running: IntGaugeVec,
    /// KV blocks in use and in all per worker URL, as the worker reports.
    pub kv_blocks_used: IntGaugeVec,
    pub kv_blocks_total: IntGaugeVec,
    pub workers_connected: IntGauge,
    pub preemptions: IntCounter,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
    pub tokens_generated: IntCounter,
    /// Finished requests by outcome: stop, length, tool_calls, cancelled,
    /// worker_lost, failed, and the rejections queue_full, invalid,
    /// not_found, unavailable.
    pub requests: IntCounterVec,
}

/// Returns the scheduler's metrics, registering them on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // Each name is registered exactly once, so registration cannot fail.
    METRICS.get_or_init(|| Metrics {
        queue_length: register_int_gauge!(
            "wick_scheduler_queue_length",
            "Requests waiting for a worker"
        )
        .expect("metric registered once"),
        running: register_int_gauge_vec!(
            "wick_scheduler_running_sequences",
            "Sequences running on each worker",
            &["worker"]
        )
        .expect("metric registered once"),
        kv_blocks_used: register_int_gauge_vec!(
            "wick_scheduler_kv_blocks_used",
            "KV-cache blocks in use on each worker, as last reported",
            &["worker"]
        )
        .expect("metric registered once"),
        kv_blocks_total: register_int_gauge_vec!(
            "wick_scheduler_kv_blocks_total",
            "KV-cache blocks in all on each worker",
            &["worker"]
        )
        .expect("metric registered once"),
        workers_connected: register_int_gauge!(
            "wick_scheduler_workers_connected",
            "Connected workers"
        )
        .expect("metric registered once"),
        preemptions: register_int_counter!(
            "wick_scheduler_preemptions_total",
            "Sequences preempted or rejected for room and queued again"
        )
        .expect("metric registered once"),
        time_to_first_token: register_histogram!(
            "wick_scheduler_time_to_first_token_seconds",
            "Time from accepting a request to its first generated token, in seconds",
            prometheus::exponential_buckets(0.005, 2.0, 14).expect("valid buckets")
        )
        .expect("metric registered once"),
        time_per_output_token: register_histogram!(
            "wick_scheduler_time_per_output_token_seconds",
            "Mean time between output tokens of a finished request, in seconds",
            prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
        )
        .expect("metric registered once"),
        tokens_generated: register_int_counter!(
            "wick_scheduler_tokens_generated_total",
            "Tokens generated for all requests"
        )
        .expect("metric registered once"),
        requests: register_int_counter_vec!(
            "wick_scheduler_requests_total",
            "Requests by outcome",
            &["outcome"]
        )
        .expect("metric registered once"),
    })
}
