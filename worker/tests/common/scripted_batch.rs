//! A scripted run of mixed batches for parity tests: sequences with
//! different prompt lengths join at different steps, prompts are fed in
//! chunks, sequences are released mid-run and their blocks reused, and
//! every sampled position's logits are compared with a single-sequence
//! reference run on that sequence alone.

use wick_worker::attention::SequenceChunk;
use wick_worker::kv_cache::{BlockTable, KvCache};
use wick_worker::{CausalLm, KvCapacity};

use super::{argmax, max_abs_diff, tokens};

/// Most prompt tokens one sequence feeds in one step.
const CHUNK: usize = 7;

/// One sequence of the scripted run.
pub struct Script {
    pub join_step: usize,
    pub prompt_len: usize,
    /// Decode steps before the sequence is released.
    pub decode_steps: usize,
}

pub const SCRIPT: [Script; 5] = [
    Script {
        join_step: 0,
        prompt_len: 13,
        decode_steps: 6,
    },
    Script {
        join_step: 0,
        prompt_len: 1,
        decode_steps: 2,
    },
    Script {
        join_step: 2,
        prompt_len: 29,
        decode_steps: 5,
    },
    Script {
        join_step: 3,
        prompt_len: 6,
        decode_steps: 7,
    },
    // Joins after sequence 1 is released.
    Script {
        join_step: 6,
        prompt_len: 40,
        decode_steps: 4,
    },
];

/// Logit rows a full run compares: one per decode step.
pub fn expected_rows() -> usize {
    SCRIPT.iter().map(|script| script.decode_steps).sum()
}

/// A single-sequence model that returns the logits of the last of
/// `tokens`, having already seen the sequence's first `index_pos` tokens.
pub trait Reference {
    fn logits(&mut self, tokens: &[u32], index_pos: usize) -> Vec<f32>;
}

struct Live<R> {
    name: usize,
    tokens: Vec<u32>,
    computed: usize,
    table: BlockTable,
    reference: R,
    reference_fed: usize,
    decode_left: usize,
}

/// Runs [`SCRIPT`] on `model` with a fresh reference per sequence from
/// `new_reference`, asserts that every sampled position's logits are
/// within `tolerance` of the reference's, and returns the number of logit
/// rows compared.
pub fn run_script<R: Reference>(
    model: &dyn CausalLm,
    new_reference: impl Fn() -> R,
    seed: u64,
    tolerance: f32,
) -> usize {
    let mut cache = KvCache::new(
        model.num_layers(),
        model.kv_width(),
        4,
        KvCapacity::Tokens(256),
        model.dtype(),
        model.device(),
    )
    .expect("cache allocates");

    let mut live: Vec<Live<R>> = Vec::new();
    let mut released_blocks: Vec<u32> = Vec::new();
    let mut reused_blocks = false;
    let mut compared = 0;
    let mut finished = 0;
    for step in 0..200 {
        for (name, script) in SCRIPT.iter().enumerate() {
            if script.join_step == step {
                live.push(Live {
                    name,
                    tokens: tokens(seed + name as u64, script.prompt_len, model.vocab_size()),
                    computed: 0,
                    table: BlockTable::new(),
                    reference: new_reference(),
                    reference_fed: 0,
                    decode_left: script.decode_steps,
                });
            }
        }
        if live.is_empty() {
            if finished == SCRIPT.len() {
                break;
            }
            continue;
        }

        // Feed each sequence its next chunk: one token when decoding, up to
        // CHUNK prompt tokens when in prefill.
        let lens: Vec<usize> = live
            .iter()
            .map(|sequence| (sequence.tokens.len() - sequence.computed).min(CHUNK))
            .collect();
        for (sequence, len) in live.iter_mut().zip(&lens) {
            cache
                .grow(&mut sequence.table, sequence.computed + len)
                .expect("the cache is large enough for the script");
            reused_blocks |= sequence
                .table
                .iter()
                .any(|block| released_blocks.contains(block));
        }
        let chunks: Vec<SequenceChunk<'_>> = live
            .iter()
            .zip(&lens)
            .map(|(sequence, &len)| SequenceChunk {
                tokens: &sequence.tokens[sequence.computed..sequence.computed + len],
                start: sequence.computed,
                block_table: &sequence.table,
                wants_logits: sequence.computed + len == sequence.tokens.len(),
            })
            .collect();
        let logits = model.forward(&chunks, &cache).expect("forward pass");
        let logits = logits.to_vec2::<f32>().expect("logits read back");

        let mut rows = logits.iter();
        for (sequence, len) in live.iter_mut().zip(&lens) {
            sequence.computed += len;
            if sequence.computed < sequence.tokens.len() {
                continue;
            }
            let row = rows.next().expect("one row per sampling sequence");
            let fed = &sequence.tokens[sequence.reference_fed..];
            let expected = sequence.reference.logits(fed, sequence.reference_fed);
            sequence.reference_fed = sequence.tokens.len();
            let diff = max_abs_diff(row, &expected);
            assert!(
                diff <= tolerance,
                "sequence {} at position {} (step {step}): max logit difference {diff}",
                sequence.name,
                sequence.tokens.len()
            );
            compared += 1;
            sequence.tokens.push(argmax(&expected));
            sequence.decode_left -= 1;
        }

        // Release finished sequences, as the engine does between steps.
        let mut index = 0;
        while index < live.len() {
            if live[index].decode_left > 0 {
                index += 1;
                continue;
            }
            let mut sequence = live.remove(index);
            if sequence.name == 1 {
                released_blocks = sequence.table.clone();
            }
            cache.release(&mut sequence.table);
            finished += 1;
        }
    }
    assert_eq!(finished, SCRIPT.len(), "every scripted sequence finished");
    assert!(
        reused_blocks,
        "a later sequence reuses the blocks of sequence 1"
    );
    assert_eq!(
        cache.free_blocks(),
        cache.total_blocks(),
        "all blocks are free at the end"
    );
    compared
}
