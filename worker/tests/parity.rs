//! Parity of wick's batched forward pass with candle-transformers'
//! single-sequence `phi::Model`: in mixed batches (different prompt
//! lengths, sequences joining mid-run, prompts fed in chunks, sequences
//! released mid-run), every sequence's logits equal the reference run on
//! that sequence alone.

mod common;

use candle_core::{DType, Device};
use candle_transformers::models::phi;
use common::*;
use wick_worker::attention::SequenceChunk;
use wick_worker::config::PhiConfig;
use wick_worker::kv_cache::{BlockTable, KvCache};
use wick_worker::KvCapacity;

const TOLERANCE: f32 = 1e-4;
/// Most prompt tokens one sequence feeds in one step.
const CHUNK: usize = 7;

/// One sequence of the scripted run.
struct Script {
    join_step: usize,
    prompt_len: usize,
    /// Decode steps before the sequence is released.
    decode_steps: usize,
}

struct Live {
    name: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    computed: usize,
    table: BlockTable,
    reference: phi::Model,
    reference_fed: usize,
    decode_left: usize,
}

const SCRIPT: [Script; 5] = [
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
    // Joins after sequence 1 is released, so it reuses its blocks.
    Script {
        join_step: 6,
        prompt_len: 40,
        decode_steps: 4,
    },
];

/// Runs the script and checks every sampled position's logits; returns the
/// number of logit rows compared.
fn run_script(config: &PhiConfig, seed: u64) -> usize {
    let dir = TempDir::new(&format!("parity-{seed}"));
    write_model(dir.path(), config, seed);
    let model = load_wick_model(dir.path());
    let mut cache = KvCache::new(
        config.num_hidden_layers,
        config.hidden_size,
        4,
        KvCapacity::Tokens(256),
        DType::F32,
        &Device::Cpu,
    )
    .expect("cache allocates");

    let mut live: Vec<Live> = Vec::new();
    let mut released_blocks: Vec<u32> = Vec::new();
    let mut compared = 0;
    let mut finished = 0;
    for step in 0..200 {
        for (name, script) in SCRIPT.iter().enumerate() {
            if script.join_step == step {
                live.push(Live {
                    name,
                    tokens: tokens(seed + name as u64, script.prompt_len, config.vocab_size),
                    prompt_len: script.prompt_len,
                    computed: 0,
                    table: BlockTable::new(),
                    reference: load_reference_model(dir.path()),
                    reference_fed: 0,
                    decode_left: script.decode_steps,
                });
                if name == 4 {
                    assert!(
                        !released_blocks.is_empty(),
                        "sequence 1 was released before"
                    );
                }
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
            let expected = reference_logits(&mut sequence.reference, fed);
            sequence.reference_fed = sequence.tokens.len();
            let diff = max_abs_diff(row, &expected);
            assert!(
                diff <= TOLERANCE,
                "sequence {} at position {} (step {step}): max logit difference {diff}",
                sequence.name,
                sequence.tokens.len()
            );
            compared += 1;
            sequence.tokens.push(argmax(&expected));
            sequence.decode_left = sequence.decode_left.saturating_sub(1);
        }

        // Release finished sequences, as the engine does between steps.
        let mut index = 0;
        while index < live.len() {
            let sequence = &mut live[index];
            let done = sequence.decode_left == 0 && sequence.tokens.len() > sequence.prompt_len;
            if done {
                if sequence.name == 1 {
                    released_blocks = sequence.table.clone();
                }
                if sequence.name == 4 {
                    let reused = sequence
                        .table
                        .iter()
                        .any(|block| released_blocks.contains(block));
                    assert!(reused, "sequence 4 reuses blocks released by sequence 1");
                }
                cache.release(&mut sequence.table);
                live.remove(index);
                finished += 1;
            } else {
                index += 1;
            }
        }
    }
    assert_eq!(finished, SCRIPT.len(), "every scripted sequence finished");
    assert_eq!(
        cache.free_blocks(),
        cache.total_blocks(),
        "all blocks are free at the end"
    );
    compared
}

#[test]
fn parity_partial_rotary() {
    let config = small_config(64, 4, 2, 0.4, false);
    let compared = run_script(&config, 11);
    assert_eq!(
        compared,
        SCRIPT
            .iter()
            .map(|script| script.decode_steps)
            .sum::<usize>()
    );
}

#[test]
fn parity_qk_layernorm() {
    // candle's reference applies the per-head LayerNorm to the whole query
    // row, which only works with one head (head_dim == hidden_size).
    let config = small_config(32, 1, 2, 0.5, true);
    run_script(&config, 23);
}

#[test]
fn parity_full_rotary_exact_gelu() {
    let mut config = small_config(48, 3, 2, 1.0, false);
    config.hidden_act = candle_nn::Activation::Gelu;
    run_script(&config, 37);
}

#[test]
fn forward_rejects_position_past_context() {
    let dir = TempDir::new("past-context");
    let config = small_config(32, 2, 1, 0.5, false);
    write_model(dir.path(), &config, 41);
    let model = load_wick_model(dir.path());
    let mut cache = KvCache::new(1, 32, 16, KvCapacity::Tokens(272), DType::F32, &Device::Cpu)
        .expect("cache allocates");
    let mut table = BlockTable::new();
    cache
        .grow(&mut table, 257)
        .expect("the cache fits 257 positions");
    let chunk = SequenceChunk {
        tokens: &[1, 2],
        start: 255,
        block_table: &table,
        wants_logits: true,
    };
    let error = model
        .forward(&[chunk], &cache)
        .expect_err("position 256 is out of range");
    assert!(
        error
            .to_string()
            .contains("position 256 is past the model's context of 256 positions"),
        "{error}"
    );
}
