//! The built-in demo model: phi-2's architecture at a small size, with
//! weights drawn from a fixed seed and the real phi-2 tokenizer. It needs
//! no files, so tests and the quick start run anywhere, and
//! [`write_demo_model`] writes the same model in the Hugging Face layout so
//! that the file-loading path runs on it too.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::{EosTokenIds, PhiConfig};
use crate::engine::ModelInfo;
use crate::loading::{model_info, CONFIG_FILE, TOKENIZER_FILE};
use crate::phi::{tensor_shapes, PhiModel};
use crate::tokenizer::{phi2_tokenizer_json, PHI2_EOS_TOKEN_ID};
use crate::weights::{Weights, SINGLE_FILE};
use crate::LoadError;

pub const DEMO_MODEL_ID: &str = "wick/demo-phi";

/// Seed of the demo weights; changing it changes every demo output.
const DEMO_SEED: u64 = 0x5eed_d3e0;

/// Tokens the phi-2 tokenizer defines; the ids above, up to the padded
/// vocabulary of 51200, decode to nothing.
const PHI2_TOKENIZER_TOKENS: usize = 50295;

/// Returns the demo configuration: phi-2's vocabulary, context and rotary layout
/// with 2 layers of width 128.
pub fn demo_config() -> PhiConfig {
    PhiConfig {
        vocab_size: 51200,
        hidden_size: 128,
        intermediate_size: 512,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: None,
        hidden_act: candle_nn::Activation::NewGelu,
        max_position_embeddings: 2048,
        layer_norm_eps: 1e-5,
        tie_word_embeddings: false,
        rope_theta: 10000.0,
        partial_rotary_factor: 0.4,
        qk_layernorm: false,
        rope_scaling: None,
        bos_token_id: Some(PHI2_EOS_TOKEN_ID),
        eos_token_id: Some(EosTokenIds::One(PHI2_EOS_TOKEN_ID)),
    }
}

/// SplitMix64: a tiny, well-mixed generator, enough for reproducible
/// random weights without a `rand` dependency.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Draws a value uniformly from [-bound, bound).
    pub fn uniform(&mut self, bound: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * bound
    }
}

/// Random f32 weights for every tensor of `config`, from `seed`.
///
/// Matrices are uniform in ±1/sqrt(fan-in), as PyTorch initialises linear
/// layers, except `lm_head`, which is wider so the demo's next-token
/// distribution has a few clear favourites rather than being flat.
/// LayerNorm weights are near 1 and biases near 0.
pub fn random_weights(
    config: &PhiConfig,
    seed: u64,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut rng = SplitMix64::new(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in tensor_shapes(config) {
        let count: usize = shape.iter().product();
        let fan_in = *shape
            .last()
            .expect("every tensor has at least one dimension");
        let is_norm = name.contains("layernorm");
        let values: Vec<f32> = if is_norm && name.ends_with(".weight") {
            (0..count).map(|_| 1.0 + rng.uniform(0.1)).collect()
        } else if is_norm || name.ends_with(".bias") {
            (0..count).map(|_| rng.uniform(0.02)).collect()
        } else if name == "lm_head.weight" {
            (0..count)
                .map(|_| rng.uniform(4.0 / (fan_in as f32).sqrt()))
                .collect()
        } else if name == "model.embed_tokens.weight" {
            (0..count).map(|_| rng.uniform(1.0)).collect()
        } else {
            (0..count)
                .map(|_| rng.uniform(1.0 / (fan_in as f32).sqrt()))
                .collect()
        };
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(tensors)
}

fn demo_weights() -> Result<HashMap<String, Tensor>, LoadError> {
    let config = demo_config();
    let mut tensors = random_weights(&config, DEMO_SEED).map_err(|source| LoadError::Candle {
        context: "generating the demo weights".into(),
        source,
    })?;
    // Ids past the tokenizer's last token get a very low bias, so sampling
    // never picks a token that decodes to nothing.
    let mut bias = vec![0.0f32; config.vocab_size];
    bias[PHI2_TOKENIZER_TOKENS..].fill(-100.0);
    let bias = Tensor::from_vec(bias, config.vocab_size, &Device::Cpu);
    let bias = bias.map_err(|source| LoadError::Candle {
        context: "building the demo lm_head bias".into(),
        source,
    })?;
    tensors.insert("lm_head.bias".to_string(), bias);
    Ok(tensors)
}

/// Builds the demo model in memory.
pub fn load_demo_model(device: &Device, dtype: DType) -> Result<(PhiModel, ModelInfo), LoadError> {
    let config = demo_config();
    let weights = Weights::from_memory(demo_weights()?, device, dtype);
    let model = PhiModel::load(&config, &weights)?;
    let tokenizer_json = phi2_tokenizer_json().to_string();
    let info = model_info(
        DEMO_MODEL_ID,
        &config,
        tokenizer_json,
        Path::new("<built-in phi-2 tokenizer>"),
        device,
        dtype,
    )?;
    Ok((model, info))
}

/// Writes the demo model to `dir` in the Hugging Face layout:
/// `config.json`, `tokenizer.json` and `model.safetensors` (f32).
///
/// Errors: `Io` naming the file that could not be written.
pub fn write_demo_model(dir: &Path) -> Result<(), LoadError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    write_config(&dir.join(CONFIG_FILE), &demo_config())?;

    let tokenizer_path = dir.join(TOKENIZER_FILE);
    std::fs::write(&tokenizer_path, phi2_tokenizer_json()).map_err(io_error(&tokenizer_path))?;

    let weights_path = dir.join(SINGLE_FILE);
    candle_core::safetensors::save(&demo_weights()?, &weights_path).map_err(|source| {
        LoadError::Candle {
            context: format!("writing {}", weights_path.display()),
            source,
        }
    })
}

/// Writes `config` as a Hugging Face `config.json` for `PhiForCausalLM`.
///
/// Errors: `Io` naming `path`.
pub fn write_config(path: &Path, config: &PhiConfig) -> Result<(), LoadError> {
    let text =
        serde_json::to_string_pretty(&config_json(config)).expect("a JSON value always serializes");
    std::fs::write(path, text).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `config` as the JSON of a Hugging Face `config.json`.
pub fn config_json(config: &PhiConfig) -> serde_json::Value {
    let mut json = serde_json::to_value(config).expect("a PhiConfig always serializes");
    // candle's `Activation` serializes as "newgelu"; Hugging Face writes the
    // name its own loader reads.
    if config.hidden_act == candle_nn::Activation::NewGelu {
        json["hidden_act"] = "gelu_new".into();
    }
    json["architectures"] = serde_json::json!(["PhiForCausalLM"]);
    json["model_type"] = "phi".into();
    json
}
