//! Helpers shared by the worker's integration tests: small random phi
//! models written in the real on-disk format, candle's reference model over
//! the same files, and temporary folders.

#![allow(dead_code)]

pub mod scripted_batch;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::phi;
use wick_worker::config::PhiConfig;
use wick_worker::demo::{random_weights, write_config};
use wick_worker::loading::info_without_tokenizer;
use wick_worker::weights::Weights;
use wick_worker::{CausalLm, Engine, EngineLimits, PhiModel};

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("wick-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the temp dir is writable");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tokenizer.json that parses, with `<|endoftext|>` as id 0; the forward
/// tests never tokenize, they only need the loading path to accept it.
pub const TINY_TOKENIZER_JSON: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"<|endoftext|>": 0, "a": 1}, "unk_token": "<|endoftext|>"}
}"#;

/// Returns a small phi configuration.
pub fn small_config(
    hidden: usize,
    heads: usize,
    layers: usize,
    rotary: f64,
    qk_layernorm: bool,
) -> PhiConfig {
    let mut config = wick_worker::demo::demo_config();
    config.vocab_size = 384;
    config.hidden_size = hidden;
    config.intermediate_size = 4 * hidden;
    config.num_hidden_layers = layers;
    config.num_attention_heads = heads;
    config.max_position_embeddings = 256;
    config.partial_rotary_factor = rotary;
    config.qk_layernorm = qk_layernorm;
    config.eos_token_id = None;
    config
}

/// Writes `config` with random weights from `seed` in the Hugging Face
/// layout, with a tiny tokenizer.
pub fn write_model(dir: &Path, config: &PhiConfig, seed: u64) {
    write_config(&dir.join("config.json"), config).expect("config writes");
    std::fs::write(dir.join("tokenizer.json"), TINY_TOKENIZER_JSON).expect("tokenizer writes");
    let tensors = random_weights(config, seed).expect("weights generate");
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("weights write");
}

pub fn load_wick_model(dir: &Path) -> PhiModel {
    let config = PhiConfig::from_file(&dir.join("config.json")).expect("config loads");
    let weights = Weights::from_dir(dir, &Device::Cpu, DType::F32).expect("weights open");
    PhiModel::load(&config, &weights).expect("model loads")
}

/// candle-transformers' single-sequence phi over the same files.
pub fn load_reference_model(dir: &Path) -> phi::Model {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config reads");
    let config: phi::Config = serde_json::from_str(&text).expect("reference config parses");
    let files = [dir.join("model.safetensors")];
    // SAFETY: the test wrote the file and does not change it while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }
        .expect("reference weights open");
    phi::Model::new(&config, vb).expect("reference model builds")
}

/// Feeds `tokens` to the reference and returns its last logits `[vocab]`.
pub fn reference_logits(model: &mut phi::Model, tokens: &[u32]) -> Vec<f32> {
    let input = Tensor::new(tokens, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("input");
    model
        .forward(&input)
        .and_then(|logits| logits.squeeze(0))
        .and_then(|logits| logits.to_vec1::<f32>())
        .expect("reference forward")
}

/// Returns the reference's greedy continuation of `prompt`, `count` tokens long.
pub fn reference_greedy(model: &mut phi::Model, prompt: &[u32], count: usize) -> Vec<u32> {
    model.clear_kv_cache();
    let mut output = Vec::new();
    let mut logits = reference_logits(model, prompt);
    for _ in 0..count {
        let token = argmax(&logits);
        output.push(token);
        logits = reference_logits(model, &[token]);
    }
    output
}

pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best as u32
}

pub fn max_abs_diff(left: &[f32], right: &[f32]) -> f32 {
    assert_eq!(left.len(), right.len(), "logit vectors differ in length");
    left.iter()
        .zip(right)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

pub fn engine_over(dir: &Path, limits: EngineLimits) -> Engine {
    let model = load_wick_model(dir);
    let info = info_without_tokenizer("test/phi", model.config(), &Device::Cpu, DType::F32);
    Engine::new(Box::new(model), info, limits).expect("engine builds")
}

/// Deterministic token ids below `vocab`.
pub fn tokens(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut rng = wick_worker::demo::SplitMix64::new(seed);
    (0..len)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

/// Feeds `tokens` to wick as one prefill chunk and returns the logits
/// `[vocab]`.
pub fn wick_logits(model: &dyn CausalLm, tokens: &[u32]) -> Vec<f32> {
    use wick_worker::attention::SequenceChunk;
    use wick_worker::kv_cache::{BlockTable, KvCache};

    let mut cache = KvCache::new(
        model.num_layers(),
        model.kv_width(),
        16,
        wick_worker::KvCapacity::Tokens(tokens.len()),
        model.dtype(),
        model.device(),
    )
    .expect("cache allocates");
    let mut table = BlockTable::new();
    cache
        .grow(&mut table, tokens.len())
        .expect("the cache fits the prompt");
    let chunk = SequenceChunk {
        tokens,
        start: 0,
        block_table: &table,
        wants_logits: true,
    };
    model
        .forward(&[chunk], &cache)
        .and_then(|logits| logits.squeeze(0))
        .and_then(|logits| logits.to_vec1::<f32>())
        .expect("forward pass")
}

/// candle's `phi::Model` keeps its own KV cache, so it needs no position.
impl scripted_batch::Reference for phi::Model {
    fn logits(&mut self, tokens: &[u32], _index_pos: usize) -> Vec<f32> {
        reference_logits(self, tokens)
    }
}
