//! Command-line flags of the load generator and their validation into a
//! typed [`BenchConfig`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

/// Seeds accepted by the Workers AI schema: 1 to 9999999999.
const MAX_REQUEST_SEED: u64 = 9_999_999_999;

/// Flags of `wick bench` (and of the `wick-bench` binary).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the gateway to load. Only servers you run yourself.
    #[arg(long, env = "WICK_BENCH_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Model name in the request path `/ai/run/{model}`.
    #[arg(long, env = "WICK_BENCH_MODEL", default_value = "@cf/microsoft/phi-2")]
    pub model: String,

    /// API key sent as `Authorization: Bearer KEY`, for a gateway started
    /// with API keys. Default: none.
    #[arg(long, env = "WICK_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Number of clients with a request in flight at once.
    #[arg(long, env = "WICK_BENCH_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Number of requests to send; the run ends when all have finished.
    /// Default 64 unless --duration-secs is given.
    #[arg(long, env = "WICK_BENCH_REQUESTS")]
    pub requests: Option<u64>,

    /// Stop sending new requests after this many seconds, then wait for
    /// those in flight. With --requests, whichever limit comes first ends
    /// the run.
    #[arg(long, env = "WICK_BENCH_DURATION_SECS")]
    pub duration_secs: Option<f64>,

    /// Prompt length of synthetic prompts, in tokens: the word " hello"
    /// (one GPT-2 BPE token) repeated, sent with `raw: true`.
    #[arg(long, env = "WICK_BENCH_PROMPT_TOKENS", default_value_t = 32)]
    pub prompt_tokens: usize,

    /// File of request bodies, one JSON object per line, sent in order and
    /// repeated as needed, in place of synthetic prompts. `stream` is
    /// always set to true; `max_tokens`, `temperature` and `seed` come from
    /// the flags only where a line lacks them.
    #[arg(long, env = "WICK_BENCH_PROMPTS_FILE")]
    pub prompts_file: Option<PathBuf>,

    /// Tokens to generate per request: a count (`64`) or an inclusive range
    /// (`32..128`) from which each request draws one, seeded by --seed.
    #[arg(long, env = "WICK_BENCH_MAX_TOKENS", default_value = "64")]
    pub max_tokens: MaxTokens,

    /// Poisson arrivals at this mean rate, in requests per second (seeded
    /// exponential gaps). Without it, every free client sends at once.
    #[arg(long, env = "WICK_BENCH_REQUEST_RATE")]
    pub request_rate: Option<f64>,

    /// Sampling temperature sent with every request, 0 to 5.
    #[arg(long, env = "WICK_BENCH_TEMPERATURE", default_value_t = 0.6)]
    pub temperature: f32,

    /// Seed of the load generator's draws (max_tokens, arrival gaps).
    /// Request i is sent with the sampling seed `seed + i`.
    #[arg(long, env = "WICK_BENCH_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Time limit of one request from send to the end of its stream, in
    /// seconds; a request over it counts as a timeout error.
    #[arg(long, env = "WICK_BENCH_TIMEOUT_SECS", default_value_t = 600.0)]
    pub timeout_secs: f64,

    /// Print the report as one JSON object instead of a table.
    #[arg(long, env = "WICK_BENCH_JSON")]
    pub json: bool,

    /// Hide the progress bar (it is also hidden when stderr is not a
    /// terminal).
    #[arg(long, env = "WICK_BENCH_QUIET")]
    pub quiet: bool,
}

/// Number of tokens to generate per request: one count or an inclusive
/// range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MaxTokens {
    pub min: u32,
    pub max: u32,
}

