//! Generation cases that broke other LLM servers, checked over HTTP against
//! `wick serve` with the demo model: seeds, tiny temperatures, budgets,
//! `[DONE]`, disconnects and the queue bound.

mod common;

use std::time::{Duration, Instant};

use common::{read_sse, start_serve, WickProcess};
use futures::StreamExt as _;
use serde_json::{json, Value};

const PHI2: &str = "/ai/run/@cf/microsoft/phi-2";

/// `wick serve` on free ports with extra flags.
struct Serve {
    http: std::net::SocketAddr,
    _process: WickProcess,
}

impl Serve {
    async fn start(extra: &[&str]) -> Serve {
        let (process, http) = start_serve("demo", extra).await;
        Serve {
            http,
            _process: process,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    async fn generate(&self, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(PHI2))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Sends `body` with `stream: true` and reads the whole SSE stream.
    async fn stream(&self, mut body: Value) -> common::SseResult {
        body["stream"] = json!(true);
        let response = reqwest::Client::new()
            .post(self.url(PHI2))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        read_sse(response).await
    }

    async fn text(&self, body: Value) -> String {
        let (status, body) = self.generate(body).await;
        assert_eq!(status, 200, "{body}");
        body["result"]["response"].as_str().unwrap().to_string()
    }

    /// Reads a gauge of the process's Prometheus endpoint, summed over its
    /// labels.
    async fn gauge(&self, name: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_repeats_and_differs_from_greedy() {
    let serve = Serve::start(&[]).await;
    let story = |seed: u64| json!({"prompt": "Tell me a short story.", "seed": seed, "temperature": 1.0, "max_tokens": 50});

    let first = serve.text(story(123)).await;
    let second = serve.text(story(123)).await;
    let other = serve.text(story(124)).await;
    let greedy = serve
        .text(json!({"prompt": "Tell me a short story.", "temperature": 0, "max_tokens": 50}))
        .await;

    assert_eq!(first, second, "the same seed gives the same text");
    assert_ne!(first, other, "another seed gives other text");
    assert_ne!(
        first, greedy,
        "a seeded draw at temperature 1 is not greedy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_temperature_and_top_p_equal_greedy() {
    let serve = Serve::start(&[]).await;
    let prompt = "Repeat exactly: hello world";
    let greedy = serve
        .text(json!({"prompt": prompt, "temperature": 0, "max_tokens": 16}))
        .await;
    assert!(!greedy.is_empty());

    for extra in [
        json!({"temperature": 0.0001}),
        json!({"top_p": 0.0001}),
        json!({"top_p": 0}),
    ] {
        let mut body = json!({"prompt": prompt, "max_tokens": 16, "seed": 7});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        assert_eq!(serve.text(body).await, greedy, "with {extra}");
    }

    let (status, _) = serve
        .generate(
            json!({"prompt": prompt, "temperature": 5, "top_k": 50, "top_p": 2, "max_tokens": 16}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_budgets_streamed_and_not() {
    let serve = Serve::start(&[]).await;
    for max_tokens in 1..=3u64 {
        let body =
            json!({"prompt": "Count: one two three", "max_tokens": max_tokens, "temperature": 0});
        let (status, whole) = serve.generate(body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(
            whole["result"]["usage"]["completion_tokens"], max_tokens,
            "max_tokens {max_tokens}, not streamed"
        );

        let sse = serve.stream(body).await;
        assert!(
            sse.done,
            "max_tokens {max_tokens}: the stream ends with [DONE]"
        );
        let usage = &sse.events.last().unwrap()["usage"];
        assert_eq!(
            usage["completion_tokens"], max_tokens,
            "max_tokens {max_tokens}, streamed"
        );
        assert_eq!(sse.text, whole["result"]["response"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unicode_prompt_streams_valid_text() {
    let serve = Serve::start(&[]).await;
    let body = json!({
        "prompt": "Repeat exactly: 你好，世界 🙂🎉 café naïve",
        "max_tokens": 40,
        "temperature": 0,
    });
    let whole = serve.text(body.clone()).await;

    let sse = serve.stream(body).await;

    assert!(sse.done);
    assert_eq!(sse.text, whole);
    for event in &sse.events {
        let text = event["response"].as_str().unwrap_or_default();
        assert!(
            !text.contains('\u{FFFD}'),
            "no replacement character: {event}"
        );
        assert!(
            !text.contains("<|endoftext|>"),
            "no end-of-sequence text: {event}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_frees_blocks_for_next_request() {
    // One sequence at a time: a second request can only start when the
    // first one's blocks are back.
    let serve = Serve::start(&["--max-batch-sequences", "1"]).await;
    let response = reqwest::Client::new()
        .post(serve.url(PHI2))
        .json(&json!({"prompt": "Tell me everything.", "max_tokens": 1000, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = response.bytes_stream();
    let mut chunks = 0;
    while chunks < 5 {
        let chunk = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("stream data within 60 s");
        if chunk.is_none() {
            break;
        }
        chunks += 1;
    }
    drop(events);

    let deadline = Instant::now() + Duration::from_secs(10);
    while serve.gauge("wick_worker_kv_blocks_used").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the KV blocks were not freed after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, body) = serve
        .generate(json!({"prompt": "Next!", "max_tokens": 4, "temperature": 0}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_answers_429_and_accepted_finish() {
    // One running sequence and two waiting: ten concurrent requests leave
    // at most three accepted.
    let serve = Serve::start(&["--max-batch-sequences", "1", "--max-queue", "2"]).await;
    let client = reqwest::Client::new();
    let mut requests = Vec::new();
    for index in 0..10 {
        let client = client.clone();
        let url = serve.url(PHI2);
        requests.push(tokio::spawn(async move {
            let body =
                json!({"prompt": format!("Request {index}"), "max_tokens": 300, "stream": true});
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            if status == 429 {
                let retry_after = response.headers().get("retry-after").cloned();
                let body: Value = response.json().await.unwrap();
                assert!(retry_after.is_some(), "429 carries Retry-After");
                assert_eq!(body["errors"][0]["code"], 3040);
                return false;
            }
            assert_eq!(status, 200, "request {index}");
            assert!(
                read_sse(response).await.done,
                "accepted request {index} finishes"
            );
            true
        }));
    }
    let mut accepted = 0;
    for request in requests {
        let was_accepted = tokio::time::timeout(Duration::from_secs(120), request)
            .await
            .expect("no request hangs")
            .expect("no request task panics");
        accepted += usize::from(was_accepted);
    }
    assert!(accepted >= 1, "at least one request is served");
    assert!(accepted <= 3, "{accepted} accepted with room for 3");
}
