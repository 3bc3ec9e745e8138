//! End-to-end tests with the official Python clients (`openai` and
//! `cloudflare`), pointed at the gateway by base URL.
//!
//! `scripts/test` installs the clients into `.venv` and sets
//! `WICK_TEST_PYTHON`. Run without it, these tests fail with a message
//! saying so, so a missing client can never pass silently.

mod common;

use std::process::Command;

use common::Cluster;

fn python() -> String {
    std::env::var("WICK_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "WICK_TEST_PYTHON is not set: run the tests with scripts/test, which installs the \
             Python clients into .venv"
        )
    })
}

fn run_client(script: &str, base_url: &str) -> String {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python())
        .arg(&path)
        .arg(base_url)
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_client_completes() {
    let cluster = Cluster::start().await;
    let base = cluster.url("/v1");
    let output = tokio::task::spawn_blocking(move || run_client("openai_client.py", &base))
        .await
        .unwrap();
    assert!(output.contains("chat ok"), "{output}");
    assert!(output.contains("chat stream ok"), "{output}");
    assert!(output.contains("completion ok"), "{output}");
    assert!(output.contains("completion stream ok"), "{output}");
    assert!(output.contains("models ok"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudflare_python_client_completes() {
    let cluster = Cluster::start().await;
    let base = cluster.url("/client/v4");
    let output = tokio::task::spawn_blocking(move || run_client("cloudflare_client.py", &base))
        .await
        .unwrap();
    assert!(output.contains("run ok"), "{output}");
    assert!(output.contains("run stream ok"), "{output}");
}