impl FromStr for MaxTokens {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            part.trim().parse::<u32>().map_err(|_| {
                format!(
                    "invalid max tokens {text:?}: expected a count like 64 or a range like 32..128"
                )
            })
        };
        let (min, max) = match text.split_once("..") {
            Some((low, high)) => (parse(low)?, parse(high.trim_start_matches('='))?),
            None => {
                let count = parse(text)?;
                (count, count)
            }
        };
        if min == 0 {
            return Err(format!("invalid max tokens {text:?}: must be at least 1"));
        }
        if min > max {
            return Err(format!(
                "invalid max tokens {text:?}: the range start {min} is above its end {max}"
            ));
        }
        Ok(MaxTokens { min, max })
    }
}

/// Source of the request bodies.
#[derive(Debug, Clone)]
pub enum PromptSource {
    /// Synthetic prompts of this many tokens.
    Synthetic { tokens: usize },
    /// Bodies read from a file, one JSON object per line.
    File(PathBuf),
}

/// Validated settings of one run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Full URL that requests are posted to.
    pub endpoint: Url,
    /// Value of the `Authorization` header, marked sensitive so it is never
    /// printed.
    pub authorization: Option<HeaderValue>,
    pub concurrency: usize,
    /// At least one of `requests` and `duration` is set, so a run ends.
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub prompts: PromptSource,
    pub max_tokens: MaxTokens,
    pub request_rate: Option<f64>,
    pub temperature: f32,
    pub seed: u64,
    pub timeout: Duration,
    pub json: bool,
    pub quiet: bool,
}

/// A flag value that breaks its rule.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("invalid --url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid --api-key: it must contain only visible ASCII characters")]
    ApiKey,
    #[error("invalid --{flag} {value}: {rule}")]
    OutOfRange {
        flag: &'static str,
        value: String,
        rule: &'static str,
    },
}

fn out_of_range(flag: &'static str, value: impl ToString, rule: &'static str) -> ArgsError {
    ArgsError::OutOfRange {
        flag,
        value: value.to_string(),
        rule,
    }
}

fn positive_seconds(flag: &'static str, seconds: f64) -> Result<Duration, ArgsError> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(out_of_range(
            flag,
            seconds,
            "must be above 0 and at most 86400 seconds",
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl BenchArgs {
    /// Checks every flag against its rule and builds the run's settings.
    ///
    /// Returns [`ArgsError`] naming the first flag that breaks its rule.
    pub fn validate(&self) -> Result<BenchConfig, ArgsError> {
        let endpoint = endpoint_url(&self.url, &self.model)?;
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(out_of_range(
                "concurrency",
                self.concurrency,
                "must be 1 to 10000",
            ));
        }
        if self.requests == Some(0) {
            return Err(out_of_range("requests", 0, "must be at least 1"));
        }
        let duration = self
            .duration_secs
            .map(|seconds| positive_seconds("duration-secs", seconds))
            .transpose()?;
        let requests = match (self.requests, duration) {
            (None, None) => Some(64),
            (requests, _) => requests,
        };
        if let Some(rate) = self.request_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(out_of_range(
                    "request-rate",
                    rate,
                    "must be a finite number above 0",
                ));
            }
        }
        if !(0.0..=5.0).contains(&self.temperature) {
            return Err(out_of_range(
                "temperature",
                self.temperature,
                "must be 0 to 5",
            ));
        }
        if self.seed == 0 || self.seed > MAX_REQUEST_SEED {
            return Err(out_of_range("seed", self.seed, "must be 1 to 9999999999"));
        }
        let prompts = match &self.prompts_file {
            Some(path) => PromptSource::File(path.clone()),
            None if self.prompt_tokens == 0 || self.prompt_tokens > 6144 / 6 => {
                return Err(out_of_range(
                    "prompt-tokens",
                    self.prompt_tokens,
                    "must be 1 to 1024, because the prompt may have at most 6144 characters",
                ));
            }
            None => PromptSource::Synthetic {
                tokens: self.prompt_tokens,
            },
        };
        Ok(BenchConfig {
            endpoint,
            authorization: self.api_key.as_deref().map(bearer).transpose()?,
            concurrency: self.concurrency,
            requests,
            duration,
            prompts,
            max_tokens: self.max_tokens,
            request_rate: self.request_rate,
            temperature: self.temperature,
            seed: self.seed,
            timeout: positive_seconds("timeout-secs", self.timeout_secs)?,
            json: self.json,
            quiet: self.quiet,
        })
    }
}

