//! Per-sequence sampling.
//!
//! CONTRACT (fixed; the engine codes against it). STUB: returns the argmax
//! until the real sampler lands.

use crate::engine::SamplingParams;

/// The tokens a sequence has seen, for the repetition, frequency and
/// presence penalties.
#[derive(Debug, Clone, Default)]
pub struct PenaltyState {
    _private: (),
}

impl PenaltyState {
    /// Starts the state from the prompt tokens, which only the repetition
    /// penalty counts.
    pub fn new(prompt: &[u32]) -> Self {
        let _ = prompt;
        PenaltyState { _private: () }
    }

    /// Records one generated token.
    pub fn push_output(&mut self, token: u32) {
        let _ = token;
    }
}

/// Picks the next token from one sequence's logits, which it may modify in
/// place. `output_index` is the index of the token being generated among
/// the sequence's output tokens (0 for the first); with the seed it alone
/// decides the random draw.
pub fn sample(
    logits: &mut [f32],
    params: &SamplingParams,
    state: &PenaltyState,
    output_index: usize,
) -> u32 {
    let _ = (params, state, output_index);
    let mut best = 0;
    for (i, value) in logits.iter().enumerate() {
        if *value > logits[best] {
            best = i;
        }
    }
    best as u32
}
