//! The load generator's workload: request bodies (synthetic or from a file),
//! the drawn `max_tokens`, and Poisson arrival gaps.

use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::args::{BenchConfig, MaxTokens, PromptSource};

/// One word that GPT-2's BPE (phi-2's tokenizer) encodes as a single token,
/// so repeating it N times gives a prompt of exactly N tokens.
const ONE_TOKEN_WORD: &str = " hello";

/// A prompts file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("failed to read prompts file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid prompts file {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("prompts file {path} contains no request body")]
    Empty { path: String },
}

/// The sequence of request bodies of a run, reproducible from its seed.
pub struct Workload {
    templates: Vec<Map<String, Value>>,
    max_tokens: MaxTokens,
    temperature: f32,
    seed: u64,
    rng: StdRng,
}

impl Workload {
    /// Builds the workload of `config`, reading its prompts file if any.
    ///
    /// Returns [`WorkloadError`] when the file cannot be read, a line is not
    /// a JSON object, or the file has no request.
    pub fn new(config: &BenchConfig) -> Result<Self, WorkloadError> {
        let templates = match &config.prompts {
            PromptSource::Synthetic { tokens } => vec![synthetic_body(*tokens)],
            PromptSource::File(path) => read_bodies(path)?,
        };
        Ok(Workload {
            templates,
            max_tokens: config.max_tokens,
            temperature: config.temperature,
            seed: config.seed,
            rng: StdRng::seed_from_u64(config.seed),
        })
    }

    /// Returns the body of request `index` (counted from 0). Call it once
    /// per request, in order, so the drawn values depend only on the seed.
    pub fn body(&mut self, index: u64) -> Value {
        let max_tokens = self
            .rng
            .random_range(self.max_tokens.min..=self.max_tokens.max);
        let template = &self.templates[(index % self.templates.len() as u64) as usize];
        let mut body = template.clone();
        body.insert("stream".into(), Value::Bool(true));
        body.entry("max_tokens").or_insert(json!(max_tokens));
        body.entry("temperature").or_insert(json!(self.temperature));
        // Wraps below the schema's maximum seed so a long run stays valid.
        let seed = (self.seed - 1 + index) % 9_999_999_999 + 1;
        body.entry("seed").or_insert(json!(seed));
        Value::Object(body)
    }
}

fn synthetic_body(tokens: usize) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("prompt".into(), json!(ONE_TOKEN_WORD.repeat(tokens)));
    body.insert("raw".into(), json!(true));
    body
}

fn read_bodies(path: &Path) -> Result<Vec<Map<String, Value>>, WorkloadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut bodies = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let invalid = |reason: String| WorkloadError::Line {
            path: shown.clone(),
            line: number + 1,
            reason,
        };
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(body)) => bodies.push(body),
            Ok(_) => return Err(invalid("expected a JSON object".into())),
            Err(error) => return Err(invalid(error.to_string())),
        }
    }
    if bodies.is_empty() {
        return Err(WorkloadError::Empty { path: shown });
    }
    Ok(bodies)
}

/// Gaps between Poisson arrivals: exponentially distributed with mean
/// `1 / rate` seconds, drawn from a seeded generator.
pub struct PoissonGaps {
    rate: f64,
    rng: StdRng,
}

impl PoissonGaps {
    /// `rate` is in arrivals per second and must be finite and above 0,
    /// which [`crate::BenchArgs::validate`] checks.
    pub fn new(rate: f64, seed: u64) -> Self {
        debug_assert!(rate.is_finite() && rate > 0.0);
        // A different stream from the workload's, so turning arrivals on
        // does not change the drawn max_tokens.
        let rng = StdRng::seed_from_u64(seed ^ 0x5bd1_e995_0000_0001);
        PoissonGaps { rate, rng }
    }

