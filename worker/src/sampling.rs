//! Per-sequence sampling: penalties, temperature, top-k, top-p and a
//! seeded draw.
//!
//! The user-facing rules are in `docs/sampling.md`. In short, for one
//! sequence's logits:
//! 1. the repetition penalty (prompt and output tokens, each distinct token
//!    once), then the frequency and presence penalties (output tokens only);
//! 2. greedy argmax if temperature <= 0, top_k == 1 or top_p <= 0;
//! 3. otherwise logits rounded to a grid of 2^-10, then softmax at the
//!    temperature: `exp` in f32 after subtracting the max logit, sums in
//!    f64; restricted to the top_k most likely tokens, then to the smallest
//!    set whose probability reaches top_p;
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
    if is_greedy(params) {
        return replace_nan_and_find_max(logits).1;
    }
    let max = round_to_grid(logits);
    let inverse_temperature = 1.0 / params.temperature;
    let uniform = uniform_draw(params.seed, output_index);

    let top_k = params.top_k as usize;
    let limits_top_k = top_k > 0 && top_k < logits.len();
    if !limits_top_k {
        // Without top-k, the weights are computed over the whole row at
        // once, which the compiler vectorizes, and the draw works on the
        // row itself: tokens outside the nucleus get weight 0.
        for logit in logits.iter_mut() {
            *logit = scaled_weight(*logit, max, inverse_temperature);
        }
        if params.top_p < 1.0 {
            keep_nucleus_in_row(logits, f64::from(params.top_p));
        }
        return draw_from_row(logits, uniform);
    }

    let mut candidates: Vec<u32> = (0..logits.len() as u32).collect();
    keep_top(&mut candidates, top_k, logits);
    // From here on `logits` contains unnormalized probabilities, in [0, 1].
    for &token in &candidates {
        let logit = &mut logits[token as usize];
        *logit = scaled_weight(*logit, max, inverse_temperature);
    }
    if params.top_p < 1.0 {
        keep_nucleus(&mut candidates, logits, f64::from(params.top_p));
    }
    draw(&candidates, logits, uniform)
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

/// Spacing of the grid that logits are rounded to before a random draw:
/// 2^-10, about 0.001, far below any difference that matters to the
/// distribution.
const LOGIT_GRID: f32 = 1.0 / 1024.0;

/// Adding then subtracting 1.5 * 2^23 rounds an f32 of magnitude below
/// 2^22 to the nearest integer, ties to even: the sum lands where f32
/// values are spaced by exactly 1. Unlike `f32::round`, which is a libm
/// call on baseline x86-64, it vectorizes.
const ROUNDING_SHIFT: f32 = 12_582_912.0;

/// Logits of this magnitude or more are left as they are by
/// [`round_to_grid`]: 2^22 grid steps.
const GRID_LIMIT: f32 = 4096.0;

/// Rounds every logit below [`GRID_LIMIT`] in magnitude to a multiple of
/// [`LOGIT_GRID`], replaces NaN with -inf, and returns the new maximum
/// (-inf if every logit is -inf or NaN).
///
/// The same sequence gets logits that differ in their last bits from one
/// batch to another, because matrix products sum in another order. Without
/// rounding, that noise moves the cumulative probabilities, so a seeded
/// draw would sometimes pick a neighbouring token inside a batch. After
/// rounding, the noise changes nothing unless a logit sits within it of a
/// grid boundary.
fn round_to_grid(logits: &mut [f32]) -> f32 {
    for logit in logits.iter_mut() {
        let value = *logit;
        *logit = if value.abs() < GRID_LIMIT {
            let steps = (value * (1.0 / LOGIT_GRID) + ROUNDING_SHIFT) - ROUNDING_SHIFT;
            steps * LOGIT_GRID
        } else if value.is_nan() {
            f32::NEG_INFINITY
        } else {
            value
        };
    }
    max_without_nan(logits)
}

/// Returns the largest of `values`, which contain no NaN, or -inf if
/// empty. Eight running maxima instead of one let the loop vectorize.
fn max_without_nan(values: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(lanes.len());
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, value);
        }
    }
    lanes
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, larger)
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
#[inline(always)]
fn scaled_weight(logit: f32, max: f32, inverse_temperature: f32) -> f32 {
    let weight = exp_nonpositive((logit - max) * inverse_temperature);
    if logit == max {
        1.0
    } else {
        weight
    }
}

/// Below this exponent, `exp` is under 1.7e-38, near the smallest normal
/// f32, and [`exp_nonpositive`] returns 0.
const EXP_CUTOFF: f32 = -87.0;

