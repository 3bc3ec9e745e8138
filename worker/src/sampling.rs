//! Per-sequence sampling: penalties, temperature, top-k, top-p and a
//! seeded draw.
//!
//! The user-facing rules are in `docs/sampling.md`. In short, for one
//! sequence's logits:
//! 1. the repetition penalty (prompt and output tokens, each distinct token
//!    once), then the frequency and presence penalties (output tokens only);
//! 2. greedy argmax if temperature <= 0, top_k == 1 or top_p <= 0;
//! 3. otherwise softmax at the temperature, computed in f64 after
//!    subtracting the max logit, restricted to the top_k most likely tokens,
//!    then to the smallest set whose probability reaches top_p;
//! 4. one draw from a uniform number that depends only on the seed and the
//!    output index, so a sequence samples the same tokens whatever batch it
//!    runs in and after a preemption.
//!
//! NaN logits are treated as -inf, so they are never picked.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::engine::SamplingParams;

/// Nucleus sampling narrows the crossing of top_p down to at most this
/// many tokens by partial selection, then sorts only those.
const NUCLEUS_SORT_LEN: usize = 64;

/// The tokens a sequence has seen, for the repetition, frequency and
/// presence penalties.
#[derive(Debug, Clone, Default)]
pub struct PenaltyState {
    /// Distinct tokens of prompt and output: the repetition penalty applies
    /// once to each, however often it occurred.
    seen: HashSet<u32>,
    /// How often each token occurs in the output, for the frequency and
    /// presence penalties, which ignore the prompt.
    output_counts: HashMap<u32, u32>,
}

impl PenaltyState {
    /// Starts the state from the prompt tokens, which only the repetition
    /// penalty counts.
    pub fn new(prompt: &[u32]) -> Self {
        PenaltyState {
            seen: prompt.iter().copied().collect(),
            output_counts: HashMap::new(),
        }
    }

    /// Records one generated token.
    pub fn push_output(&mut self, token: u32) {
        self.seen.insert(token);
        *self.output_counts.entry(token).or_insert(0) += 1;
    }
}

/// Picks the next token from one sequence's logits, which it may modify in
/// place. `output_index` is the index of the token being generated among
/// the sequence's output tokens, 0 for the first. With the seed, it alone
/// decides the random draw.
///
/// Returns 0 when `logits` is empty.
pub fn sample(
    logits: &mut [f32],
    params: &SamplingParams,
    state: &PenaltyState,
    output_index: usize,
) -> u32 {
    apply_penalties(logits, params, state);
    let (max, argmax) = replace_nan_and_find_max(logits);
    if is_greedy(params) {
        return argmax;
    }

    let mut candidates: Vec<u32> = (0..logits.len() as u32).collect();
    if params.top_k > 0 && (params.top_k as usize) < candidates.len() {
        keep_top(&mut candidates, params.top_k as usize, logits);
    }

    // From here on `logits` contains unnormalized probabilities, in [0, 1].
    let inverse_temperature = 1.0 / f64::from(params.temperature);
    for &token in &candidates {
        let logit = &mut logits[token as usize];
        *logit = scaled_weight(*logit, max, inverse_temperature) as f32;
    }
    if params.top_p < 1.0 {
        keep_nucleus(&mut candidates, logits, f64::from(params.top_p));
    }

    draw(&candidates, logits, uniform_draw(params.seed, output_index))
}

