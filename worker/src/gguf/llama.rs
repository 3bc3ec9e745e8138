//! A llama decoder block as llama.cpp stores it in GGUF: RMSNorm, separate
//! Q, K and V projections without bias, grouped-query attention with
//! rotary embeddings over whole heads, and a SwiGLU MLP.

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};

use crate::gguf::config::GgufConfig;
use crate::gguf::model::{Norm, StepInputs};
use crate::gguf::GgufFile;
use crate::LoadError;

pub(super) struct LlamaBlock {
    attn_norm: Norm,
    attn_q: QMatMul,
    attn_k: QMatMul,
    attn_v: QMatMul,
    attn_output: QMatMul,
    ffn_norm: Norm,
    ffn_gate: QMatMul,
    ffn_up: QMatMul,
    ffn_down: QMatMul,
    config: GgufConfig,
}

impl LlamaBlock {
    /// Reads the tensors of block `layer` (`blk.{layer}.*`).
    ///
    /// Errors: `InvalidWeights` naming the missing or misshapen tensor.
    pub(super) fn load(
        config: &GgufConfig,
        file: &mut GgufFile,
        layer: usize,
        device: &Device,
    ) -> Result<LlamaBlock, LoadError> {
        let prefix = format!("blk.{layer}");
        let hidden = config.hidden_size;
        let kv_width = config.kv_width();
        let ffn = config.intermediate_size;
        let mut weight = |name: &str, inputs: usize, outputs: usize| {
            file.qmatmul(&format!("{prefix}.{name}.weight"), inputs, outputs, device)
        };
        let attn_q = weight("attn_q", hidden, hidden)?;
        let attn_k = weight("attn_k", hidden, kv_width)?;
        let attn_v = weight("attn_v", hidden, kv_width)?;
        let attn_output = weight("attn_output", hidden, hidden)?;
        let ffn_gate = weight("ffn_gate", hidden, ffn)?;
        let ffn_up = weight("ffn_up", hidden, ffn)?;
        let ffn_down = weight("ffn_down", ffn, hidden)?;
        Ok(LlamaBlock {
            attn_norm: Norm::load(file, config, &format!("{prefix}.attn_norm"), device)?,
            attn_q,
            attn_k,
            attn_v,
            attn_output,
            ffn_norm: Norm::load(file, config, &format!("{prefix}.ffn_norm"), device)?,
            ffn_gate,
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
        let (heads, kv_heads, head_dim) = (
            self.config.num_heads,
            self.config.num_kv_heads,
            self.config.head_dim,
        );
        let normed = self.attn_norm.forward(xs)?;
        let query = self
            .attn_q
            .forward(&normed)?
            .reshape((tokens, heads, head_dim))?;
        let key = self
            .attn_k
            .forward(&normed)?
            .reshape((tokens, kv_heads, head_dim))?;
        let value = self.attn_v.forward(&normed)?;
        let query = rope_interleaved(&query, inputs.cos, inputs.sin)?;
        let key = rope_interleaved(&key, inputs.cos, inputs.sin)?.reshape((tokens, ()))?;
        let attn_output = inputs.attention.forward(&query, &key, &value, cache)?;
        let xs = (self.attn_output.forward(&attn_output)? + xs)?;

        let normed = self.ffn_norm.forward(&xs)?;
        let gate = candle_nn::ops::silu(&self.ffn_gate.forward(&normed)?)?;
        let mlp_output = self
            .ffn_down
            .forward(&(gate * self.ffn_up.forward(&normed)?)?)?;
        mlp_output + xs
    }
}

/// Rotary embeddings over whole heads of `xs` (`[tokens, heads, head_dim]`)
/// in the interleaved layout, rotating pairs (2i, 2i + 1): llama.cpp's
/// converter permutes llama's Q and K weights into that layout. `cos` and
/// `sin` are `[tokens, head_dim / 2]`, one row per token's position.
fn rope_interleaved(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (tokens, heads, head_dim) = xs.dims3()?;
    // Each token is its own batch entry of sequence length 1, so each gets
    // the row of its own position.
    let xs = xs.contiguous()?.reshape((tokens, heads, 1, head_dim))?;
    let cos = cos.reshape((tokens, 1, head_dim / 2))?;
    let sin = sin.reshape((tokens, 1, head_dim / 2))?;
    candle_nn::rotary_emb::rope_i(&xs, &cos, &sin)?.reshape((tokens, heads, head_dim))
}
