//! Named tensors for building a model: from one `model.safetensors`, from
//! shards listed in `model.safetensors.index.json`, or from memory (the
//! demo model). Every lookup checks the name, shape and dtype, and errors
//! name the file that contains the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::LoadError;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A source of named tensors, converted to one dtype on one device.
pub struct Weights {
    store: Store,
    device: Device,
    dtype: DType,
}

enum Store {
    /// Memory-mapped files and, for each tensor name, the file holding it.
    Files {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        routing: HashMap<String, usize>,
    },
    Memory(HashMap<String, Tensor>),
}

/// The `model.safetensors.index.json` field wick reads.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// Reads a text file, mapping a missing file and other I/O errors to
/// `LoadError`s that name the path.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> LoadError {
    if source.kind() == std::io::ErrorKind::NotFound {
        LoadError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Weights {
    /// Opens the weights of a Hugging Face model folder: the shards named by
    /// `model.safetensors.index.json` when it exists, else
    /// `model.safetensors`.
    ///
    /// Errors: `MissingFile` for an absent file or shard, `InvalidWeights`
    /// for a bad index or safetensors header.
    pub fn from_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Weights, LoadError> {
        let index_path = dir.join(INDEX_FILE);
        if index_path.exists() {
            return Weights::from_index(&index_path, device, dtype);
        }
        let path = dir.join(SINGLE_FILE);
        let file = open_safetensors(&path)?;
        let routing = file
            .tensors()
            .into_iter()
            .map(|(name, _)| (name, 0))
            .collect();
        Ok(Weights {
            store: Store::Files {
                files: vec![(path, file)],
                routing,
            },
            device: device.clone(),
            dtype,
        })
    }

    fn from_index(index_path: &Path, device: &Device, dtype: DType) -> Result<Weights, LoadError> {
        let index: ShardIndex = serde_json::from_str(&read_text(index_path)?).map_err(|error| {
            LoadError::InvalidWeights {
                path: index_path.to_path_buf(),
                reason: format!("invalid shard index: {error}"),
            }
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = index.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();

        let mut files = Vec::with_capacity(shard_names.len());
        let mut file_of_shard = HashMap::new();
        for name in shard_names {
            let path = dir.join(name);
            file_of_shard.insert(name.clone(), files.len());
            let file = open_safetensors(&path)?;
            files.push((path, file));
        }
        let routing = index
            .weight_map
            .iter()
            .map(|(tensor, shard)| (tensor.clone(), file_of_shard[shard]))
            .collect();
        Ok(Weights {
            store: Store::Files { files, routing },
            device: device.clone(),
            dtype,
        })
    }

    /// Wraps tensors built in memory, e.g. the demo model's.
    pub fn from_memory(tensors: HashMap<String, Tensor>, device: &Device, dtype: DType) -> Weights {
        Weights {
            store: Store::Memory(tensors),
            device: device.clone(),
            dtype,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Loads tensor `name`, checks it has `shape`, and converts it to the
    /// target dtype and device.
    ///
    /// Errors: `InvalidWeights` naming the file when the tensor is absent,
    /// has another shape, or is not a float tensor.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, LoadError> {
        let (location, tensor) = match &self.store {
            Store::Memory(tensors) => {
                let tensor = tensors.get(name).ok_or_else(|| LoadError::InvalidWeights {
                    path: PathBuf::from("<memory>"),
                    reason: format!("tensor {name} not found"),
                })?;
                (PathBuf::from("<memory>"), tensor.clone())
            }
            Store::Files { files, routing } => self.load_from_files(files, routing, name)?,
        };
        let invalid = |reason: String| LoadError::InvalidWeights {
            path: location.clone(),
            reason,
        };
        if tensor.dims() != shape {
            return Err(invalid(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                tensor.dims()
            )));
        }
        if !tensor.dtype().is_float() {
            return Err(invalid(format!(
                "tensor {name} has dtype {:?}, expected a float dtype (f32, f16 or bf16)",
                tensor.dtype()
            )));
        }
        tensor
            .to_dtype(self.dtype)
            .and_then(|tensor| tensor.to_device(&self.device))
            .map_err(|error| invalid(format!("cannot convert tensor {name}: {error}")))
    }

    fn load_from_files(
        &self,
        files: &[(PathBuf, MmapedSafetensors)],
        routing: &HashMap<String, usize>,
        name: &str,
    ) -> Result<(PathBuf, Tensor), LoadError> {
        let Some(&file_index) = routing.get(name) else {
            let paths: Vec<String> = files
                .iter()
                .map(|(path, _)| path.display().to_string())
                .collect();
            return Err(LoadError::InvalidWeights {
                path: files
                    .first()
                    .map(|(path, _)| path.clone())
                    .unwrap_or_default(),
                reason: format!("tensor {name} not found in {}", paths.join(", ")),
            });
        };
        let (path, file) = &files[file_index];
        // Loading on the CPU first keeps dtype checks and conversion errors
        // in one place; `get` moves the tensor to the target device.
        let tensor = file
            .load(name, &Device::Cpu)
            .map_err(|error| LoadError::InvalidWeights {
                path: path.clone(),
                reason: format!("cannot read tensor {name}: {error}"),
            })?;
        Ok((path.clone(), tensor))
    }
}

fn open_safetensors(path: &Path) -> Result<MmapedSafetensors, LoadError> {
    if !path.exists() {
        return Err(LoadError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: the file is mapped read-only; wick does not write model files
    // while serving them, which is the condition memmap2 documents.
    unsafe { MmapedSafetensors::new(path) }.map_err(|error| LoadError::InvalidWeights {
        path: path.to_path_buf(),
        reason: format!("not a valid safetensors file: {error}"),
    })
}
