//! A phi-2 decoder block in llama.cpp's GGUF layout: one LayerNorm feeding
//! attention and the MLP in parallel, a fused QKV projection
//! (`attn_qkv`, queries then keys then values), rotary embeddings on the
//! first `rotary_dim` dimensions of each head, and biases everywhere.

use candle_core::{Device, Module, Tensor};

use crate::attention::apply_partial_rotary;
use crate::gguf::config::GgufConfig;
use crate::gguf::model::{Norm, QLinear, StepInputs};
use crate::gguf::GgufFile;
use crate::LoadError;

pub(super) struct Phi2Block {
    attn_norm: Norm,
    attn_qkv: QLinear,
    attn_output: QLinear,
    ffn_up: QLinear,
    ffn_down: QLinear,
    config: GgufConfig,
}

impl Phi2Block {
    /// Reads the tensors of block `layer` (`blk.{layer}.*`).
    ///
    /// Errors: `InvalidWeights` naming the missing or misshapen tensor.
    pub(super) fn load(
        config: &GgufConfig,
        file: &mut GgufFile,
        layer: usize,
        device: &Device,
    ) -> Result<Phi2Block, LoadError> {
        let prefix = format!("blk.{layer}");
        let hidden = config.hidden_size;
        let qkv_width = hidden + 2 * config.kv_width();
        let ffn = config.intermediate_size;
        let mut linear = |name: &str, inputs: usize, outputs: usize| {
            QLinear::load(
                file,
                &format!("{prefix}.{name}"),
                inputs,
                outputs,
                true,
                device,
            )
        };
        let attn_qkv = linear("attn_qkv", hidden, qkv_width)?;
        let attn_output = linear("attn_output", hidden, hidden)?;
        let ffn_up = linear("ffn_up", hidden, ffn)?;
        let ffn_down = linear("ffn_down", ffn, hidden)?;
        Ok(Phi2Block {
            attn_norm: Norm::load(file, config, &format!("{prefix}.attn_norm"), device)?,
            attn_qkv,
            attn_output,
            ffn_up,
            ffn_down,
            config: config.clone(),
        })
    }

    /// Runs the block on the step's hidden states `[tokens, hidden]`.
    pub(super) fn forward(
        &self,
        xs: &Tensor,
        inputs: &StepInputs<'_>,
        cache: &(Tensor, Tensor),
    ) -> candle_core::Result<Tensor> {
        let tokens = xs.dim(0)?;
        let hidden = self.config.hidden_size;
        let kv_width = self.config.kv_width();
        let (heads, kv_heads, head_dim) = (
            self.config.num_heads,
            self.config.num_kv_heads,
            self.config.head_dim,
        );
        let normed = self.attn_norm.forward(xs)?;

        let qkv = self.attn_qkv.forward(&normed)?;
        let query = qkv
            .narrow(1, 0, hidden)?
            .reshape((tokens, heads, head_dim))?;
        let key = qkv
            .narrow(1, hidden, kv_width)?
            .reshape((tokens, kv_heads, head_dim))?;
        let value = qkv.narrow(1, hidden + kv_width, kv_width)?;
        let query = apply_partial_rotary(&query, inputs.cos, inputs.sin)?;
        let key =
            apply_partial_rotary(&key, inputs.cos, inputs.sin)?.reshape((tokens, kv_width))?;
        let attn_output = inputs.attention.forward(&query, &key, &value, cache)?;
        let attn_output = self.attn_output.forward(&attn_output)?;

        // The tanh approximation of GELU, as phi-2's `gelu_new`.
        let mlp_output = self
            .ffn_down
            .forward(&self.ffn_up.forward(&normed)?.gelu()?)?;
        (attn_output + mlp_output)? + xs
    }
}