/// `exp(x)` for `x <= 0`, within 2 units in the last place; 0 for `x`
/// below [`EXP_CUTOFF`], -inf or NaN.
///
/// The standard library's `exp` is a libm call per element. This one has
/// no branch and no call, so a loop over a row of logits vectorizes, and
/// it gives the same bits on every platform and libm version, which keeps
/// seeded draws reproducible across machines.
///
/// Method: `x = n * ln 2 + r` with integer `n` and `|r| <= ln(2) / 2`,
/// `exp(x) = 2^n * exp(r)`, `exp(r)` by a degree-7 polynomial (its
/// accuracy is checked by a test over the whole range) and `2^n` by writing
/// the exponent bits directly.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two: the high part has few enough bits that `n * high`
    // is exact for the `n` used here.
    const LN_2_HIGH: f32 = 0.693_359_4;
    const LN_2_LOW: f32 = -2.121_944_4e-4;

    let clamped = x.max(EXP_CUTOFF);
    // Rounds `clamped * log2(e)` to the integer `n`, which then sits in the
    // low mantissa bits of `shifted`.
    let shifted = clamped * LOG2_E + ROUNDING_SHIFT;
    let n = shifted - ROUNDING_SHIFT;
    let r = clamped - n * LN_2_HIGH - n * LN_2_LOW;

    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let exp_r = p * r * r + r + 1.0;

    // `n` is in [-126, 0], so `n + 127` is a valid biased exponent.
    let n_bits = shifted.to_bits().wrapping_sub(ROUNDING_SHIFT.to_bits());
    let two_to_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    // `x >= EXP_CUTOFF` is false for NaN as well.
    if x >= EXP_CUTOFF {
        exp_r * two_to_n
    } else {
        0.0
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

/// Tokens per block of [`draw_from_row`]: the draw finds its block from
/// the block sums, then scans one block only.
const DRAW_BLOCK: usize = 256;

/// Picks the token of `weights` where the cumulative weight first exceeds
/// `uniform * total`. Returns 0 when `weights` is empty.
fn draw_from_row(weights: &[f32], uniform: f64) -> u32 {
    let block_sums: Vec<f64> = weights.chunks(DRAW_BLOCK).map(sum_f64).collect();
    let target = uniform * block_sums.iter().sum::<f64>();
    let mut cumulative = 0.0;
    for (block, (&block_sum, chunk)) in block_sums
        .iter()
        .zip(weights.chunks(DRAW_BLOCK))
        .enumerate()
    {
        if cumulative + block_sum <= target {
            cumulative += block_sum;
            continue;
        }
        for (offset, &weight) in chunk.iter().enumerate() {
            cumulative += f64::from(weight);
            if cumulative > target {
                return (block * DRAW_BLOCK + offset) as u32;
            }
        }
        // Rounding left the sum of single weights at or below the target,
        // although the block sum passed it: go on with the next block.
    }
    // Only reached when rounding leaves the sum at or below the target: the
    // last token that could be drawn.
    weights
        .iter()
        .rposition(|&weight| weight > 0.0)
        .unwrap_or(0) as u32
}

/// Sums f32 values in f64, in four interleaved partial sums so that the
/// loop vectorizes. The order is fixed, so the result is too.
fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 4];
    let chunks = values.chunks_exact(4);
    let rest: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(value);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Weights fall into buckets by their top bits (sign, exponent and three
/// mantissa bits). For non-negative floats the bit patterns sort like the
/// values, so every weight of a higher bucket is larger than every weight
/// of a lower one, and one bucket spans values within a factor of 1.125.
const BUCKET_SHIFT: u32 = 20;

/// Sets to 0 the weight of every token outside the nucleus: the smallest
/// set of most likely tokens whose weights reach `top_p` of the total,
/// including the token that crosses it, ties going to the lower id. This
/// is the set [`keep_nucleus`] keeps.
///
/// Bucket sums find the bucket where the cumulative weight crosses the
/// threshold, so only that bucket's tokens get sorted.
fn keep_nucleus_in_row(weights: &mut [f32], top_p: f64) {
    let bucket = |weight: f32| (weight.to_bits() >> BUCKET_SHIFT) as usize;
    let mut sums = vec![0.0f64; 1 << (32 - BUCKET_SHIFT)];
    for &weight in weights.iter() {
        sums[bucket(weight)] += f64::from(weight);
    }
    let threshold = top_p * sums.iter().sum::<f64>();
    let mut above = 0.0;
    let mut crossing = None;
    for (index, &sum) in sums.iter().enumerate().rev() {
        if above + sum >= threshold {
            crossing = Some(index);
            break;
        }
        above += sum;
    }
    // Without a crossing, rounding kept the sum under the threshold, and
    // every token stays.
    let Some(crossing) = crossing else {
        return;
    };

    let mut tied: Vec<u32> = (0..weights.len() as u32)
        .filter(|&token| bucket(weights[token as usize]) == crossing)
        .collect();
    tied.sort_unstable_by(by_value_descending(weights));
    let mut tied_in_nucleus = tied.len();
    for (rank, &token) in tied.iter().enumerate() {
        above += f64::from(weights[token as usize]);
        if above >= threshold {
            tied_in_nucleus = rank + 1;
            break;
        }
    }
    for &token in &tied[tied_in_nucleus..] {
        weights[token as usize] = 0.0;
    }
    for weight in weights.iter_mut() {
        if bucket(*weight) < crossing {
            *weight = 0.0;
        }
    }
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
    fn exp_matches_f64_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = EXP_CUTOFF * i as f32 / 1_000_000.0;
            let exact = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * exact;
            worst = worst.max((f64::from(exp_nonpositive(x)) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
    }

    #[test]
    fn exp_is_zero_below_cutoff_and_for_nan() {
        for x in [EXP_CUTOFF - 0.01, -1e30, f32::NEG_INFINITY, f32::NAN] {
            assert_eq!(exp_nonpositive(x), 0.0, "x = {x}");
        }
        assert!(exp_nonpositive(EXP_CUTOFF) > 0.0);
    }

    #[test]
    fn grid_rounding() {
        let mut logits = [
            0.3,
            -2.0004,
            1.0 / 2048.0,
            5000.123,
            f32::NAN,
            f32::NEG_INFINITY,
        ];
        let max = round_to_grid(&mut logits);
        assert_eq!(logits[0], (0.3f32 * 1024.0).round() / 1024.0);
        assert_eq!(logits[1], -2.0);
        // A tie rounds to the even step, 0.
        assert_eq!(logits[2], 0.0);
        assert_eq!(logits[3], 5000.123);
        assert_eq!(logits[4], f32::NEG_INFINITY);
        assert_eq!(logits[5], f32::NEG_INFINITY);
        assert_eq!(max, 5000.123);
    }

    #[test]
    fn row_draw_matches_candidate_draw() {
        // Uneven weights over several blocks, with zeros and a short tail.
        let weights: Vec<f32> = (0..(3 * DRAW_BLOCK + 17) as u32)
            .map(|i| {
                if i % 5 == 0 {
                    0.0
                } else {
                    ((i * 7919) % 101) as f32 / 100.0
                }
            })
            .collect();
        let candidates: Vec<u32> = (0..weights.len() as u32).collect();
        for step in 0..1000 {
            let uniform = step as f64 / 1000.0;
            let token = draw_from_row(&weights, uniform);
            assert_eq!(
                token,
                draw(&candidates, &weights, uniform),
                "uniform {uniform}"
            );
            assert!(weights[token as usize] > 0.0);
        }
        assert_eq!(
            draw_from_row(&weights, 0.999_999_999),
            draw(&candidates, &weights, 0.999_999_999)
        );
        assert_eq!(draw_from_row(&[], 0.5), 0);
    }

    #[test]
    fn row_nucleus_matches_candidate_nucleus() {
        let skewed: Vec<f32> = (0..51200u32)
            .map(|i| (-(((i * 7919) % 51200) as f32) / 500.0).exp())
            .collect();
        let ties: Vec<f32> = (0..5000u32)
            .map(|i| [1.0, 0.5, 0.25][i as usize % 3])
            .collect();
        let flat = vec![1.0f32; 3000];
        for (name, weights) in [("skewed", skewed), ("ties", ties), ("flat", flat)] {
            for top_p in [0.0001, 0.3, 0.5, 0.9, 0.99] {
                let mut expected: Vec<u32> = (0..weights.len() as u32).collect();
                keep_nucleus(&mut expected, &weights, top_p);
                expected.sort_unstable();

                let mut row = weights.clone();
                keep_nucleus_in_row(&mut row, top_p);
                let nucleus: Vec<u32> = (0..row.len() as u32)
                    .filter(|&token| row[token as usize] > 0.0)
                    .collect();
                assert_eq!(nucleus, expected, "{name}, top_p {top_p}");
                for &token in &nucleus {
                    assert_eq!(row[token as usize], weights[token as usize]);
                }
            }
        }
    }

    #[test]
    fn draw_skips_zero_weights() {
        let weights = [0.0f32, 1.0, 0.0];
        assert_eq!(draw(&[0, 1, 2], &weights, 0.0), 1);
        assert_eq!(draw(&[0, 1, 2], &weights, 0.999_999), 1);
    }
}
