//! Hyperparameters of a GGUF model, read from the `{architecture}.*`
//! metadata keys that llama.cpp writes.

use crate::gguf::GgufFile;
use crate::LoadError;

/// The GGUF architectures wick runs (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama and its derivatives such as SmolLM2: RMSNorm, SwiGLU MLP,
    /// grouped-query attention, interleaved rotary embeddings.
    Llama,
    /// llama.cpp's layout of phi-2: fused QKV, partial rotary embeddings,
    /// attention and MLP in parallel after one LayerNorm.
    Phi2,
}

impl Architecture {
    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Phi2 => "phi2",
        }
    }

    /// The `ModelInfo::family` reported to the scheduler.
    pub fn family(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Phi2 => "phi",
        }
    }
}

/// The hyperparameters both GGUF families need.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufConfig {
    pub architecture: Architecture,
    /// Rows of `token_embd.weight`; llama.cpp pads phi-2's to 51200.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that get rotary embeddings.
    pub rotary_dim: usize,
    pub rope_theta: f64,
    /// RMSNorm epsilon for `llama`, LayerNorm epsilon for `phi2`.
    pub norm_eps: f64,
    pub context_length: usize,
}

/// llama.cpp's RMSNorm epsilon when a llama file does not record one.
const DEFAULT_RMS_EPS: f64 = 1e-5;
/// RoPE base of both families when the file does not record one.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl GgufConfig {
    /// Reads the hyperparameters of `file`.
    ///
    /// Errors: `InvalidConfig` naming the file and the key, for an
    /// architecture other than `llama` or `phi2`, a missing key, or sizes
    /// that do not fit together (e.g. heads that do not divide the hidden
    /// size).
    pub fn from_file(file: &GgufFile) -> Result<GgufConfig, LoadError> {
        let key = "general.architecture";
        let architecture = match file.string(key)? {
            Some("llama") => Architecture::Llama,
            Some("phi2") => Architecture::Phi2,
            Some(other) => {
                return Err(file.invalid_metadata(
                    key,
                    format!("architecture {other:?} is not supported; wick runs llama and phi2"),
                ))
            }
            None => return Err(file.invalid_metadata(key, "missing")),
        };
        let prefix = architecture.name();
        let get = |name: &str| file.usize(&format!("{prefix}.{name}"));

        let hidden_size = get("embedding_length")?;
        let num_heads = get("attention.head_count")?;
        let num_kv_heads = match file.metadata(&format!("{prefix}.attention.head_count_kv")) {
            Some(_) => get("attention.head_count_kv")?,
            None => num_heads,
        };
        let norm_eps = match architecture {
            Architecture::Llama => file
                .f64("llama.attention.layer_norm_rms_epsilon")?
                .unwrap_or(DEFAULT_RMS_EPS),
            Architecture::Phi2 => {
                let key = "phi2.attention.layer_norm_epsilon";
                file.f64(key)?
                    .ok_or_else(|| file.invalid_metadata(key, "missing"))?
            }
        };
        let vocab_size = match file.tensor_shape("token_embd.weight") {
            Some(&[rows, _]) => rows,
            _ => {
                return Err(LoadError::InvalidWeights {
                    path: file.path().to_path_buf(),
                    reason: "tensor token_embd.weight: missing or not two-dimensional".into(),
                })
            }
        };
        let config = GgufConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: get("feed_forward_length")?,
            num_layers: get("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size.checked_div(num_heads).unwrap_or(0),
            rotary_dim: get("rope.dimension_count")?,
            rope_theta: file
                .f64(&format!("{prefix}.rope.freq_base"))?
                .unwrap_or(DEFAULT_ROPE_THETA),
            norm_eps,
            context_length: get("context_length")?,
        };
        config
            .validate()
            .map_err(|reason| file.invalid_metadata(prefix, reason))?;
        Ok(config)
    }

    /// Checks that the sizes fit together, so that a bad file is reported
    /// at load time with the key at fault rather than as a shape error in
    /// the first step.
    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("embedding_length", self.hidden_size),
            ("attention.head_count", self.num_heads),
            ("attention.head_count_kv", self.num_kv_heads),
            ("block_count", self.num_layers),
            ("feed_forward_length", self.intermediate_size),
            ("context_length", self.context_length),
        ] {
            if value == 0 {
                return Err(format!("{name} is 0 but must be at least 1"));
            }
        }
        if self.hidden_size % self.num_heads != 0 {
            return Err(format!(
                "embedding_length {} is not a multiple of attention.head_count {}",
                self.hidden_size, self.num_heads
            ));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(format!(
                "attention.head_count {} is not a multiple of attention.head_count_kv {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.rotary_dim % 2 != 0 || self.rotary_dim > self.head_dim {
            return Err(format!(
                "rope.dimension_count {} must be even and at most the head size {}",
                self.rotary_dim, self.head_dim
            ));
        }
        if self.architecture == Architecture::Llama && self.rotary_dim != self.head_dim {
            return Err(format!(
                "rope.dimension_count {} must equal the head size {} for llama",
                self.rotary_dim, self.head_dim
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return Err(format!(
                "rope.freq_base {} must be positive",
                self.rope_theta
            ));
        }
        Ok(())
    }

    /// Values per token in one layer's cached keys (and values).
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}
