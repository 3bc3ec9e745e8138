//! One engine step: choose the tokens of the step, make room in the KV
//! cache (preempting when blocks run out), run the forward pass, sample,
//! and finish sequences.

use std::cell::RefCell;

use rayon::iter::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
use tracing::{debug, trace};

use crate::attention::SequenceChunk;
use crate::cpu::with_f32_slice;
use crate::engine::{Engine, EngineError, FinishReason, SampledToken, StepOutput};
use crate::sampling::sample;
use crate::sequence::Sequence;

/// Minimum rows per parallel sampling task, because a task costs
/// more than a row or two saves.
const MIN_ROWS_PER_TASK: usize = 4;

thread_local! {
    /// A logits row being sampled, which the sampler modifies in place; one
    /// per thread, reused, so no step allocates a row.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Samples one token for each `(sequence index, logits row)` job and
/// returns `(sequence index, token)` in job order.
///
/// Each draw depends only on its own row and sequence, so rows are split
/// over the cores: with a 51200-token vocabulary, sampling costs about as
/// much per sequence as a small model's forward pass. The tasks run on
/// rayon's global pool, which candle's CPU kernels also use, so sampling
/// adds no threads of its own to compete with them for the cores.
fn sample_rows(sequences: &[Sequence], jobs: Vec<(usize, &[f32])>) -> Vec<(usize, u32)> {
    jobs.into_par_iter()
        .with_min_len(MIN_ROWS_PER_TASK)
        .map(|(index, logits)| {
            let sequence = &sequences[index];
            let token = ROW.with_borrow_mut(|row| {
                row.clear();
                row.extend_from_slice(logits);
                sample(
                    row,
                    &sequence.sampling,
                    &sequence.penalties,
                    sequence.output_len(),
                )
            });
            (index, token)
        })
        .collect()
}

/// Tokens one sequence feeds this step.
struct Work {
    /// Index into `Engine::sequences`.
    index: usize,
    len: usize,
}

impl Engine {
    pub(crate) fn run_step(&mut self) -> Result<StepOutput, EngineError> {
        let mut output = StepOutput::default();
        // Each pass either finds a plan whose blocks fit or preempts one
        // sequence, so the loop ends within `sequences.len() + 1` passes.
        let plan = loop {
            if self.sequences.is_empty() {
                return Ok(output);
            }
            let plan = self.plan();
            let needed: usize = plan.iter().map(|work| self.blocks_needed(work)).sum();
            if !plan.is_empty() && needed <= self.cache.free_blocks() {
                break plan;
            }
            self.preempt_youngest(&mut output, needed);
        };

        for work in &plan {
            let sequence = &mut self.sequences[work.index];
            let end = sequence.computed + work.len;
            self.cache
                .grow(&mut sequence.block_table, end)
                .expect("the plan was checked against the free blocks");
            if sequence.is_decoding() {
                output.decode_tokens += work.len;
            } else {
                output.prefill_tokens += work.len;
            }
        }

        let logits = self.forward(&plan)?;
        let mut sampling = Vec::new();
        for work in &plan {
            let sequence = &mut self.sequences[work.index];
            sequence.computed += work.len;
            if sequence.pending() == 0 {
                sampling.push(work.index);
            }
        }
        let vocab = self.model.vocab_size();
        let sample_all = |logits: &[f32]| {
            debug_assert_eq!(logits.len(), sampling.len() * vocab, "one row per sampler");
            let jobs = sampling.iter().copied().zip(logits.chunks(vocab)).collect();
            sample_rows(&self.sequences, jobs)
        };
        // On the CPU the rows are read in place; elsewhere they are copied
        // to host memory first.
        let tokens = match with_f32_slice(&logits, sample_all)? {
            Some(tokens) => tokens,
            None => sample_all(&logits.flatten_all()?.to_vec1::<f32>()?),
        };
        for (index, token) in tokens {
            output.tokens.push(self.push_token(index, token));
        }
        self.release_finished(&output.tokens);
        trace!(
            prefill_tokens = output.prefill_tokens,
            decode_tokens = output.decode_tokens,
            sampled = output.tokens.len(),
            "step done"
        );
        Ok(output)
    }

    /// Decode tokens first, oldest sequence first, then prefill chunks in
    /// admission order, within `max_step_tokens`. Decodes go first so that
    /// a long prompt never stalls the sequences already streaming.
    fn plan(&self) -> Vec<Work> {
        let mut budget = self.limits.max_step_tokens;
        let mut plan = Vec::new();
        for decoding in [true, false] {
            for (index, sequence) in self.sequences.iter().enumerate() {
                if budget == 0 {
                    return plan;
                }
                if sequence.is_decoding() != decoding {
                    continue;
                }
                let len = sequence.pending().min(budget);
                budget -= len;
                plan.push(Work { index, len });
            }
        }
        plan
    }

    fn blocks_needed(&self, work: &Work) -> usize {
        let sequence = &self.sequences[work.index];
        self.cache
            .blocks_missing(&sequence.block_table, sequence.computed + work.len)
    }

    /// Releases the most recently admitted sequence, which has the least
    /// work to lose, so the caller can queue it again.
    fn preempt_youngest(&mut self, output: &mut StepOutput, blocks_needed: usize) {
        let Some(mut sequence) = self.sequences.pop() else {
            return;
        };
        self.cache.release(&mut sequence.block_table);
        debug!(
            sequence_id = sequence.id,
            blocks_needed,
            blocks_free = self.cache.free_blocks(),
            "preempted: out of KV blocks"
        );
        output.preempted.push(sequence.id);
    }

    fn forward(&self, plan: &[Work]) -> Result<candle_core::Tensor, EngineError> {
        let chunks: Vec<SequenceChunk<'_>> = plan
            .iter()
            .map(|work| {
                let sequence = &self.sequences[work.index];
                let start = sequence.computed;
                SequenceChunk {
                    tokens: &sequence.tokens[start..start + work.len],
                    start,
                    block_table: &sequence.block_table,
                    wants_logits: start + work.len == sequence.tokens.len(),
                }
            })
            .collect();
        Ok(self.model.forward(&chunks, &self.cache)?)
    }

    /// Appends the sampled `token` to sequence `index` and decides whether
    /// it ends the sequence.
    fn push_token(&mut self, index: usize, token: u32) -> SampledToken {
        let context = self.info.context_length;
        let sequence: &mut Sequence = &mut self.sequences[index];
        sequence.tokens.push(token);
        sequence.penalties.push_output(token);

        let finish = if self.info.eos_token_ids.contains(&token)
            || sequence.stop_token_ids.contains(&token)
        {
            Some(FinishReason::Eos)
        } else if sequence.output_len() >= sequence.max_new_tokens {
            Some(FinishReason::Length)
        } else if sequence.tokens.len() >= context {
            // The new token would sit at position `context`, past the end.
            Some(FinishReason::Context)
        } else {
            None
        };
        SampledToken {
            sequence_id: sequence.id,
            token,
            finish,
        }
    }

    fn release_finished(&mut self, tokens: &[SampledToken]) {
        for sampled in tokens {
            if let Some(reason) = sampled.finish {
                debug!(sequence_id = sampled.sequence_id, ?reason, "finished");
                self.release(sampled.sequence_id);
            }
        }
    }
}
