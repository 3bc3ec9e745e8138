//! The command line. Every flag has a default or is optional, states its
//! unit, and also reads a `WICK_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wick",
    version,
    about = "An inference cluster for phi-2: HTTP gateway, continuous-batching scheduler and candle workers"
)]
pub struct Cli {
    /// Log line format on stderr. The level filter comes from RUST_LOG.
    #[arg(long, global = true, env = "WICK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run gateway, scheduler and workers in one process.
    Serve(ServeArgs),
    /// Run the HTTP gateway in front of a scheduler.
    Gateway(GatewayArgs),
    /// Run the scheduler in front of a pool of workers.
    Scheduler(SchedulerArgs),
    /// Run one worker that serves one model.
    Worker(WorkerArgs),
    /// Write the built-in demo model to a folder in the Hugging Face layout.
    DemoModel(DemoModelArgs),
    /// Drive a running gateway with concurrent streaming clients and report
    /// throughput and latency.
    Bench(wick_bench::BenchArgs),
}

/// Flags that choose and size a worker's model, shared by `serve` and
/// `worker`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model to serve: `demo` (built in, random weights), a folder in the
    /// Hugging Face layout, a `.gguf` file, or a Hugging Face repo id such as
    /// `microsoft/phi-2` (optionally `@revision`).
    #[arg(long, env = "WICK_MODEL", default_value = "demo")]
    pub model: String,

    /// Device: `cpu` or `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, env = "WICK_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Weight and activation dtype: f32, f16 or bf16. Default: bf16 on
    /// CUDA, f32 on CPU.
    #[arg(long, env = "WICK_DTYPE")]
    pub dtype: Option<String>,

    /// KV-cache size per worker, in tokens (all sequences together).
    #[arg(long, env = "WICK_KV_CACHE_TOKENS", default_value_t = 16384)]
    pub kv_cache_tokens: usize,

    /// KV-cache size per worker in bytes. Overrides --kv-cache-tokens.
    #[arg(long, env = "WICK_KV_CACHE_BYTES")]
    pub kv_cache_bytes: Option<u64>,

    /// Tokens per KV-cache block.
    #[arg(long, env = "WICK_KV_BLOCK_SIZE", default_value_t = 16)]
    pub kv_block_size: usize,

    /// Maximum sequences in one worker step.
    #[arg(long, env = "WICK_MAX_BATCH_SEQUENCES", default_value_t = 64)]
    pub max_batch_sequences: usize,

    /// Maximum tokens (prefill plus decode) in one worker step. Longer prompts
    /// are prefilled in chunks.
    #[arg(long, env = "WICK_MAX_STEP_TOKENS", default_value_t = 512)]
    pub max_step_tokens: usize,
}

/// Flags of the scheduler's policy, shared by `serve` and `scheduler`.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Maximum requests waiting for a worker; more get RESOURCE_EXHAUSTED
    /// (HTTP 429).
    #[arg(long, env = "WICK_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,

    /// Batching policy. `continuous` is the real one; `static` and
    /// `sequential` are baselines for benchmarks.
    #[arg(long, env = "WICK_BATCHING", value_enum, default_value_t = Batching::Continuous)]
    pub batching: Batching,

    /// Another name for a served model: `ALIAS` (for the default model) or
    /// `ALIAS=MODEL_ID`. Repeatable. Unless an alias takes it, the name
    /// `@cf/microsoft/phi-2` selects the first phi model.
    #[arg(
        long = "model-alias",
        env = "WICK_MODEL_ALIASES",
        value_delimiter = ','
    )]
    pub model_aliases: Vec<String>,

    /// Seconds queued requests wait while no connected worker serves their
    /// model, before they fail with HTTP 503.
    #[arg(long, env = "WICK_NO_WORKER_TIMEOUT_SECS", default_value_t = 30)]
    pub no_worker_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Batching {
    Continuous,
    Static,
    Sequential,
}

