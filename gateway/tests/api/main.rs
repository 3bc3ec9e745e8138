//! HTTP tests of the gateway against a fake scheduler, all on loopback.

mod fake;
mod limits;
mod openai;
mod streaming;
mod validation;

use std::sync::Arc;
use std::time::Duration;

use fake::{FakeScheduler, Script};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wick_gateway::GatewayConfig;
use wick_proto::v1::GenerateRequest;

/// Upper bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub const WORKERS_AI_ROUTE: &str = "/client/v4/accounts/test-account/ai/run/@cf/microsoft/phi-2";

/// A gateway on 127.0.0.1:0 in front of a fake scheduler.
pub struct Cluster {
    pub fake: FakeScheduler,
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    gateway: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Starts a cluster whose fake plays `script` for every request.
    pub async fn start(
        script: impl Fn(&GenerateRequest) -> Script + Send + Sync + 'static,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let fake = FakeScheduler::start(Arc::new(script)).await;
        let mut config = GatewayConfig {
            scheduler_url: fake.url.clone(),
            readiness_poll_interval: Duration::from_millis(50),
            sse_keep_alive: Duration::from_millis(200),
            ..GatewayConfig::default()
        };
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, signal) = oneshot::channel::<()>();
        let gateway = tokio::spawn(async move {
            let signal = async {
                let _ = signal.await;
            };
            wick_gateway::serve(listener, config, signal)
                .await
                .expect("gateway serves");
        });
        let client = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        Self {
            fake,
            base,
            client,
            shutdown: Some(shutdown),
            gateway,
        }
    }

    /// Starts a cluster whose fake streams "Hello world".
    pub async fn hello() -> Self {
        Self::start(|_| Script::hello(), |_| {}).await
    }

    /// Sends the shutdown signal and waits for `serve` to return.
    pub async fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(WAIT, &mut self.gateway)
            .await
            .expect("the gateway stops in time")
            .expect("the gateway task ends without a panic");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` as JSON text to `path`.
    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the gateway answers")
    }

    /// Posts `body` and returns the status and the parsed JSON body.
    pub async fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"));
        (status, json)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.gateway.abort();
    }
}

/// Waits up to [`WAIT`] for `condition`, polling every 20 ms.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}
