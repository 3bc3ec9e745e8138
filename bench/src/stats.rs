//! Percentiles and the per-request latency measures derived from timings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Summary of a set of samples in milliseconds. Every field is `None` when
/// there are no samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

impl Distribution {
    /// Summarizes `samples` (in any order).
    pub fn from_samples(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let mean =
            (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64);
        Distribution {
            p50: percentile(&samples, 50.0),
            p90: percentile(&samples, 90.0),
            p99: percentile(&samples, 99.0),
            mean,
        }
    }

    /// Summarizes durations in milliseconds.
    pub fn from_durations(durations: impl IntoIterator<Item = Duration>) -> Self {
        Self::from_samples(durations.into_iter().map(millis).collect())
    }
}

/// Returns the `p`-th percentile (0 to 100) of ascending `sorted`, with
/// linear interpolation between the two nearest ranks (the default of
/// NumPy's `percentile`), or `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    debug_assert!((0.0..=100.0).contains(&p));
    let last = sorted.len().checked_sub(1)?;
    let rank = p / 100.0 * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let weight = rank - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * weight)
}

/// Time per output token after the first: `(e2e - ttft) / (tokens - 1)`.
/// `None` for fewer than two tokens, where it is undefined.
pub fn time_per_output_token(
    e2e: Duration,
    ttft: Duration,
    output_tokens: u64,
) -> Option<Duration> {
    if output_tokens < 2 {
        return None;
    }
    let decode = e2e.saturating_sub(ttft);
    Some(decode.div_f64((output_tokens - 1) as f64))
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: Option<f64>, expected: f64) -> bool {
        actual.is_some_and(|value| (value - expected).abs() < 1e-9)
    }

    #[test]
    fn percentile_interpolates_between_ranks() {
        let sorted = [10.0, 20.0, 30.0, 40.0];
        assert!(close(percentile(&sorted, 0.0), 10.0));
        assert!(close(percentile(&sorted, 50.0), 25.0));
        assert!(close(percentile(&sorted, 90.0), 37.0));
        assert!(close(percentile(&sorted, 100.0), 40.0));
    }

    #[test]
    fn percentile_of_one_and_none() {
        assert!(close(percentile(&[7.0], 99.0), 7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_of_hundred_values() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile(&sorted, 50.0), 50.5));
        assert!(close(percentile(&sorted, 99.0), 99.01));
    }

    #[test]
    fn distribution_sorts_its_samples() {
        let summary = Distribution::from_samples(vec![3.0, 1.0, 2.0]);
        assert!(close(summary.p50, 2.0));
        assert!(close(summary.mean, 2.0));
        assert!(close(summary.p99, 2.98));
        assert_eq!(Distribution::from_samples(vec![]), Distribution::default());
    }

    #[test]
    fn tpot_excludes_first_token() {
        let tpot =
            time_per_output_token(Duration::from_millis(1100), Duration::from_millis(100), 11);
        assert_eq!(tpot, Some(Duration::from_millis(100)));
    }

    #[test]
    fn tpot_undefined_below_two_tokens() {
        let second = Duration::from_secs(1);
        assert_eq!(time_per_output_token(second, second / 2, 1), None);
        assert_eq!(time_per_output_token(second, second / 2, 0), None);
        assert_eq!(
            time_per_output_token(second, second, 2),
            Some(Duration::ZERO)
        );
    }
}
