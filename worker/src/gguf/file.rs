//! An opened GGUF file: metadata lookups and tensor reads that check names
//! and shapes, with errors that name the file and the key or tensor.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::LoadError;

/// The tensor types candle 0.11 reads from GGUF.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K";

/// A GGUF file whose header and metadata have been read; tensors are read
/// on demand.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens `path` and reads its header, metadata and tensor table.
    ///
    /// Errors: `MissingFile` or `Io` when the file cannot be opened;
    /// `InvalidWeights` when it is not a GGUF file candle can read, e.g. one
    /// with a tensor type outside [`SUPPORTED_TYPES`].
    pub fn open(path: &Path) -> Result<GgufFile, LoadError> {
        let file = File::open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::MissingFile {
                path: path.to_path_buf(),
            },
            _ => LoadError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|error| {
            let message = error.to_string();
            let reason = if message.contains("unknown dtype") {
                format!("{message}; candle reads only the GGUF tensor types {SUPPORTED_TYPES}")
            } else {
                format!("not a readable GGUF file: {message}")
            };
            LoadError::InvalidWeights {
                path: path.to_path_buf(),
                reason,
            }
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An `InvalidConfig` error about metadata `key`.
    pub fn invalid_metadata(&self, key: &str, reason: impl std::fmt::Display) -> LoadError {
        LoadError::InvalidConfig {
            path: self.path.clone(),
            reason: format!("metadata {key}: {reason}"),
        }
    }

    /// Reads an unsigned integer of any width.
    ///
    /// Errors: `InvalidConfig` when the key is missing or not an unsigned
    /// integer that fits `usize`.
    pub fn usize(&self, key: &str) -> Result<usize, LoadError> {
        let value = self
            .metadata(key)
            .ok_or_else(|| self.invalid_metadata(key, "missing"))?;
        value
            .to_u64()
            .ok()
            .and_then(|number| usize::try_from(number).ok())
            .ok_or_else(|| {
                self.invalid_metadata(key, format!("expected an integer, found {value:?}"))
            })
    }

    /// Reads a float, or None when the key is missing.
    ///
    /// Errors: `InvalidConfig` when the value is not an f32 or f64.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::F32(value)) => Ok(Some(f64::from(*value))),
            Some(Value::F64(value)) => Ok(Some(*value)),
            Some(other) => {
                Err(self.invalid_metadata(key, format!("expected a float, found {other:?}")))
            }
        }
    }

    /// Reads a string, or None when the key is missing.
    ///
    /// Errors: `InvalidConfig` when the value is not a string.
    pub fn string(&self, key: &str) -> Result<Option<&str>, LoadError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(other) => {
                Err(self.invalid_metadata(key, format!("expected a string, found {other:?}")))
            }
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The shape of tensor `name` (outermost dimension first), if present.
    pub fn tensor_shape(&self, name: &str) -> Option<&[usize]> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| info.shape.dims())
    }

    /// Reads tensor `name` in its stored type after checking its shape.
    ///
    /// Errors: `InvalidWeights` naming the tensor when it is missing, has
    /// another shape, or cannot be read.
    pub fn qtensor(
        &mut self,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> Result<QTensor, LoadError> {
        let invalid = |reason: String| LoadError::InvalidWeights {
            path: self.path.clone(),
            reason: format!("tensor {name}: {reason}"),
        };
        match self.tensor_shape(name) {
            None => return Err(invalid("missing".to_string())),
            Some(found) if found != shape => {
                return Err(invalid(format!("shape {found:?}, expected {shape:?}")))
            }
            Some(_) => {}
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|error| invalid(error.to_string()))
    }

    /// Reads tensor `name` and dequantizes it to f32.
    ///
    /// Errors: as [`GgufFile::qtensor`].
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> Result<Tensor, LoadError> {
        let qtensor = self.qtensor(name, shape, device)?;
        qtensor
            .dequantize(device)
            .map_err(|error| LoadError::InvalidWeights {
                path: self.path.clone(),
                reason: format!("tensor {name}: cannot dequantize: {error}"),
            })
    }

    /// Reads the `[outputs, inputs]` weight `name` as a matrix product that
    /// stays quantized (F32, F16 and BF16 weights are kept as f32 tensors).
    ///
    /// Errors: as [`GgufFile::qtensor`].
    pub fn qmatmul(
        &mut self,
        name: &str,
        inputs: usize,
        outputs: usize,
        device: &Device,
    ) -> Result<QMatMul, LoadError> {
        let qtensor = self.qtensor(name, &[outputs, inputs], device)?;
        QMatMul::from_qtensor(qtensor).map_err(|error| LoadError::InvalidWeights {
            path: self.path.clone(),
            reason: format!("tensor {name}: {error}"),
        })
    }
}
