//! Helpers shared by the scheduler's integration tests: start servers on
//! loopback port 0 and talk to them as a gRPC client does.

#![allow(dead_code)]

pub mod fake_worker;
pub mod real_worker;

use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use wick_proto::v1 as pb;
use wick_proto::v1::generation_client::GenerationClient;
use wick_scheduler::SchedulerConfig;

/// Every wait in these tests ends within this time.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Scheduler {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Scheduler {
    pub async fn start(mut config: SchedulerConfig, workers: Vec<String>) -> Scheduler {
        config.workers = workers;
        config.reconnect_initial = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        config.health_interval = Duration::from_millis(200);
        config.worker_timeout = Duration::from_secs(2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            wick_scheduler::serve(listener, config, shutdown)
                .await
                .unwrap();
        });
        Scheduler {
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> GenerationClient<Channel> {
        GenerationClient::connect(self.url.clone()).await.unwrap()
    }

    /// Waits until ListModels reports `workers` connected workers.
    pub async fn wait_for_workers(&self, workers: u32) {
        let mut client = self.client().await;
        poll_until(&format!("{workers} connected workers"), async || {
            let models = client
                .list_models(pb::ListModelsRequest {})
                .await
                .unwrap()
                .into_inner();
            models.models.iter().map(|m| m.workers).sum::<u32>() == workers
        })
        .await;
    }

    /// Starts the shutdown without waiting for it: the scheduler drains.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the scheduler down and waits until `serve` returns.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TEST_TIMEOUT, task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

/// Polls the scheduler's standard health check of `wick.v1.Generation`
/// until it reports `expected`.
pub async fn wait_for_health(url: &str, expected: ServingStatus) {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    poll_until(&format!("health {expected:?}"), async || {
        let request = HealthCheckRequest {
            service: "wick.v1.Generation".into(),
        };
        health.check(request).await.unwrap().into_inner().status() == expected
    })
    .await;
}

/// Runs `check` every 20 ms until it returns true, and fails the test when
/// that takes longer than [`TEST_TIMEOUT`].
pub async fn poll_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a stream to its end, failing the test after [`TEST_TIMEOUT`].
pub async fn collect_within(stream: tonic::Streaming<pb::GenerateEvent>) -> Outcome {
    tokio::time::timeout(TEST_TIMEOUT, collect(stream))
        .await
        .expect("stream timed out")
}

pub fn prompt(text: &str, max_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        input: Some(pb::generate_request::Input::Prompt(text.into())),
        max_tokens: Some(max_tokens),
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What one finished generation returned.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub deltas: usize,
    pub finished: Option<pb::Finished>,
    pub error: Option<pb::Error>,
}

impl Outcome {
    pub fn completion_tokens(&self) -> u32 {
        let finished = self
            .finished
            .as_ref()
            .unwrap_or_else(|| panic!("no Finished event: {self:?}"));
        finished.usage.unwrap().completion_tokens
    }
}

/// Sends one request and reads its stream to the end.
pub async fn generate(
    client: &mut GenerationClient<Channel>,
    request: pb::GenerateRequest,
) -> Result<Outcome, tonic::Status> {
    let stream = client.generate(request).await?.into_inner();
    Ok(collect_within(stream).await)
}

pub async fn collect(mut stream: tonic::Streaming<pb::GenerateEvent>) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some(event) = stream.next().await {
        match event.expect("stream failed").event.expect("empty event") {
            pb::generate_event::Event::Delta(delta) => {
                outcome.text.push_str(&delta.text);
                outcome.token_ids.extend(delta.token_ids);
                outcome.deltas += 1;
            }
            pb::generate_event::Event::Finished(finished) => outcome.finished = Some(finished),
            pb::generate_event::Event::Error(error) => outcome.error = Some(error),
        }
    }
    outcome
}
