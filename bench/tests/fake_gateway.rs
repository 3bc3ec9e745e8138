//! The load generator against a scripted fake gateway on loopback: what it
//! measures, what it sends and how it counts failures.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use clap::Parser;
use indicatif::ProgressBar;
use support::{FakeGateway, Script};
use wick_bench::args::BenchConfig;
use wick_bench::{runner, BenchArgs, Report};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn config(url: &str, flags: &[&str]) -> BenchConfig {
    let mut argv = vec!["wick-bench", "--url", url, "--quiet"];
    argv.extend_from_slice(flags);
    Cli::parse_from(argv).bench.validate().unwrap()
}

async fn bench(gateway: &FakeGateway, flags: &[&str]) -> Report {
    let url = gateway.url();
    let config = config(&url, flags);
    let progress = ProgressBar::hidden();
    let run = runner::execute(&config, &progress);
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run timed out")
        .unwrap()
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[tokio::test]
async fn ttft_and_tokens_measured() {
    // 5 events of 2 tokens each: first after 80 ms, then every 20 ms.
    let gateway = FakeGateway::start(Script::tokens(ms(80), ms(20), 5, 10)).await;
    let report = bench(&gateway, &["--concurrency", "2", "--requests", "4"]).await;

    assert_eq!(report.requests_completed, 4);
    assert_eq!(report.requests_failed, 0);
    assert_eq!(report.output_tokens, 40);

    let ttft = report.ttft_ms.p50.unwrap();
    assert!(ttft >= 80.0, "ttft {ttft} ms is below the scripted 80 ms");
    assert!(
        ttft < 1000.0,
        "ttft {ttft} ms is far above the scripted 80 ms"
    );
    let e2e = report.e2e_ms.p50.unwrap();
    assert!(e2e >= 160.0, "e2e {e2e} ms is below the scripted 160 ms");
    let itl = report.itl_ms.p50.unwrap();
    assert!(
        itl >= 19.0,
        "inter-token latency {itl} ms is below the scripted 20 ms"
    );
    // TPOT spreads the 80 ms after the first event over 9 more tokens.
    let tpot = report.tpot_ms.p50.unwrap();
    assert!(tpot >= 8.5, "tpot {tpot} ms is below 80 ms / 9 tokens");
    assert!(tpot < e2e, "tpot {tpot} ms is above e2e {e2e} ms");
    assert!(report.output_tokens_per_s > 0.0);
    assert!(report.load_generator_cpu.percent_of_one_core >= 0.0);
}

#[tokio::test]
async fn request_bodies_follow_flags() {
    let gateway = FakeGateway::start(Script::tokens(ms(1), ms(1), 1, 1)).await;
    let flags = [
        "--requests",
        "3",
        "--concurrency",
        "1",
        "--prompt-tokens",
        "4",
        "--max-tokens",
        "5..6",
        "--seed",
        "40",
        "--temperature",
        "0",
    ];
    bench(&gateway, &flags).await;

    let bodies = gateway.bodies();
    assert_eq!(bodies.len(), 3);
    for (index, body) in bodies.iter().enumerate() {
        assert_eq!(body["prompt"], " hello hello hello hello");
        assert_eq!(body["raw"], true);
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["seed"], 40 + index as u64);
        let max_tokens = body["max_tokens"].as_u64().unwrap();
        assert!((5..=6).contains(&max_tokens), "max_tokens {max_tokens}");
    }
}

#[tokio::test]
async fn api_key_sent_as_bearer() {
    let gateway = FakeGateway::start(Script::tokens(ms(1), ms(1), 1, 1)).await;
    bench(&gateway, &["--requests", "2", "--api-key", "k-123"]).await;
    let expected = Some("Bearer k-123".to_string());
    assert_eq!(gateway.authorizations(), vec![expected.clone(), expected]);

    let gateway = FakeGateway::start(Script::tokens(ms(1), ms(1), 1, 1)).await;
    bench(&gateway, &["--requests", "1"]).await;
    assert_eq!(gateway.authorizations(), vec![None]);
}

#[tokio::test]
async fn http_errors_counted_by_status() {
    let mut script = Script::tokens(ms(1), ms(1), 2, 2);
    script.fail_every = Some((2, StatusCode::TOO_MANY_REQUESTS));
    let gateway = FakeGateway::start(script).await;
    let report = bench(&gateway, &["--requests", "6", "--concurrency", "1"]).await;

    assert_eq!(report.requests_completed, 3);
    assert_eq!(report.requests_failed, 3);
    assert_eq!(report.errors.get("http 429"), Some(&3));
    assert_eq!(report.output_tokens, 6);
}

#[tokio::test]
async fn stream_failures_counted() {
    let cases = [
        (
            vec![
                r#"{"response":"a"}"#,
                r#"{"errors":[{"code":1,"message":"worker lost"}]}"#,
            ],
            "stream error event",
        ),
        (vec![r#"{"response":"a"}"#], "stream ended before [DONE]"),
        (
            vec![r#"{"response":"a"}"#, "[DONE]"],
            "stream missing usage",
        ),
        (vec!["not json"], "stream invalid event"),
    ];
    for (events, cause) in cases {
        let script = Script {
            events: events
                .into_iter()
                .map(|data| (Duration::ZERO, data.to_string()))
                .collect(),
            fail_every: None,
        };
        let gateway = FakeGateway::start(script).await;
        let report = bench(&gateway, &["--requests", "2"]).await;
        assert_eq!(report.requests_completed, 0, "{cause}");
        assert_eq!(
            report.errors.get(cause),
            Some(&2),
            "{cause}: {:?}",
            report.errors
        );
    }
}

#[tokio::test]
async fn timeout_counted() {
    let gateway = FakeGateway::start(Script::tokens(ms(3000), ms(1), 1, 1)).await;
    let report = bench(&gateway, &["--requests", "2", "--timeout-secs", "0.2"]).await;
    assert_eq!(
        report.errors.get("timed out"),
        Some(&2),
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn refused_connection_counted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = config(&url, &["--requests", "2"]);
    let report = runner::execute(&config, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(
        report.errors.get("connect failed"),
        Some(&2),
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn poisson_arrivals_end_at_duration() {
    let gateway = FakeGateway::start(Script::tokens(ms(1), ms(1), 2, 2)).await;
    let flags = [
        "--duration-secs",
        "0.5",
        "--request-rate",
        "40",
        "--concurrency",
        "4",
    ];
    let report = bench(&gateway, &flags).await;

    // About 20 arrivals are expected in 0.5 s; the bounds leave room for
    // the randomness of a Poisson count and a slow machine.
    let sent = gateway.bodies().len() as u64;
    assert!((5..=45).contains(&sent), "{sent} requests sent");
    assert_eq!(report.requests_completed, sent);
    assert!(report.duration_s < 5.0, "run took {} s", report.duration_s);
}
