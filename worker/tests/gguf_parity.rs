//! Parity of wick's batched GGUF forward pass with candle-transformers'
//! single-sequence references, `quantized_llama::ModelWeights` and
//! `quantized_phi::ModelWeights`: in mixed batches (different prompt
//! lengths, sequences joining mid-run, prompts fed in chunks, sequences
//! released mid-run), every sequence's logits match the reference run on
//! that sequence alone.

mod common;
mod gguf_models;
mod smollm2;

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_phi};
use common::scripted_batch::{expected_rows, run_script, Reference};
use gguf_models::{write_gguf, TempFile, TinyModel};
use wick_worker::attention::SequenceChunk;
use wick_worker::gguf::{GgufConfig, GgufFile, GgufModel};
use wick_worker::kv_cache::{BlockTable, KvCache};
use wick_worker::{CausalLm, KvCapacity};

/// Tolerance on the small random models, whose logits match exactly when
/// measured: both sides run the same quantized kernels row by row.
const TOLERANCE: f32 = 1e-4;
/// Tolerance on SmolLM2 (Q4_1, 30 layers). candle's quantized CPU kernels
/// sum slightly differently for different row counts, and the 8-bit
/// quantization of activations amplifies that through the layers. The
/// reference itself, fed one 29-token prompt whole or in chunks of 7,
/// differs by 0.48 on logits up to 26, and the batched run stays within
/// 1.0 of it (measured on a 2-core x86 CPU).
const SMOLLM2_TOLERANCE: f32 = 2.0;

fn last_logits(logits: candle_core::Result<Tensor>) -> Vec<f32> {
    logits
        .and_then(|logits| logits.squeeze(0)?.to_vec1::<f32>())
        .expect("the reference forward pass runs")
}

fn input(tokens: &[u32]) -> Tensor {
    Tensor::new(tokens, &Device::Cpu)
        .and_then(|input| input.unsqueeze(0))
        .expect("the input tensor builds")
}

impl Reference for quantized_llama::ModelWeights {
    fn logits(&mut self, tokens: &[u32], index_pos: usize) -> Vec<f32> {
        last_logits(self.forward(&input(tokens), index_pos))
    }
}

impl Reference for quantized_phi::ModelWeights {
    fn logits(&mut self, tokens: &[u32], index_pos: usize) -> Vec<f32> {
        last_logits(self.forward(&input(tokens), index_pos))
    }
}

fn open_content(path: &Path) -> (gguf_file::Content, std::fs::File) {
    let mut file = std::fs::File::open(path).expect("the GGUF file opens");
    let content = gguf_file::Content::read(&mut file).expect("the GGUF header reads");
    (content, file)
}

fn llama_reference(path: &Path) -> quantized_llama::ModelWeights {
    let (content, mut file) = open_content(path);
    quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
        .expect("the reference llama loads")
}

fn phi2_reference(path: &Path) -> quantized_phi::ModelWeights {
    let (content, mut file) = open_content(path);
    quantized_phi::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
        .expect("the reference phi2 loads")
}

fn load_wick(path: &Path) -> GgufModel {
    let mut file = GgufFile::open(path).expect("the GGUF file opens");
    let config = GgufConfig::from_file(&file).expect("the hyperparameters read");
    GgufModel::load(&config, &mut file, &Device::Cpu).expect("the model loads")
}

#[test]
fn llama_matches_reference() {
    let file = TempFile::new("parity-llama");
    write_gguf(file.path(), &TinyModel::llama(), 5);
    let model = load_wick(file.path());
    let reference = llama_reference(file.path());
    let compared = run_script(&model, || reference.clone(), 5, TOLERANCE);
    assert_eq!(compared, expected_rows());
}

#[test]
fn llama_untied_q8_matches_reference() {
    let mut tiny = TinyModel::llama();
    tiny.tied_output = false;
    tiny.matrix_type = candle_core::quantized::GgmlDType::Q8_0;
    tiny.kv_heads = 1;
    let file = TempFile::new("parity-llama-untied");
    write_gguf(file.path(), &tiny, 9);
    let model = load_wick(file.path());
    let reference = llama_reference(file.path());
    run_script(&model, || reference.clone(), 9, TOLERANCE);
}

#[test]
fn phi2_matches_reference() {
    let file = TempFile::new("parity-phi2");
    write_gguf(file.path(), &TinyModel::phi2(), 13);
    let model = load_wick(file.path());
    let reference = phi2_reference(file.path());
    let compared = run_script(&model, || reference.clone(), 13, TOLERANCE);
    assert_eq!(compared, expected_rows());
}

#[test]
fn smollm2_matches_reference() {
    let Some(path) = smollm2::smollm2_path("smollm2_matches_reference") else {
        return;
    };
    let model = load_wick(&path);
    let reference = llama_reference(&path);
    let compared = run_script(&model, || reference.clone(), 17, SMOLLM2_TOLERANCE);
    assert_eq!(compared, expected_rows());
}

#[test]
fn forward_rejects_position_past_context() {
    let file = TempFile::new("parity-past-context");
    let tiny = TinyModel::llama();
    write_gguf(file.path(), &tiny, 3);
    let model = load_wick(file.path());
    let mut cache = KvCache::new(
        model.num_layers(),
        model.kv_width(),
        16,
        KvCapacity::Tokens(tiny.context + 16),
        model.dtype(),
        model.device(),
    )
    .expect("the cache allocates");
    let mut table = BlockTable::new();
    cache
        .grow(&mut table, tiny.context + 1)
        .expect("the cache fits one position past the context");
    let chunk = SequenceChunk {
        tokens: &[1, 2],
        start: tiny.context - 1,
        block_table: &table,
        wants_logits: true,
    };
    let error = GgufModel::forward(&model, &[chunk], &cache)
        .expect_err("the position after the context is rejected");
    assert!(
        error
            .to_string()
            .contains("position 256 is past the model's context of 256 positions"),
        "{error}"
    );
}
