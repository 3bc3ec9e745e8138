//! The `wick` binary: parses flags and runs one role of the cluster, or all
//! of them in one process.
//!
//! - `cli`: the command line (clap), one struct per subcommand.
//! - `roles`: turns parsed flags into each crate's config and runs it.
//! - `telemetry`: logs, OTLP trace export and the Prometheus endpoint.
//! - `shutdown`: SIGTERM and Ctrl-C, and the grace period after them.

mod cli;
mod roles;
mod shutdown;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wick: failed to start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(roles::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line with the whole cause chain, as operators read it in
            // container logs.
            eprintln!("wick: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
