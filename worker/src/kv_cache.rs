//! The paged KV cache: keys and values of all live sequences in fixed-size
//! blocks, a block table per sequence, and a free list.
//!
//! Storage is one preallocated tensor per layer for keys and one for values,
//! each of shape `[num_blocks * block_size, kv_width]`, where `kv_width` is
//! heads times head dimension. A token's row ("slot") is
//! `block * block_size + position % block_size`. A step writes the new
//! keys of all its tokens with one scatter per layer and reads a sequence's
//! context by gathering its slots, so no sequence is ever copied when
//! another joins or leaves.

use candle_core::{DType, Device, Tensor};

use crate::engine::KvCapacity;
use crate::LoadError;

/// Not enough free blocks for a request; nothing was allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBlocks {
    pub needed: usize,
    pub free: usize,
}

/// Block ids of one sequence, in position order.
pub type BlockTable = Vec<u32>;

pub struct KvCache {
    block_size: usize,
    total_blocks: usize,
    /// Free block ids; blocks are taken from and returned to the end.
    free: Vec<u32>,
    /// Keys and values per layer, `[total_blocks * block_size, kv_width]`.
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// Allocates the cache. `capacity` is in tokens (rounded up to whole
    /// blocks) or in bytes of keys and values over all layers (rounded down).
    ///
    /// Errors: `InvalidLimits` when the block size is 0 or the capacity
    /// holds no block; `Candle` when the allocation fails.
    pub fn new(
        num_layers: usize,
        kv_width: usize,
        block_size: usize,
        capacity: KvCapacity,
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache, LoadError> {
        if block_size == 0 {
            return Err(LoadError::InvalidLimits {
                reason: "block_size is 0 but must be at least 1".into(),
            });
        }
        let bytes_per_block = 2 * num_layers * kv_width * block_size * dtype.size_in_bytes();
        let total_blocks = match capacity {
            KvCapacity::Tokens(tokens) => tokens.div_ceil(block_size),
            KvCapacity::Bytes(bytes) => (bytes / bytes_per_block as u64) as usize,
        };
        if total_blocks == 0 || total_blocks > u32::MAX as usize {
            return Err(LoadError::InvalidLimits {
                reason: format!(
                    "KV capacity {capacity:?} gives {total_blocks} blocks of {block_size} tokens \
                     ({bytes_per_block} bytes each); it must give between 1 and {} blocks",
                    u32::MAX
                ),
            });
        }
        let slots = total_blocks * block_size;
        let mut layers = Vec::with_capacity(num_layers);
        for _ in 0..num_layers {
            let allocate = || Tensor::zeros((slots, kv_width), dtype, device);
            let pair = allocate().and_then(|keys| Ok((keys, allocate()?)));
            let pair = pair.map_err(|source| LoadError::Candle {
                context: format!("allocating a KV cache of {total_blocks} blocks"),
                source,
            })?;
            layers.push(pair);
        }
        // Reversed so that blocks are handed out from id 0 upwards.
        let free = (0..total_blocks as u32).rev().collect();
        Ok(KvCache {
            block_size,
            total_blocks,
            free,
            layers,
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn total_blocks(&self) -> usize {
        self.total_blocks
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks needed to hold `tokens` positions.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Extra blocks `table` needs to hold `tokens` positions.
    pub fn blocks_missing(&self, table: &BlockTable, tokens: usize) -> usize {
        self.blocks_for(tokens).saturating_sub(table.len())
    }

    /// Grows `table` to hold `tokens` positions. On failure nothing changes.
    pub fn grow(&mut self, table: &mut BlockTable, tokens: usize) -> Result<(), OutOfBlocks> {
        let needed = self.blocks_missing(table, tokens);
        if needed > self.free.len() {
            return Err(OutOfBlocks {
                needed,
                free: self.free.len(),
            });
        }
        let start = self.free.len() - needed;
        table.extend(self.free.drain(start..).rev());
        Ok(())
    }

    /// Returns every block of `table` to the free list and empties it.
    pub fn release(&mut self, table: &mut BlockTable) {
        debug_assert!(self.free.len() + table.len() <= self.total_blocks);
        self.free.extend(table.drain(..).rev());
    }

    /// Returns the slot of the token at `position` of a sequence with `table`.
    pub fn slot(&self, table: &BlockTable, position: usize) -> u32 {
        table[position / self.block_size] * self.block_size as u32
            + (position % self.block_size) as u32
    }

    /// Keys and values of layer `layer`.
    pub fn layer(&self, layer: usize) -> &(Tensor, Tensor) {
        &self.layers[layer]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(blocks: usize) -> KvCache {
        KvCache::new(
            1,
            4,
            16,
            KvCapacity::Tokens(blocks * 16),
            DType::F32,
            &Device::Cpu,
        )
        .expect("a small cache allocates")
    }

    #[test]
    fn capacity_in_tokens_rounds_up() {
        let cache = KvCache::new(2, 8, 16, KvCapacity::Tokens(17), DType::F32, &Device::Cpu)
            .expect("allocates");
        assert_eq!(cache.total_blocks(), 2);
    }

    #[test]
    fn capacity_in_bytes_rounds_down() {
        // 2 layers x (keys + values) x 8 values x 16 tokens x 4 bytes.
        let block_bytes = 2 * 2 * 8 * 16 * 4;
        let capacity = KvCapacity::Bytes(3 * block_bytes + 5);
        let cache = KvCache::new(2, 8, 16, capacity, DType::F32, &Device::Cpu).expect("allocates");
        assert_eq!(cache.total_blocks(), 3);
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let result = KvCache::new(2, 8, 16, KvCapacity::Bytes(10), DType::F32, &Device::Cpu);
        assert!(matches!(result, Err(LoadError::InvalidLimits { .. })));
        let result = KvCache::new(2, 8, 0, KvCapacity::Tokens(10), DType::F32, &Device::Cpu);
        assert!(matches!(result, Err(LoadError::InvalidLimits { .. })));
    }

    #[test]
    fn grow_and_release_return_every_block() {
        let mut cache = cache(4);
        let mut first = BlockTable::new();
        let mut second = BlockTable::new();
        cache.grow(&mut first, 17).expect("two blocks fit");
        cache.grow(&mut second, 16).expect("one block fits");
        assert_eq!(cache.free_blocks(), 1);
        assert_eq!(first, vec![0, 1]);
        assert_eq!(second, vec![2]);
        cache.release(&mut first);
        cache.release(&mut second);
        assert!(first.is_empty());
        assert_eq!(cache.free_blocks(), 4);
    }

    #[test]
    fn out_of_blocks_changes_nothing() {
        let mut cache = cache(2);
        let mut table = BlockTable::new();
        cache.grow(&mut table, 16).expect("one block fits");
        let error = cache
            .grow(&mut table, 49)
            .expect_err("four blocks do not fit");
        assert_eq!(error, OutOfBlocks { needed: 3, free: 1 });
        assert_eq!(table.len(), 1);
        assert_eq!(cache.free_blocks(), 1);
    }

    #[test]
    fn slot_follows_block_table() {
        let cache = cache(4);
        let table: BlockTable = vec![3, 1];
        assert_eq!(cache.slot(&table, 0), 48);
        assert_eq!(cache.slot(&table, 15), 63);
        assert_eq!(cache.slot(&table, 16), 16);
    }
}
