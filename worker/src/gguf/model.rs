//! The batched forward pass of a GGUF model over the paged KV cache: the
//! same flat batch of chunks from many sequences, step layout and paged
//! attention as the phi path, with quantized matrix products (`QMatMul`)
//! and f32 activations.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, RmsNorm};

use crate::attention::{check_context, PagedAttention, SequenceChunk, StepLayout};
use crate::gguf::config::{Architecture, GgufConfig};
use crate::gguf::llama::LlamaBlock;
use crate::gguf::phi2::Phi2Block;
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::LoadError;

/// A loaded GGUF model of either architecture.
pub struct GgufModel {
    config: GgufConfig,
    /// `token_embd.weight` dequantized to f32, `[vocab, hidden]`, because a
    /// row lookup cannot run on quantized blocks.
    embed_tokens: Tensor,
    blocks: Vec<Block>,
    output_norm: Norm,
    /// `output.weight`, or `token_embd.weight` again for llama files with a
    /// tied output embedding (SmolLM2).
    output: QLinear,
    /// `[context_length, rotary_dim / 2]` in f32.
    cos: Tensor,
    sin: Tensor,
}

enum Block {
    Llama(LlamaBlock),
    Phi2(Phi2Block),
}

/// RMSNorm for llama, LayerNorm with bias for phi2.
pub(super) enum Norm {
    Rms(RmsNorm),
    Layer(LayerNorm),
}

impl Norm {
    /// Reads `{prefix}.weight` (and `{prefix}.bias` for LayerNorm).
    ///
    /// Errors: `InvalidWeights` naming the missing or misshapen tensor.
    pub(super) fn load(
        file: &mut GgufFile,
        config: &GgufConfig,
        prefix: &str,
        device: &Device,
    ) -> Result<Norm, LoadError> {
        let size = [config.hidden_size];
        let weight = file.tensor(&format!("{prefix}.weight"), &size, device)?;
        Ok(match config.architecture {
            Architecture::Llama => Norm::Rms(RmsNorm::new(weight, config.norm_eps)),
            Architecture::Phi2 => {
                let bias = file.tensor(&format!("{prefix}.bias"), &size, device)?;
                Norm::Layer(LayerNorm::new(weight, bias, config.norm_eps))
            }
        })
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Norm::Rms(norm) => norm.forward(xs),
            Norm::Layer(norm) => norm.forward(xs),
        }
    }
}

/// A quantized linear layer with an optional f32 bias.
pub(super) struct QLinear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl QLinear {
    /// Reads `{prefix}.weight` as `[outputs, inputs]`, and `{prefix}.bias`
    /// when `with_bias`.
    ///
    /// Errors: `InvalidWeights` naming the missing or misshapen tensor.
    pub(super) fn load(
        file: &mut GgufFile,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        with_bias: bool,
        device: &Device,
    ) -> Result<QLinear, LoadError> {
        let weight = file.qmatmul(&format!("{prefix}.weight"), inputs, outputs, device)?;
        let bias = match with_bias {
            true => Some(file.tensor(&format!("{prefix}.bias"), &[outputs], device)?),
            false => None,
        };
        Ok(QLinear { weight, bias })
    }
}

impl Module for QLinear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let output = self.weight.forward(xs)?;
        match &self.bias {
            Some(bias) => output.broadcast_add(bias),
            None => Ok(output),
        }
    }
}

/// The inputs every block of a step shares: the rotary rows of the step's
/// positions and the paged attention over the step's layout.
pub(super) struct StepInputs<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub attention: &'a PagedAttention<'a>,
}

fn candle_error(path: &std::path::Path, context: &str, source: candle_core::Error) -> LoadError {
    LoadError::Candle {
        context: format!("{}: {context}", path.display()),
        source,
    }
}

