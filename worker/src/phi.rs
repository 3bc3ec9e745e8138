//! The phi architecture (phi-2's `PhiForCausalLM`) as one batched forward
//! pass over a flat batch of tokens from many sequences.
//!
//! Each block runs a LayerNorm whose output feeds attention and the MLP in
//! parallel; their sum is added to the residual stream. Projections, the
//! MLP and `lm_head` are one matrix product over all tokens of the step.
//! Attention reads each sequence's keys and values from the paged KV cache
//! (see `attention`). Weight names are Hugging Face's.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, LayerNorm, Linear};

use crate::attention::{
    apply_partial_rotary, check_context, PagedAttention, SequenceChunk, StepLayout,
};
use crate::config::PhiConfig;
use crate::kv_cache::KvCache;
use crate::weights::Weights;
use crate::LoadError;

/// A loaded phi model.
pub struct PhiModel {
    config: PhiConfig,
    embed_tokens: Tensor,
    layers: Vec<PhiLayer>,
    final_layernorm: LayerNorm,
    lm_head: Linear,
    /// `[max_position_embeddings, rotary_dim / 2]`, in the model dtype.
    cos: Tensor,
    sin: Tensor,
}

struct PhiLayer {
    input_layernorm: LayerNorm,
    /// `q_proj`, `k_proj` and `v_proj` stacked into one `[3 * hidden,
    /// hidden]` weight, so the step runs one matrix product for all three.
    qkv_proj: Linear,
    dense: Linear,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
    /// Per-head LayerNorms over queries and keys (`qk_layernorm`), over each
    /// head's `head_dim` values as their weight shape implies.
    /// NOTE: candle-transformers 0.11 applies them to the whole
    /// `hidden_size` row, so parity with it is tested with one head only.
    q_layernorm: Option<LayerNorm>,
    k_layernorm: Option<LayerNorm>,
}

/// Lists every tensor a phi model with `config` reads, with its shape.
pub fn tensor_shapes(config: &PhiConfig) -> Vec<(String, Vec<usize>)> {
    let hidden = config.hidden_size;
    let mut shapes = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![config.vocab_size, hidden],
        ),
        ("model.final_layernorm.weight".to_string(), vec![hidden]),
        ("model.final_layernorm.bias".to_string(), vec![hidden]),
        (
            "lm_head.weight".to_string(),
            vec![config.vocab_size, hidden],
        ),
        ("lm_head.bias".to_string(), vec![config.vocab_size]),
    ];
    for layer in 0..config.num_hidden_layers {
        let prefix = format!("model.layers.{layer}");
        let mut push = |name: &str, shape: Vec<usize>| {
            shapes.push((format!("{prefix}.{name}"), shape));
        };
        push("input_layernorm.weight", vec![hidden]);
        push("input_layernorm.bias", vec![hidden]);
        for projection in ["q_proj", "k_proj", "v_proj", "dense"] {
            push(
                &format!("self_attn.{projection}.weight"),
                vec![hidden, hidden],
            );
            push(&format!("self_attn.{projection}.bias"), vec![hidden]);
        }
        if config.qk_layernorm {
            for norm in ["q_layernorm", "k_layernorm"] {
                push(&format!("self_attn.{norm}.weight"), vec![config.head_dim()]);
                push(&format!("self_attn.{norm}.bias"), vec![config.head_dim()]);
            }
        }
        push("mlp.fc1.weight", vec![config.intermediate_size, hidden]);
        push("mlp.fc1.bias", vec![config.intermediate_size]);
        push("mlp.fc2.weight", vec![hidden, config.intermediate_size]);
        push("mlp.fc2.bias", vec![hidden]);
    }
    shapes
}

fn linear_parts(
    weights: &Weights,
    prefix: &str,
    inputs: usize,
    outputs: usize,
) -> Result<(Tensor, Tensor), LoadError> {
    let weight = weights.get(&format!("{prefix}.weight"), &[outputs, inputs])?;
    let bias = weights.get(&format!("{prefix}.bias"), &[outputs])?;
    Ok((weight, bias))
}

