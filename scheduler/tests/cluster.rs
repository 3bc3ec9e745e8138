//! The scheduler with real workers running the demo model, over loopback
//! gRPC only, as a client sees it.

mod common;

use std::time::{Duration, Instant};

use common::real_worker::{limits, metric, RealWorker};
use common::{
    collect, collect_within, generate, prompt, wait_for_health, Outcome, Scheduler, TEST_TIMEOUT,
};
use futures::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use wick_proto::v1 as pb;
use wick_scheduler::{BatchingMode, SchedulerConfig};

async fn start(
    workers: &[(&str, usize, usize)],
    config: SchedulerConfig,
) -> (Vec<RealWorker>, Scheduler) {
    let mut started = Vec::new();
    for &(name, kv_tokens, max_sequences) in workers {
        started.push(RealWorker::start(name, limits(kv_tokens, max_sequences)).await);
    }
    let urls = started.iter().map(|w| w.url.clone()).collect();
    let scheduler = Scheduler::start(config, urls).await;
    scheduler.wait_for_workers(workers.len() as u32).await;
    (started, scheduler)
}

/// Stops the scheduler, checks that every worker freed all its KV blocks,
/// then stops the workers.
async fn stop_drained(mut workers: Vec<RealWorker>, scheduler: Scheduler) {
    scheduler.stop().await;
    for worker in &mut workers {
        worker.wait_all_blocks_free().await;
        worker.stop().await;
    }
}

async fn stop(mut workers: Vec<RealWorker>, scheduler: Scheduler) {
    scheduler.stop().await;
    for worker in &mut workers {
        worker.stop().await;
    }
}

/// Checks the token budget: exactly `max_tokens` unless the model ended
/// the sequence first.
fn assert_budget(outcome: &Outcome, max_tokens: u32) {
    let finished = outcome
        .finished
        .as_ref()
        .unwrap_or_else(|| panic!("no Finished: {outcome:?}"));
    let completion = finished.usage.unwrap().completion_tokens;
    if finished.reason == pb::FinishReason::Length as i32 {
        assert_eq!(completion, max_tokens);
    } else {
        assert!(completion <= max_tokens, "{completion} > {max_tokens}");
    }
}

fn seeded(text: &str, max_tokens: u32, seed: u64) -> pb::GenerateRequest {
    let mut request = prompt(text, max_tokens);
    request.sampling = Some(pb::SamplingParams {
        temperature: Some(0.5),
        top_k: Some(40),
        seed: Some(seed),
        ..Default::default()
    });
    request
}

#[tokio::test]
async fn sixty_four_requests_on_two_workers() {
    let (workers, scheduler) = start(
        &[("c64-a", 4096, 32), ("c64-b", 4096, 32)],
        SchedulerConfig::default(),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let mut client = scheduler.client().await;
        let max_tokens = 1 + i % 6;
        let request = prompt(&format!("Request number {i}: say something."), max_tokens);
        tasks.push(tokio::spawn(async move {
            (max_tokens, generate(&mut client, request).await.unwrap())
        }));
    }
    for task in tasks {
        let (max_tokens, outcome) = task.await.unwrap();
        assert_budget(&outcome, max_tokens);
    }
    for worker in &workers {
        worker.wait_all_blocks_free().await;
        assert!(
            metric("wick_worker_steps_total", &[("worker", &worker.name)]) > 0.0,
            "{} never stepped",
            worker.name
        );
    }
    stop(workers, scheduler).await;
}

