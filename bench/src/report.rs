//! The result of a run: built from the per-request outcomes, printed as a
//! table or serialized as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::args::{BenchConfig, MaxTokens, PromptSource};
use crate::client::{Completed, Failure};
use crate::cpu::CpuTime;
use crate::stats::{self, Distribution};

/// Everything a run measured. The JSON form is read back by `bench-chart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub settings: Settings,
    /// From the first request sent to the last one ended, in seconds.
    pub duration_s: f64,
    pub requests_completed: u64,
    pub requests_failed: u64,
    /// Failed requests by cause, such as `http 429` or `timed out`.
    pub errors: BTreeMap<String, u64>,
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Sum of `usage.completion_tokens` over completed requests.
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    pub ttft_ms: Distribution,
    /// Time per output token after the first, over requests of at least two
    /// tokens.
    pub tpot_ms: Distribution,
    /// Gaps between events carrying text, pooled over all requests.
    pub itl_ms: Distribution,
    pub e2e_ms: Distribution,
    pub load_generator_cpu: CpuUse,
}

/// The settings a report was measured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub endpoint: String,
    pub concurrency: usize,
    pub requests: Option<u64>,
    pub duration_secs: Option<f64>,
    /// `synthetic N tokens` or the prompts file's path.
    pub prompts: String,
    pub max_tokens_min: u32,
    pub max_tokens_max: u32,
    pub request_rate: Option<f64>,
    pub temperature: f32,
    pub seed: u64,
}

/// CPU time the load generator's own process used during the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuUse {
    pub user_s: f64,
    pub system_s: f64,
    /// (user + system) / wall time, as a percentage of one core.
    pub percent_of_one_core: f64,
}

impl Settings {
    fn new(config: &BenchConfig) -> Self {
        let MaxTokens { min, max } = config.max_tokens;
        Settings {
            endpoint: config.endpoint.to_string(),
            concurrency: config.concurrency,
            requests: config.requests,
            duration_secs: config.duration.map(|duration| duration.as_secs_f64()),
            prompts: match &config.prompts {
                PromptSource::Synthetic { tokens } => format!("synthetic {tokens} tokens"),
                PromptSource::File(path) => path.display().to_string(),
            },
            max_tokens_min: min,
            max_tokens_max: max,
            request_rate: config.request_rate,
            temperature: config.temperature,
            seed: config.seed,
        }
    }
}

impl Report {
    /// Builds the report of a run that took `wall` and used `cpu`.
    pub fn new(
        config: &BenchConfig,
        outcomes: &[Result<Completed, Failure>],
        wall: Duration,
        cpu: CpuTime,
    ) -> Self {
        let completed: Vec<&Completed> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .collect();
        let mut errors = BTreeMap::new();
        for failure in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
            *errors.entry(failure.to_string()).or_insert(0) += 1;
        }
        let seconds = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        let output_tokens: u64 = completed.iter().map(|request| request.output_tokens).sum();
        let tpot = completed.iter().filter_map(|request| {
            stats::time_per_output_token(request.e2e, request.ttft, request.output_tokens)
        });
        let gaps = completed
            .iter()
            .flat_map(|request| request.inter_token_gaps.iter().copied());
        Report {
            settings: Settings::new(config),
            duration_s: wall.as_secs_f64(),
            requests_completed: completed.len() as u64,
            requests_failed: errors.values().sum(),
            errors,
            requests_per_s: completed.len() as f64 / seconds,
            output_tokens,
            output_tokens_per_s: output_tokens as f64 / seconds,
            ttft_ms: Distribution::from_durations(completed.iter().map(|request| request.ttft)),
            tpot_ms: Distribution::from_durations(tpot),
            itl_ms: Distribution::from_durations(gaps),
            e2e_ms: Distribution::from_durations(completed.iter().map(|request| request.e2e)),
            load_generator_cpu: CpuUse {
                user_s: cpu.user.as_secs_f64(),
                system_s: cpu.system.as_secs_f64(),
                percent_of_one_core: (cpu.user + cpu.system).as_secs_f64() / seconds * 100.0,
            },
        }
    }

    /// Renders the report as an aligned plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let settings = &self.settings;
        let _ = writeln!(out, "endpoint             {}", settings.endpoint);
        let _ = writeln!(
            out,
            "load                 concurrency {}, prompts {}, max_tokens {}..={}",
            settings.concurrency,
            settings.prompts,
            settings.max_tokens_min,
            settings.max_tokens_max
        );

        let _ = writeln!(out, "duration             {:.2} s", self.duration_s);
        let _ = writeln!(
            out,
            "requests             {} completed, {} failed",
            self.requests_completed, self.requests_failed
        );
        for (cause, count) in &self.errors {
            let _ = writeln!(out, "  {cause:<18} {count}");
        }
        let _ = writeln!(out, "requests/s           {:.2}", self.requests_per_s);
        let _ = writeln!(out, "output tokens        {}", self.output_tokens);
        let _ = writeln!(out, "output tokens/s      {:.1}", self.output_tokens_per_s);

        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>10}",
            "latency (ms)", "p50", "p90", "p99", "mean"
        );
        for (name, summary) in [
            ("time to first token", &self.ttft_ms),
            ("time per output tok", &self.tpot_ms),
            ("inter-token latency", &self.itl_ms),
            ("end-to-end", &self.e2e_ms),
        ] {
            let cell = |value: Option<f64>| value.map_or("-".to_string(), |ms| format!("{ms:.1}"));
            let _ = writeln!(
                out,
                "{name:<20} {:>10} {:>10} {:>10} {:>10}",
                cell(summary.p50),
                cell(summary.p90),
                cell(summary.p99),
                cell(summary.mean)
            );
        }

        let cpu = &self.load_generator_cpu;
        let _ = writeln!(
            out,
            "load generator CPU   {:.2} s user + {:.2} s system = {:.1}% of one core",
            cpu.user_s, cpu.system_s, cpu.percent_of_one_core
        );
        out
    }
}