fn linear(
    weights: &Weights,
    prefix: &str,
    inputs: usize,
    outputs: usize,
) -> Result<Linear, LoadError> {
    let (weight, bias) = linear_parts(weights, prefix, inputs, outputs)?;
    Ok(Linear::new(weight, Some(bias)))
}

fn layer_norm(
    weights: &Weights,
    prefix: &str,
    size: usize,
    eps: f64,
) -> Result<LayerNorm, LoadError> {
    let weight = weights.get(&format!("{prefix}.weight"), &[size])?;
    let bias = weights.get(&format!("{prefix}.bias"), &[size])?;
    Ok(LayerNorm::new(weight, bias, eps))
}

fn candle_error(context: &str) -> impl FnOnce(candle_core::Error) -> LoadError + '_ {
    move |source| LoadError::Candle {
        context: context.to_string(),
        source,
    }
}

impl PhiLayer {
    fn load(config: &PhiConfig, weights: &Weights, prefix: &str) -> Result<PhiLayer, LoadError> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let attn = format!("{prefix}.self_attn");
        let mut stacked_weights = Vec::with_capacity(3);
        let mut stacked_biases = Vec::with_capacity(3);
        for name in ["q_proj", "k_proj", "v_proj"] {
            let (weight, bias) = linear_parts(weights, &format!("{attn}.{name}"), hidden, hidden)?;
            stacked_weights.push(weight);
            stacked_biases.push(bias);
        }
        let qkv_weight = Tensor::cat(&stacked_weights, 0).map_err(candle_error(prefix))?;
        let qkv_bias = Tensor::cat(&stacked_biases, 0).map_err(candle_error(prefix))?;
        let qkv_proj = Linear::new(qkv_weight, Some(qkv_bias));
        let (q_layernorm, k_layernorm) = if config.qk_layernorm {
            let head_dim = config.head_dim();
            (
                Some(layer_norm(
                    weights,
                    &format!("{attn}.q_layernorm"),
                    head_dim,
                    eps,
                )?),
                Some(layer_norm(
                    weights,
                    &format!("{attn}.k_layernorm"),
                    head_dim,
                    eps,
                )?),
            )
        } else {
            (None, None)
        };
        Ok(PhiLayer {
            input_layernorm: layer_norm(
                weights,
                &format!("{prefix}.input_layernorm"),
                hidden,
                eps,
            )?,
            qkv_proj,
            dense: linear(weights, &format!("{attn}.dense"), hidden, hidden)?,
            fc1: linear(
                weights,
                &format!("{prefix}.mlp.fc1"),
                hidden,
                config.intermediate_size,
            )?,
            fc2: linear(
                weights,
                &format!("{prefix}.mlp.fc2"),
                config.intermediate_size,
                hidden,
            )?,
            activation: config.hidden_act,
            q_layernorm,
            k_layernorm,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        rotary: (&Tensor, &Tensor),
        attention: &PagedAttention<'_>,
        cache: &(Tensor, Tensor),
    ) -> candle_core::Result<Tensor> {
        let hidden = xs.dim(1)?;
        let tokens = xs.dim(0)?;
        let heads = (tokens, attention.num_heads, attention.head_dim);
        let normed = self.input_layernorm.forward(xs)?;

        let qkv = self.qkv_proj.forward(&normed)?;
        let mut query = qkv.narrow(1, 0, hidden)?.reshape(heads)?;
        let mut key = qkv.narrow(1, hidden, hidden)?.reshape(heads)?;
        let value = qkv.narrow(1, 2 * hidden, hidden)?;
        if let (Some(q_norm), Some(k_norm)) = (&self.q_layernorm, &self.k_layernorm) {
            query = q_norm.forward(&query.contiguous()?)?;
            key = k_norm.forward(&key.contiguous()?)?;
        }
        let (cos, sin) = rotary;
        let query = apply_partial_rotary(&query, cos, sin)?;
        let key = apply_partial_rotary(&key, cos, sin)?.reshape((tokens, hidden))?;
        let attn_output = attention.forward(&query, &key, &value, cache)?;
        let attn_output = self.dense.forward(&attn_output)?;

        let mlp_output = self
            .fc2
            .forward(&self.activation.forward(&self.fc1.forward(&normed)?)?)?;
        (attn_output + mlp_output)? + xs
    }
}

impl PhiModel {
    /// Builds the model from `weights` (whose dtype and device it takes).
    ///
    /// Errors: `InvalidWeights` for a missing tensor or a wrong shape or
    /// dtype, `InvalidConfig`-style problems are caught earlier by
    /// `PhiConfig::validate`.
    pub fn load(config: &PhiConfig, weights: &Weights) -> Result<PhiModel, LoadError> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embed_tokens =
            weights.get("model.embed_tokens.weight", &[config.vocab_size, hidden])?;
        let layers = (0..config.num_hidden_layers)
            .map(|layer| PhiLayer::load(config, weights, &format!("model.layers.{layer}")))
            .collect::<Result<Vec<_>, _>>()?;
        let final_layernorm = layer_norm(weights, "model.final_layernorm", hidden, eps)?;
        let lm_head = linear(weights, "lm_head", hidden, config.vocab_size)?;
        let (cos, sin) = rotary_tables(config, weights.device(), weights.dtype())
            .map_err(candle_error("building the rotary embedding tables"))?;
        Ok(PhiModel {
            config: config.clone(),
            embed_tokens,
            layers,
            final_layernorm,
            lm_head,
            cos,
            sin,
        })
    }

    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Values per token in one layer's keys (and values).
    pub fn kv_width(&self) -> usize {
        self.config.hidden_size
    }

