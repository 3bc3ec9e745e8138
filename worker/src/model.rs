//! [`CausalLm`], what the engine needs from a model family: one batched
//! forward pass over the paged KV cache, and the sizes to allocate that
//! cache. The safetensors phi path ([`PhiModel`]) and the GGUF families
//! ([`GgufModel`]) implement it.

use candle_core::{DType, Device, Tensor};

use crate::attention::SequenceChunk;
use crate::gguf::GgufModel;
use crate::kv_cache::KvCache;
use crate::phi::PhiModel;

/// A causal language model that the engine steps.
pub trait CausalLm: Send {
    /// Runs one step over `chunks`, writing their keys and values into
    /// `cache`, and returns f32 logits `[n, vocab]` for the n chunks that
    /// want them, in chunk order.
    fn forward(&self, chunks: &[SequenceChunk<'_>], cache: &KvCache)
        -> candle_core::Result<Tensor>;

    /// Layers, each with its own keys and values in the KV cache.
    fn num_layers(&self) -> usize;

    /// Values per token in one layer's cached keys (and values).
    fn kv_width(&self) -> usize;

    /// Rows of the logits: the size of the embedding, which may exceed the
    /// tokenizer's vocabulary.
    fn vocab_size(&self) -> usize;

    /// The dtype of the KV cache and of the activations.
    fn dtype(&self) -> DType;

    fn device(&self) -> &Device;
}

impl CausalLm for PhiModel {
    fn forward(
        &self,
        chunks: &[SequenceChunk<'_>],
        cache: &KvCache,
    ) -> candle_core::Result<Tensor> {
        PhiModel::forward(self, chunks, cache)
    }

    fn num_layers(&self) -> usize {
        self.config().num_hidden_layers
    }

    fn kv_width(&self) -> usize {
        PhiModel::kv_width(self)
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn dtype(&self) -> DType {
        PhiModel::dtype(self)
    }

    fn device(&self) -> &Device {
        PhiModel::device(self)
    }
}

impl CausalLm for GgufModel {
    fn forward(
        &self,
        chunks: &[SequenceChunk<'_>],
        cache: &KvCache,
    ) -> candle_core::Result<Tensor> {
        GgufModel::forward(self, chunks, cache)
    }

    fn num_layers(&self) -> usize {
        self.config().num_layers
    }

    fn kv_width(&self) -> usize {
        GgufModel::kv_width(self)
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn dtype(&self) -> DType {
        GgufModel::dtype(self)
    }

    fn device(&self) -> &Device {
        GgufModel::device(self)
    }
}
