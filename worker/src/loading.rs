//! From a model source to a loaded model: parsing `--model`, `--device` and
//! `--dtype`, the Hugging Face folder layout, and finding a hub repository
//! in the local Hugging Face cache or downloading it.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use tracing::info;

use crate::config::PhiConfig;
use crate::engine::{LoadOptions, ModelInfo, ModelSource};
use crate::model::CausalLm;
use crate::phi::PhiModel;
use crate::weights::{read_text, Weights, INDEX_FILE, SINGLE_FILE};
use crate::LoadError;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

impl ModelSource {
    /// Reads a `--model` value: `demo`, an existing folder, a `.gguf` file,
    /// or a Hugging Face repo id `owner/name` with an optional
    /// `@revision`.
    ///
    /// Errors: `InvalidSource` when the value is none of these.
    pub fn parse(value: &str) -> Result<ModelSource, LoadError> {
        let invalid = |reason: &str| LoadError::InvalidSource {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if value == "demo" {
            return Ok(ModelSource::Demo);
        }
        let path = Path::new(value);
        if path.is_dir() {
            return Ok(ModelSource::Dir(path.to_path_buf()));
        }
        if value.to_ascii_lowercase().ends_with(".gguf") {
            return Ok(ModelSource::Gguf(path.to_path_buf()));
        }
        let (repo, revision) = match value.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (value, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let is_name = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if parts.len() != 2 || !parts.iter().all(|part| is_name(part)) {
            return Err(invalid(
                "expected `demo`, an existing folder, a .gguf file, or a Hugging Face repo id \
                 such as microsoft/phi-2 (optionally @revision)",
            ));
        }
        if revision == Some("") {
            return Err(invalid("the revision after @ is empty"));
        }
        Ok(ModelSource::Hub {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
        })
    }
}

/// Reads `--device`: `cpu`, or `cuda:N` (`cuda` alone means `cuda:0`).
///
/// Errors: `InvalidDevice` for another value, or for CUDA in a build
/// without the `cuda` feature.
pub fn parse_device(value: &str) -> Result<Device, LoadError> {
    let invalid = |reason: String| LoadError::InvalidDevice {
        value: value.to_string(),
        reason,
    };
    if value == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match value.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|number| number.parse::<usize>().ok())
            .ok_or_else(|| invalid("expected cpu or cuda:N with N a GPU index".into()))?,
        None => return Err(invalid("expected cpu or cuda:N".into())),
    };
    if !cfg!(feature = "cuda") {
        return Err(invalid(
            "this build has no CUDA support; rebuild with --features cuda or use cpu".into(),
        ));
    }
    Device::new_cuda(ordinal).map_err(|error| invalid(error.to_string()))
}

/// Reads `--dtype`; None picks bf16 on a GPU and f32 on the CPU.
///
/// Errors: `UnsupportedDtype` for a value other than f32, f16 or bf16.
pub fn parse_dtype(value: Option<&str>, device: &Device) -> Result<DType, LoadError> {
    match value {
        None if device.is_cpu() => Ok(DType::F32),
        None => Ok(DType::BF16),
        Some("f32") => Ok(DType::F32),
        Some("f16") => Ok(DType::F16),
        Some("bf16") => Ok(DType::BF16),
        Some(other) => Err(LoadError::UnsupportedDtype {
            value: other.to_string(),
        }),
    }
}

/// Loads the model of `source` with `options`.
///
/// Errors: any `LoadError`; each names the file or value at fault.
pub fn load_model(
    source: &ModelSource,
    options: &LoadOptions,
) -> Result<(Box<dyn CausalLm>, ModelInfo), LoadError> {
    let device = parse_device(&options.device)?;
    let dtype = parse_dtype(options.dtype.as_deref(), &device)?;
    let (model, info) = match source {
        ModelSource::Demo => boxed(crate::demo::load_demo_model(&device, dtype)?),
        ModelSource::Dir(dir) => boxed(load_dir(dir, &dir.display().to_string(), &device, dtype)?),
        ModelSource::Gguf(path) => {
            // Quantized matrix products take f32 activations, so a GGUF
            // model runs in f32 whatever the default for the device is.
            if let Some(value) = options.dtype.as_deref().filter(|&value| value != "f32") {
                return Err(LoadError::GgufDtype {
                    path: path.clone(),
                    value: value.to_string(),
                });
            }
            boxed(crate::gguf::load_gguf(path, &device, device_name(&device))?)
        }
        ModelSource::Hub { repo, revision } => {
            let dir = resolve_hub_repo(
                repo,
                revision.as_deref(),
                &hf_hub::Cache::from_env(),
                hub_offline(),
            )?;
            boxed(load_dir(&dir, repo, &device, dtype)?)
        }
    };
    info!(model = %info.id, device = %info.device, dtype = %info.dtype, "model loaded");
    Ok((model, info))
}

fn boxed<M: CausalLm + 'static>((model, info): (M, ModelInfo)) -> (Box<dyn CausalLm>, ModelInfo) {
    (Box::new(model), info)
}

/// Loads a folder in the Hugging Face layout; `id` becomes the model id.
///
/// Errors: `MissingFile`, `InvalidConfig`, `InvalidTokenizer` or
/// `InvalidWeights`, each naming the file.
pub fn load_dir(
    dir: &Path,
    id: &str,
    device: &Device,
    dtype: DType,
) -> Result<(PhiModel, ModelInfo), LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::MissingFile {
            path: dir.to_path_buf(),
        });
    }
    let config = PhiConfig::from_file(&dir.join(CONFIG_FILE))?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer_json = read_text(&tokenizer_path)?;
    let weights = Weights::from_dir(dir, device, dtype)?;
    let model = PhiModel::load(&config, &weights)?;
    let info = model_info(id, &config, tokenizer_json, &tokenizer_path, device, dtype)?;
    Ok((model, info))
}

