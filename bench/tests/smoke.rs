//! Smoke run of the public entry point for about one second, as CI runs it.

mod support;

use std::time::Duration;

use clap::Parser;
use support::{FakeGateway, Script};
use wick_bench::BenchArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::test]
async fn run_for_one_second() {
    let gateway = FakeGateway::start(Script::tokens(
        Duration::from_millis(20),
        Duration::from_millis(5),
        8,
        8,
    ))
    .await;
    for output in [None, Some("--json")] {
        let mut argv = vec![
            "wick-bench",
            "--duration-secs",
            "0.5",
            "--concurrency",
            "4",
            "--quiet",
        ];
        let url = gateway.url();
        argv.extend(["--url", url.as_str()]);
        argv.extend(output);
        let run = wick_bench::run(Cli::parse_from(argv).bench);
        tokio::time::timeout(Duration::from_secs(15), run)
            .await
            .expect("run timed out")
            .unwrap();
    }
    assert!(!gateway.bodies().is_empty());
}

#[tokio::test]
async fn run_rejects_invalid_flag() {
    let argv = ["wick-bench", "--concurrency", "0", "--quiet"];
    let error = wick_bench::run(Cli::parse_from(argv).bench)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--concurrency 0"), "{error}");
}
