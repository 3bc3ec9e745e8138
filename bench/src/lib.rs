//! wick's load generator: concurrent streaming clients against a gateway's
//! Workers AI route, measuring what serving users feel (time to first
//! token, time per output token, inter-token latency) and what the cluster
//! delivers (requests and output tokens per second).
//!
//! - [`args`]: flags ([`BenchArgs`]) and their validation into a config
//! - [`workload`]: request bodies, drawn `max_tokens`, Poisson arrivals
//! - [`client`]: one streaming request and its timings
//! - [`runner`]: the run loop over all clients
//! - [`stats`]: percentiles and time per output token
//! - [`report`]: the results as a table or JSON
//! - [`cpu`]: the load generator's own CPU time
//! - [`progress`]: the progress bar on stderr

pub mod args;
pub mod client;
pub mod cpu;
pub mod progress;
pub mod report;
pub mod runner;
pub mod stats;
pub mod workload;

pub use args::BenchArgs;
pub use report::Report;

/// Runs a benchmark with `args` and prints its report to stdout: a table,
/// or one JSON object with `--json`.
///
/// Returns an error for an invalid flag, an unreadable prompts file or a
/// failed print. Failed requests do not make it fail; they are counted in
/// the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let progress = progress::progress_bar(&config);
    let report = runner::execute(&config, &progress).await?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
