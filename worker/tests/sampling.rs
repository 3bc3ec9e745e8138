//! Sampling rules on small hand-made logits with fixed seeds.

use wick_worker::sampling::{sample, uniform_draw, PenaltyState};
use wick_worker::SamplingParams;

/// Logits with a clear winner (index 3) and a spread of the rest.
const LOGITS: [f32; 6] = [1.0, 0.5, 2.0, 3.0, -1.0, 2.5];

fn params(temperature: f32, top_k: u32, top_p: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        seed,
        ..SamplingParams::greedy()
    }
}

fn sample_once(logits: &[f32], params: &SamplingParams, index: usize) -> u32 {
    let mut logits = logits.to_vec();
    sample(&mut logits, params, &PenaltyState::default(), index)
}

/// Logits after penalties only: greedy sampling leaves them as penalized.
fn penalized(logits: &[f32], params: &SamplingParams, state: &PenaltyState) -> Vec<f32> {
    let mut logits = logits.to_vec();
    sample(&mut logits, params, state, 0);
    logits
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() < 1e-5, "logit {i}: {a} != {e}");
    }
}

#[test]
fn greedy_is_argmax() {
    assert_eq!(sample_once(&LOGITS, &SamplingParams::greedy(), 0), 3);
}

#[test]
fn greedy_tie_takes_lowest_id() {
    assert_eq!(
        sample_once(&[1.0, 4.0, 4.0], &SamplingParams::greedy(), 0),
        1
    );
}

#[test]
fn top_k_one_and_tiny_temperature_are_greedy() {
    for index in 0..50 {
        for seed in [0, 7, u64::MAX] {
            assert_eq!(sample_once(&LOGITS, &params(1.0, 1, 1.0, seed), index), 3);
            assert_eq!(sample_once(&LOGITS, &params(0.0, 0, 1.0, seed), index), 3);
            assert_eq!(sample_once(&LOGITS, &params(1e-4, 0, 1.0, seed), index), 3);
        }
    }
}

#[test]
fn tiny_top_p_is_greedy() {
    for index in 0..50 {
        assert_eq!(sample_once(&LOGITS, &params(1.0, 0, 0.0, 11), index), 3);
        assert_eq!(sample_once(&LOGITS, &params(1.0, 0, 0.0001, 11), index), 3);
    }
}

#[test]
fn repetition_penalty_each_token_once() {
    let state = PenaltyState::new(&[0, 1, 1]);
    let params = SamplingParams {
        repetition_penalty: 1.5,
        ..SamplingParams::greedy()
    };
    let logits = penalized(&[2.0, -2.0, 0.5], &params, &state);
    assert_close(&logits, &[2.0 / 1.5, -3.0, 0.5]);
}

#[test]
fn repetition_penalty_zero_is_off() {
    let state = PenaltyState::new(&[0, 1]);
    let params = SamplingParams {
        repetition_penalty: 0.0,
        ..SamplingParams::greedy()
    };
    assert_close(
        &penalized(&[2.0, -2.0, 0.5], &params, &state),
        &[2.0, -2.0, 0.5],
    );
}

#[test]
fn repetition_penalty_counts_output() {
    let mut state = PenaltyState::new(&[]);
    state.push_output(2);
    let params = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    };
    assert_close(
        &penalized(&[2.0, -2.0, 0.5], &params, &state),
        &[2.0, -2.0, 0.25],
    );
}

#[test]
fn frequency_and_presence_on_output_only() {
    // Token 0 is only in the prompt, token 1 generated twice, token 2 once.
    let mut state = PenaltyState::new(&[0]);
    for token in [1, 2, 1] {
        state.push_output(token);
    }
    let params = SamplingParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..SamplingParams::greedy()
    };
    let logits = penalized(&[1.0, 1.0, 1.0, 1.0], &params, &state);
    // 1 - (2 * 0.5 + 0.25) and 1 - (1 * 0.5 + 0.25).
    assert_close(&logits, &[1.0, -0.25, 0.25, 1.0]);
}

#[test]
fn negative_frequency_penalty_raises_logit() {
    let mut state = PenaltyState::new(&[]);
    state.push_output(0);
    let params = SamplingParams {
        frequency_penalty: -1.0,
        ..SamplingParams::greedy()
    };
    assert_close(&penalized(&[1.0, 1.5], &params, &state), &[2.0, 1.5]);
}

#[test]
fn penalty_ignores_ids_outside_logits() {
    let mut state = PenaltyState::new(&[99]);
    state.push_output(100);
    let params = SamplingParams {
        repetition_penalty: 2.0,
        frequency_penalty: 1.0,
        ..SamplingParams::greedy()
    };
    assert_close(&penalized(&[1.0, 2.0], &params, &state), &[1.0, 2.0]);
}

#[test]
fn same_seed_and_index_same_draw() {
    let flat = [0.0f32; 64];
    let params = params(1.0, 0, 1.0, 42);
    for index in 0..20 {
        assert_eq!(
            sample_once(&flat, &params, index),
            sample_once(&flat, &params, index)
        );
    }
}

