//! The engine as the worker service drives it: admission checks, chunked
//! prefill, finishing, release, KV block accounting and preemption, with
//! greedy output checked against candle's reference model.

mod common;

use std::collections::HashMap;

use common::*;
use wick_worker::{
    EngineError, EngineLimits, FinishReason, KvCapacity, SamplingParams, SequenceRequest,
};

fn request(id: u64, prompt: Vec<u32>, max_new_tokens: u32) -> SequenceRequest {
    SequenceRequest {
        id,
        prompt,
        generated: vec![],
        sampling: SamplingParams::greedy(),
        max_new_tokens,
        stop_token_ids: vec![],
    }
}

fn limits(blocks: usize, max_step_tokens: usize) -> EngineLimits {
    EngineLimits {
        block_size: 4,
        kv_capacity: KvCapacity::Tokens(blocks * 4),
        max_batch_sequences: 4,
        max_step_tokens,
    }
}

/// What a run produced: tokens and finish reason per sequence id, and the
/// preempted ids.
struct RunOutput {
    outputs: HashMap<u64, Vec<u32>>,
    finishes: HashMap<u64, FinishReason>,
    preempted: Vec<u64>,
    /// Most tokens (prefill plus decode) fed in one step.
    max_step_tokens: usize,
}

/// Steps until no sequence is live, at most `max_steps` times.
fn run(engine: &mut wick_worker::Engine, max_steps: usize) -> RunOutput {
    let mut outputs: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut finishes = HashMap::new();
    let mut preempted = Vec::new();
    let mut max_step_tokens = 0;
    for _ in 0..max_steps {
        if !engine.has_work() {
            break;
        }
        let step = engine.step().expect("step runs");
        max_step_tokens = max_step_tokens.max(step.prefill_tokens + step.decode_tokens);
        for sampled in step.tokens {
            outputs
                .entry(sampled.sequence_id)
                .or_default()
                .push(sampled.token);
            if let Some(reason) = sampled.finish {
                finishes.insert(sampled.sequence_id, reason);
            }
        }
        preempted.extend(step.preempted);
    }
    assert!(!engine.has_work(), "the run ends within {max_steps} steps");
    RunOutput {
        outputs,
        finishes,
        preempted,
        max_step_tokens,
    }
}

#[test]
fn greedy_matches_reference_with_chunked_prefill() {
    let dir = TempDir::new("engine-greedy");
    let config = small_config(64, 4, 2, 0.4, false);
    write_model(dir.path(), &config, 5);
    let mut reference = load_reference_model(dir.path());
    let mut engine = engine_over(dir.path(), limits(64, 8));

    let prompts = [tokens(1, 19, 384), tokens(2, 3, 384), tokens(3, 11, 384)];
    engine
        .admit(request(0, prompts[0].clone(), 6))
        .expect("admits");
    engine
        .admit(request(1, prompts[1].clone(), 4))
        .expect("admits");
    let first = engine.step().expect("step runs");
    assert_eq!(first.prefill_tokens, 8, "the step budget caps the prefill");
    // A sequence joining mid-run.
    engine
        .admit(request(2, prompts[2].clone(), 5))
        .expect("admits");
    let RunOutput {
        mut outputs,
        finishes,
        preempted,
        ..
    } = run(&mut engine, 100);
    for token in first.tokens {
        outputs
            .get_mut(&token.sequence_id)
            .expect("sampled later too")
            .insert(0, token.token);
    }

    assert!(preempted.is_empty());
    for (id, prompt) in prompts.iter().enumerate() {
        let output = &outputs[&(id as u64)];
        let expected = reference_greedy(&mut reference, prompt, output.len());
        assert_eq!(output, &expected, "sequence {id}");
        assert_eq!(
            finishes[&(id as u64)],
            FinishReason::Length,
            "sequence {id}"
        );
    }
    assert_eq!(outputs[&0].len(), 6);
    assert_eq!(engine.kv_blocks_free(), engine.kv_blocks_total());
}

#[test]
fn stop_token_finishes_with_eos() {
    let dir = TempDir::new("engine-stop");
    let config = small_config(32, 2, 1, 0.5, false);
    write_model(dir.path(), &config, 9);
    let mut reference = load_reference_model(dir.path());
    let prompt = tokens(4, 5, 384);
    let expected = reference_greedy(&mut reference, &prompt, 3);

    let mut engine = engine_over(dir.path(), limits(16, 16));
    let mut stopping = request(7, prompt, 10);
    stopping.stop_token_ids = vec![expected[2]];
    engine.admit(stopping).expect("admits");
    let RunOutput {
        outputs, finishes, ..
    } = run(&mut engine, 20);
    let output = &outputs[&7];
    let stop_at = expected
        .iter()
        .position(|&t| t == expected[2])
        .expect("present")
        + 1;
    assert_eq!(output, &expected[..stop_at]);
    assert_eq!(finishes[&7], FinishReason::Eos);
    assert_eq!(engine.kv_blocks_free(), engine.kv_blocks_total());
}

