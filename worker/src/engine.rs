//! The engine contract: the worker service drives a model only through this.
//!
//! CONTRACT (fixed; other crates code against it). The bodies are filled in
//! by the engine work; types and signatures stay as written here unless
//! every caller is updated in the same change.

use thiserror::Error;

/// Sampling parameters of one sequence, fully resolved (no defaults left).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1 or more disables nucleus sampling; 0 keeps only the top token.
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1 disables it. Values of 0 are treated as 1.
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// The draw for output position i depends only on this seed, i and the
    /// sequence's logits.
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding with no penalties.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0,
        }
    }
}

/// A sequence to add to the batch.
#[derive(Debug, Clone)]
pub struct SequenceRequest {
    /// Caller-chosen id, unique among live sequences.
    pub id: u64,
    /// Prompt tokens to prefill.
    pub prompt: Vec<u32>,
    /// Tokens generated before a preemption; prefilled after the prompt, and
    /// counted as output (positions, penalties, max_new_tokens).
    pub generated: Vec<u32>,
    pub sampling: SamplingParams,
    /// The engine finishes the sequence once this many output tokens exist.
    pub max_new_tokens: u32,
    /// Extra end-of-sequence ids on top of the model's.
    pub stop_token_ids: Vec<u32>,
}

/// Why a sequence ended inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    Length,
    /// The sequence reached the model's context length.
    Context,
}

/// One token sampled in a step.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub sequence_id: u64,
    pub token: u32,
    /// Set when the token ends the sequence; the engine has then released
    /// the sequence and its KV blocks.
    pub finish: Option<FinishReason>,
}

/// What one step did.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    pub tokens: Vec<SampledToken>,
    /// Sequences released because KV blocks ran out (youngest first); the
    /// caller queues them again.
    pub preempted: Vec<u64>,
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
}

/// Limits of one engine.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Tokens per KV block (default 16).
    pub block_size: usize,
    /// Size of the KV cache; the engine turns it into a block count.
    pub kv_capacity: KvCapacity,
    /// Most sequences in one step.
    pub max_batch_sequences: usize,
    /// Most tokens (prefill plus decode) in one step; longer prompts are fed
    /// in chunks.
    pub max_step_tokens: usize,
}

/// How much KV cache to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCapacity {
    /// Room for this many tokens in all, rounded up to whole blocks.
    Tokens(usize),
    /// At most this many bytes of keys and values in all layers.
    Bytes(u64),
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            block_size: 16,
            kv_capacity: KvCapacity::Tokens(16 * 1024),
            max_batch_sequences: 64,
            max_step_tokens: 512,
        }
    }
}

/// What the worker reports about its model (`Describe`).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    /// "phi" or "llama".
    pub family: String,
    pub tokenizer_json: String,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub chat_template: Option<String>,
    pub device: String,
    pub dtype: String,
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("sequence {0} is already in the batch")]
    DuplicateSequence(u64),
    #[error("sequence {id} needs {needed} KV blocks but {free} are free")]
    OutOfBlocks { id: u64, needed: usize, free: usize },
    #[error("the batch is full: {max} sequences")]
    BatchFull { max: usize },
    #[error("sequence {id}: {tokens} tokens exceed the context of {context} positions")]
    ContextExceeded {
        id: u64,
        tokens: usize,
        context: usize,
    },
    #[error("sequence {id}: token id {token} is outside the vocabulary of {vocab} tokens")]
    InvalidToken { id: u64, token: u32, vocab: usize },
    #[error("sequence {id}: the prompt is empty")]
    EmptyPrompt { id: u64 },
    #[error("forward pass failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One model, its paged KV cache and the live sequences.
pub struct Engine {
    _private: (),
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The built-in demo model: phi-2's architecture at a small size, with
    /// seeded random weights and the real phi-2 tokenizer.
    Demo,
    /// A folder in the Hugging Face layout.
    Dir(std::path::PathBuf),
    /// A single GGUF file.
    Gguf(std::path::PathBuf),
    /// A Hugging Face repo id such as `microsoft/phi-2`, found in the local
    /// cache or downloaded.
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

/// Device and dtype for loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// "cpu" or "cuda:N".
    pub device: String,
    /// "f32", "f16" or "bf16"; None picks bf16 on GPU and f32 on CPU.
    pub dtype: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: "cpu".to_string(),
            dtype: None,
        }
    }
}

impl Engine {
    /// Loads the model from `source` and allocates the KV cache. Errors name
    /// the file and the problem (see `LoadError`).
    pub fn load(
        source: &ModelSource,
        options: &LoadOptions,
        limits: EngineLimits,
    ) -> Result<Engine, crate::LoadError> {
        let _ = (source, options, limits);
        todo!("engine")
    }

    /// Adds a sequence. Fails, changing nothing, when the id is live, the
    /// prompt is empty, a token is outside the vocabulary, prompt plus
    /// max_new_tokens exceeds the context, the batch is full, or the free KV
    /// blocks cannot hold the prompt and generated tokens.
    pub fn admit(&mut self, request: SequenceRequest) -> Result<(), EngineError> {
        let _ = request;
        todo!("engine")
    }

    /// Removes a sequence and frees all its KV blocks at once. Returns false
    /// when the id is not live.
    pub fn release(&mut self, id: u64) -> bool {
        let _ = id;
        todo!("engine")
    }

    /// Runs one forward pass over the batch: the next prefill chunk of
    /// sequences still in prefill, one token for every decoding sequence.
    /// Samples a token for every sequence whose prompt is complete.
    /// Preempts the youngest sequences when KV blocks run out.
    pub fn step(&mut self) -> Result<StepOutput, EngineError> {
        todo!("engine")
    }

    /// True while any sequence is live.
    pub fn has_work(&self) -> bool {
        todo!("engine")
    }

    pub fn running_sequences(&self) -> usize {
        todo!("engine")
    }

    pub fn kv_blocks_free(&self) -> usize {
        todo!("engine")
    }

    pub fn kv_blocks_total(&self) -> usize {
        todo!("engine")
    }

    pub fn limits(&self) -> &EngineLimits {
        todo!("engine")
    }

    pub fn model_info(&self) -> &ModelInfo {
        todo!("engine")
    }
}