/// Flags of the HTTP gateway, shared by `serve` and `gateway`.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// File with one API key per line. With keys configured, every request
    /// needs `Authorization: Bearer KEY`.
    #[arg(long, env = "WICK_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// API keys, comma-separated (prefer --api-key-file: environment
    /// variables can leak into logs and process listings).
    #[arg(
        long = "api-keys",
        env = "WICK_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, env = "WICK_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Maximum time a request may take, in seconds, before it fails with 408.
    #[arg(long, env = "WICK_REQUEST_TIMEOUT_SECS", default_value_t = 300)]
    pub request_timeout_secs: u64,
}

/// How long in-flight work may take to finish after SIGTERM or Ctrl-C.
#[derive(Debug, Clone, Args)]
pub struct GraceArgs {
    /// Grace period after SIGTERM or Ctrl-C, in seconds.
    #[arg(long, env = "WICK_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address of the gateway.
    #[arg(long, env = "WICK_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    /// gRPC address of the scheduler's public API.
    #[arg(long, env = "WICK_GRPC", default_value = "127.0.0.1:50051")]
    pub grpc: SocketAddr,

    /// Workers to run in this process, each with its own copy of the model
    /// and KV cache, on free loopback ports.
    #[arg(long, env = "WICK_WORKER_COUNT", default_value_t = 1)]
    pub workers: usize,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub http_options: HttpArgs,

    #[command(flatten)]
    pub grace: GraceArgs,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// HTTP address to listen on.
    #[arg(long, env = "WICK_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    /// URL of the scheduler's gRPC API.
    #[arg(long, env = "WICK_SCHEDULER", default_value = "http://127.0.0.1:50051")]
    pub scheduler: String,

    /// Separate address for Prometheus metrics at /metrics, so a public
    /// HTTP port need not expose them. `/metrics` on --http stays served.
    #[arg(long, env = "WICK_METRICS")]
    pub metrics: Option<SocketAddr>,

    #[command(flatten)]
    pub http_options: HttpArgs,

    #[command(flatten)]
    pub grace: GraceArgs,
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// gRPC address of the public API.
    #[arg(long, env = "WICK_GRPC", default_value = "127.0.0.1:50051")]
    pub grpc: SocketAddr,

    /// Worker URL, such as http://10.0.0.5:50061. Repeatable, or
    /// comma-separated in the environment variable.
    #[arg(
        long = "worker",
        env = "WICK_WORKERS",
        value_delimiter = ',',
        required = true
    )]
    pub workers: Vec<String>,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Address for Prometheus metrics at /metrics. Off when unset.
    #[arg(long, env = "WICK_METRICS")]
    pub metrics: Option<SocketAddr>,

    #[command(flatten)]
    pub grace: GraceArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// gRPC address of the worker API.
    #[arg(long, env = "WICK_GRPC", default_value = "127.0.0.1:50061")]
    pub grpc: SocketAddr,

    /// Name of this worker in logs and metric labels. Default: the gRPC
    /// address.
    #[arg(long, env = "WICK_WORKER_NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Address for Prometheus metrics at /metrics. Off when unset.
    #[arg(long, env = "WICK_METRICS")]
    pub metrics: Option<SocketAddr>,

    #[command(flatten)]
    pub grace: GraceArgs,
}

#[derive(Debug, Args)]
pub struct DemoModelArgs {
    /// Folder to write config.json, tokenizer.json and model.safetensors to.
    #[arg(long)]
    pub out: PathBuf,

    /// Model to write: `demo` (the built-in demo model) or
    /// `phi2-2layer` (phi-2's full width with 2 layers and random weights,
    /// about 1.7 GB, for benchmarks).
    #[arg(long, value_enum, default_value_t = DemoPreset::Demo)]
    pub preset: DemoPreset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoPreset {
    Demo,
    #[value(name = "phi2-2layer")]
    Phi2TwoLayer,
}
