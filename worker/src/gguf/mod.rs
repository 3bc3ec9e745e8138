//! GGUF models: llama.cpp's single-file format, holding quantized weights,
//! hyperparameters and the tokenizer in one file.
//!
//! - `file`: [`GgufFile`], the opened file with checked metadata and tensor
//!   lookups whose errors name the file.
//! - `config`: [`GgufConfig`], the hyperparameters of the `llama` and
//!   `phi2` architectures.
//! - `tokenizer`: a `tokenizers::Tokenizer` built from `tokenizer.ggml.*`.
//! - `model`: [`GgufModel`], the batched forward pass over the paged KV
//!   cache shared by both architectures; `llama` and `phi2` hold their
//!   decoder blocks.

mod config;
mod file;
mod llama;
mod model;
mod phi2;
pub mod tokenizer;

use std::path::Path;

use candle_core::Device;
use tracing::info;

pub use config::{Architecture, GgufConfig};
pub use file::GgufFile;
pub use model::GgufModel;

use crate::engine::ModelInfo;
use crate::LoadError;

/// Loads the model, tokenizer and chat template of the GGUF file at
/// `path`. `device_name` is the `Describe` name of `device`.
///
/// Errors: `MissingFile` or `Io` when the file cannot be read;
/// `InvalidWeights` for a file that is not GGUF, has a tensor type candle
/// cannot read, or lacks a tensor; `InvalidConfig` for missing or invalid
/// hyperparameters or an unsupported architecture; `InvalidTokenizer` for
/// tokenizer metadata that does not build a tokenizer. Each names the file.
pub fn load_gguf(
    path: &Path,
    device: &Device,
    device_name: String,
) -> Result<(GgufModel, ModelInfo), LoadError> {
    let mut file = GgufFile::open(path)?;
    let config = GgufConfig::from_file(&file)?;
    let built = tokenizer::tokenizer_from_gguf(&file)?;
    let model = GgufModel::load(&config, &mut file, device)?;
    let id = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    info!(
        model = %id,
        architecture = config.architecture.name(),
        layers = config.num_layers,
        vocab_size = config.vocab_size,
        "GGUF model loaded"
    );
    let info = ModelInfo {
        id,
        family: config.architecture.family().to_string(),
        tokenizer_json: built.json,
        eos_token_ids: built.eos_token_ids,
        bos_token_id: built.bos_token_id,
        context_length: config.context_length,
        vocab_size: config.vocab_size,
        chat_template: built.chat_template,
        device: device_name,
        // Quantized matrix products take and return f32 activations, so the
        // KV cache and every activation are f32 whatever `--dtype` is set to.
        dtype: "f32".to_string(),
    };
    Ok((model, info))
}