#[test]
fn admit_rejects_bad_requests_unchanged() {
    let dir = TempDir::new("engine-admit");
    let config = small_config(32, 2, 1, 0.5, false);
    write_model(dir.path(), &config, 3);
    let mut engine = engine_over(dir.path(), limits(8, 16));
    engine.admit(request(1, vec![1, 2, 3], 4)).expect("admits");
    let free = engine.kv_blocks_free();

    let duplicate = engine.admit(request(1, vec![1], 4));
    assert!(matches!(duplicate, Err(EngineError::DuplicateSequence(1))));
    let empty = engine.admit(request(2, vec![], 4));
    assert!(matches!(empty, Err(EngineError::EmptyPrompt { id: 2 })));
    let invalid = engine.admit(request(3, vec![1, 384], 4));
    assert!(matches!(
        invalid,
        Err(EngineError::InvalidToken {
            id: 3,
            token: 384,
            vocab: 384
        })
    ));
    let nothing = engine.admit(request(4, vec![1], 0));
    assert!(matches!(
        nothing,
        Err(EngineError::NothingToGenerate { id: 4, .. })
    ));
    let too_long = engine.admit(request(5, vec![1; 200], 57));
    assert!(matches!(
        too_long,
        Err(EngineError::ContextExceeded {
            id: 5,
            tokens: 257,
            context: 256
        })
    ));
    let no_blocks = engine.admit(request(6, vec![1; 40], 4));
    assert!(matches!(
        no_blocks,
        Err(EngineError::OutOfBlocks {
            id: 6,
            needed: 10,
            free: 7
        })
    ));

    assert_eq!(engine.running_sequences(), 1);
    assert_eq!(engine.kv_blocks_free(), free);
    for id in 10..13 {
        engine.admit(request(id, vec![1], 4)).expect("admits");
    }
    let full = engine.admit(request(13, vec![1], 4));
    assert!(matches!(full, Err(EngineError::BatchFull { max: 4 })));
}

#[test]
fn release_returns_every_block() {
    let dir = TempDir::new("engine-release");
    let config = small_config(32, 2, 1, 0.5, false);
    write_model(dir.path(), &config, 4);
    let mut engine = engine_over(dir.path(), limits(32, 16));
    assert!(engine.step().expect("an empty step runs").tokens.is_empty());
    for id in 0..3 {
        engine
            .admit(request(id, tokens(id, 9, 384), 20))
            .expect("admits");
    }
    for _ in 0..4 {
        engine.step().expect("step runs");
    }
    assert!(engine.kv_blocks_free() < engine.kv_blocks_total());
    for id in 0..3 {
        assert!(engine.release(id), "sequence {id} is live");
    }
    assert!(!engine.release(0), "a released id is no longer live");
    assert!(!engine.has_work());
    assert_eq!(engine.kv_blocks_free(), engine.kv_blocks_total());
}

#[test]
fn preempted_sequence_recomputes_same_tokens() {
    let dir = TempDir::new("engine-preempt");
    let config = small_config(32, 2, 2, 0.5, false);
    write_model(dir.path(), &config, 8);
    let mut reference = load_reference_model(dir.path());
    // 6 blocks of 4 tokens; two sequences growing to 17 tokens each need 10.
    let mut engine = engine_over(dir.path(), limits(6, 32));
    let prompts = [tokens(20, 8, 384), tokens(21, 8, 384)];
    engine
        .admit(request(0, prompts[0].clone(), 9))
        .expect("admits");
    engine
        .admit(request(1, prompts[1].clone(), 9))
        .expect("admits");

    let RunOutput {
        outputs, preempted, ..
    } = run(&mut engine, 50);
    assert_eq!(preempted, vec![1], "the youngest sequence is preempted");
    let partial = outputs.get(&1).cloned().unwrap_or_default();
    assert!(partial.len() < 9);

    // The caller queues it again with what it had generated.
    let mut again = request(1, prompts[1].clone(), 9);
    again.generated = partial.clone();
    engine.admit(again).expect("re-admits");
    let RunOutput {
        outputs: rest,
        finishes,
        ..
    } = run(&mut engine, 50);
    let mut output = partial;
    output.extend(&rest[&1]);

    assert_eq!(
        outputs[&0],
        reference_greedy(&mut reference, &prompts[0], 9)
    );
    assert_eq!(output, reference_greedy(&mut reference, &prompts[1], 9));
    assert_eq!(finishes[&1], FinishReason::Length);
    assert_eq!(engine.kv_blocks_free(), engine.kv_blocks_total());
}

#[test]
fn step_budget_caps_decodes() {
    let dir = TempDir::new("engine-budget");
    let config = small_config(32, 2, 1, 0.5, false);
    write_model(dir.path(), &config, 12);
    let mut reference = load_reference_model(dir.path());
    let mut engine = engine_over(dir.path(), limits(32, 2));
    let prompts = [tokens(30, 2, 384), tokens(31, 1, 384), tokens(32, 3, 384)];
    for (id, prompt) in prompts.iter().enumerate() {
        engine
            .admit(request(id as u64, prompt.clone(), 3))
            .expect("admits");
    }

    let RunOutput {
        outputs,
        max_step_tokens,
        ..
    } = run(&mut engine, 50);
    assert_eq!(max_step_tokens, 2, "steps stay within max_step_tokens");
    for (id, prompt) in prompts.iter().enumerate() {
        let expected = reference_greedy(&mut reference, prompt, 3);
        assert_eq!(outputs[&(id as u64)], expected, "sequence {id}");
    }
}
