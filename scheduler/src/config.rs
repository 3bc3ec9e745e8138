//! The scheduler's configuration, built by the `wick` binary from flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Admission policy of the batching loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchingMode {
    /// A request joins a worker's running batch as soon as there is room.
    #[default]
    Continuous,
    /// A worker takes a new batch only once its previous batch has fully
    /// drained (a baseline for benchmarks).
    Static,
    /// One sequence per worker at a time (a baseline for benchmarks).
    Sequential,
}

/// Everything the scheduler needs to run.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Address of the public `Generation` gRPC service. Default
    /// `127.0.0.1:50051`.
    pub grpc_addr: SocketAddr,
    /// Worker URLs such as `http://127.0.0.1:50061`. Default empty.
    pub workers: Vec<String>,
    /// Maximum requests waiting for a worker; more get
    /// `RESOURCE_EXHAUSTED`. Default 256.
    pub max_queue: usize,
    /// Admission policy. Default continuous.
    pub batching: BatchingMode,
    /// Other names for models, alias to model id. Default maps
    /// `@cf/microsoft/phi-2` and `phi-2` to `microsoft/phi-2`.
    pub model_aliases: BTreeMap<String, String>,
    /// Tokens to generate when a request sets no `max_tokens`; capped by
    /// the room left in the context. Default 256.
    pub default_max_tokens: u32,
    /// Temperature when a request sets none. Default 0.6.
    pub default_temperature: f32,
    /// KV blocks that must stay free on a worker beyond a new sequence's
    /// prompt before it is admitted. Default 1.
    pub decode_reserve_blocks: usize,
    /// Prompt tokens admitted to one worker per step; `None` uses the
    /// worker's own `max_step_tokens`. Default `None`.
    pub prefill_budget: Option<usize>,
    /// First wait before reconnecting to a lost worker; doubles on each
    /// failure up to `reconnect_max`. Default 100 ms.
    pub reconnect_initial: Duration,
    /// Maximum wait between reconnection attempts. Default 5 s.
    pub reconnect_max: Duration,
    /// Time between health checks of each connected worker. Default 2 s.
    pub health_interval: Duration,
    /// Time a worker has to answer a connection attempt, `Describe` or a
    /// health check before it counts as lost. Default 5 s.
    pub worker_timeout: Duration,
    /// Time queued requests wait while no connected worker serves their
    /// model, before they end with a `NO_WORKER` error event. Default 30 s.
    pub no_worker_timeout: Duration,
    /// Time accepted requests get to finish once shutdown starts; new
    /// requests are rejected meanwhile. Requests still running after it end
    /// with a `SHUTTING_DOWN` error event. Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let model_aliases = [
            ("@cf/microsoft/phi-2", "microsoft/phi-2"),
            ("phi-2", "microsoft/phi-2"),
        ]
        .into_iter()
        .map(|(alias, id)| (alias.to_string(), id.to_string()))
        .collect();
        SchedulerConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            workers: Vec::new(),
            max_queue: 256,
            batching: BatchingMode::Continuous,
            model_aliases,
            default_max_tokens: 256,
            default_temperature: 0.6,
            decode_reserve_blocks: 1,
            prefill_budget: None,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
            worker_timeout: Duration::from_secs(5),
            no_worker_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}