#[test]
fn index_changes_draw() {
    let flat = [0.0f32; 64];
    let params = params(1.0, 0, 1.0, 42);
    let draws: Vec<u32> = (0..20)
        .map(|index| sample_once(&flat, &params, index))
        .collect();
    let distinct: std::collections::HashSet<u32> = draws.iter().copied().collect();
    assert!(distinct.len() > 10, "20 draws over 64 tokens: {draws:?}");
}

#[test]
fn seed_high_bits_change_draw() {
    let flat = [0.0f32; 64];
    let low: Vec<u32> = (0..20)
        .map(|i| sample_once(&flat, &params(1.0, 0, 1.0, 1), i))
        .collect();
    let high_seed = (1u64 << 32) + 1;
    let high: Vec<u32> = (0..20)
        .map(|i| sample_once(&flat, &params(1.0, 0, 1.0, high_seed), i))
        .collect();
    assert_ne!(low, high);
    assert_ne!(uniform_draw(1, 0), uniform_draw(high_seed, 0));
}

#[test]
fn draws_follow_probabilities() {
    let probabilities = [0.5, 0.3, 0.15, 0.05];
    let logits: Vec<f32> = probabilities.iter().map(|p: &f64| p.ln() as f32).collect();
    let params = params(1.0, 0, 1.0, 2024);
    let draws = 4000;

    let mut counts = [0usize; 4];
    for index in 0..draws {
        counts[sample_once(&logits, &params, index) as usize] += 1;
    }

    let chi_square: f64 = counts
        .iter()
        .zip(probabilities)
        .map(|(&count, p)| {
            let expected = p * draws as f64;
            (count as f64 - expected).powi(2) / expected
        })
        .sum();
    // 16.27 is the 0.999 quantile of chi-square with 3 degrees of freedom.
    assert!(
        chi_square < 16.27,
        "counts {counts:?}, chi-square {chi_square}"
    );
}

#[test]
fn top_k_limits_draws() {
    let params = params(5.0, 2, 1.0, 3);
    for index in 0..200 {
        let token = sample_once(&LOGITS, &params, index);
        assert!(token == 3 || token == 5, "index {index}: token {token}");
    }
}

#[test]
fn top_p_limits_draws() {
    // Probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two.
    let logits: Vec<f32> = [0.5f64, 0.3, 0.2].iter().map(|p| p.ln() as f32).collect();
    let params = params(1.0, 0, 0.7, 9);
    let mut seen = [false; 3];
    for index in 0..200 {
        seen[sample_once(&logits, &params, index) as usize] = true;
    }
    assert_eq!(seen, [true, true, false]);
}

#[test]
fn hot_temperature_with_wide_limits() {
    let logits: Vec<f32> = (0..51200)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    let mut sorted = logits.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let fiftieth_largest = sorted[49];

    let params = params(5.0, 50, 2.0, 5);
    for index in 0..20 {
        let token = sample_once(&logits, &params, index);
        assert!(
            logits[token as usize] >= fiftieth_largest,
            "index {index}: token {token}"
        );
    }
}

#[test]
fn extreme_logits_stay_finite() {
    let logits = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        0.0,
    ];
    for temperature in [1e-30, 1e-4, 1.0, 1e30, f32::INFINITY] {
        for top_p in [0.5, 1.0] {
            let params = params(temperature, 0, top_p, 1);
            let mut row = logits.to_vec();
            let token = sample(&mut row, &params, &PenaltyState::default(), 0);
            assert_eq!(token, 1, "temperature {temperature} top_p {top_p}");
            assert!(
                row.iter().all(|v| !v.is_nan()),
                "temperature {temperature}: {row:?}"
            );
        }
    }
}

#[test]
fn nan_logits_never_picked() {
    let logits = [f32::NAN, 1.0, f32::NAN, 0.5];
    for index in 0..100 {
        let token = sample_once(&logits, &params(1.0, 0, 1.0, 8), index);
        assert!(token == 1 || token == 3, "index {index}: token {token}");
    }
    assert_eq!(sample_once(&logits, &SamplingParams::greedy(), 0), 1);
}

#[test]
fn all_negative_infinity_does_not_panic() {
    let logits = [f32::NEG_INFINITY; 4];
    let token = sample_once(&logits, &params(1.0, 2, 0.9, 1), 0);
    assert!(token < 4);
}

#[test]
fn empty_logits_return_zero() {
    assert_eq!(sample_once(&[], &SamplingParams::greedy(), 0), 0);
    assert_eq!(sample_once(&[], &params(1.0, 5, 0.5, 1), 0), 0);
}

#[test]
fn top_p_on_flat_wide_vocabulary() {
    // 51200 equal logits: top_p 0.5 keeps the 25600 lowest ids, which takes
    // several rounds of the partial sort.
    let logits = vec![0.0f32; 51200];
    for index in 0..50 {
        let token = sample_once(&logits, &params(1.0, 0, 0.5, 4), index);
        assert!(token < 25600, "index {index}: token {token}");
    }
}
