//! Parity of wick's batched forward pass with candle-transformers'
//! single-sequence `phi::Model`: in mixed batches (different prompt
//! lengths, sequences joining mid-run, prompts fed in chunks, sequences
//! released mid-run), every sequence's logits equal the reference run on
//! that sequence alone.

mod common;

use candle_core::{DType, Device};
use common::*;
use wick_worker::attention::SequenceChunk;
use wick_worker::config::PhiConfig;
use wick_worker::kv_cache::{BlockTable, KvCache};
use wick_worker::KvCapacity;

const TOLERANCE: f32 = 1e-4;

/// Runs the shared mixed-batch script on a random phi model of `config`.
fn run_script(config: &PhiConfig, seed: u64) -> usize {
    let dir = TempDir::new(&format!("parity-{seed}"));
    write_model(dir.path(), config, seed);
    let model = load_wick_model(dir.path());
    scripted_batch::run_script(&model, || load_reference_model(dir.path()), seed, TOLERANCE)
}

#[test]
fn parity_partial_rotary() {
    let config = small_config(64, 4, 2, 0.4, false);
    let compared = run_script(&config, 11);
    assert_eq!(compared, scripted_batch::expected_rows());
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
