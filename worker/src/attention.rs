//! Paged attention for a flat batch: the per-step index tensors that map
//! each token to its KV cache slot and list the slots each sequence reads,
//! and the attention over them.
//!
//! Decode tokens (chunks of one token) are attended together as one padded
//! batch, which keeps the number of tensor ops per layer independent of
//! the batch size. With an f32 cache in CPU memory, decode tokens take a
//! kernel that reads the cache in place instead (`crate::cpu`). Prefill
//! chunks of two or more tokens are attended one by one with a causal mask.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::cpu::{try_decode_attention, DecodeShape, DecodeSlots};
use crate::kv_cache::{BlockTable, KvCache};

/// One sequence's share of a step: a prefill chunk or one decode token.
pub struct SequenceChunk<'a> {
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`. The cache contains every position before it.
    pub start: usize,
    /// Must already cover `start + tokens.len()` positions.
    pub block_table: &'a BlockTable,
    /// Whether the logits of the chunk's last token are needed.
    pub wants_logits: bool,
}

/// The rows of one prefill chunk in the step's flat tensors.
struct PrefillLayout {
    /// First row of the chunk among the step's tokens.
    token_offset: usize,
    len: usize,
    /// First row of the sequence's context among `prefill_read_slots`.
    context_offset: usize,
    /// Positions the chunk attends to: everything cached plus the chunk.
    context_len: usize,
    /// Additive causal mask `[len, context_len]`.
    mask: Tensor,
}

/// The single-token chunks of a step, padded to the longest context.
struct DecodeBatch {
    /// Rows of the decode tokens among the step's tokens.
    rows: Tensor,
    /// `[count * max_context]` cache slots; padding repeats a valid slot.
    read_slots: Tensor,
    /// Additive mask `[count, 1, 1, max_context]` hiding the padding.
    mask: Tensor,
    count: usize,
    max_context: usize,
    /// `read_slots` in host memory, for the CPU kernel.
    slots: Vec<u32>,
    /// Context length of each decode sequence.
    contexts: Vec<usize>,
}

/// The index tensors of one step, built once and shared by every layer.
pub struct StepLayout {
    pub token_ids: Tensor,
    pub positions: Tensor,
    /// `[tokens, kv_width]`: each row repeats the token's cache slot, as
    /// `scatter_set` wants one index per written value.
    write_slots: Tensor,
    decode: Option<DecodeBatch>,
    prefill: Vec<PrefillLayout>,
    /// Slots of every prefill chunk's context, chunk after chunk.
    prefill_read_slots: Tensor,
    /// For each token, its row in the attention output (decode rows first,
    /// then prefill chunks); None when that is already the token order.
    restore_order: Option<Tensor>,
    /// Rows of the tokens whose logits are needed.
    pub logit_rows: Tensor,
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
        let mut logit_rows = Vec::new();
        let mut decodes = Vec::new();
        let mut prefill = Vec::new();
        let mut prefill_read_slots = Vec::new();
        for chunk in chunks {
            let token_offset = token_ids.len();
            let len = chunk.tokens.len();
            let end = chunk.start + len;
            token_ids.extend_from_slice(chunk.tokens);
            for position in chunk.start..end {
                positions.push(position as u32);
                let slot = cache.slot(chunk.block_table, position);
                write_slots.extend(std::iter::repeat_n(slot, kv_width));
            }
            if chunk.wants_logits {
                logit_rows.push((token_offset + len - 1) as u32);
            }
            if len == 1 {
                decodes.push((token_offset, chunk.block_table, end));
                continue;
            }
            prefill.push(PrefillLayout {
                token_offset,
                len,
                context_offset: prefill_read_slots.len(),
                context_len: end,
                mask: causal_mask(chunk.start, len, device)?,
            });
            prefill_read_slots
                .extend((0..end).map(|position| cache.slot(chunk.block_table, position)));
        }

        let total_tokens = token_ids.len();
        let mut output_rows: Vec<u32> = decodes.iter().map(|&(row, _, _)| row as u32).collect();
        for chunk in &prefill {
            output_rows
                .extend((chunk.token_offset..chunk.token_offset + chunk.len).map(|row| row as u32));
        }
        let restore_order = if output_rows
            .iter()
            .enumerate()
            .all(|(i, &row)| i == row as usize)
        {
            None
        } else {
            let mut restore = vec![0u32; total_tokens];
            for (output_row, &token_row) in output_rows.iter().enumerate() {
                restore[token_row as usize] = output_row as u32;
            }
            Some(Tensor::from_vec(restore, total_tokens, device)?)
        };
        Ok(StepLayout {
            token_ids: Tensor::from_vec(token_ids, total_tokens, device)?,
            positions: Tensor::from_vec(positions, total_tokens, device)?,
            write_slots: Tensor::from_vec(write_slots, (total_tokens, kv_width), device)?,
            decode: decode_batch(&decodes, cache, device)?,
            prefill,
            prefill_read_slots: Tensor::from_slice(
                &prefill_read_slots,
                prefill_read_slots.len(),
                device,
            )?,
            restore_order,
            logit_rows: Tensor::from_slice(&logit_rows, logit_rows.len(), device)?,
        })
    }
}

/// Builds the padded decode batch of `(token row, block table, context
/// length)` entries.
fn decode_batch(
    decodes: &[(usize, &BlockTable, usize)],
    cache: &KvCache,
    device: &Device,
) -> Result<Option<DecodeBatch>> {
    let Some(max_context) = decodes.iter().map(|&(_, _, context)| context).max() else {
        return Ok(None);
    };
    let count = decodes.len();
    let mut rows = Vec::with_capacity(count);
    let mut slots = Vec::with_capacity(count * max_context);
    let mut mask = Vec::with_capacity(count * max_context);
    for &(row, table, context) in decodes {
        rows.push(row as u32);
        slots.extend((0..context).map(|position| cache.slot(table, position)));
        slots.extend(std::iter::repeat_n(
            cache.slot(table, 0),
            max_context - context,
        ));
        mask.extend(std::iter::repeat_n(0.0f32, context));
        mask.extend(std::iter::repeat_n(
            f32::NEG_INFINITY,
            max_context - context,
        ));
    }
    Ok(Some(DecodeBatch {
        rows: Tensor::from_vec(rows, count, device)?,
        read_slots: Tensor::from_slice(&slots, count * max_context, device)?,
        mask: Tensor::from_vec(mask, (count, 1, 1, max_context), device)?,
        count,
        max_context,
        slots,
        contexts: decodes.iter().map(|&(_, _, context)| context).collect(),
    }))
}

/// Additive mask that hides from token i of a chunk starting at `start`
/// every position after `start + i`.
fn causal_mask(start: usize, len: usize, device: &Device) -> Result<Tensor> {
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
    Tensor::from_vec(mask, (len, context), device)
}

/// Attention of one layer for the whole step.
pub struct PagedAttention<'a> {
    pub layout: &'a StepLayout,
    pub num_heads: usize,
    /// Key and value heads; with grouped-query attention fewer than
    /// `num_heads`, and query head h reads KV head
    /// `h / (num_heads / num_kv_heads)`.
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl PagedAttention<'_> {
    /// Writes the step's keys and values (`[tokens, kv_heads * head_dim]`)
    /// into the layer's cache, then returns the attention output
    /// `[tokens, heads * head_dim]` for queries `[tokens, heads, head_dim]`.
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

        let mut outputs = Vec::with_capacity(self.layout.prefill.len() + 1);
        if let Some(decode) = &self.layout.decode {
            outputs.push(self.attend_decode(decode, query, cache)?);
        }
        if !self.layout.prefill.is_empty() {
            let keys = key_cache.index_select(&self.layout.prefill_read_slots, 0)?;
            let values = value_cache.index_select(&self.layout.prefill_read_slots, 0)?;
            for chunk in &self.layout.prefill {
                outputs.push(self.attend_prefill(chunk, query, &keys, &values)?);
            }
        }
        let output = Tensor::cat(&outputs, 0)?;
        match &self.layout.restore_order {
            Some(order) => output.index_select(order, 0),
            None => Ok(output),
        }
    }

    /// Scaled dot-product attention over `[batch, heads, rows, head_dim]`
    /// tensors, with the softmax in f32 because phi-2's scores overflow
    /// f16. Returns `[batch, heads, rows, head_dim]` in the value dtype.
    fn attend(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let query = query.to_dtype(DType::F32)?;
        let scores = (query.matmul(&key.to_dtype(DType::F32)?.t()?)? * scale)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)?;
        weights.to_dtype(value.dtype())?.matmul(value)
    }

    /// Query heads that share one KV head.
    fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Attention of every decode token at once: the CPU kernel when the
    /// cache allows it, else the tensor path.
    fn attend_decode(
        &self,
        decode: &DecodeBatch,
        query: &Tensor,
        cache: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let reads = DecodeSlots {
            slots: &decode.slots,
            stride: decode.max_context,
            contexts: &decode.contexts,
        };
        let shape = DecodeShape {
            heads: self.num_heads,
            kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
        };
        let queries = query.index_select(&decode.rows, 0)?;
        match try_decode_attention(&queries, cache, &reads, shape)? {
            Some(output) => Ok(output),
            None => self.attend_decode_tensors(decode, &queries, cache),
        }
    }

    /// Decode attention with tensor ops, for any device and dtype, over the
    /// decode tokens' queries `[count, heads, head_dim]`. The query heads of
    /// one KV head become that head's rows, so keys are never repeated.
    fn attend_decode_tensors(
        &self,
        decode: &DecodeBatch,
        queries: &Tensor,
        cache: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let (count, kv_heads, head_dim) = (decode.count, self.num_kv_heads, self.head_dim);
        let query = queries.reshape((count, kv_heads, self.group_size(), head_dim))?;
        let gather = |cache: &Tensor| {
            cache
                .index_select(&decode.read_slots, 0)?
                .reshape((count, decode.max_context, kv_heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (key, value) = (gather(&cache.0)?, gather(&cache.1)?);
        self.attend(&query, &key, &value, &decode.mask)?
            .reshape((count, self.num_heads * head_dim))
    }

    /// Attention of one prefill chunk over its context. As for decode, the
    /// query heads of one KV head are stacked as its rows, `[kv_heads,
    /// group * len, head_dim]`, and the causal mask is repeated per group.
    fn attend_prefill(
        &self,
        chunk: &PrefillLayout,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<Tensor> {
        let (kv_heads, head_dim, group) = (self.num_kv_heads, self.head_dim, self.group_size());
        let heads_first = |rows: &Tensor, start: usize, len: usize, heads: usize| {
            rows.narrow(0, start, len)?
                .reshape((len, heads, head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        let query = heads_first(query, chunk.token_offset, chunk.len, self.num_heads)?
            .reshape((kv_heads, group * chunk.len, head_dim))?;
        let key = heads_first(keys, chunk.context_offset, chunk.context_len, kv_heads)?;
        let value = heads_first(values, chunk.context_offset, chunk.context_len, kv_heads)?;
        let mask = match group {
            1 => chunk.mask.clone(),
            _ => Tensor::cat(&vec![&chunk.mask; group], 0)?,
        };
        self.attend(&query, &key, &value, &mask)?
            .reshape((self.num_heads, chunk.len, head_dim))?
            .transpose(0, 1)?
            .reshape((chunk.len, self.num_heads * head_dim))
    }
}

/// Fails when a chunk reaches past `context` positions, the end of the
/// model's rotary tables.
pub fn check_context(chunks: &[SequenceChunk<'_>], context: usize) -> Result<()> {
    for chunk in chunks {
        let end = chunk.start + chunk.tokens.len();
        if end > context {
            candle_core::bail!(
                "position {} is past the model's context of {context} positions",
                end - 1
            );
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::KvCapacity;

    #[test]
    fn cpu_kernel_matches_tensor_path() -> Result<()> {
        let device = Device::Cpu;
        let (heads, kv_heads, head_dim) = (8, 2, 16);
        let kv_width = kv_heads * head_dim;
        let capacity = KvCapacity::Tokens(256);
        let mut cache = KvCache::new(1, kv_width, 4, capacity, DType::F32, &device).unwrap();
        let (keys, values) = cache.layer(0);
        keys.slice_set(&Tensor::randn(0f32, 1.0, (256, kv_width), &device)?, 0, 0)?;
        values.slice_set(&Tensor::randn(0f32, 1.0, (256, kv_width), &device)?, 0, 0)?;

        // Uneven contexts, so the tensor path pads and masks.
        let contexts = [1, 7, 30];
        let mut tables = Vec::new();
        for context in contexts {
            let mut table = BlockTable::new();
            cache.grow(&mut table, context).unwrap();
            tables.push(table);
        }
        let chunks: Vec<SequenceChunk<'_>> = tables
            .iter()
            .zip(contexts)
            .map(|(table, context)| SequenceChunk {
                tokens: &[0],
                start: context - 1,
                block_table: table,
                wants_logits: true,
            })
            .collect();
        let layout = StepLayout::new(&chunks, &cache, kv_width, &device)?;
        let attention = PagedAttention {
            layout: &layout,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
        };
        let decode = layout.decode.as_ref().expect("three decode tokens");
        let query = Tensor::randn(0f32, 1.0, (contexts.len(), heads, head_dim), &device)?;

        let reads = DecodeSlots {
            slots: &decode.slots,
            stride: decode.max_context,
            contexts: &decode.contexts,
        };
        let shape = DecodeShape {
            heads,
            kv_heads,
            head_dim,
        };
        let kernel = try_decode_attention(&query, cache.layer(0), &reads, shape)?
            .expect("an f32 CPU cache takes the kernel");
        let tensors = attention.attend_decode_tensors(decode, &query, cache.layer(0))?;
        let difference = (kernel - tensors)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(difference < 1e-5, "largest difference {difference}");
        Ok(())
    }
}
