//! One task per worker URL: connects, calls `Describe`, keeps the `Run`
//! stream open and passes its events to the batching loop. When the stream
//! breaks or a health check fails, it reports the worker lost and
//! reconnects with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tracing::{debug, info, warn};
use wick_proto::v1 as pb;
use wick_proto::v1::worker_client::WorkerClient;

use crate::event_loop::LoopEvent;

/// Timing of one link.
#[derive(Debug, Clone)]
pub struct LinkTiming {
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub health_interval: Duration,
    pub timeout: Duration,
}

/// Keeps worker `index` connected for as long as the task lives; the
/// caller aborts it on shutdown.
pub async fn run(index: usize, url: String, timing: LinkTiming, events: mpsc::Sender<LoopEvent>) {
    let mut backoff = timing.reconnect_initial;
    let mut attempts: u64 = 0;
    for epoch in 1.. {
        match connect(index, &url, epoch, &timing, &events).await {
            Ok(link) => {
                attempts = 0;
                backoff = timing.reconnect_initial;
                let reason = link.serve(&timing).await;
                if events
                    .send(LoopEvent::WorkerLost {
                        worker: index,
                        epoch,
                        reason,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                attempts += 1;
                // The first failure is news; repeats are only counted.
                if attempts == 1 {
                    warn!(worker = %url, %error, "cannot connect to worker; retrying with backoff");
                } else {
                    debug!(worker = %url, %error, attempts, "worker still unreachable");
                }
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(timing.reconnect_max);
    }
}

struct Link {
    index: usize,
    url: String,
    epoch: u64,
    channel: Channel,
    stream: tonic::Streaming<pb::WorkerEvent>,
    events: mpsc::Sender<LoopEvent>,
}

async fn connect(
    index: usize,
    url: &str,
    epoch: u64,
    timing: &LinkTiming,
    events: &mpsc::Sender<LoopEvent>,
) -> Result<Link, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid worker URL {url:?}: {e}"))?
        .connect_timeout(timing.timeout)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = WorkerClient::new(channel.clone());
    let describe = tokio::time::timeout(timing.timeout, client.describe(pb::DescribeRequest {}))
        .await
        .map_err(|_| "Describe timed out".to_string())?
        .map_err(|status| format!("Describe failed: {status}"))?
        .into_inner();
    let json = describe.tokenizer_json.clone();
    let tokenizer = tokio::task::spawn_blocking(move || json.parse::<tokenizers::Tokenizer>())
        .await
        .map_err(|e| format!("tokenizer task failed: {e}"))?
        .map_err(|e| format!("the worker's tokenizer.json is invalid: {e}"))?;
    let (commands, receiver) = mpsc::unbounded_channel();
    let stream = client
        .run(UnboundedReceiverStream::new(receiver))
        .await
        .map_err(|status| format!("Run failed: {status}"))?
        .into_inner();
    info!(worker = %url, epoch, model = %describe.model_id, "run stream open");
    let up = LoopEvent::WorkerUp {
        worker: index,
        epoch,
        describe: Box::new(describe),
        tokenizer: Arc::new(tokenizer),
        commands,
    };
    events
        .send(up)
        .await
        .map_err(|_| "scheduler stopped".to_string())?;
    Ok(Link {
        index,
        url: url.to_string(),
        epoch,
        channel,
        stream,
        events: events.clone(),
    })
}

impl Link {
    /// Forwards events until the stream ends or health fails; returns why.
    async fn serve(mut self, timing: &LinkTiming) -> String {
        let (unhealthy_tx, mut unhealthy) = oneshot::channel();
        let monitor = tokio::spawn(watch_health(
            self.channel.clone(),
            timing.clone(),
            unhealthy_tx,
        ));
        let reason = loop {
            let message = tokio::select! {
                message = self.stream.message() => message,
                reason = &mut unhealthy => break reason.unwrap_or_else(|_| "health monitor stopped".into()),
            };
            let event = match message {
                Ok(Some(pb::WorkerEvent { event: Some(event) })) => event,
                Ok(Some(pb::WorkerEvent { event: None })) => continue,
                Ok(None) => break "the Run stream ended".to_string(),
                Err(status) => break format!("the Run stream failed: {status}"),
            };
            let forwarded = LoopEvent::Worker {
                worker: self.index,
                epoch: self.epoch,
                event,
            };
            if self.events.send(forwarded).await.is_err() {
                break "scheduler stopped".to_string();
            }
        };
        monitor.abort();
        debug!(worker = %self.url, epoch = self.epoch, %reason, "link closed");
        reason
    }
}

/// Checks the worker's health every interval; sends the reason and stops
/// at the first failure or timeout.
async fn watch_health(channel: Channel, timing: LinkTiming, unhealthy: oneshot::Sender<String>) {
    let mut client = HealthClient::new(channel);
    let mut interval = tokio::time::interval(timing.health_interval);
    interval.tick().await;
    loop {
        interval.tick().await;
        let request = HealthCheckRequest {
            service: "wick.v1.Worker".to_string(),
        };
        let reason = match tokio::time::timeout(timing.timeout, client.check(request)).await {
            Err(_) => format!("health check timed out after {:?}", timing.timeout),
            Ok(Err(status)) => format!("health check failed: {status}"),
            Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
                continue
            }
            Ok(Ok(_)) => "health check reports NOT_SERVING".to_string(),
        };
        let _ = unhealthy.send(reason);
        return;
    }
}
