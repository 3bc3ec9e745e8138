//! Turns parsed flags into each crate's config, logs it, and runs the role.

use std::time::Duration;

use anyhow::Context as _;
use tracing::info;
use wick_worker::{Engine, EngineLimits, KvCapacity, LoadOptions, ModelSource};

use crate::cli::{
    Batching, Cli, Command, DemoModelArgs, DemoPreset, GatewayArgs, HttpArgs, ModelArgs,
    PolicyArgs, SchedulerArgs, ServeArgs, WorkerArgs,
};
use crate::shutdown::{run_with_grace, Shutdown};
use crate::telemetry;

/// Time `wick scheduler` gets past its grace period to send the error
/// events of requests still open, before the process exits regardless.
const SCHEDULER_STOP_MARGIN: Duration = Duration::from_secs(5);

/// Runs the subcommand until it ends or shutdown completes.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let service = match &cli.command {
        Command::Serve(_) => "wick",
        Command::Gateway(_) => "wick-gateway",
        Command::Scheduler(_) => "wick-scheduler",
        Command::Worker(_) => "wick-worker",
        Command::DemoModel(_) | Command::Bench(_) => "wick",
    };
    let _telemetry = telemetry::init(cli.log_format, service)?;
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Gateway(args) => gateway(args).await,
        Command::Scheduler(args) => scheduler(args).await,
        Command::Worker(args) => worker(args).await,
        Command::DemoModel(args) => demo_model(args),
        Command::Bench(args) => wick_bench::run(args).await,
    }
}

fn demo_model(args: DemoModelArgs) -> anyhow::Result<()> {
    let preset = match args.preset {
        DemoPreset::Demo => wick_worker::demo::DemoPreset::Demo,
        DemoPreset::Phi2TwoLayer => wick_worker::demo::DemoPreset::Phi2TwoLayer,
    };
    wick_worker::demo::write_demo_model_as(&args.out, preset)
        .with_context(|| format!("cannot write the demo model to {}", args.out.display()))?;
    println!("wrote the demo model to {}", args.out.display());
    Ok(())
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    if let Some(addr) = args.metrics {
        telemetry::serve_metrics(addr, shutdown.clone()).await?;
    }
    let config = wick_worker::service::WorkerConfig {
        grpc_addr: args.grpc,
        name: args.name.clone().unwrap_or_else(|| args.grpc.to_string()),
        model: model_source(&args.model)?,
        load: load_options(&args.model),
        limits: engine_limits(&args.model),
    };
    info!(?config, "starting worker");
    warn_if_demo(&config.model);
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    let task = wick_worker::service::run(config, shutdown.wait());
    finish(run_with_grace(task, &shutdown, grace).await, "worker")
}

async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    if let Some(addr) = args.metrics {
        telemetry::serve_metrics(addr, shutdown.clone()).await?;
    }
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    let config = scheduler_config(args.grpc, args.workers, &args.policy, grace);
    info!(?config, "starting scheduler");
    let task = wick_scheduler::run(config, shutdown.wait());
    // The scheduler itself ends requests still open after `grace` with an
    // error event; the margin gives it time to send them.
    let limit = grace + SCHEDULER_STOP_MARGIN;
    finish(run_with_grace(task, &shutdown, limit).await, "scheduler")
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    if let Some(addr) = args.metrics {
        telemetry::serve_metrics(addr, shutdown.clone()).await?;
    }
    let config = gateway_config(args.http, args.scheduler, &args.http_options)?;
    info!(?config, "starting gateway");
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    let task = wick_gateway::run(config, shutdown.wait());
    finish(run_with_grace(task, &shutdown, grace).await, "gateway")
}

/// Runs workers, scheduler and gateway in this process. Workers listen on
/// free loopback ports and the scheduler reaches them over gRPC, exactly as
/// it reaches remote ones.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    anyhow::ensure!(
        args.workers >= 1,
        "--workers must be at least 1, got {}",
        args.workers
    );
    let source = model_source(&args.model)?;
    warn_if_demo(&source);

    // Workers and the scheduler stop after the gateway has drained.
    let (stop_backends, backends_stopping) = tokio::sync::watch::channel(false);
    let backend_stop = move || {
        let mut stopping = backends_stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };

    let mut worker_urls = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.workers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a loopback port for a worker")?;
        let addr = listener.local_addr()?;
        let name = format!("worker-{index}");
        info!(worker = %name, %addr, model = %args.model.model, "loading model");
        let engine = load_engine(&source, &args.model).await?;
        worker_urls.push(format!("http://{addr}"));
        let stop = backend_stop();
        tasks.spawn(async move {
            wick_worker::service::serve(listener, engine, name, stop)
                .await
                .context("worker failed")
        });
    }

    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    let scheduler = scheduler_config(args.grpc, worker_urls, &args.policy, grace);
    info!(config = ?scheduler, "starting scheduler");
    let scheduler_url = format!("http://{}", args.grpc);
    let stop = backend_stop();
    tasks.spawn(async move {
        wick_scheduler::run(scheduler, stop)
            .await
            .context("scheduler failed")
    });

    let gateway = gateway_config(args.http, scheduler_url, &args.http_options)?;
    info!(config = ?gateway, "starting gateway");
    let stop = shutdown.wait();
    let mut gateway_task = tokio::spawn(async move {
        wick_gateway::run(gateway, stop)
            .await
            .context("gateway failed")
    });
    info!(http = %args.http, grpc = %args.grpc, "wick is up");

    let drained = run_with_grace(
        async {
            // On a signal only the gateway stops at once: it stops accepting
            // and lets open streams finish, which needs the scheduler and the
            // workers. Any role that ends by itself ends the process, because
            // a cluster missing a role cannot serve.
            let first = tokio::select! {
                joined = &mut gateway_task => joined
                    .unwrap_or_else(|error| Err(anyhow::anyhow!("the gateway panicked: {error}"))),
                Some(joined) = tasks.join_next() => joined
                    .unwrap_or_else(|error| Err(anyhow::anyhow!("a role panicked: {error}"))),
            };
            let _ = stop_backends.send(true);
            first
        },
        &shutdown,
        grace,
    )
    .await;
    finish(drained, "wick serve")
}

