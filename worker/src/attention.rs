//! Paged attention for a flat batch: the per-step index tensors that say
//! where each token's keys and values go in the KV cache and which slots
//! each sequence reads, and the attention over them.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::kv_cache::{BlockTable, KvCache};

/// One sequence's share of a step: a prefill chunk or one decode token.
pub struct SequenceChunk<'a> {
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; the cache holds every position before it.
    pub start: usize,
    /// Must already cover `start + tokens.len()` positions.
    pub block_table: &'a BlockTable,
    /// Whether the logits of the chunk's last token are needed.
    pub wants_logits: bool,
}

/// Where one chunk sits in the step's flat tensors.
struct ChunkLayout {
    /// First row of the chunk among the step's tokens.
    token_offset: usize,
    len: usize,
    /// First row of the sequence's context among the gathered slots.
    context_offset: usize,
    /// Positions the chunk attends to: everything cached plus the chunk.
    context_len: usize,
    /// Additive causal mask `[len, context_len]`; None for one token, which
    /// may see its whole context.
    mask: Option<Tensor>,
}

/// The index tensors of one step, built once and shared by every layer.
pub struct StepLayout {
    pub token_ids: Tensor,
    pub positions: Tensor,
    /// `[tokens, kv_width]`: each row repeats the token's cache slot, as
    /// `scatter_set` wants one index per written value.
    write_slots: Tensor,
    /// Slots of every sequence's context, sequence after sequence.
    read_slots: Tensor,
    chunks: Vec<ChunkLayout>,
    /// Rows of the tokens whose logits are needed.
    pub logit_rows: Tensor,
    pub total_tokens: usize,
}

impl StepLayout {
    pub fn new(
        chunks: &[SequenceChunk<'_>],
        cache: &KvCache,
        kv_width: usize,
        device: &Device,
    ) -> Result<StepLayout> {
        let mut token_ids = Vec::new();
        let mut positions = Vec::new();
        let mut write_slots = Vec::new();
        let mut read_slots = Vec::new();
        let mut logit_rows = Vec::new();
        let mut layouts = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let len = chunk.tokens.len();
            let end = chunk.start + len;
            let layout = ChunkLayout {
                token_offset: token_ids.len(),
                len,
                context_offset: read_slots.len(),
                context_len: end,
                mask: causal_mask(chunk.start, len, device)?,
            };
            token_ids.extend_from_slice(chunk.tokens);
            for position in chunk.start..end {
                positions.push(position as u32);
                let slot = cache.slot(chunk.block_table, position);
                write_slots.extend(std::iter::repeat_n(slot, kv_width));
            }
            read_slots.extend((0..end).map(|position| cache.slot(chunk.block_table, position)));
            if chunk.wants_logits {
                logit_rows.push((layout.token_offset + len - 1) as u32);
            }
            layouts.push(layout);
        }
        let total_tokens = token_ids.len();
        Ok(StepLayout {
            token_ids: Tensor::from_vec(token_ids, total_tokens, device)?,
            positions: Tensor::from_vec(positions, total_tokens, device)?,
            write_slots: Tensor::from_vec(write_slots, (total_tokens, kv_width), device)?,
            read_slots: Tensor::from_slice(&read_slots, read_slots.len(), device)?,
            logit_rows: Tensor::from_slice(&logit_rows, logit_rows.len(), device)?,
            chunks: layouts,
            total_tokens,
        })
    }
}

/// Additive mask that hides from token i of a chunk starting at `start`
/// every position after `start + i`.
fn causal_mask(start: usize, len: usize, device: &Device) -> Result<Option<Tensor>> {
    if len <= 1 {
        return Ok(None);
    }
    let context = start + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..context).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, context), device).map(Some)
}

/// Attention of one layer for the whole step.
pub struct PagedAttention<'a> {
    pub layout: &'a StepLayout,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl PagedAttention<'_> {
    /// Writes the step's keys and values (`[tokens, kv_width]`) into the
    /// layer's cache, then returns the attention output `[tokens, kv_width]`
    /// for queries `[tokens, heads, head_dim]`.
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        cache: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let (key_cache, value_cache) = cache;
        key_cache.scatter_set(&self.layout.write_slots, &key.contiguous()?, 0)?;
        value_cache.scatter_set(&self.layout.write_slots, &value.contiguous()?, 0)?;
        let keys = key_cache.index_select(&self.layout.read_slots, 0)?;
        let values = value_cache.index_select(&self.layout.read_slots, 0)?;

        let outputs = self
            .layout
            .chunks
            .iter()
            .map(|chunk| self.attend(chunk, query, &keys, &values))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outputs, 0)
    }

    /// Attention of one chunk over its sequence's context, with the
    /// softmax in f32 because phi-2's scores overflow f16.
    fn attend(
        &self,
        chunk: &ChunkLayout,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<Tensor> {
        let heads_first = |rows: &Tensor, start: usize, len: usize| {
            rows.narrow(0, start, len)?
                .reshape((len, self.num_heads, self.head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        let query = heads_first(query, chunk.token_offset, chunk.len)?.to_dtype(DType::F32)?;
        let key = heads_first(keys, chunk.context_offset, chunk.context_len)?;
        let value = heads_first(values, chunk.context_offset, chunk.context_len)?;

        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (query.matmul(&key.to_dtype(DType::F32)?.t()?)? * scale)?;
        let scores = match &chunk.mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(value.dtype())?;
        weights
            .matmul(&value)?
            .transpose(0, 1)?
            .reshape((chunk.len, self.num_heads * self.head_dim))
    }
}

/// Applies rotary embeddings to the first `cos.dim(1) * 2` dimensions of
/// each head of `xs` (`[tokens, heads, head_dim]`), in the non-interleaved
/// layout phi uses; `cos` and `sin` are `[tokens, rotary_dim / 2]`.
pub fn apply_partial_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let rotary_dim = cos.dim(1)? * 2;
    let head_dim = xs.dim(D::Minus1)?;
    if rotary_dim == 0 {
        return Ok(xs.clone());
    }
    let rotated = xs
        .narrow(D::Minus1, 0, rotary_dim)?
        .contiguous()?
        .unsqueeze(0)?;
    let rotated = candle_nn::rotary_emb::rope_thd(&rotated, cos, sin)?.squeeze(0)?;
    if rotary_dim == head_dim {
        return Ok(rotated);
    }
    let passed = xs.narrow(D::Minus1, rotary_dim, head_dim - rotary_dim)?;
    Tensor::cat(&[&rotated, &passed], D::Minus1)
}
