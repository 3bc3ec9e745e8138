//! The engine contract: the worker service drives a model only through this.
//!
//! CONTRACT (fixed; other crates code against it): types and signatures
//! stay as written here unless every caller is updated in the same change.
//! The step itself lives in `step`, the model in `phi`, loading in
//! `loading`.

use thiserror::Error;
use tracing::{debug, info};

use crate::kv_cache::{BlockTable, KvCache};
use crate::model::CausalLm;
use crate::sequence::Sequence;

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

/// The reason a sequence ended inside the engine.
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

/// The outcome of one step.
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
    /// Maximum sequences in one step.
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

/// The model description the worker reports in `Describe`.
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
    #[error(
        "sequence {id}: max_new_tokens {max_new_tokens} leaves nothing to generate after \
         {generated} generated tokens; it must be larger"
    )]
    NothingToGenerate {
        id: u64,
        max_new_tokens: u32,
        generated: usize,
    },
    #[error("forward pass failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One model, its paged KV cache and the live sequences.
pub struct Engine {
    pub(crate) model: Box<dyn CausalLm>,
    pub(crate) info: ModelInfo,
    pub(crate) limits: EngineLimits,
    pub(crate) cache: KvCache,
    /// Live sequences in admission order, so the last is the youngest.
    pub(crate) sequences: Vec<Sequence>,
}

/// The source a model is loaded from.
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
        let (model, info) = crate::loading::load_model(source, options)?;
        Engine::new(model, info, limits)
    }

    /// Wraps a loaded model and allocates its KV cache.
    ///
    /// Errors: `InvalidLimits` for a zero limit or a KV capacity below one
    /// block; `Candle` when the cache cannot be allocated.
    pub fn new(
        model: Box<dyn CausalLm>,
        info: ModelInfo,
        limits: EngineLimits,
    ) -> Result<Engine, crate::LoadError> {
        for (name, value) in [
            ("max_batch_sequences", limits.max_batch_sequences),
            ("max_step_tokens", limits.max_step_tokens),
        ] {
            if value == 0 {
                return Err(crate::LoadError::InvalidLimits {
                    reason: format!("{name} is 0 but must be at least 1"),
                });
            }
        }
        let cache = KvCache::new(
            model.num_layers(),
            model.kv_width(),
            limits.block_size,
            limits.kv_capacity,
            model.dtype(),
            model.device(),
        )?;
        info!(
            model = %info.id,
            kv_blocks = cache.total_blocks(),
            block_size = limits.block_size,
            max_batch_sequences = limits.max_batch_sequences,
            max_step_tokens = limits.max_step_tokens,
            "engine ready"
        );
        Ok(Engine {
            model,
            info,
            limits,
            cache,
            sequences: Vec::new(),
        })
    }

    /// Adds a sequence and reserves KV blocks for its prompt and generated
    /// tokens. On failure nothing changes. It fails when the id is live, the
    /// prompt is empty, or a token is outside the vocabulary. It also fails
    /// when nothing is left to generate, when prompt plus max_new_tokens
    /// exceeds the context, when the batch is full, or when the free KV
    /// blocks cannot hold the prompt and generated tokens.
    pub fn admit(&mut self, request: SequenceRequest) -> Result<(), EngineError> {
        self.check_request(&request)?;
        let mut block_table = BlockTable::new();
        let known_tokens = request.prompt.len() + request.generated.len();
        self.cache
            .grow(&mut block_table, known_tokens)
            .map_err(|error| EngineError::OutOfBlocks {
                id: request.id,
                needed: error.needed,
                free: error.free,
            })?;
        debug!(
            sequence_id = request.id,
            prompt_tokens = request.prompt.len(),
            generated_tokens = request.generated.len(),
            kv_blocks_free = self.cache.free_blocks(),
            "admitted"
        );
        self.sequences.push(Sequence::new(request, block_table));
        Ok(())
    }

    fn check_request(&self, request: &SequenceRequest) -> Result<(), EngineError> {
        let id = request.id;
        if self.sequences.iter().any(|sequence| sequence.id == id) {
            return Err(EngineError::DuplicateSequence(id));
        }
        if request.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt { id });
        }

        let vocab = self.model.vocab_size();
        let all_tokens = request.prompt.iter().chain(&request.generated);
        if let Some(&token) = all_tokens
            .into_iter()
            .find(|&&token| token as usize >= vocab)
        {
            return Err(EngineError::InvalidToken { id, token, vocab });
        }

        let max_new_tokens = request.max_new_tokens as usize;
        if request.generated.len() >= max_new_tokens {
            return Err(EngineError::NothingToGenerate {
                id,
                max_new_tokens: request.max_new_tokens,
                generated: request.generated.len(),
            });
        }
        let tokens = request.prompt.len() + max_new_tokens;
        if tokens > self.info.context_length {
            return Err(EngineError::ContextExceeded {
                id,
                tokens,
                context: self.info.context_length,
            });
        }

        if self.sequences.len() >= self.limits.max_batch_sequences {
            return Err(EngineError::BatchFull {
                max: self.limits.max_batch_sequences,
            });
        }
        Ok(())
    }

    /// Removes a sequence and frees all its KV blocks at once. Returns false
    /// when the id is not live.
    pub fn release(&mut self, id: u64) -> bool {
        let Some(index) = self.sequences.iter().position(|sequence| sequence.id == id) else {
            return false;
        };
        let mut sequence = self.sequences.remove(index);
        self.cache.release(&mut sequence.block_table);
        debug!(
            sequence_id = id,
            kv_blocks_free = self.cache.free_blocks(),
            "released"
        );
        true
    }

    /// Runs one forward pass over the batch: the next prefill chunk of
    /// sequences still in prefill, one token for every decoding sequence.
    /// Samples a token for every sequence whose prompt is complete.
    /// Preempts the youngest sequences when KV blocks run out.
    pub fn step(&mut self) -> Result<StepOutput, EngineError> {
        self.run_step()
    }

    /// True while any sequence is live.
    pub fn has_work(&self) -> bool {
        !self.sequences.is_empty()
    }

    pub fn running_sequences(&self) -> usize {
        self.sequences.len()
    }

    pub fn kv_blocks_free(&self) -> usize {
        self.cache.free_blocks()
    }

    pub fn kv_blocks_total(&self) -> usize {
        self.cache.total_blocks()
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    /// Returns the model, e.g. to compare its logits with a reference.
    pub fn model(&self) -> &dyn CausalLm {
        self.model.as_ref()
    }

    /// Drops the KV cache and the live sequences and returns the model,
    /// e.g. to build an engine with other limits.
    pub fn into_model(self) -> Box<dyn CausalLm> {
        self.model
    }
}