    /// Runs one step over `chunks`, writing their keys and values into
    /// `cache`, and returns f32 logits `[n, vocab]` for the n chunks that
    /// want them, in chunk order.
    ///
    /// Errors: a chunk that reaches past the context, or a failed tensor op.
    pub fn forward(
        &self,
        chunks: &[SequenceChunk<'_>],
        cache: &KvCache,
    ) -> candle_core::Result<Tensor> {
        check_context(chunks, self.config.max_position_embeddings)?;
        let layout = StepLayout::new(chunks, cache, self.kv_width(), self.device())?;
        let cos = self.cos.index_select(&layout.positions, 0)?;
        let sin = self.sin.index_select(&layout.positions, 0)?;
        let attention = PagedAttention {
            layout: &layout,
            num_heads: self.config.num_attention_heads,
            num_kv_heads: self.config.num_attention_heads,
            head_dim: self.config.head_dim(),
        };
        let mut xs = self.embed_tokens.index_select(&layout.token_ids, 0)?;
        for (index, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, (&cos, &sin), &attention, cache.layer(index))?;
        }
        // Only the rows that sample this step pay for the vocabulary-wide
        // `lm_head`, which is the largest matrix product of a decode step.
        let last_rows = xs.index_select(&layout.logit_rows, 0)?;
        self.lm_head
            .forward(&self.final_layernorm.forward(&last_rows)?)?
            .to_dtype(DType::F32)
    }
}

/// Cosine and sine of every position times every rotary frequency,
/// computed in f32 as the reference implementations do.
fn rotary_tables(
    config: &PhiConfig,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<(Tensor, Tensor)> {
    let rotary_dim = config.rotary_dim();
    let inverse_frequencies: Vec<f32> = (0..rotary_dim)
        .step_by(2)
        .map(|i| 1.0 / config.rope_theta.powf(i as f32 / rotary_dim as f32))
        .collect();
    let count = inverse_frequencies.len();
    let inverse_frequencies = Tensor::from_vec(inverse_frequencies, (1, count), device)?;
    let positions = Tensor::arange(0u32, config.max_position_embeddings as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((config.max_position_embeddings, 1))?;
    let frequencies = positions.matmul(&inverse_frequencies)?;
    Ok((
        frequencies.cos()?.to_dtype(dtype)?,
        frequencies.sin()?.to_dtype(dtype)?,
    ))
}