    /// Draws the wait before the next arrival.
    pub fn next_gap(&mut self) -> Duration {
        // Inverse transform sampling: -ln(U) / rate with U in (0, 1].
        let uniform: f64 = 1.0 - self.rng.random::<f64>();
        Duration::from_secs_f64(-uniform.ln() / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::BenchConfig;
    use std::io::Write;

    fn config(prompts: PromptSource, max_tokens: MaxTokens) -> BenchConfig {
        BenchConfig {
            endpoint: "http://127.0.0.1:1/ai/run/m".parse().unwrap(),
            authorization: None,
            concurrency: 1,
            requests: Some(1),
            duration: None,
            prompts,
            max_tokens,
            request_rate: None,
            temperature: 0.5,
            seed: 7,
            timeout: Duration::from_secs(1),
            json: false,
            quiet: true,
        }
    }

    #[test]
    fn poisson_gaps_mean_matches_rate() {
        let mut gaps = PoissonGaps::new(4.0, 11);
        let count = 20_000;
        let total: f64 = (0..count).map(|_| gaps.next_gap().as_secs_f64()).sum();
        let mean = total / count as f64;
        // The standard error of the mean is 0.25 / sqrt(20000) ~ 0.0018.
        assert!((mean - 0.25).abs() < 0.01, "mean gap {mean}");
    }

    #[test]
    fn poisson_gaps_repeat_with_seed() {
        let first: Vec<_> = (0..5)
            .scan(PoissonGaps::new(2.0, 3), |g, _| Some(g.next_gap()))
            .collect();
        let second: Vec<_> = (0..5)
            .scan(PoissonGaps::new(2.0, 3), |g, _| Some(g.next_gap()))
            .collect();
        assert_eq!(first, second);
    }

    #[test]
    fn synthetic_body_fields() {
        let source = PromptSource::Synthetic { tokens: 3 };
        let mut workload = Workload::new(&config(source, MaxTokens { min: 9, max: 9 })).unwrap();
        let body = workload.body(2);
        assert_eq!(body["prompt"], " hello hello hello");
        assert_eq!(body["raw"], true);
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 9);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["seed"], 9);
    }

    #[test]
    fn max_tokens_drawn_within_range() {
        let source = PromptSource::Synthetic { tokens: 1 };
        let range = MaxTokens { min: 32, max: 40 };
        let mut workload = Workload::new(&config(source, range)).unwrap();
        let drawn: Vec<u64> = (0..200)
            .map(|i| workload.body(i)["max_tokens"].as_u64().unwrap())
            .collect();
        assert!(drawn.iter().all(|n| (32..=40).contains(n)), "{drawn:?}");
        assert!(
            drawn.contains(&32) && drawn.contains(&40),
            "ends never drawn"
        );
    }

    #[test]
    fn file_bodies_keep_their_fields() {
        let path =
            std::env::temp_dir().join(format!("wick-bench-prompts-{}.jsonl", std::process::id()));
        let mut file = std::fs::File::create(&path).unwrap();
        writeln!(file, r#"{{"prompt":"a","max_tokens":3,"stream":false}}"#).unwrap();
        writeln!(file).unwrap();
        writeln!(file, r#"{{"messages":[{{"role":"user","content":"b"}}]}}"#).unwrap();
        drop(file);

        let source = PromptSource::File(path.clone());
        let mut workload = Workload::new(&config(source, MaxTokens { min: 8, max: 8 })).unwrap();
        let first = workload.body(0);
        let second = workload.body(1);
        let third = workload.body(2);
        std::fs::remove_file(&path).unwrap();

        assert_eq!(first["max_tokens"], 3);
        assert_eq!(first["stream"], true);
        assert_eq!(second["max_tokens"], 8);
        assert_eq!(second["messages"][0]["content"], "b");
        assert_eq!(third["prompt"], "a");
    }

    #[test]
    fn file_with_bad_line_is_named() {
        let path =
            std::env::temp_dir().join(format!("wick-bench-bad-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"prompt\":\"a\"}\n[1, 2]\n").unwrap();
        let source = PromptSource::File(path.clone());
        let error = Workload::new(&config(source, MaxTokens { min: 1, max: 1 }))
            .err()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
