//! The wick scheduler: the public `Generation` API and continuous batching
//! across a pool of workers.
//!
//! Data flow: `service` (checks, template, tokenize) → `event_loop` (queue,
//! admit, stream tokens back) ⇄ `worker_link` (one `Run` stream per worker).
//!
//! Modules:
//! - `config`: [`SchedulerConfig`] and [`BatchingMode`].
//! - `service`: the `Generation` gRPC service.
//! - `validate`: field ranges and sampling defaults.
//! - `template`: the phi-2 prompt and chat templates, tool descriptions.
//! - `catalog`: models of the connected workers.
//! - `event_loop`: the task that owns all batching state.
//! - `batcher`: the batching policy (queue, KV-block accounts, placement).
//! - `sequence`: one request's tokens and output stream.
//! - `worker_link`: connection, reconnection and health of one worker.
//! - `detokenizer`: token ids to complete UTF-8 text deltas.
//! - `stop`: stop strings across delta boundaries.
//! - `tool_call`: tool calls parsed from generated text.
//! - `metrics`: `wick_scheduler_*` Prometheus series.
//! - `error`: request errors and their gRPC status codes.

pub mod batcher;
pub mod catalog;
pub mod config;
pub mod detokenizer;
pub mod error;
pub mod event_loop;
pub mod metrics;
pub mod sequence;
pub mod service;
pub mod stop;
pub mod template;
pub mod tool_call;
pub mod validate;
pub mod worker_link;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};
use wick_proto::v1::generation_server::GenerationServer;

pub use config::{BatchingMode, SchedulerConfig};

use batcher::Batcher;
use catalog::Catalog;
use event_loop::{EventLoop, LoopEvent, LoopSettings};
use service::GenerationService;
use worker_link::LinkTiming;

/// Events waiting for the batching loop; senders wait when it is full.
const LOOP_QUEUE: usize = 1024;

/// A failure that stops the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds `config.grpc_addr` and serves until `shutdown` completes.
///
/// Errors with [`SchedulerError::Bind`] when the address is taken.
pub async fn run(
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedulerError> {
    let addr = config.grpc_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SchedulerError::Bind { addr, source })?;
    serve(listener, config, shutdown).await
}

/// Serves `Generation` and health on an already bound listener, connected
/// to `config.workers`, until `shutdown` completes. Then it drains: health
/// reports NOT_SERVING, new requests get UNAVAILABLE, and accepted ones get
/// up to `config.drain_timeout` to finish before the rest end with a
/// `SHUTTING_DOWN` error event.
///
/// Errors with [`SchedulerError::Serve`] when the gRPC server fails.
pub async fn serve(
    listener: TcpListener,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedulerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in ["", "wick.v1.Generation"] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let catalog = Arc::new(RwLock::new(Catalog::new(config.model_aliases.clone())));
    let (events, receiver) = mpsc::channel(LOOP_QUEUE);
    let (cancels, cancel_receiver) = mpsc::unbounded_channel();
    let batcher = Batcher::new(
        config.batching,
        config.max_queue,
        config.decode_reserve_blocks,
        config.workers.len(),
    );
    let event_loop = EventLoop::new(
        batcher,
        &config.workers,
        Arc::clone(&catalog),
        health,
        LoopSettings {
            prefill_budget: config.prefill_budget,
            no_worker_timeout: config.no_worker_timeout,
        },
    );
    let loop_task = tokio::spawn(event_loop.run(receiver, cancel_receiver));
    let timing = LinkTiming {
        reconnect_initial: config.reconnect_initial,
        reconnect_max: config.reconnect_max,
        health_interval: config.health_interval,
        timeout: config.worker_timeout,
    };
    let links: Vec<_> = config
        .workers
        .iter()
        .enumerate()
        .map(|(index, url)| {
            tokio::spawn(worker_link::run(
                index,
                url.clone(),
                timing.clone(),
                events.clone(),
            ))
        })
        .collect();

    info!(addr = ?listener.local_addr().ok(), workers = config.workers.len(), mode = ?config.batching, "scheduler serving");
    let service = GenerationService {
        config,
        catalog,
        events: events.clone(),
        cancels,
        next_id: AtomicU64::new(1),
    };
    // Open streams end only when the loop ends them, so the loop must stop
    // before the server's graceful shutdown can finish.
    let stop_loop = events.clone();
    let drain_timeout = service.config.drain_timeout;
    let shutdown = async move {
        shutdown.await;
        let (drained, all_ended) = oneshot::channel();
        if stop_loop.send(LoopEvent::Drain { drained }).await.is_ok()
            && tokio::time::timeout(drain_timeout, all_ended)
                .await
                .is_err()
        {
            warn!(
                drain_timeout_secs = drain_timeout.as_secs_f64(),
                "requests still running after the drain timeout end with SHUTTING_DOWN"
            );
        }
        let _ = stop_loop.send(LoopEvent::Shutdown).await;
    };
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(GenerationServer::new(service))
        .serve_with_incoming_shutdown(
            // Every step sends a few small frames; without TCP_NODELAY,
            // Nagle's algorithm delays them until the peer's delayed
            // ACK, about 40 ms on Linux.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    for link in links {
        link.abort();
    }
    drop(events);
    let _ = loop_task.await;
    info!("scheduler stopped");
    Ok(result?)
}
