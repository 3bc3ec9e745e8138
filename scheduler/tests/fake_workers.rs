//! The scheduler over real gRPC with scripted workers: batching, limits,
//! cancellation and worker loss, independent of model speed.

mod common;

use std::time::Duration;

use common::fake_worker::{FakeOptions, FakeWorker};
use common::{generate, prompt, Scheduler, TEST_TIMEOUT};
use futures::StreamExt;
use wick_proto::v1 as pb;
use wick_scheduler::SchedulerConfig;

fn script() -> Vec<u32> {
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().unwrap();
    let encoding = tokenizer
        .encode(" Hello world, how are you?", false)
        .unwrap();
    encoding.get_ids().to_vec()
}

fn options(max_sequences: u32, step_ms: u64) -> FakeOptions {
    FakeOptions {
        kv_blocks_total: 1024,
        max_sequences,
        step_delay: Duration::from_millis(step_ms),
        script: script(),
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn concurrent_requests_complete_exactly() {
    let a = FakeWorker::start(options(16, 2)).await;
    let b = FakeWorker::start(options(16, 2)).await;
    let scheduler = Scheduler::start(
        SchedulerConfig::default(),
        vec![a.url.clone(), b.url.clone()],
    )
    .await;
    scheduler.wait_for_workers(2).await;
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let mut client = scheduler.client().await;
        let max_tokens = 1 + i % 9;
        tasks.push(tokio::spawn(async move {
            let outcome = generate(&mut client, prompt("Hi", max_tokens))
                .await
                .unwrap();
            (max_tokens, outcome)
        }));
    }
    for task in tasks {
        let (max_tokens, outcome) = task.await.unwrap();
        assert_eq!(outcome.completion_tokens(), max_tokens);
        assert_eq!(outcome.token_ids.len() as u32, max_tokens);
    }
    let admitted =
        a.record.lock().unwrap().admitted.len() + b.record.lock().unwrap().admitted.len();
    assert_eq!(admitted, 64);
    assert!(
        !a.record.lock().unwrap().admitted.is_empty(),
        "worker a got no work"
    );
    assert!(
        !b.record.lock().unwrap().admitted.is_empty(),
        "worker b got no work"
    );
    assert!(a.record.lock().unwrap().live.is_empty());
    assert!(b.record.lock().unwrap().live.is_empty());
    scheduler.stop().await;
}

#[tokio::test]
async fn max_tokens_one_two_three_are_exact() {
    let worker = FakeWorker::start(options(4, 1)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    for max_tokens in 1..=3 {
        let outcome = generate(&mut client, prompt("Hi", max_tokens))
            .await
            .unwrap();
        assert_eq!(outcome.completion_tokens(), max_tokens);
        let finished = outcome.finished.unwrap();
        assert_eq!(finished.reason, pb::FinishReason::Length as i32);
    }
    scheduler.stop().await;
}

#[tokio::test]
async fn stop_string_ends_and_releases() {
    let worker = FakeWorker::start(options(4, 1)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    let mut request = prompt("Hi", 50);
    request.stop = vec![", how".into()];
    let outcome = generate(&mut client, request).await.unwrap();
    let finished = outcome.finished.unwrap();
    assert_eq!(finished.reason, pb::FinishReason::Stop as i32);
    assert!(!outcome.text.contains(", how"), "text {:?}", outcome.text);
    let released = || worker.record.lock().unwrap().released.len() == 1;
    wait_until(released, "the stopped sequence is released").await;
    assert!(worker.record.lock().unwrap().live.is_empty());
    scheduler.stop().await;
}

#[tokio::test]
async fn full_queue_is_resource_exhausted_at_once() {
    let worker = FakeWorker::start(options(1, 5)).await;
    let config = SchedulerConfig {
        max_queue: 2,
        ..Default::default()
    };
    let scheduler = Scheduler::start(config, vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = scheduler.client().await;
        tasks.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let result = generate(&mut client, prompt("Hi", 20)).await;
            (result, started.elapsed())
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            (Ok(outcome), _) => {
                assert_eq!(outcome.completion_tokens(), 20);
                accepted += 1;
            }
            (Err(status), elapsed) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                assert!(status.message().contains("queue is full (2 requests)"));
                assert!(
                    elapsed < Duration::from_secs(2),
                    "rejection took {elapsed:?}"
                );
            }
        }
    }
    assert!((1..=3).contains(&accepted), "{accepted} accepted");
    scheduler.stop().await;
}

#[tokio::test]
async fn cancelled_queued_request_never_reaches_worker() {
    let worker = FakeWorker::start(options(1, 5)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    let long = client
        .generate(prompt("Hi", 100))
        .await
        .unwrap()
        .into_inner();
    let queued = client.generate(prompt("Hi", 5)).await.unwrap().into_inner();
    wait_until(
        || worker.record.lock().unwrap().admitted.len() == 1,
        "the first request runs",
    )
    .await;
    drop(queued);
    let outcome = tokio::time::timeout(TEST_TIMEOUT, common::collect(long))
        .await
        .unwrap();
    assert_eq!(outcome.completion_tokens(), 100);
    // Let the loop run a few more steps; the dropped request must not start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(worker.record.lock().unwrap().admitted.len(), 1);
    scheduler.stop().await;
}

#[tokio::test]
async fn dropped_stream_is_released() {
    let worker = FakeWorker::start(options(4, 5)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    let mut stream = client
        .generate(prompt("Hi", 1000))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        tokio::time::timeout(TEST_TIMEOUT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    drop(stream);
    wait_until(
        || worker.record.lock().unwrap().live.is_empty(),
        "the sequence is released",
    )
    .await;
    assert_eq!(worker.record.lock().unwrap().released.len(), 1);
    scheduler.stop().await;
}

#[tokio::test]
async fn worker_loss_requeues_or_ends_with_error() {
    let mut a = FakeWorker::start(options(8, 5)).await;
    let b = FakeWorker::start(options(8, 5)).await;
    let scheduler = Scheduler::start(
        SchedulerConfig::default(),
        vec![a.url.clone(), b.url.clone()],
    )
    .await;
    scheduler.wait_for_workers(2).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = scheduler.client().await;
        tasks.push(tokio::spawn(async move {
            generate(&mut client, prompt("Hi", 200)).await.unwrap()
        }));
    }
    wait_until(
        || !a.record.lock().unwrap().admitted.is_empty(),
        "worker a runs a sequence",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.kill();
    let mut lost = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        match (&outcome.finished, &outcome.error) {
            (Some(_), None) => assert_eq!(outcome.completion_tokens(), 200),
            (None, Some(error)) => {
                assert_eq!(error.code, pb::error::Code::WorkerLost as i32);
                assert!(error.message.contains(&a.url), "{}", error.message);
                lost += 1;
            }
            other => panic!("unexpected end {other:?}"),
        }
    }
    assert!(lost > 0, "no request ran on the killed worker");
    // New requests go to the remaining worker.
    let mut client = scheduler.client().await;
    let outcome = generate(&mut client, prompt("Hi", 3)).await.unwrap();
    assert_eq!(outcome.completion_tokens(), 3);
    scheduler.stop().await;
}

#[tokio::test]
async fn request_errors_name_the_rule() {
    let none = Scheduler::start(SchedulerConfig::default(), vec![]).await;
    let mut client = none.client().await;
    let status = client.generate(prompt("Hi", 3)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    none.stop().await;

    let worker = FakeWorker::start(options(4, 1)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;

    let long = prompt(&"a ".repeat(3000), 10);
    let status = client.generate(long).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("does not fit the context of 2048 tokens"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("prompt is 300"),
        "{}",
        status.message()
    );

    let status = client.generate(prompt("Hi", 5000)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("max_tokens 5000 plus the prompt's"),
        "{}",
        status.message()
    );

    let mut unknown = prompt("Hi", 3);
    unknown.model = "nope".into();
    let status = client.generate(unknown).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let mut lora = prompt("Hi", 3);
    lora.lora = "my-adapter".into();
    let status = client.generate(lora).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("my-adapter"));

    assert!(worker.record.lock().unwrap().admitted.is_empty());
    scheduler.stop().await;
}

/// A `max_tokens` that ends inside a multi-byte character: the client gets
/// the complete characters only, and `token_ids` carry every id.
#[tokio::test]
async fn unicode_text_matches_token_decoding() {
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().unwrap();
    let script = tokenizer
        .encode("🙂你好，世界 café naïve", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let mut options = options(4, 1);
    options.script = script.clone();
    let worker = FakeWorker::start(options).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    for max_tokens in 1..=script.len() as u32 {
        let outcome = generate(&mut client, prompt("Hi", max_tokens))
            .await
            .unwrap();
        assert_eq!(outcome.token_ids, script[..max_tokens as usize]);
        let decoded = tokenizer.decode(&outcome.token_ids, false).unwrap();
        let complete = decoded.trim_end_matches('\u{FFFD}');
        assert_eq!(outcome.text, complete, "max_tokens {max_tokens}");
        assert!(!outcome.text.contains('\u{FFFD}'));
    }
    scheduler.stop().await;
}

#[tokio::test]
async fn health_follows_connected_workers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut worker = FakeWorker::start(options(4, 1)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let channel = tonic::transport::Endpoint::from_shared(scheduler.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_string(),
    };
    for service in ["", "wick.v1.Generation"] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    worker.kill();
    wait_until_async(|| {
        let mut health = health.clone();
        async move {
            let status = health.check(check("")).await.unwrap().into_inner().status;
            status == ServingStatus::NotServing as i32
        }
    })
    .await;
    let mut client = scheduler.client().await;
    let status = client.generate(prompt("Hi", 3)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    scheduler.stop().await;
}

async fn wait_until_async<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn tool_call_in_output_is_parsed() {
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().unwrap();
    let call = r#" {"name": "get_weather", "arguments": {"city": "Paris"}}"#;
    let mut options = options(4, 1);
    options.script = tokenizer.encode(call, false).unwrap().get_ids().to_vec();
    let steps = options.script.len() as u32;
    let worker = FakeWorker::start(options).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    let request = pb::GenerateRequest {
        input: Some(pb::generate_request::Input::Chat(pb::ChatInput {
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: "Weather in Paris?".into(),
            }],
            tools: vec![pb::Tool {
                name: "get_weather".into(),
                description: "Current weather of a city.".into(),
                parameters_json: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#
                    .into(),
            }],
        })),
        max_tokens: Some(steps),
        ..Default::default()
    };
    let outcome = generate(&mut client, request).await.unwrap();
    assert_eq!(outcome.text, call);
    let finished = outcome.finished.unwrap();
    assert_eq!(finished.reason, pb::FinishReason::ToolCalls as i32);
    assert_eq!(finished.tool_calls.len(), 1);
    assert_eq!(finished.tool_calls[0].name, "get_weather");
    assert_eq!(finished.tool_calls[0].arguments_json, r#"{"city":"Paris"}"#);
    scheduler.stop().await;
}

#[tokio::test]
async fn end_of_sequence_never_reaches_client() {
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().unwrap();
    let mut script = tokenizer
        .encode(" Done here.", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let text_tokens = script.len() as u32;
    script.push(wick_worker::tokenizer::PHI2_EOS_TOKEN_ID);
    let mut options = options(4, 1);
    options.script = script;
    let worker = FakeWorker::start(options).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    let outcome = generate(&mut client, prompt("Hi", 50)).await.unwrap();
    assert_eq!(outcome.text, " Done here.");
    assert!(!outcome.text.contains("<|endoftext|>"));
    assert_eq!(outcome.token_ids.len() as u32, text_tokens);
    // Usage counts the end-of-sequence token, as generation.proto documents.
    assert_eq!(outcome.completion_tokens(), text_tokens + 1);
    let finished = outcome.finished.unwrap();
    assert_eq!(finished.reason, pb::FinishReason::Stop as i32);
    scheduler.stop().await;
}

#[tokio::test]
async fn lost_worker_rejoins_when_back() {
    let mut worker = FakeWorker::start(options(4, 1)).await;
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![worker.url.clone()]).await;
    scheduler.wait_for_workers(1).await;
    worker.kill();
    scheduler.wait_for_workers(0).await;

    let addr = worker.url.trim_start_matches("http://").to_string();
    let back = FakeWorker::start_on(&addr, options(4, 1)).await;
    scheduler.wait_for_workers(1).await;
    let mut client = scheduler.client().await;
    let outcome = generate(&mut client, prompt("Hi", 3)).await.unwrap();
    assert_eq!(outcome.completion_tokens(), 3);
    assert_eq!(back.record.lock().unwrap().admitted.len(), 1);
    scheduler.stop().await;
}
