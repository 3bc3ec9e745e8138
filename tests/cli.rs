//! End-to-end tests of the `wick` command line: start-up errors, the demo
//! model on disk, `wick serve` and clean shutdown.

mod common;

use std::time::Duration;

use common::{free_addr, start_serve, WickProcess};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn taken_port_exits_with_one_line_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut worker = WickProcess::start("worker", &["worker", "--grpc", &addr, "--model", "demo"]);

    let status = worker
        .wait_exit(Duration::from_secs(60))
        .expect("the worker exits when its port is taken");
    assert!(!status.success());
    let logs = worker.logs();
    let last = logs.lines().last().unwrap_or_default();
    assert!(last.starts_with("wick: "), "last line: {last}");
    assert!(last.contains(&addr), "the reason names the address: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_model_folder_exits_with_reason() {
    let mut worker = WickProcess::start(
        "worker",
        &[
            "worker",
            "--grpc",
            &free_addr().to_string(),
            "--model",
            "/nonexistent/wick-model-folder",
        ],
    );
    let status = worker
        .wait_exit(Duration::from_secs(60))
        .expect("the worker exits when its model is missing");
    assert!(!status.success());
    let logs = worker.logs();
    assert!(
        logs.contains("/nonexistent/wick-model-folder"),
        "the error names the path: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_model_folder_serves_like_builtin() {
    let dir = std::env::temp_dir().join(format!("wick-demo-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["demo-model", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(dir.join(file).is_file(), "{file} is written");
    }

    // The same greedy request on the built-in model and on the folder.
    let mut texts = Vec::new();
    for model in ["demo", dir.to_str().unwrap()] {
        let (_serve, http) = start_serve(model, &[]).await;
        let body: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{http}/ai/run/@cf/microsoft/phi-2"))
            .json(&json!({"prompt": "The sky is", "max_tokens": 10, "temperature": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        texts.push(body["result"]["response"].as_str().unwrap().to_string());
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(texts[0], texts[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_warns_about_demo_and_stops_on_sigterm() {
    let (mut serve, _) = start_serve("demo", &["--workers", "2"]).await;
    let logs = serve.logs();
    assert!(
        logs.contains("random"),
        "the demo warning is logged: {logs}"
    );
    assert!(
        logs.contains("microsoft/phi-2"),
        "it says how to serve phi-2"
    );

    let status = serve
        .terminate(Duration::from_secs(40))
        .expect("wick serve exits after SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_open_stream_finish() {
    let (mut serve, http) = start_serve("demo", &[]).await;
    let response = reqwest::Client::new()
        .post(format!("http://{http}/ai/run/@cf/microsoft/phi-2"))
        .json(&json!({"prompt": "Tell me a long story.", "max_tokens": 400, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    serve.send_sigterm();
    let sse = common::read_sse(response).await;

    assert!(sse.done, "the open stream ends with [DONE]");
    let last = sse.events.last().expect("a final event");
    assert!(last.get("errors").is_none(), "no error event: {last}");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let status = serve
        .wait_exit(Duration::from_secs(40))
        .expect("wick serve exits once the stream is done");
    assert!(status.success(), "{status:?}");
}
