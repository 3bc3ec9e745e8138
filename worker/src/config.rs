//! The model configuration read from a Hugging Face `config.json`
//! (`PhiForCausalLM` fields), with the checks that keep the forward pass
//! from failing later on an unsupported setting.

use std::path::Path;

use candle_nn::Activation;
use serde::{Deserialize, Serialize};

use crate::LoadError;

/// The `PhiForCausalLM` fields wick reads. Unknown fields are ignored, so a
/// real phi-2 `config.json` parses as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhiConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention; wick supports only `None` or the head count.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub rope_theta: f32,
    /// Share of each head's dimensions that get rotary embeddings.
    pub partial_rotary_factor: f64,
    /// A LayerNorm over each head's query and key before the rotation.
    #[serde(default)]
    pub qk_layernorm: bool,
    /// Linear or dynamic rope scaling; wick supports only `None`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// One id or a list, as Hugging Face writes either.
    #[serde(default)]
    pub eos_token_id: Option<EosTokenIds>,
}

/// `eos_token_id` as a single id or a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EosTokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl EosTokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            EosTokenIds::One(id) => vec![*id],
            EosTokenIds::Many(ids) => ids.clone(),
        }
    }
}

impl PhiConfig {
    /// Reads and checks `config.json`.
    ///
    /// Errors: `MissingFile`, `Io`, or `InvalidConfig` naming the file and
    /// the bad or unsupported field.
    pub fn from_file(path: &Path) -> Result<PhiConfig, LoadError> {
        let text = crate::weights::read_text(path)?;
        let config: PhiConfig =
            serde_json::from_str(&text).map_err(|error| LoadError::InvalidConfig {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        config
            .validate()
            .map_err(|reason| LoadError::InvalidConfig {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Dimensions of each head that get rotary embeddings, rounded down as
    /// the Hugging Face and candle implementations do.
    pub fn rotary_dim(&self) -> usize {
        (self.partial_rotary_factor * self.head_dim() as f64) as usize
    }

    /// Returns a description of the first setting wick cannot run.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} is 0 but must be at least 1"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(kv_heads) = self.num_key_value_heads {
            if kv_heads != self.num_attention_heads {
                return Err(format!(
                    "num_key_value_heads {kv_heads} differs from num_attention_heads {}; \
                     grouped-query attention is not supported",
                    self.num_attention_heads
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.partial_rotary_factor) || self.rotary_dim() % 2 != 0 {
            return Err(format!(
                "partial_rotary_factor {} gives {} rotary dimensions per head; \
                 the factor must be in [0, 1] and give an even count",
                self.partial_rotary_factor,
                self.rotary_dim()
            ));
        }
        if self.tie_word_embeddings {
            return Err("tie_word_embeddings is true; phi models need their own lm_head".into());
        }
        if self
            .rope_scaling
            .as_ref()
            .is_some_and(|value| !value.is_null())
        {
            return Err(
                "rope_scaling is set; only unscaled rotary embeddings are supported".into(),
            );
        }
        Ok(())
    }
}
