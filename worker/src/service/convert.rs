//! Conversions between the `wick.v1.Worker` messages and engine types.

use wick_proto::v1 as pb;

use crate::engine::{EngineError, FinishReason, SampledToken, SamplingParams, SequenceRequest};

/// Builds the engine's request from an `Admit` command. A missing
/// `sampling` means greedy, because every field of it is already resolved
/// by the scheduler and greedy is the only choice that needs no seed.
pub fn sequence_request(admit: pb::Admit) -> SequenceRequest {
    let sampling = match admit.sampling {
        Some(s) => SamplingParams {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            repetition_penalty: s.repetition_penalty,
            frequency_penalty: s.frequency_penalty,
            presence_penalty: s.presence_penalty,
            seed: s.seed,
        },
        None => SamplingParams::greedy(),
    };
    SequenceRequest {
        id: admit.sequence_id,
        prompt: admit.prompt_token_ids,
        generated: admit.generated_token_ids,
        sampling,
        max_new_tokens: admit.max_new_tokens,
        stop_token_ids: admit.stop_token_ids,
    }
}

pub fn sampled_token(token: &SampledToken) -> pb::SampledToken {
    let finish = match token.finish {
        None => pb::SequenceFinish::None,
        Some(FinishReason::Eos) => pb::SequenceFinish::Eos,
        Some(FinishReason::Length) => pb::SequenceFinish::Length,
        Some(FinishReason::Context) => pb::SequenceFinish::Context,
    };
    pb::SampledToken {
        sequence_id: token.sequence_id,
        token_id: token.token,
        finish: finish as i32,
    }
}

/// Turns a failed admit into the `Rejected` event the scheduler acts on:
/// no room means "queue it again", the rest are bugs in the admit.
pub fn rejected(sequence_id: u64, error: &EngineError) -> pb::Rejected {
    use pb::rejected::Reason;
    let reason = match error {
        EngineError::OutOfBlocks { .. } | EngineError::BatchFull { .. } => Reason::NoRoom,
        EngineError::ContextExceeded { .. } => Reason::TooLong,
        // A duplicate id, a token outside the vocabulary, an empty prompt:
        // the admit itself is malformed, and so is any future variant
        // until it is sorted here.
        _ => Reason::Invalid,
    };
    pb::Rejected {
        sequence_id,
        reason: reason as i32,
        message: error.to_string(),
    }
}