fn bearer(key: &str) -> Result<HeaderValue, ArgsError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ArgsError::ApiKey)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Builds `{url}/ai/run/{model}`, keeping any path prefix of `url`.
fn endpoint_url(url: &str, model: &str) -> Result<Url, ArgsError> {
    let invalid = |reason: String| ArgsError::Url {
        url: url.to_string(),
        reason,
    };
    let base = Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    if base.scheme() != "http" && base.scheme() != "https" {
        return Err(invalid("the scheme must be http or https".to_string()));
    }
    let joined = format!("{}/ai/run/{}", base.as_str().trim_end_matches('/'), model);
    Url::parse(&joined).map_err(|error| invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(flags: &[&str]) -> Result<BenchConfig, String> {
        let mut argv = vec!["wick-bench"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).map_err(|error| error.to_string())?;
        cli.bench.validate().map_err(|error| error.to_string())
    }

    #[test]
    fn max_tokens_single_count() {
        assert_eq!("64".parse(), Ok(MaxTokens { min: 64, max: 64 }));
    }

    #[test]
    fn max_tokens_ranges() {
        assert_eq!("32..128".parse(), Ok(MaxTokens { min: 32, max: 128 }));
        assert_eq!("32..=128".parse(), Ok(MaxTokens { min: 32, max: 128 }));
        assert_eq!("5..5".parse(), Ok(MaxTokens { min: 5, max: 5 }));
    }

    #[test]
    fn max_tokens_rejects_bad_values() {
        for text in ["0", "0..4", "9..3", "x", "3..", "..9", "-1", ""] {
            let result = text.parse::<MaxTokens>();
            assert!(result.is_err(), "{text:?} was accepted as {result:?}");
        }
        let message = "9..3".parse::<MaxTokens>().unwrap_err();
        assert!(message.contains("9..3"), "{message}");
    }

    #[test]
    fn defaults_bound_the_run() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.requests, Some(64));
        assert_eq!(config.duration, None);
        assert_eq!(
            config.endpoint.as_str(),
            "http://127.0.0.1:8080/ai/run/@cf/microsoft/phi-2"
        );
    }

    #[test]
    fn duration_alone_leaves_requests_open() {
        let config = parse(&["--duration-secs", "1.5"]).unwrap();
        assert_eq!(config.requests, None);
        assert_eq!(config.duration, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn url_keeps_path_prefix() {
        let config = parse(&["--url", "http://[::1]:9000/v/", "--model", "m"]).unwrap();
        assert_eq!(config.endpoint.as_str(), "http://[::1]:9000/v/ai/run/m");
    }

    #[test]
    fn flags_out_of_range_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["--concurrency", "0"], "--concurrency"),
            (&["--requests", "0"], "--requests"),
            (&["--duration-secs", "0"], "--duration-secs"),
            (&["--request-rate=-2"], "--request-rate"),
            (&["--request-rate", "0"], "--request-rate"),
            (&["--temperature", "6"], "--temperature"),
            (&["--seed", "0"], "--seed"),
            (&["--prompt-tokens", "0"], "--prompt-tokens"),
            (&["--timeout-secs", "NaN"], "--timeout-secs"),
            (&["--url", "ftp://127.0.0.1"], "--url"),
            (&["--url", "not a url"], "--url"),
            (&["--max-tokens", "7..2"], "7..2"),
            (&["--api-key", "a\nb"], "--api-key"),
        ];
        for (flags, name) in cases {
            let message = parse(flags).expect_err(&format!("{flags:?} was accepted"));
            assert!(message.contains(name), "{flags:?}: {message}");
        }
    }
}
