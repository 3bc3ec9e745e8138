//! CPU fast paths that read tensor memory in place: decode attention
//! straight from the paged KV cache, and the logits rows for sampling.
//!
//! For decode attention, the tensor path gathers every sequence's keys and
//! values into a padded batch, transposes them to heads first and runs two
//! batched matrix products. On the CPU, for one-token queries, those copies cost far more
//! than the arithmetic: at 32 sequences of 130 positions, most of a layer's
//! attention time. This kernel walks each sequence's cache slots in place
//! and splits the sequences over rayon's pool. It serves f32 caches on the
//! CPU; other devices and dtypes keep the tensor path.

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::iter::{IndexedParallelIterator, ParallelIterator};
use rayon::slice::ParallelSliceMut;

/// Minimum sequences per parallel task.
const MIN_SEQUENCES_PER_TASK: usize = 4;

/// Shapes of one decode attention call.
#[derive(Debug, Clone, Copy)]
pub struct DecodeShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The cache slots each decode sequence reads.
pub struct DecodeSlots<'a> {
    /// `count * stride` slots; sequence `i` reads the first `contexts[i]`
    /// of `slots[i * stride..]`.
    pub slots: &'a [u32],
    pub stride: usize,
    pub contexts: &'a [usize],
}

/// Returns the attention output `[count, heads * head_dim]` for queries
/// `[count, heads, head_dim]`, or `None` when the caches are not f32
/// tensors in CPU memory, for the caller to take the tensor path.
pub fn try_decode_attention(
    query: &Tensor,
    cache: &(Tensor, Tensor),
    reads: &DecodeSlots<'_>,
    shape: DecodeShape,
) -> Result<Option<Tensor>> {
    let on_cpu_f32 = |tensor: &Tensor| tensor.device().is_cpu() && tensor.dtype() == DType::F32;
    if !on_cpu_f32(&cache.0) || !on_cpu_f32(&cache.1) {
        return Ok(None);
    }
    let query = query
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let output = with_f32_slice(&cache.0, |keys| {
        with_f32_slice(&cache.1, |values| {
            decode_attention(&query, keys, values, reads, shape)
        })
    })?
    .transpose()?
    .flatten();
    let Some(output) = output else {
        return Ok(None);
    };
    let count = reads.contexts.len();
    Tensor::from_vec(output, (count, shape.heads * shape.head_dim), &Device::Cpu).map(Some)
}

/// Calls `f` with the elements of `tensor` when it is a contiguous f32
/// tensor in CPU memory, without copying them; returns `None` otherwise.
pub fn with_f32_slice<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    if !tensor.device().is_cpu() || tensor.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, layout) = tensor.storage_and_layout();
    let (Storage::Cpu(storage), Some((start, end))) = (&*storage, layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    Ok(Some(f(&storage.as_slice::<f32>()?[start..end])))
}

/// Softmax attention of each sequence's query heads over its cached keys
/// and values, `[slots, kv_heads * head_dim]` each. Query head `h` reads KV
/// head `h / (heads / kv_heads)`. Scores and weights are f32, as in the
/// tensor path.
fn decode_attention(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    reads: &DecodeSlots<'_>,
    shape: DecodeShape,
) -> Vec<f32> {
    let DecodeShape {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let kv_width = kv_heads * head_dim;
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let row_width = heads * head_dim;
    let mut output = vec![0.0f32; reads.contexts.len() * row_width];
    output
        .par_chunks_mut(row_width)
        .with_min_len(MIN_SEQUENCES_PER_TASK)
        .enumerate()
        .for_each(|(sequence, out)| {
            let start = sequence * reads.stride;
            let slots = &reads.slots[start..start + reads.contexts[sequence]];
            let mut weights = vec![0.0f32; slots.len()];
            for head in 0..heads {
                let column = (head / group) * head_dim;
                let offset = (sequence * heads + head) * head_dim;
                let q = &query[offset..offset + head_dim];
                let mut max = f32::NEG_INFINITY;
                for (weight, &slot) in weights.iter_mut().zip(slots) {
                    let row = slot as usize * kv_width + column;
                    *weight = dot(q, &keys[row..row + head_dim]) * scale;
                    max = max.max(*weight);
                }
                let mut total = 0.0f32;
                for weight in weights.iter_mut() {
                    *weight = (*weight - max).exp();
                    total += *weight;
                }
                let out = &mut out[head * head_dim..(head + 1) * head_dim];
                for (&weight, &slot) in weights.iter().zip(slots) {
                    let row = slot as usize * kv_width + column;
                    let weight = weight / total;
                    for (o, &v) in out.iter_mut().zip(&values[row..row + head_dim]) {
                        *o += weight * v;
                    }
                }
            }
        });
    output
}

/// Returns the dot product, summed in eight interleaved partial sums so
/// that the loop vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = a.chunks_exact(8).zip(b.chunks_exact(8));
    let tail: f32 = a[a.len() / 8 * 8..]
        .iter()
        .zip(&b[b.len() / 8 * 8..])
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