/// Starts a 200-token request, then a 5-token one after the first token
/// of the long one; returns whether the short one finished first.
async fn short_finishes_first(mode: BatchingMode, name: &str) -> bool {
    let config = SchedulerConfig {
        batching: mode,
        ..Default::default()
    };
    let (workers, scheduler) = start(&[(name, 4096, 8)], config).await;
    let mut client = scheduler.client().await;
    let mut long = client
        .generate(prompt("Write a long essay.", 200))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(TEST_TIMEOUT, long.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(pb::generate_event::Event::Delta(_))
    ));
    let long_task = tokio::spawn(async move {
        let outcome = collect(long).await;
        (outcome, Instant::now())
    });
    let short = generate(&mut client, prompt("Hi", 5)).await.unwrap();
    let short_done = Instant::now();
    let (long_outcome, long_done) = tokio::time::timeout(TEST_TIMEOUT, long_task)
        .await
        .unwrap()
        .unwrap();
    assert_budget(&short, 5);
    assert_budget(&long_outcome, 200);
    assert_eq!(
        long_outcome.completion_tokens(),
        200,
        "the long request ended early"
    );
    stop(workers, scheduler).await;
    short_done < long_done
}

#[tokio::test]
async fn continuous_batching_lets_short_finish_first() {
    assert!(short_finishes_first(BatchingMode::Continuous, "cont-1").await);
    assert!(!short_finishes_first(BatchingMode::Static, "static-1").await);
}