/// Returns the uniform number in [0, 1) used for output position `index`
/// of a sequence with `seed`: SplitMix64 seeded with a mix of `seed`, at
/// position `index`. It has no state, so batching, preemption and other
/// sequences cannot change it.
pub fn uniform_draw(seed: u64, index: usize) -> f64 {
    const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let state = mix64(seed).wrapping_add((index as u64).wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
    // The top 53 bits fill an f64 mantissa exactly, so the result is < 1.
    (mix64(state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The SplitMix64 finalizer: a bijection on u64 that spreads every input
/// bit over the whole output.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn is_greedy(params: &SamplingParams) -> bool {
    let temperature = params.temperature;
    temperature.is_nan() || temperature <= 0.0 || params.top_k == 1 || params.top_p <= 0.0
}

/// Applies the repetition penalty to every distinct token seen, then the
/// frequency and presence penalties to every generated token. Ids outside
/// the logits are ignored.
fn apply_penalties(logits: &mut [f32], params: &SamplingParams, state: &PenaltyState) {
    let repetition = params.repetition_penalty;
    // 0 means off, like 1. Negative or NaN penalties are invalid, so they
    // are left out rather than flipping signs.
    if repetition > 0.0 && repetition != 1.0 {
        for &token in &state.seen {
            if let Some(logit) = logits.get_mut(token as usize) {
                if *logit > 0.0 {
                    *logit /= repetition;
                } else {
                    *logit *= repetition;
                }
            }
        }
    }

    let frequency = params.frequency_penalty;
    let presence = params.presence_penalty;
    if frequency != 0.0 || presence != 0.0 {
        for (&token, &count) in &state.output_counts {
            if let Some(logit) = logits.get_mut(token as usize) {
                *logit -= count as f32 * frequency + presence;
            }
        }
    }
}

/// Replaces NaN with -inf and returns the largest logit (-inf if none) and
/// its index. The lowest index wins a tie.
fn replace_nan_and_find_max(logits: &mut [f32]) -> (f32, u32) {
    let mut max = f32::NEG_INFINITY;
    let mut argmax = 0;
    for (i, logit) in logits.iter_mut().enumerate() {
        if logit.is_nan() {
            *logit = f32::NEG_INFINITY;
        } else if *logit > max {
            max = *logit;
            argmax = i;
        }
    }
    (max, argmax as u32)
}

/// Orders tokens by value, largest first, then by id. The order is total
/// (no NaN remains), so the selected sets are deterministic.
fn by_value_descending(values: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    |a, b| {
        let (va, vb) = (values[*a as usize], values[*b as usize]);
        vb.total_cmp(&va).then(a.cmp(b))
    }
}

/// Keeps the `k` tokens with the largest values, in no particular order.
fn keep_top(candidates: &mut Vec<u32>, k: usize, values: &[f32]) {
    candidates.select_nth_unstable_by(k - 1, by_value_descending(values));
    candidates.truncate(k);
}

/// `exp((logit - max) * inverse_temperature)`, in [0, 1]. The max itself
/// maps to exactly 1. An undefined exponent, such as -inf times 0 at an
/// infinite temperature, maps to 0, so no input yields NaN.
fn scaled_weight(logit: f32, max: f32, inverse_temperature: f64) -> f64 {
    if logit == max {
        return 1.0;
    }
    let exponent = (f64::from(logit) - f64::from(max)) * inverse_temperature;
    if exponent.is_nan() {
        0.0
    } else {
        exponent.exp()
    }
}

/// Keeps the smallest set of most likely tokens whose probability reaches
/// `top_p`, including the token that crosses the threshold, in no
/// particular order.
///
/// Finding that set needs no full sort: each round splits the unresolved
/// range at its middle rank with a partial selection and keeps the half
/// that contains the crossing, so the work is linear in the vocabulary on
/// average. Only the last few tokens get sorted.
fn keep_nucleus(candidates: &mut Vec<u32>, weights: &[f32], top_p: f64) {
    let weight_of = |token: &u32| f64::from(weights[*token as usize]);
    let total: f64 = candidates.iter().map(weight_of).sum();
    let threshold = top_p * total;
    let order = by_value_descending(weights);

    // Invariant: every token in `candidates[..low]` ranks above every token
    // in `candidates[low..]`, `above` is their total weight and stays below
    // the threshold, and the crossing lies in `candidates[low..high]`.
    let (mut low, mut high) = (0, candidates.len());
    let mut above = 0.0;
    while high - low > NUCLEUS_SORT_LEN {
        let middle = (high - low) / 2;
        candidates[low..high].select_nth_unstable_by(middle, &order);
        let upper_half: f64 = candidates[low..=low + middle].iter().map(weight_of).sum();
        if above + upper_half >= threshold {
            high = low + middle + 1;
        } else {
            above += upper_half;
            low += middle + 1;
        }
    }

    candidates[low..high].sort_unstable_by(&order);
    for i in low..high {
        above += weight_of(&candidates[i]);
        if above >= threshold {
            candidates.truncate(i + 1);
            return;
        }
    }
    // Reached only when rounding kept the sum of single weights just under
    // the threshold. The halving found the crossing before `high`, or no
    // crossing at all, in which case `high` is the full length.
    candidates.truncate(high);
}

/// Picks the candidate where the cumulative weight first exceeds
/// `uniform * total`.
fn draw(candidates: &[u32], weights: &[f32], uniform: f64) -> u32 {
    let total: f64 = candidates
        .iter()
        .map(|&t| f64::from(weights[t as usize]))
        .sum();
    let target = uniform * total;
    let mut cumulative = 0.0;
    let mut last_possible = candidates.first().copied().unwrap_or(0);
    for &token in candidates {
        let weight = f64::from(weights[token as usize]);
        if weight > 0.0 {
            last_possible = token;
        }
        cumulative += weight;
        if cumulative > target {
            return token;
        }
    }
    // Only reached when rounding leaves the sum at or below the target.
    last_possible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draw_in_unit_interval() {
        for seed in [0, 1, u64::MAX] {
            for index in [0, 1, 1000, usize::MAX] {
                let u = uniform_draw(seed, index);
                assert!((0.0..1.0).contains(&u), "seed {seed} index {index}: {u}");
            }
        }
    }

    #[test]
    fn nucleus_keeps_lowest_ids_on_ties() {
        // 1000 equal weights: top_p 0.5 needs 500 tokens, more than one
        // sorted chunk.
        let weights = vec![1.0f32; 1000];
        let mut candidates: Vec<u32> = (0..1000).collect();
        keep_nucleus(&mut candidates, &weights, 0.5);
        candidates.sort_unstable();
        assert_eq!(candidates, (0..500).collect::<Vec<u32>>());
    }

    #[test]
    fn nucleus_matches_sorted_reference() {
        let weights: Vec<f32> = (0..5000u32)
            .map(|i| ((i * 7919) % 4999) as f32 / 4999.0)
            .collect();
        for top_p in [0.01, 0.3, 0.5, 0.9, 0.999] {
            let mut expected: Vec<u32> = (0..5000).collect();
            expected.sort_unstable_by(by_value_descending(&weights));
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let mut cumulative = 0.0;
            let cut = expected
                .iter()
                .position(|&t| {
                    cumulative += f64::from(weights[t as usize]);
                    cumulative >= top_p * total
                })
                .expect("threshold reached");
            expected.truncate(cut + 1);
            expected.sort_unstable();

            let mut candidates: Vec<u32> = (0..5000).collect();
            keep_nucleus(&mut candidates, &weights, top_p);
            candidates.sort_unstable();
            assert_eq!(candidates, expected, "top_p {top_p}");
        }
    }

    #[test]
    fn draw_skips_zero_weights() {
        let weights = [0.0f32, 1.0, 0.0];
        assert_eq!(draw(&[0, 1, 2], &weights, 0.0), 1);
        assert_eq!(draw(&[0, 1, 2], &weights, 0.999_999), 1);
    }
}