fn finish<E>(outcome: Option<Result<(), E>>, role: &str) -> anyhow::Result<()>
where
    E: Into<anyhow::Error>,
{
    match outcome {
        Some(result) => {
            result.map_err(Into::into)?;
            info!(role, "stopped");
            Ok(())
        }
        None => {
            info!(role, "stopped after the grace period");
            Ok(())
        }
    }
}

fn warn_if_demo(source: &ModelSource) {
    if *source == ModelSource::Demo {
        tracing::warn!(
            "serving the built-in demo model: its weights are random and its text is \
             meaningless. To serve real phi-2, pass --model microsoft/phi-2 (downloaded \
             from the Hugging Face hub) or --model /path/to/phi-2 (a local folder)"
        );
    }
}

fn model_source(args: &ModelArgs) -> anyhow::Result<ModelSource> {
    ModelSource::parse(&args.model).with_context(|| format!("invalid --model {:?}", args.model))
}

fn load_options(args: &ModelArgs) -> LoadOptions {
    LoadOptions {
        device: args.device.clone(),
        dtype: args.dtype.clone(),
    }
}

fn engine_limits(args: &ModelArgs) -> EngineLimits {
    let kv_capacity = match args.kv_cache_bytes {
        Some(bytes) => KvCapacity::Bytes(bytes),
        None => KvCapacity::Tokens(args.kv_cache_tokens),
    };
    EngineLimits {
        block_size: args.kv_block_size,
        kv_capacity,
        max_batch_sequences: args.max_batch_sequences,
        max_step_tokens: args.max_step_tokens,
    }
}

async fn load_engine(source: &ModelSource, args: &ModelArgs) -> anyhow::Result<Engine> {
    let source = source.clone();
    let options = load_options(args);
    let limits = engine_limits(args);
    tokio::task::spawn_blocking(move || Engine::load(&source, &options, limits))
        .await
        .context("model loading panicked")?
        .context("cannot load the model")
}

/// Builds the scheduler's config. `grace` becomes its drain timeout.
fn scheduler_config(
    grpc: std::net::SocketAddr,
    workers: Vec<String>,
    policy: &PolicyArgs,
    grace: Duration,
) -> wick_scheduler::SchedulerConfig {
    wick_scheduler::SchedulerConfig {
        grpc_addr: grpc,
        workers,
        max_queue: policy.max_queue,
        batching: match policy.batching {
            Batching::Continuous => wick_scheduler::BatchingMode::Continuous,
            Batching::Static => wick_scheduler::BatchingMode::Static,
            Batching::Sequential => wick_scheduler::BatchingMode::Sequential,
        },
        model_aliases: model_aliases(&policy.model_aliases),
        no_worker_timeout: Duration::from_secs(policy.no_worker_timeout_secs),
        drain_timeout: grace,
        ..Default::default()
    }
}

/// Adds `ALIAS=MODEL_ID` and `ALIAS` flags to the scheduler's default
/// aliases. A bare `ALIAS` maps to the empty id, which the scheduler reads
/// as its default model.
fn model_aliases(flags: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut aliases = wick_scheduler::SchedulerConfig::default().model_aliases;
    for flag in flags {
        let (alias, id) = flag.split_once('=').unwrap_or((flag.as_str(), ""));
        aliases.insert(alias.trim().to_string(), id.trim().to_string());
    }
    aliases
}

fn gateway_config(
    http: std::net::SocketAddr,
    scheduler: String,
    options: &HttpArgs,
) -> anyhow::Result<wick_gateway::GatewayConfig> {
    let mut api_keys: Vec<String> = options
        .api_keys
        .iter()
        .filter(|key| !key.is_empty())
        .cloned()
        .collect();
    if let Some(path) = &options.api_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --api-key-file {}", path.display()))?;
        api_keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(wick_gateway::GatewayConfig {
        http_addr: http,
        scheduler_url: scheduler,
        api_keys,
        max_body_bytes: options.max_body_bytes,
        request_timeout: Duration::from_secs(options.request_timeout_secs),
        ..Default::default()
    })
}