/// Builds the `Describe` facts of a phi model. The end-of-sequence ids
/// come from the config, or else from the tokenizer's `<|endoftext|>`.
///
/// Errors: `InvalidTokenizer` naming `tokenizer_path` when the JSON does
/// not parse as a tokenizer or no end-of-sequence id is known.
pub fn model_info(
    id: &str,
    config: &PhiConfig,
    tokenizer_json: String,
    tokenizer_path: &Path,
    device: &Device,
    dtype: DType,
) -> Result<ModelInfo, LoadError> {
    let invalid = |reason: String| LoadError::InvalidTokenizer {
        path: tokenizer_path.to_path_buf(),
        reason,
    };
    let tokenizer: tokenizers::Tokenizer = tokenizer_json
        .parse()
        .map_err(|error| invalid(format!("not a tokenizer.json: {error}")))?;
    let eos_token_ids = match &config.eos_token_id {
        Some(ids) => ids.to_vec(),
        None => vec![tokenizer.token_to_id("<|endoftext|>").ok_or_else(|| {
            invalid("config.json has no eos_token_id and the tokenizer has no <|endoftext|>".into())
        })?],
    };
    Ok(ModelInfo {
        tokenizer_json,
        eos_token_ids,
        ..info_without_tokenizer(id, config, device, dtype)
    })
}

/// Builds the `Describe` facts of a phi model that has no tokenizer (benchmarks
/// and forward-pass tests): the tokenizer text is empty and the
/// end-of-sequence ids are the config's.
pub fn info_without_tokenizer(
    id: &str,
    config: &PhiConfig,
    device: &Device,
    dtype: DType,
) -> ModelInfo {
    ModelInfo {
        id: id.to_string(),
        family: "phi".to_string(),
        tokenizer_json: String::new(),
        eos_token_ids: config
            .eos_token_id
            .as_ref()
            .map(|ids| ids.to_vec())
            .unwrap_or_default(),
        // phi-2's config.json names <|endoftext|> as its BOS token, but its
        // tokenizer never adds it and the model was not trained with it.
        bos_token_id: None,
        context_length: config.max_position_embeddings,
        vocab_size: config.vocab_size,
        chat_template: None,
        device: device_name(device),
        dtype: dtype_name(dtype).to_string(),
    }
}

fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// Returns true when `HF_HUB_OFFLINE` selects the local cache only, with the
/// values the Hugging Face Python libraries accept.
fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|value| matches!(value.as_str(), "1" | "true" | "TRUE" | "ON" | "on" | "yes"))
}

/// Finds the folder of a hub repository: its snapshot in the local cache
/// when the config, tokenizer and weights are all there, else a download
/// with `hf-hub` unless `offline`.
///
/// Errors: `HubUnavailable`, saying where the cache is and how to pass a
/// local folder instead.
pub fn resolve_hub_repo(
    repo: &str,
    revision: Option<&str>,
    cache: &hf_hub::Cache,
    offline: bool,
) -> Result<PathBuf, LoadError> {
    let hub_repo = match revision {
        Some(revision) => hf_hub::Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        ),
        None => hf_hub::Repo::model(repo.to_string()),
    };
    let unavailable = |reason: String| LoadError::HubUnavailable {
        repo: repo.to_string(),
        cache: cache.path().clone(),
        reason,
    };
    let cached = cache.repo(hub_repo.clone());
    let weights = cached.get(INDEX_FILE).or_else(|| cached.get(SINGLE_FILE));
    if let (Some(config), Some(_), Some(_)) =
        (cached.get(CONFIG_FILE), cached.get(TOKENIZER_FILE), weights)
    {
        // A sharded repo is complete only with every shard; `Weights`
        // reports a missing one by name.
        return Ok(config.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    if offline {
        return Err(unavailable(
            "HF_HUB_OFFLINE is set, so nothing is downloaded".into(),
        ));
    }
    download_hub_repo(hub_repo, cache, unavailable)
}

/// Downloads the config, tokenizer and weights (every shard) of a hub
/// repository into `cache` and returns its snapshot folder.
///
/// NOTE: no test runs this path, because tests never reach a hub; only the
/// cache lookup and the offline error are tested.
fn download_hub_repo(
    hub_repo: hf_hub::Repo,
    cache: &hf_hub::Cache,
    unavailable: impl Fn(String) -> LoadError,
) -> Result<PathBuf, LoadError> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .build()
        .map_err(|error| unavailable(error.to_string()))?;
    let remote = api.repo(hub_repo);
    let fetch = |file: &str| {
        remote
            .get(file)
            .map_err(|error| unavailable(format!("{file}: {error}")))
    };
    let config = fetch(CONFIG_FILE)?;
    fetch(TOKENIZER_FILE)?;
    match remote.get(INDEX_FILE) {
        Ok(index_path) => {
            let index: serde_json::Value =
                serde_json::from_str(&read_text(&index_path)?).map_err(|error| {
                    LoadError::InvalidWeights {
                        path: index_path.clone(),
                        reason: format!("invalid shard index: {error}"),
                    }
                })?;
            let shards: std::collections::BTreeSet<&str> = index["weight_map"]
                .as_object()
                .map(|map| map.values().filter_map(|value| value.as_str()).collect())
                .unwrap_or_default();
            for shard in shards {
                fetch(shard)?;
            }
        }
        Err(_) => {
            fetch(SINGLE_FILE)?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}
