//! The state of one live sequence inside the engine.

use crate::engine::{SamplingParams, SequenceRequest};
use crate::kv_cache::BlockTable;
use crate::sampling::PenaltyState;

pub(crate) struct Sequence {
    pub id: u64,
    /// The prompt, then every output token: those generated before a
    /// preemption and those sampled since admission.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Tokens known at admission (prompt plus earlier output). Feeding
    /// tokens below this index is prefill; feeding later ones is decode.
    pub prefill_len: usize,
    /// Tokens whose keys and values are in the KV cache. The tokens after
    /// it are fed in the coming steps; there is always at least one.
    pub computed: usize,
    pub block_table: BlockTable,
    pub sampling: SamplingParams,
    pub penalties: PenaltyState,
    pub max_new_tokens: usize,
    pub stop_token_ids: Vec<u32>,
}

impl Sequence {
    /// Starts a sequence whose prefill blocks are already in `block_table`.
    pub fn new(request: SequenceRequest, block_table: BlockTable) -> Sequence {
        let mut penalties = PenaltyState::new(&request.prompt);
        for &token in &request.generated {
            penalties.push_output(token);
        }
        let prompt_len = request.prompt.len();
        let mut tokens = request.prompt;
        tokens.extend_from_slice(&request.generated);
        Sequence {
            id: request.id,
            prefill_len: tokens.len(),
            tokens,
            prompt_len,
            computed: 0,
            block_table,
            sampling: request.sampling,
            penalties,
            max_new_tokens: request.max_new_tokens as usize,
            stop_token_ids: request.stop_token_ids,
        }
    }

    /// Tokens not yet fed through the model.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    pub fn is_decoding(&self) -> bool {
        self.computed >= self.prefill_len
    }

    pub fn output_len(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}
