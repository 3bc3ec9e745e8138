//! `wick-bench`: the load generator as its own binary.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Load generator for a wick gateway: streaming clients, latency and
/// throughput report.
#[derive(Parser)]
#[command(name = "wick-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: wick_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr at warn by default, so the report on stdout stays
    // machine-readable; RUST_LOG raises the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    wick_bench::run(Cli::parse().bench).await
}
