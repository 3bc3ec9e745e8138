//! End-to-end tests of the whole cluster: the real `wick` binary as separate
//! processes (one gateway, one scheduler, two workers) on loopback ports,
//! used only through HTTP and gRPC, as a client would.

mod common;

use std::time::Duration;

use common::{read_sse, start_gateway, start_scheduler, start_worker, wait_ready, Cluster};
use serde_json::json;

const PHI2: &str = "/ai/run/@cf/microsoft/phi-2";

#[tokio::test(flavor = "multi_thread")]
async fn json_request_returns_response_and_usage() {
    let cluster = Cluster::start().await;
    let client = reqwest::Client::new();

    let response = client
        .post(cluster.url(PHI2))
        .json(&json!({"prompt": "Write a haiku about rivers.", "max_tokens": 12, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert!(body["result"]["response"].is_string());
    let usage = &body["result"]["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 12);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_text_equals_json_text() {
    let cluster = Cluster::start().await;
    let client = reqwest::Client::new();
    let request = json!({"prompt": "Count to five.", "max_tokens": 20, "temperature": 0});

    let whole: serde_json::Value = client
        .post(cluster.url(PHI2))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let response = client
        .post(cluster.url(PHI2))
        .json(&streaming)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let sse = read_sse(response).await;

    assert!(sse.done, "the stream ends with [DONE]");
    assert_eq!(sse.text, whole["result"]["response"].as_str().unwrap());
    let last = sse.events.last().expect("at least the usage event");
    assert_eq!(last["usage"], whole["result"]["usage"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_all_complete() {
    let cluster = Cluster::start().await;
    let client = reqwest::Client::new();

    let mut requests = Vec::new();
    for index in 0..16 {
        let client = client.clone();
        let url = cluster.url(PHI2);
        requests.push(tokio::spawn(async move {
            let body = json!({
                "prompt": format!("Request number {index}."),
                "max_tokens": 8,
                "seed": index + 1,
                "stream": index % 2 == 0,
            });
            let response = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200, "request {index}");
            if index % 2 == 0 {
                assert!(
                    read_sse(response).await.done,
                    "request {index} ends with [DONE]"
                );
            } else {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["success"], true, "request {index}");
            }
        }));
    }
    for request in requests {
        tokio::time::timeout(Duration::from_secs(120), request)
            .await
            .expect("every request finishes within 120 s")
            .expect("no request task panics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_client_streams_tokens() {
    use wick_proto::v1::generation_client::GenerationClient;
    use wick_proto::v1::{generate_event, generate_request, GenerateRequest, SamplingParams};

    let cluster = Cluster::start().await;
    let mut client = GenerationClient::connect(format!("http://{}", cluster.grpc))
        .await
        .unwrap();

    let models = client
        .list_models(wick_proto::v1::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(models.models.len(), 1);
    assert!(models.models[0]
        .aliases
        .iter()
        .any(|alias| alias == "@cf/microsoft/phi-2"));

    let request = GenerateRequest {
        model: "@cf/microsoft/phi-2".into(),
        input: Some(generate_request::Input::Prompt("Hello".into())),
        max_tokens: Some(5),
        sampling: Some(SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut stream = client.generate(request).await.unwrap().into_inner();
    let mut token_count = 0;
    let mut finished = None;
    while let Some(event) = stream.message().await.unwrap() {
        match event.event {
            Some(generate_event::Event::Delta(delta)) => token_count += delta.token_ids.len(),
            Some(generate_event::Event::Finished(done)) => finished = Some(done),
            other => panic!("unexpected event {other:?}"),
        }
    }
    let finished = finished.expect("a finished event");
    let usage = finished.usage.expect("usage in the finished event");
    assert_eq!(usage.completion_tokens as usize, token_count);
    assert!(usage.completion_tokens <= 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_leaves_no_stuck_request() {
    let mut cluster = Cluster::start().await;
    let client = reqwest::Client::new();

    let mut requests = Vec::new();
    for index in 0..8 {
        let client = client.clone();
        let url = cluster.url(PHI2);
        requests.push(tokio::spawn(async move {
            let body =
                json!({"prompt": format!("Story {index}"), "max_tokens": 200, "stream": true});
            match client.post(url).json(&body).send().await {
                Ok(response) if response.status() == 200 => {
                    // Either the whole text or an error event; never a hang.
                    let _ = read_sse(response).await;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    assert!(
                        status == 503 || status == 429,
                        "request {index}: unexpected status {status}"
                    );
                }
                Err(error) => panic!("request {index} failed: {error}"),
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.workers[1].kill();
    for request in requests {
        tokio::time::timeout(Duration::from_secs(120), request)
            .await
            .expect("no request hangs after a worker is killed")
            .expect("no request task panics");
    }

    // The cluster keeps serving on the other worker.
    let response = client
        .post(cluster.url(PHI2))
        .json(&json!({"prompt": "still there?", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The restarted worker rejoins: the scheduler reconnects on its own.
    let addr = cluster.worker_addrs[1];
    cluster.workers[1] = start_worker("worker-1-restarted", addr);
    let mut grpc = wick_proto::v1::generation_client::GenerationClient::connect(format!(
        "http://{}",
        cluster.grpc
    ))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let models = grpc
            .list_models(wick_proto::v1::ListModelsRequest {})
            .await
            .unwrap()
            .into_inner();
        if models.models.first().map(|model| model.workers) == Some(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted worker did not rejoin within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_started_before_scheduler_becomes_ready() {
    let http = common::free_addr();
    let grpc = common::free_addr();
    let _gateway = start_gateway(http, grpc);
    let client = reqwest::Client::new();

    // Alive but not ready while nothing is behind it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let alive = loop {
        if let Ok(response) = client.get(format!("http://{http}/healthz")).send().await {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alive.status(), 200);
    let ready = client
        .get(format!("http://{http}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let early = client
        .post(format!("http://{http}{PHI2}"))
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 503);

    let worker_addr = common::free_addr();
    let _worker = start_worker("worker", worker_addr);
    let _scheduler = start_scheduler(grpc, &[worker_addr]);
    wait_ready(http).await;
    let response = client
        .post(format!("http://{http}{PHI2}"))
        .json(&json!({"prompt": "hi", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_sigterm_lets_open_stream_finish() {
    let mut cluster = Cluster::start().await;
    let client = reqwest::Client::new();
    let response = client
        .post(cluster.url(PHI2))
        .json(&json!({"prompt": "Tell me a very long story.", "max_tokens": 1500, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stream = tokio::spawn(read_sse(response));

    cluster.scheduler.send_sigterm();
    // The draining scheduler reports NOT_SERVING, so the gateway turns
    // new requests away while the open stream goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(cluster.url("/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway stayed ready after the scheduler's SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = client
        .post(cluster.url(PHI2))
        .json(&json!({"prompt": "hi", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 503);

    let sse = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("the open stream hung")
        .unwrap();
    assert!(sse.done, "the open stream ends with [DONE]");
    let last = sse.events.last().expect("a final event");
    assert!(last.get("errors").is_none(), "no error event: {last}");
    let completion_tokens = last["usage"]["completion_tokens"].as_u64().unwrap();
    eprintln!("the drained stream returned {completion_tokens} tokens");
    assert!(completion_tokens > 0);
    let status = cluster
        .scheduler
        .wait_exit(Duration::from_secs(40))
        .expect("the scheduler exits once the stream is done");
    assert!(status.success(), "{status:?}");
}
