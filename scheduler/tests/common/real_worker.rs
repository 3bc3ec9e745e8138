//! Real workers: the demo model behind `wick_worker::service::serve`.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use wick_proto::v1 as pb;
use wick_proto::v1::worker_client::WorkerClient;
use wick_worker::{Engine, EngineLimits, KvCapacity, LoadOptions, ModelSource};

use super::TEST_TIMEOUT;

pub struct RealWorker {
    pub url: String,
    pub name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn limits(kv_tokens: usize, max_sequences: usize) -> EngineLimits {
    EngineLimits {
        block_size: 16,
        kv_capacity: KvCapacity::Tokens(kv_tokens),
        max_batch_sequences: max_sequences,
        max_step_tokens: 512,
    }
}

impl RealWorker {
    pub async fn start(name: &str, limits: EngineLimits) -> RealWorker {
        let engine = tokio::task::spawn_blocking(move || {
            Engine::load(&ModelSource::Demo, &LoadOptions::default(), limits).unwrap()
        })
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let worker_name = name.to_string();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            wick_worker::service::serve(listener, engine, worker_name, shutdown)
                .await
                .unwrap();
        });
        RealWorker {
            url,
            name: name.to_string(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> WorkerClient<Channel> {
        WorkerClient::connect(self.url.clone()).await.unwrap()
    }

    pub async fn describe(&self) -> pb::DescribeResponse {
        let mut client = self.client().await;
        client
            .describe(pb::DescribeRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until every KV block of the worker is free again.
    pub async fn wait_all_blocks_free(&self) {
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        loop {
            let describe = self.describe().await;
            if describe.kv_blocks_free == describe.kv_blocks_total {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {} of {} blocks still used",
                self.name,
                describe.kv_blocks_total - describe.kv_blocks_free,
                describe.kv_blocks_total
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops the server; its Run streams end at once.
    pub async fn stop(&mut self) {
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

/// Reads a counter or gauge of the default registry with these labels.
pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    for family in prometheus::gather() {
        if family.name() != name {
            continue;
        }
        let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        for metric in family.get_metric() {
            let matches = labels.iter().all(|(key, value)| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == *key && label.value() == *value)
            });
            if matches && counter {
                return metric.get_counter().get_value();
            }
            if matches {
                return metric.get_gauge().get_value();
            }
        }
    }
    0.0
}
