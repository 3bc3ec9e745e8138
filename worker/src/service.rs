//! The worker's gRPC service (`Describe`, `Run`, health) around an
//! [`Engine`].
//!
//! - `engine_loop`: the OS thread that owns the engine and steps it.
//! - `convert`: proto messages to engine types and back.
//! - `metrics`: `wick_worker_*` Prometheus series.
//!
//! One Run stream is served at a time. A new stream replaces the old one
//! (whose sequences are released), and when a stream's command side ends
//! the scheduler is gone, so its sequences are released too.

mod convert;
mod engine_loop;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};
use wick_proto::v1 as pb;
use wick_proto::v1::worker_server::{Worker, WorkerServer};

use crate::engine::{Engine, EngineLimits, LoadOptions, ModelInfo, ModelSource};
use engine_loop::{Command, SharedState};

/// Commands waiting for the engine thread; senders wait when it is full.
const COMMAND_QUEUE: usize = 1024;
/// Step results waiting to be sent to the scheduler; the engine thread
/// waits when the scheduler falls this far behind.
const EVENT_QUEUE: usize = 256;

/// Everything a worker needs to run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Address of the `Worker` gRPC service. Default `127.0.0.1:50061`.
    pub grpc_addr: SocketAddr,
    /// The model to load. Default the built-in demo model.
    pub model: ModelSource,
    /// Device and dtype. Default CPU, dtype chosen by device.
    pub load: LoadOptions,
    /// KV-cache size and batch limits. Default [`EngineLimits::default`].
    pub limits: EngineLimits,
    /// Name in logs and the `worker` label of metrics. Default `worker-0`.
    pub name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50061)),
            model: ModelSource::Demo,
            load: LoadOptions::default(),
            limits: EngineLimits::default(),
            name: "worker-0".to_string(),
        }
    }
}

/// A failure that stops the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("failed to load the model: {0}")]
    Load(#[from] crate::LoadError),
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the model-loading task failed: {0}")]
    LoadTask(#[from] tokio::task::JoinError),
}

/// Loads the model, binds `config.grpc_addr` and serves until `shutdown`
/// completes.
///
/// Errors with [`WorkerError::Load`] when the model cannot be loaded and
/// [`WorkerError::Bind`] when the address is taken.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    info!(worker = %config.name, model = ?config.model, "loading model");
    let WorkerConfig {
        grpc_addr,
        model,
        load,
        limits,
        name,
    } = config;
    let engine = tokio::task::spawn_blocking(move || Engine::load(&model, &load, limits)).await??;
    let listener = TcpListener::bind(grpc_addr)
        .await
        .map_err(|source| WorkerError::Bind {
            addr: grpc_addr,
            source,
        })?;
    serve(listener, engine, name, shutdown).await
}

/// Serves `engine` on an already bound listener until `shutdown`
/// completes. Health reports SERVING from the start, because the model is
/// already loaded.
///
/// Errors with [`WorkerError::Serve`] when the gRPC server fails.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    name: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let describe = describe_template(&engine);
    // Seeded from the engine, so a Describe that arrives before the engine
    // thread's first report does not see an empty cache.
    let shared = Arc::new(SharedState {
        kv_blocks_free: engine.kv_blocks_free().into(),
    });
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let thread_shared = Arc::clone(&shared);
    let thread_name = name.clone();
    let engine_thread = std::thread::Builder::new()
        .name(format!("engine-{name}"))
        .spawn(move || engine_loop::run(engine, thread_name, thread_shared, receiver))
        .expect("spawning a thread only fails when the OS is out of resources");

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerServer<WorkerService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let service = WorkerService {
        name: name.clone(),
        describe,
        shared,
        commands: commands.clone(),
        next_stream: Arc::new(AtomicU64::new(1)),
    };
    let addr = listener.local_addr().ok();
    info!(worker = %name, ?addr, "serving");
    // Run streams never end on their own, so the engine thread must close
    // them before the server's graceful shutdown can finish.
    let shutdown = async move {
        shutdown.await;
        let _ = commands.send(Command::Shutdown).await;
    };
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(WorkerServer::new(service))
        .serve_with_incoming_shutdown(
            // Every step sends a few small frames; without TCP_NODELAY,
            // Nagle's algorithm delays them until the peer's delayed
            // ACK, about 40 ms on Linux.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    info!(worker = %name, "stopped");
    Ok(result?)
}

/// Builds the fixed part of `Describe`; only the free blocks change later.
fn describe_template(engine: &Engine) -> pb::DescribeResponse {
    let info: &ModelInfo = engine.model_info();
    let limits = engine.limits();
    pb::DescribeResponse {
        model_id: info.id.clone(),
        family: info.family.clone(),
        tokenizer_json: info.tokenizer_json.clone(),
        eos_token_ids: info.eos_token_ids.clone(),
        context_length: info.context_length as u32,
        kv_block_size: limits.block_size as u32,
        kv_blocks_total: engine.kv_blocks_total() as u32,
        kv_blocks_free: engine.kv_blocks_free() as u32,
        max_batch_sequences: limits.max_batch_sequences as u32,
        max_step_tokens: limits.max_step_tokens as u32,
        device: info.device.clone(),
        dtype: info.dtype.clone(),
        chat_template: info.chat_template.clone().unwrap_or_default(),
        vocab_size: info.vocab_size as u32,
        lora_adapters: Vec::new(),
        bos_token_id: info.bos_token_id,
    }
}

struct WorkerService {
    name: String,
    describe: pb::DescribeResponse,
    shared: Arc<SharedState>,
    commands: mpsc::Sender<Command>,
    next_stream: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let mut describe = self.describe.clone();
        describe.kv_blocks_free = self.shared.kv_blocks_free.load(Ordering::Relaxed) as u32;
        Ok(Response::new(describe))
    }

    type RunStream = ReceiverStream<Result<pb::WorkerEvent, Status>>;

    async fn run(
        &self,
        request: Request<Streaming<pb::WorkerCommand>>,
    ) -> Result<Response<Self::RunStream>, Status> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        self.commands
            .send(Command::Attach { stream, events })
            .await
            .map_err(|_| Status::unavailable("the worker is shutting down"))?;
        info!(worker = %self.name, stream, "run stream opened");
        let forward = forward_commands(
            self.name.clone(),
            stream,
            request.into_inner(),
            self.commands.clone(),
        );
        tokio::spawn(forward);
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Passes one Run stream's commands to the engine thread until the stream
/// ends, then detaches it. Stops early when the engine thread is gone, so
/// the connection is not kept open by this task.
async fn forward_commands(
    name: String,
    stream: u64,
    mut inbound: Streaming<pb::WorkerCommand>,
    commands: mpsc::Sender<Command>,
) {
    loop {
        let message = tokio::select! {
            message = inbound.next() => message,
            () = commands.closed() => return,
        };
        let command = match message {
            Some(Ok(pb::WorkerCommand {
                command: Some(command),
            })) => command,
            Some(Ok(pb::WorkerCommand { command: None })) => continue,
            Some(Err(status)) => {
                warn!(worker = %name, stream, %status, "run stream failed");
                break;
            }
            None => break,
        };
        let command = match command {
            pb::worker_command::Command::Admit(admit) => Command::Admit { stream, admit },
            pb::worker_command::Command::Release(release) => Command::Release {
                stream,
                sequence_id: release.sequence_id,
            },
        };
        if commands.send(command).await.is_err() {
            return;
        }
    }
    let _ = commands.send(Command::Detach { stream }).await;
}
