//! Helpers for end-to-end tests: start the real `wick` binary as separate
//! processes on free loopback ports and wait until they serve.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to become ready. Generous: tests run in
/// parallel on small CI machines.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Returns a loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
}

/// A running `wick` process, killed when dropped so no test leaves an
/// orphan behind, even when it panics.
pub struct WickProcess {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl WickProcess {
    /// Starts `wick ARGS`, with logs in a temporary file shown on failure.
    pub fn start(name: &str, args: &[&str]) -> WickProcess {
        WickProcess::start_with_env(name, args, &[])
    }

    /// Starts `wick ARGS` with the extra environment variables `env`.
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> WickProcess {
        let log = std::env::temp_dir().join(format!(
            "wick-e2e-{}-{}-{name}.log",
            std::process::id(),
            unique_suffix()
        ));
        let log_file = std::fs::File::create(&log).expect("create a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_wick"))
            .args(args)
            .env("RUST_LOG", "info")
            // Many processes share two cores in CI: one compute thread each.
            .env("RAYON_NUM_THREADS", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn the wick binary");
        WickProcess {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Sends SIGKILL and waits for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM without waiting for the process to exit.
    pub fn send_sigterm(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Sends SIGTERM and returns the exit status, or None if the process was
    /// still running after `timeout` (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Waits for the process to exit by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WickProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- logs of {} ---\n{}", self.name, self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Worker flags sized for tests: a small KV cache and the demo model.
pub fn worker_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "worker".into(),
        "--grpc".into(),
        addr.to_string(),
        "--model".into(),
        "demo".into(),
        "--kv-cache-tokens".into(),
        "4096".into(),
    ]
}

/// One gateway, one scheduler and two workers, each its own process.
pub struct Cluster {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub worker_addrs: Vec<SocketAddr>,
    pub workers: Vec<WickProcess>,
    pub scheduler: WickProcess,
    pub gateway: WickProcess,
}

impl Cluster {
    /// Starts the cluster and waits until the gateway reports ready.
    pub async fn start() -> Cluster {
        let worker_addrs = vec![free_addr(), free_addr()];
        let workers = worker_addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| start_worker(&format!("worker-{index}"), *addr))
            .collect();
        let grpc = free_addr();
        let scheduler = start_scheduler(grpc, &worker_addrs);
        let http = free_addr();
        let gateway = start_gateway(http, grpc);
        let cluster = Cluster {
            http,
            grpc,
            worker_addrs,
            workers,
            scheduler,
            gateway,
        };
        cluster.wait_ready().await;
        cluster
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Waits until `/readyz` returns 200.
    pub async fn wait_ready(&self) {
        wait_ready(self.http).await;
    }
}

pub fn start_worker(name: &str, addr: SocketAddr) -> WickProcess {
    let args = worker_args(addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WickProcess::start(name, &args)
}

pub fn start_scheduler(grpc: SocketAddr, workers: &[SocketAddr]) -> WickProcess {
    let mut args = vec!["scheduler".to_string(), "--grpc".into(), grpc.to_string()];
    for worker in workers {
        args.push("--worker".into());
        args.push(format!("http://{worker}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WickProcess::start("scheduler", &args)
}

/// Starts `wick serve` (gateway, scheduler and one worker in one process)
/// for `model` on free loopback ports, with `extra` flags, and returns it
/// with its HTTP address once the gateway is ready.
pub async fn start_serve(model: &str, extra: &[&str]) -> (WickProcess, SocketAddr) {
    start_serve_with_env(model, extra, &[]).await
}

/// Starts `wick serve` as [`start_serve`] does, with the extra environment
/// variables `env`.
pub async fn start_serve_with_env(
    model: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (WickProcess, SocketAddr) {
    let http = free_addr().to_string();
    let grpc = free_addr().to_string();
    let mut args = vec!["serve", "--http", &http, "--grpc", &grpc, "--model", model];
    args.extend_from_slice(extra);
    let process = WickProcess::start_with_env("serve", &args, env);
    let http: SocketAddr = http.parse().expect("a socket address parses back");
    wait_ready(http).await;
    (process, http)
}

pub fn start_gateway(http: SocketAddr, grpc: SocketAddr) -> WickProcess {
    let scheduler = format!("http://{grpc}");
    WickProcess::start(
        "gateway",
        &[
            "gateway",
            "--http",
            &http.to_string(),
            "--scheduler",
            &scheduler,
        ],
    )
}

/// Polls `GET /readyz` until it returns 200 or `READY_TIMEOUT` passes.
pub async fn wait_ready(http: SocketAddr) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/readyz");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(response) = client.get(&url).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway at {http} was not ready within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text of a finished SSE stream: the `response` fields of its events,
/// and whether it ended with `[DONE]`.
pub struct SseResult {
    pub text: String,
    pub events: Vec<serde_json::Value>,
    pub done: bool,
}

/// Reads a Workers AI SSE response with a real SSE parser.
pub async fn read_sse(response: reqwest::Response) -> SseResult {
    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;

    let mut stream = response.bytes_stream().eventsource();
    let mut result = SseResult {
        text: String::new(),
        events: Vec::new(),
        done: false,
    };
    while let Some(event) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an SSE event within 60 s")
    {
        let event = event.expect("a well-formed SSE event");
        assert!(!result.done, "an event after [DONE]: {:?}", event.data);
        if event.data == "[DONE]" {
            result.done = true;
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&event.data).expect("every data payload is JSON");
        if let Some(text) = value.get("response").and_then(|v| v.as_str()) {
            result.text.push_str(text);
        }
        result.events.push(value);
    }
    result
}
