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
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        loop {
            let models = client
                .list_models(pb::ListModelsRequest {})
                .await
                .unwrap()
                .into_inner();
            let connected: u32 = models.models.iter().map(|m| m.workers).sum();
            if connected == workers {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {workers} workers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TEST_TIMEOUT, task)
                .await
                .unwrap()
                .unwrap();
        }
    }
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
    Ok(tokio::time::timeout(TEST_TIMEOUT, collect(stream))
        .await
        .expect("stream timed out"))
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
