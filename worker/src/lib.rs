//! The wick worker: runs one model and steps one batch of sequences.
//!
//! Modules, bottom-up:
//! - `config`: [`PhiConfig`], the `config.json` fields of a phi model.
//! - `weights`: reads named tensors from safetensors files (single or
//!   sharded) or from memory, checking names, shapes and dtypes.
//! - `loading`: [`ModelSource`] parsing, the Hugging Face cache and hub,
//!   device and dtype options; turns a source into a model and its info.
//! - `demo`: the built-in demo model and [`demo::write_demo_model`].
//! - `kv_cache`: the paged KV cache: block allocator and per-layer storage.
//! - `attention`: the per-step index tensors and paged attention: decode
//!   tokens as one padded batch, prefill chunks one by one.
//! - `model`: [`CausalLm`], the model trait the engine steps.
//! - `phi`: [`PhiModel`], the batched phi forward pass over the KV cache.
//! - `gguf`: GGUF files (`llama` such as SmolLM2, and `phi2`): loading,
//!   the tokenizer from metadata, and [`GgufModel`]'s batched forward pass.
//! - `sequence`: the state of one live sequence inside the engine.
//! - `step`: step planning (decode first, then prefill chunks), preemption,
//!   sampling and finishing.
//! - `engine`: [`Engine`], the public contract. Admit and release sequences,
//!   then call [`Engine::step`] for one forward pass over the whole batch.
//! - `sampling`, `tokenizer`: per-sequence sampling and the phi-2 tokenizer.
//! - `service`: the worker gRPC service.

pub mod attention;
pub mod config;
mod cpu;
pub mod demo;
pub mod engine;
pub mod gguf;
pub mod kv_cache;
pub mod loading;
pub mod model;
pub mod phi;
pub mod sampling;
mod sequence;
pub mod service;
mod step;
pub mod tokenizer;
pub mod weights;

use std::path::PathBuf;

/// A model that could not be loaded. Every variant names the file or the
/// value at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: file not found", .path.display())]
    MissingFile { path: PathBuf },
    #[error("{}: cannot read the file: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid model config: {reason}", .path.display())]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("{}: invalid tokenizer: {reason}", .path.display())]
    InvalidTokenizer { path: PathBuf, reason: String },
    #[error("{}: invalid weights: {reason}", .path.display())]
    InvalidWeights { path: PathBuf, reason: String },
    #[error("unsupported dtype {value:?}: expected f32, f16 or bf16")]
    UnsupportedDtype { value: String },
    #[error("invalid device {value:?}: {reason}")]
    InvalidDevice { value: String, reason: String },
    #[error("invalid model source {value:?}: {reason}")]
    InvalidSource { value: String, reason: String },
    #[error(
        "{}: GGUF models compute in f32, so --dtype {value} is not supported; leave \
         --dtype unset or pass f32",
        .path.display()
    )]
    GgufDtype { path: PathBuf, value: String },
    #[error(
        "model {repo} is not in the local Hugging Face cache ({}) and could not be \
         downloaded: {reason}; download the repository on a machine that can reach the \
         hub and pass its folder instead, e.g. --model /models/phi-2",
        .cache.display()
    )]
    HubUnavailable {
        repo: String,
        cache: PathBuf,
        reason: String,
    },
    #[error("invalid engine limits: {reason}")]
    InvalidLimits { reason: String },
    #[error("{context}: {source}")]
    Candle {
        context: String,
        source: candle_core::Error,
    },
}

pub use config::PhiConfig;
pub use engine::{
    Engine, EngineError, EngineLimits, FinishReason, KvCapacity, LoadOptions, ModelInfo,
    ModelSource, SampledToken, SamplingParams, SequenceRequest, StepOutput,
};
pub use gguf::GgufModel;
pub use model::CausalLm;
pub use phi::PhiModel;
