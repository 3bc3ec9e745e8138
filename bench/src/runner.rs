//! The run loop: sends requests from up to `concurrency` clients at once,
//! optionally paced by Poisson arrivals, until the request count or the
//! duration is reached, then waits for those in flight.

use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::args::BenchConfig;
use crate::client::{self, Completed, Failure};
use crate::cpu::CpuTime;
use crate::report::Report;
use crate::workload::{PoissonGaps, Workload, WorkloadError};

/// A run that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("failed to build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("failed to read the process CPU time: {0}")]
    Cpu(#[from] std::io::Error),
    #[error("a request task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the load described by `config` and measures it, ticking
/// `progress` once per ended request.
///
/// Failed requests are counted in the report, not returned as errors.
/// Returns [`RunError`] when the prompts file, the HTTP client or the CPU
/// clock cannot be used.
pub async fn execute(config: &BenchConfig, progress: &ProgressBar) -> Result<Report, RunError> {
    let mut workload = Workload::new(config)?;
    let mut headers = HeaderMap::new();
    if let Some(authorization) = &config.authorization {
        headers.insert(AUTHORIZATION, authorization.clone());
    }
    let client = Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(config.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let mut gaps = config
        .request_rate
        .map(|rate| PoissonGaps::new(rate, config.seed));
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut in_flight = JoinSet::new();
    let mut outcomes = Vec::new();

    info!(endpoint = %config.endpoint, concurrency = config.concurrency, "benchmark started");
    let cpu_start = CpuTime::now()?;
    let started = Instant::now();
    let deadline = config
        .duration
        .map(|duration| tokio::time::Instant::from_std(started + duration));
    let mut next_arrival = tokio::time::Instant::from_std(started);

    for index in 0..config.requests.unwrap_or(u64::MAX) {
        if let Some(gaps) = gaps.as_mut() {
            next_arrival += gaps.next_gap();
            if deadline.is_some_and(|deadline| next_arrival >= deadline) {
                break;
            }
            tokio::time::sleep_until(next_arrival).await;
        }
        // Waits for a free client, but never past the deadline.
        let permit = match deadline {
            Some(deadline) => tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                () = tokio::time::sleep_until(deadline) => break,
            },
            None => slots.clone().acquire_owned().await,
        };
        let permit = permit.expect("the semaphore is never closed");
        if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            break;
        }

        let body = workload.body(index);
        let (client, endpoint, timeout) = (client.clone(), config.endpoint.clone(), config.timeout);
        let ticker = progress.clone();
        in_flight.spawn(async move {
            let outcome = client::send(&client, &endpoint, &body, timeout).await;
            drop(permit);
            ticker.inc(1);
            (index, outcome)
        });
        // Collects ended requests as it goes so a long run keeps no more
        // finished tasks than it must.
        while let Some(ended) = in_flight.try_join_next() {
            record(&mut outcomes, ended?, progress);
        }
    }
    while let Some(ended) = in_flight.join_next().await {
        record(&mut outcomes, ended?, progress);
    }

    let wall = started.elapsed();
    let cpu = CpuTime::now()?.since(cpu_start);
    progress.finish_and_clear();
    let report = Report::new(config, &outcomes, wall, cpu);
    if report.requests_failed > 0 {
        warn!(failed = report.requests_failed, errors = ?report.errors, "some requests failed");
    }
    info!(
        completed = report.requests_completed,
        seconds = report.duration_s,
        "benchmark finished"
    );
    Ok(report)
}

/// Stores one ended request. Failures are logged at debug, one line per
/// request, because the report counts them by cause.
fn record(
    outcomes: &mut Vec<Result<Completed, Failure>>,
    ended: (u64, Result<Completed, Failure>),
    progress: &ProgressBar,
) {
    let (index, outcome) = ended;
    match &outcome {
        Ok(completed) => {
            debug!(request = index, output_tokens = completed.output_tokens, ttft = ?completed.ttft, "request completed")
        }
        Err(failure) => {
            debug!(request = index, %failure, "request failed");
            let failed = outcomes.iter().filter(|outcome| outcome.is_err()).count() + 1;
            progress.set_message(format!("{failed} failed"));
        }
    }
    outcomes.push(outcome);
}