#[tokio::test]
async fn seeded_and_greedy_match_inside_a_batch() {
    let (workers, scheduler) = start(&[("mix-a", 8192, 32)], SchedulerConfig::default()).await;
    let mut client = scheduler.client().await;
    let greedy_request = prompt("Tell me a short story.", 30);
    let seeded_request = seeded("Tell me a short story.", 30, 123);
    let greedy_alone = generate(&mut client, greedy_request.clone()).await.unwrap();
    let seeded_alone = generate(&mut client, seeded_request.clone()).await.unwrap();
    assert_ne!(
        greedy_alone.token_ids, seeded_alone.token_ids,
        "seeded output equals greedy"
    );

    let mut requests = vec![greedy_request, seeded_request];
    for i in 0..14u64 {
        let mut request = seeded(&format!("Other request {i}"), 10 + i as u32, 1000 + i);
        if let Some(sampling) = request.sampling.as_mut() {
            sampling.repetition_penalty = Some(1.0 + (i % 3) as f32 * 0.3);
            sampling.presence_penalty = Some((i % 2) as f32 * 0.5);
            sampling.frequency_penalty = Some((i % 4) as f32 * 0.2);
            if i % 5 == 0 {
                sampling.seed = None;
            }
        }
        requests.push(request);
    }
    let mut tasks = Vec::new();
    for request in requests {
        let mut client = scheduler.client().await;
        tasks.push(tokio::spawn(async move {
            generate(&mut client, request).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes[0].token_ids, greedy_alone.token_ids);
    assert_eq!(outcomes[0].text, greedy_alone.text);
    assert_eq!(outcomes[1].token_ids, seeded_alone.token_ids);
    assert_eq!(outcomes[1].text, seeded_alone.text);
    stop(workers, scheduler).await;
}

#[tokio::test]
async fn preemption_keeps_greedy_outputs() {
    let requests: Vec<pb::GenerateRequest> = (0..6)
        .map(|i| prompt(&format!("Count to {i}"), 40))
        .collect();
    let (workers, scheduler) = start(&[("roomy", 8192, 32)], SchedulerConfig::default()).await;
    let mut client = scheduler.client().await;
    let mut expected = Vec::new();
    for request in &requests {
        expected.push(generate(&mut client, request.clone()).await.unwrap());
    }
    stop(workers, scheduler).await;

    // 12 blocks of 16 tokens, while six sequences grow to about 4 blocks each.
    let (workers, scheduler) = start(&[("tiny", 12 * 16, 32)], SchedulerConfig::default()).await;
    let mut tasks = Vec::new();
    for request in requests {
        let mut client = scheduler.client().await;
        tasks.push(tokio::spawn(async move {
            generate(&mut client, request).await.unwrap()
        }));
    }
    for (task, expected) in tasks.into_iter().zip(expected) {
        let outcome = task.await.unwrap();
        assert_eq!(outcome.token_ids, expected.token_ids);
        assert_eq!(outcome.text, expected.text);
    }
    assert!(
        metric("wick_worker_preemptions_total", &[("worker", "tiny")]) > 0.0,
        "no preemption happened"
    );
    workers[0].wait_all_blocks_free().await;
    stop(workers, scheduler).await;
}

#[tokio::test]
async fn streamed_text_equals_token_decoding() {
    let (workers, scheduler) = start(&[("unicode", 8192, 32)], SchedulerConfig::default()).await;
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().unwrap();
    let mut client = scheduler.client().await;
    let prompts = [
        "你好，世界。请介绍一下你自己。",
        "🙂🎉 Emoji party 🚀",
        "Café naïve résumé à la façon",
    ];
    for (index, text) in prompts.iter().enumerate() {
        for max_tokens in [1, 2, 3, 4, 5, 6, 30] {
            let request = seeded(text, max_tokens, 7 + index as u64);
            let outcome = generate(&mut client, request).await.unwrap();
            assert_budget(&outcome, max_tokens);
            let decoded = tokenizer.decode(&outcome.token_ids, false).unwrap();
            // An incomplete character at the very end is dropped.
            let expected = decoded.trim_end_matches('\u{FFFD}');
            assert_eq!(
                outcome.text, expected,
                "prompt {index}, max_tokens {max_tokens}"
            );
        }
    }
    stop(workers, scheduler).await;
}

#[tokio::test]
async fn dropped_stream_frees_blocks_for_next_request() {
    let (workers, scheduler) = start(&[("drop-1", 4096, 1)], SchedulerConfig::default()).await;
    let mut client = scheduler.client().await;
    let mut stream = client
        .generate(prompt("Go on forever.", 500))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        tokio::time::timeout(TEST_TIMEOUT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    drop(stream);
    let started = Instant::now();
    let outcome = generate(&mut client, prompt("Hi", 3)).await.unwrap();
    assert_budget(&outcome, 3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "second request waited {:?}",
        started.elapsed()
    );
    workers[0].wait_all_blocks_free().await;
    stop(workers, scheduler).await;
}

#[tokio::test]
async fn killed_worker_ends_or_requeues_its_requests() {
    let (mut workers, scheduler) = start(
        &[("kill-a", 4096, 16), ("kill-b", 4096, 16)],
        SchedulerConfig::default(),
    )
    .await;
    let mut streams = Vec::new();
    for i in 0..8 {
        let mut client = scheduler.client().await;
        let stream = client
            .generate(prompt(&format!("Story {i}"), 150))
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(collect(s)))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    workers[0].stop().await;
    let mut lost = 0;
    for task in tasks {
        let outcome = tokio::time::timeout(TEST_TIMEOUT, task)
            .await
            .expect("a request hung")
            .unwrap();
        match (&outcome.finished, &outcome.error) {
            (Some(_), None) => assert_budget(&outcome, 150),
            (None, Some(error)) => {
                assert_eq!(error.code, pb::error::Code::WorkerLost as i32);
                assert!(error.message.contains(&workers[0].url), "{}", error.message);
                lost += 1;
            }
            other => panic!("unexpected end: {other:?}"),
        }
    }
    eprintln!("{lost} of 8 requests ended with WORKER_LOST");
    let mut client = scheduler.client().await;
    let outcome = generate(&mut client, prompt("Still there?", 3))
        .await
        .unwrap();
    assert_budget(&outcome, 3);
    workers[1].wait_all_blocks_free().await;
    stop(workers, scheduler).await;
}

#[tokio::test]
async fn full_queue_rejects_and_accepted_finish() {
    let config = SchedulerConfig {
        max_queue: 2,
        ..Default::default()
    };
    let (workers, scheduler) = start(&[("queue-1", 4096, 1)], config).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = scheduler.client().await;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            (
                generate(&mut client, prompt("Hello", 20)).await,
                started.elapsed(),
            )
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            (Ok(outcome), _) => {
                assert_budget(&outcome, 20);
                accepted += 1;
            }
            (Err(status), elapsed) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(
                    elapsed < Duration::from_secs(2),
                    "rejection took {elapsed:?}"
                );
            }
        }
    }
    assert!((1..=3).contains(&accepted), "{accepted} accepted");
    stop(workers, scheduler).await;
}

#[tokio::test]
async fn small_budgets_and_long_prompts() {
    let (workers, scheduler) = start(&[("budget-1", 4096, 8)], SchedulerConfig::default()).await;
    let mut client = scheduler.client().await;
    for max_tokens in 1..=3 {
        let outcome = generate(&mut client, prompt("Hello there", max_tokens))
            .await
            .unwrap();
        assert_budget(&outcome, max_tokens);
        assert_eq!(outcome.token_ids.len() as u32, outcome.completion_tokens());
    }
    let text = "a ".repeat(3000);
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().unwrap();
    let bos = workers[0].describe().await.bos_token_id.is_some() as usize;
    let prompt_tokens = bos
        + tokenizer
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .len();
    let mut long = prompt(&text, 10);
    long.raw = true;
    let status = client.generate(long).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let counted = format!("the prompt is {prompt_tokens} tokens");
    assert!(
        status.message().contains(&counted),
        "{counted}: {}",
        status.message()
    );
    assert!(
        status.message().contains("context of 2048 tokens"),
        "{}",
        status.message()
    );
    stop(workers, scheduler).await;
}

/// Starts a long greedy generation and returns its stream once the first
/// event arrived, so the request is surely running.
async fn running_stream(scheduler: &Scheduler) -> tonic::Streaming<pb::GenerateEvent> {
    let mut client = scheduler.client().await;
    let mut stream = client
        .generate(prompt("Tell me a very long story.", 1000))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(TEST_TIMEOUT, stream.next())
        .await
        .expect("first event timed out");
    assert!(
        matches!(&first, Some(Ok(event)) if matches!(event.event, Some(pb::generate_event::Event::Delta(_)))),
        "{first:?}"
    );
    stream
}

#[tokio::test]
async fn shutdown_lets_accepted_requests_finish() {
    let (workers, mut scheduler) = start(&[("drain", 4096, 4)], SchedulerConfig::default()).await;
    let stream = running_stream(&scheduler).await;

    scheduler.begin_stop();
    wait_for_health(&scheduler.url, ServingStatus::NotServing).await;
    let mut client = scheduler.client().await;
    let status = client.generate(prompt("Too late", 5)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("shutting down"),
        "{}",
        status.message()
    );

    let outcome = collect_within(stream).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_budget(&outcome, 1000);
    stop_drained(workers, scheduler).await;
}

#[tokio::test]
async fn drain_timeout_ends_open_streams() {
    let config = SchedulerConfig {
        drain_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let (workers, mut scheduler) = start(&[("drain-timeout", 4096, 4)], config).await;
    let stream = running_stream(&scheduler).await;

    scheduler.begin_stop();
    let outcome = collect_within(stream).await;
    let error = outcome.error.expect("an error event");
    assert_eq!(error.code, pb::error::Code::ShuttingDown as i32);
    assert!(outcome.finished.is_none());
    stop_drained(workers, scheduler).await;
}

#[tokio::test]
async fn queued_requests_fail_without_any_worker() {
    let config = SchedulerConfig {
        no_worker_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (mut workers, scheduler) = start(&[("lone", 4096, 1)], config).await;
    let running = running_stream(&scheduler).await;
    // The worker takes one sequence at a time, so this one waits.
    let mut client = scheduler.client().await;
    let queued = client
        .generate(prompt("Waiting", 5))
        .await
        .unwrap()
        .into_inner();

    workers[0].stop().await;
    let running = collect_within(running).await;
    let error = running.error.expect("WORKER_LOST for the running request");
    assert_eq!(error.code, pb::error::Code::WorkerLost as i32);

    let queued = collect_within(queued).await;
    let error = queued.error.expect("NO_WORKER for the queued request");
    assert_eq!(error.code, pb::error::Code::NoWorker as i32);
    assert!(error.message.contains("wick/demo-phi"), "{}", error.message);
    assert!(error.message.contains("0.3 s"), "{}", error.message);
    assert!(queued.token_ids.is_empty());
    scheduler.stop().await;
}
