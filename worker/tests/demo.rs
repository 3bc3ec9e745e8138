//! The built-in demo model through the engine: many concurrent sequences,
//! varied output, and seeded output that does not depend on the batch.

use std::collections::{HashMap, HashSet};

use wick_worker::{
    Engine, EngineLimits, LoadOptions, ModelSource, SamplingParams, SequenceRequest,
};

fn demo_engine() -> Engine {
    Engine::load(
        &ModelSource::Demo,
        &LoadOptions::default(),
        EngineLimits::default(),
    )
    .expect("the demo model loads")
}

fn prompt(index: u64) -> Vec<u32> {
    let mut rng = wick_worker::demo::SplitMix64::new(1000 + index);
    let len = 4 + (index as usize % 17);
    (0..len).map(|_| (rng.next_u64() % 50000) as u32).collect()
}

fn sampled(id: u64, seed: u64, max_new_tokens: u32) -> SequenceRequest {
    SequenceRequest {
        id,
        prompt: prompt(id),
        generated: vec![],
        sampling: SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 50,
            seed,
            ..SamplingParams::greedy()
        },
        max_new_tokens,
        stop_token_ids: vec![],
    }
}

/// Steps until idle (at most 200 steps) and returns each sequence's tokens.
fn run(engine: &mut Engine) -> HashMap<u64, Vec<u32>> {
    let mut outputs: HashMap<u64, Vec<u32>> = HashMap::new();
    for _ in 0..200 {
        if !engine.has_work() {
            break;
        }
        let step = engine.step().expect("step runs");
        assert!(step.preempted.is_empty(), "the cache fits the run");
        for token in step.tokens {
            outputs
                .entry(token.sequence_id)
                .or_default()
                .push(token.token);
        }
    }
    assert!(!engine.has_work(), "the run ends within 200 steps");
    outputs
}

#[test]
fn demo_serves_64_sequences() {
    let mut engine = demo_engine();
    for id in 0..64 {
        engine.admit(sampled(id, id, 8)).expect("admits");
    }
    let outputs = run(&mut engine);
    assert_eq!(outputs.len(), 64);
    assert!(outputs.values().all(|tokens| tokens.len() == 8));
    assert_eq!(engine.kv_blocks_free(), engine.kv_blocks_total());

    let distinct: HashSet<&Vec<u32>> = outputs.values().collect();
    assert_eq!(
        distinct.len(),
        64,
        "different prompts and seeds give different text"
    );
    let tokenizer = wick_worker::tokenizer::load_phi2_tokenizer().expect("tokenizer loads");
    let text = tokenizer.decode(&outputs[&0], false).expect("decodes");
    assert!(!text.is_empty());
    let all: HashSet<u32> = outputs.values().flatten().copied().collect();
    assert!(
        all.iter().all(|&token| token < 50295),
        "no padding ids are sampled"
    );
}

#[test]
fn seeded_output_ignores_batch() {
    let mut alone = demo_engine();
    alone.admit(sampled(3, 9_999_999_999, 10)).expect("admits");
    let expected = run(&mut alone).remove(&3).expect("sampled");

    let mut batched = demo_engine();
    for id in 0..8 {
        batched
            .admit(sampled(id, 9_999_999_999 - 3 + id, 10))
            .expect("admits");
    }
    let outputs = run(&mut batched);
    assert_eq!(outputs[&3], expected);
}

#[test]
fn seeded_output_survives_preemption() {
    let mut alone = demo_engine();
    alone.admit(sampled(1, 77, 12)).expect("admits");
    let expected = run(&mut alone).remove(&1).expect("sampled");

    // 7 blocks of 4 tokens. Each sequence grows to 4 blocks (prompts of 4
    // and 5 tokens plus 11 fed outputs), so the younger one is preempted.
    let limits = EngineLimits {
        block_size: 4,
        kv_capacity: wick_worker::KvCapacity::Tokens(28),
        ..EngineLimits::default()
    };
    let mut engine = Engine::load(&ModelSource::Demo, &LoadOptions::default(), limits)
        .expect("the demo model loads");
    let mut younger = sampled(1, 77, 12);
    engine.admit(sampled(0, 5, 12)).expect("admits");
    engine.admit(younger.clone()).expect("admits");

    let mut partial = Vec::new();
    let mut preempted = false;
    for _ in 0..100 {
        if !engine.has_work() {
            break;
        }
        let step = engine.step().expect("step runs");
        partial.extend(
            step.tokens
                .iter()
                .filter(|t| t.sequence_id == 1)
                .map(|t| t.token),
        );
        if step.preempted.contains(&1) {
            preempted = true;
            break;
        }
    }
    assert!(preempted, "the younger sequence is preempted");
    assert!(partial.len() < 12);

    // Wait for the older one to finish, then recompute the younger one
    // from its prompt and the tokens it had generated.
    while engine.has_work() {
        engine.step().expect("step runs");
    }
    younger.generated = partial.clone();
    engine.admit(younger).expect("re-admits");
    let mut output = partial;
    output.extend(run(&mut engine).remove(&1).expect("sampled"));
    assert_eq!(output, expected);
}
