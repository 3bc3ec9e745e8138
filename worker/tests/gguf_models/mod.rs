//! Small random GGUF models in llama.cpp's layouts for the `llama` and
//! `phi2` architectures, written with candle's GGUF writer, with a tiny
//! byte-level BPE tokenizer in the metadata.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// The sizes of a small model. Every matrix input size is a multiple of
/// 64: the Q4/Q5/Q8 types store blocks of 32 values, and candle's Q4_1 dot
/// product takes its blocks in pairs.
#[derive(Debug, Clone)]
pub struct TinyModel {
    pub architecture: &'static str,
    pub vocab: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Rotary dimensions per head; llama rotates whole heads.
    pub rotary_dim: usize,
    pub context: usize,
    /// Storage type of the matrices; norms and biases stay F32.
    pub matrix_type: GgmlDType,
    /// Llama only: leave out `output.weight` so the output reuses the
    /// token embedding, as SmolLM2 does.
    pub tied_output: bool,
}

impl TinyModel {
    /// A llama with grouped-query attention (two query heads per KV head)
    /// and a tied output embedding.
    pub fn llama() -> TinyModel {
        TinyModel {
            architecture: "llama",
            vocab: 96,
            hidden: 64,
            ffn: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            rotary_dim: 16,
            context: 256,
            matrix_type: GgmlDType::Q4_1,
            tied_output: true,
        }
    }

    /// A phi2 with partial rotary embeddings (a quarter of each head).
    pub fn phi2() -> TinyModel {
        TinyModel {
            architecture: "phi2",
            vocab: 96,
            hidden: 64,
            ffn: 128,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            rotary_dim: 4,
            context: 256,
            matrix_type: GgmlDType::Q8_0,
            tied_output: false,
        }
    }
}

/// Deterministic values in [-scale, scale) from a 64-bit LCG, so each seed
/// always writes the same model.
fn random_tensor(shape: &[usize], scale: f32, state: &mut u64) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| {
            *state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("the shape matches the values")
}

/// The tensor names and shapes of `model`, with whether each is a matrix
/// (stored in `matrix_type`) and its value scale.
fn tensor_specs(model: &TinyModel) -> Vec<(String, Vec<usize>, bool, f32)> {
    let (hidden, ffn, vocab) = (model.hidden, model.ffn, model.vocab);
    let kv_width = model.kv_heads * hidden / model.heads;
    let matrix_scale = 1.0 / (hidden as f32).sqrt();
    let mut specs = vec![(
        "token_embd.weight".to_string(),
        vec![vocab, hidden],
        true,
        1.0,
    )];
    let is_llama = model.architecture == "llama";
    let norm = |specs: &mut Vec<_>, name: &str| {
        specs.push((format!("{name}.weight"), vec![hidden], false, 1.0));
        if !is_llama {
            specs.push((format!("{name}.bias"), vec![hidden], false, 0.1));
        }
    };
    for layer in 0..model.layers {
        let prefix = format!("blk.{layer}");
        let matrix = |specs: &mut Vec<_>, name: &str, inputs: usize, outputs: usize| {
            let scale = 1.0 / (inputs as f32).sqrt();
            specs.push((
                format!("{prefix}.{name}.weight"),
                vec![outputs, inputs],
                true,
                scale,
            ));
            if !is_llama {
                specs.push((format!("{prefix}.{name}.bias"), vec![outputs], false, 0.1));
            }
        };
        norm(&mut specs, &format!("{prefix}.attn_norm"));
        if is_llama {
            matrix(&mut specs, "attn_q", hidden, hidden);
            matrix(&mut specs, "attn_k", hidden, kv_width);
            matrix(&mut specs, "attn_v", hidden, kv_width);
            norm(&mut specs, &format!("{prefix}.ffn_norm"));
            matrix(&mut specs, "ffn_gate", hidden, ffn);
        } else {
            matrix(&mut specs, "attn_qkv", hidden, hidden + 2 * kv_width);
        }
        matrix(&mut specs, "attn_output", hidden, hidden);
        matrix(&mut specs, "ffn_up", hidden, ffn);
        matrix(&mut specs, "ffn_down", ffn, hidden);
    }
    norm(&mut specs, "output_norm");
    if !(is_llama && model.tied_output) {
        specs.push((
            "output.weight".to_string(),
            vec![vocab, hidden],
            true,
            matrix_scale,
        ));
        if !is_llama {
            specs.push(("output.bias".to_string(), vec![vocab], false, 0.1));
        }
    }
    specs
}

/// The metadata of `model`: hyperparameters, and a tokenizer whose tokens
/// are `<|endoftext|>` (id 0, control, end of sequence), the letters a to
/// z, "ab", and placeholders up to the vocabulary size.
fn metadata(model: &TinyModel) -> Vec<(String, Value)> {
    let arch = model.architecture;
    let int = |value: usize| Value::U32(value as u32);
    let mut entries = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.to_string()),
        ),
        (format!("{arch}.context_length"), int(model.context)),
        (format!("{arch}.embedding_length"), int(model.hidden)),
        (format!("{arch}.feed_forward_length"), int(model.ffn)),
        (format!("{arch}.block_count"), int(model.layers)),
        (format!("{arch}.attention.head_count"), int(model.heads)),
        (
            format!("{arch}.attention.head_count_kv"),
            int(model.kv_heads),
        ),
        (
            format!("{arch}.rope.dimension_count"),
            int(model.rotary_dim),
        ),
    ];
    if arch == "llama" {
        entries.push(("llama.rope.freq_base".into(), Value::F32(10_000.0)));
        entries.push((
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ));
    } else {
        entries.push(("phi2.attention.layer_norm_epsilon".into(), Value::F32(1e-5)));
    }

    let mut tokens = vec!["<|endoftext|>".to_string()];
    tokens.extend(('a'..='z').map(String::from));
    tokens.push("ab".to_string());
    while tokens.len() < model.vocab {
        tokens.push(format!("<unused{}>", tokens.len()));
    }
    let mut token_types = vec![Value::I32(1); model.vocab];
    token_types[0] = Value::I32(3);
    let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    entries.extend([
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strings(tokens)),
        (
            "tokenizer.ggml.merges".to_string(),
            strings(vec!["a b".into()]),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(token_types),
        ),
        ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(0)),
    ]);
    entries
}

/// Writes `model` with random weights from `seed` to `path`.
pub fn write_gguf(path: &Path, model: &TinyModel, seed: u64) {
    let mut state = seed;
    let tensors: Vec<(String, QTensor)> = tensor_specs(model)
        .into_iter()
        .map(|(name, shape, is_matrix, scale)| {
            let values = random_tensor(&shape, scale, &mut state);
            let values = if name.ends_with("norm.weight") {
                values.affine(0.1, 1.0).expect("scaling works")
            } else {
                values
            };
            let dtype = if is_matrix {
                model.matrix_type
            } else {
                GgmlDType::F32
            };
            let tensor = QTensor::quantize(&values, dtype).expect("the shape fits the block size");
            (name, tensor)
        })
        .collect();
    write_gguf_parts(path, &metadata(model), &tensors);
}

/// Writes a GGUF file from its parts, e.g. a model with a key removed.
pub fn write_gguf_parts(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let metadata: Vec<(&str, &Value)> = metadata
        .iter()
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    let tensors: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor))
        .collect();
    let mut file = std::fs::File::create(path).expect("the GGUF file can be created");
    candle_core::quantized::gguf_file::write(&mut file, &metadata, &tensors)
        .expect("the GGUF file writes");
}

/// A file path under the system temp dir, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("wick-{name}-{}.gguf", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