impl GgufModel {
    /// Reads every tensor of `config`'s architecture from `file` onto
    /// `device`.
    ///
    /// Errors: `InvalidWeights` naming the missing or misshapen tensor;
    /// `Candle` when the rotary tables cannot be built.
    pub fn load(
        config: &GgufConfig,
        file: &mut GgufFile,
        device: &Device,
    ) -> Result<GgufModel, LoadError> {
        let hidden = config.hidden_size;
        let vocab = config.vocab_size;
        let embed_tokens = file.tensor("token_embd.weight", &[vocab, hidden], device)?;
        let blocks = (0..config.num_layers)
            .map(|layer| match config.architecture {
                Architecture::Llama => {
                    LlamaBlock::load(config, file, layer, device).map(Block::Llama)
                }
                Architecture::Phi2 => Phi2Block::load(config, file, layer, device).map(Block::Phi2),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output_norm = Norm::load(file, config, "output_norm", device)?;
        let output = match config.architecture {
            Architecture::Llama if !file.has_tensor("output.weight") => {
                QLinear::load(file, "token_embd", hidden, vocab, false, device)?
            }
            Architecture::Llama => QLinear::load(file, "output", hidden, vocab, false, device)?,
            Architecture::Phi2 => QLinear::load(file, "output", hidden, vocab, true, device)?,
        };
        let (cos, sin) = rotary_tables(config, device)
            .map_err(|source| candle_error(file.path(), "building the rotary tables", source))?;
        Ok(GgufModel {
            config: config.clone(),
            embed_tokens,
            blocks,
            output_norm,
            output,
            cos,
            sin,
        })
    }

    pub fn config(&self) -> &GgufConfig {
        &self.config
    }

    /// Always f32: quantized matrix products take f32 activations.
    pub fn dtype(&self) -> DType {
        DType::F32
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Values per token in one layer's cached keys (and values): only the
    /// KV heads are cached, 3 times fewer than the query heads for SmolLM2.
    pub fn kv_width(&self) -> usize {
        self.config.kv_width()
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
        check_context(chunks, self.config.context_length)?;
        let layout = StepLayout::new(chunks, cache, self.kv_width(), self.device())?;
        let cos = self.cos.index_select(&layout.positions, 0)?;
        let sin = self.sin.index_select(&layout.positions, 0)?;
        let attention = PagedAttention {
            layout: &layout,
            num_heads: self.config.num_heads,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
        };
        let inputs = StepInputs {
            cos: &cos,
            sin: &sin,
            attention: &attention,
        };
        let mut xs = self.embed_tokens.index_select(&layout.token_ids, 0)?;
        for (index, block) in self.blocks.iter().enumerate() {
            let cache = cache.layer(index);
            xs = match block {
                Block::Llama(block) => block.forward(&xs, &inputs, cache)?,
                Block::Phi2(block) => block.forward(&xs, &inputs, cache)?,
            };
        }
        if layout.logit_rows.dim(0)? == 0 {
            return Tensor::zeros((0, self.config.vocab_size), DType::F32, self.device());
        }
        // Only the rows that sample this step pay for the vocabulary-wide
        // output projection.
        let last_rows = xs.index_select(&layout.logit_rows, 0)?;
        self.output.forward(&self.output_norm.forward(&last_rows)?)
    }
}

/// Cosine and sine of every position times every rotary frequency, in
/// f32, with the frequencies llama.cpp uses: `theta^(-i / rotary_dim)` for
/// even i below `rotary_dim`, computed in f32 as candle's references do.
fn rotary_tables(config: &GgufConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let rotary_dim = config.rotary_dim;
    let theta = config.rope_theta as f32;
    let inverse_frequencies: Vec<f32> = (0..rotary_dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / rotary_dim as f32))
        .collect();
    let count = inverse_frequencies.len();
    let inverse_frequencies = Tensor::from_vec(inverse_frequencies, (1, count), device)?;
    let positions = Tensor::arange(0u32, config.context_length as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((config.context_length, 1))?;
    let frequencies = positions.matmul(&inverse_frequencies)?;
    Ok((frequencies.cos()?, frequencies.sin()?))
}
