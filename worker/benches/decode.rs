//! Decode throughput of wick's engine against candle-transformers'
//! `phi::Model`, for a phi-2-shaped model (hidden 2560, 32 heads, MLP
//! 10240, vocabulary 51200) cut to 2 layers, random f32 weights, on the
//! CPU.
//!
//! wick runs sequences of mixed prompt lengths; the reference can only
//! batch sequences of equal length, so it gets the mean length. Prefill is
//! not timed. Run with `cargo bench -p wick-worker --bench decode`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::phi;
use wick_worker::demo::{config_json, random_weights, SplitMix64};
use wick_worker::loading::info_without_tokenizer;
use wick_worker::weights::Weights;
use wick_worker::{
    CausalLm, Engine, EngineLimits, KvCapacity, PhiModel, SamplingParams, SequenceRequest,
};

const BATCH_SIZES: [usize; 3] = [1, 8, 32];
const TIMED_STEPS: usize = 8;
/// Prompt lengths cycle through 4..=20 tokens, a mean of 12.
const MEAN_PROMPT: usize = 12;

fn phi2_shaped_config() -> wick_worker::PhiConfig {
    let mut config = wick_worker::demo::demo_config();
    config.hidden_size = 2560;
    config.intermediate_size = 10240;
    config.num_attention_heads = 32;
    config.num_hidden_layers = 2;
    config
}

fn prompt(index: usize, len: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(index as u64);
    (0..len).map(|_| (rng.next_u64() % 50000) as u32).collect()
}

/// Builds an engine over `model` with `batch` sequences of mixed prompt lengths,
/// past their prefill and one warm-up decode step.
fn wick_engine(model: Box<dyn CausalLm>, config: &wick_worker::PhiConfig, batch: usize) -> Engine {
    let limits = EngineLimits {
        kv_capacity: KvCapacity::Tokens(batch * 64),
        max_step_tokens: 1024,
        ..EngineLimits::default()
    };
    let info = info_without_tokenizer("bench/phi-2-shaped", config, &Device::Cpu, DType::F32);
    let mut engine = Engine::new(model, info, limits).expect("engine builds");
    for index in 0..batch {
        let request = SequenceRequest {
            id: index as u64,
            prompt: prompt(index, 4 + (index * 5) % 17),
            generated: vec![],
            sampling: SamplingParams::greedy(),
            max_new_tokens: 32,
            stop_token_ids: vec![],
        };
        engine.admit(request).expect("admits");
    }
    engine.step().expect("prefill step");
    engine.step().expect("warm-up step");
    engine
}

/// Returns the reference's logits after prefilling `batch` equal prompts and one
/// warm-up decode step.
fn reference_prefill(model: &mut phi::Model, batch: usize) -> Tensor {
    model.clear_kv_cache();
    let prompts: Vec<u32> = (0..batch)
        .flat_map(|index| prompt(index, MEAN_PROMPT))
        .collect();
    let input = Tensor::from_vec(prompts, (batch, MEAN_PROMPT), &Device::Cpu).expect("input");
    let logits = model.forward(&input).expect("prefill");
    reference_step(model, &logits)
}

fn reference_step(model: &mut phi::Model, logits: &Tensor) -> Tensor {
    let tokens = logits
        .argmax(1)
        .and_then(|t| t.unsqueeze(1))
        .expect("argmax");
    model.forward(&tokens).expect("decode")
}

fn seconds(step: impl FnOnce()) -> f64 {
    let start = Instant::now();
    step();
    start.elapsed().as_secs_f64()
}

/// Decode tokens per second of wick and of the reference at `batch`. Their
/// steps alternate, and each keeps its fastest step, because other
/// processes on a shared 2-core machine slow some steps down at random and
/// alternating spreads that over both.
fn decode_rates(
    model: Box<dyn CausalLm>,
    reference: &mut phi::Model,
    config: &wick_worker::PhiConfig,
    batch: usize,
) -> (f64, f64, Box<dyn CausalLm>) {
    let mut engine = wick_engine(model, config, batch);
    let mut logits = reference_prefill(reference, batch);
    let (mut wick_fastest, mut reference_fastest) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..TIMED_STEPS {
        let wick = seconds(|| {
            let tokens = engine.step().expect("decode step").tokens.len();
            assert_eq!(tokens, batch, "every sequence decodes each step");
        });
        let reference = seconds(|| logits = reference_step(reference, &logits));
        wick_fastest = wick_fastest.min(wick);
        reference_fastest = reference_fastest.min(reference);
    }
    let batch = batch as f64;
    (
        batch / wick_fastest,
        batch / reference_fastest,
        engine.into_model(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and a full run would take minutes and 2 GB there.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("decode: skipped outside `cargo bench`");
        return;
    }
    let config = phi2_shaped_config();
    let started = Instant::now();
    let tensors = random_weights(&config, 7).expect("weights generate");
    let mut model: Box<dyn CausalLm> = Box::new(
        PhiModel::load(
            &config,
            &Weights::from_memory(tensors.clone(), &Device::Cpu, DType::F32),
        )
        .expect("wick model builds"),
    );
    let reference_config: phi::Config =
        serde_json::from_value(config_json(&config)).expect("reference config parses");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let mut reference = phi::Model::new(&reference_config, vb).expect("reference builds");
    println!("weights ready in {:.1} s", started.elapsed().as_secs_f64());

    println!("| batch | wick tokens/s (mixed lengths) | reference tokens/s (equal lengths) | wick / reference |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut wick_rates = Vec::new();
    let batches: Vec<usize> = match std::env::var("WICK_BENCH_BATCH") {
        Ok(value) => vec![value.parse().expect("WICK_BENCH_BATCH is a batch size")],
        Err(_) => BATCH_SIZES.to_vec(),
    };
    for &batch in &batches {
        let (wick, reference, returned) = decode_rates(model, &mut reference, &config, batch);
        model = returned;
        println!(
            "| {batch} | {wick:.1} | {reference:.1} | {:.2} |",
            wick / reference
        );
        wick_rates.push(wick);
    }
    if wick_rates.len() == BATCH_SIZES.len() {
        println!(
            "wick batch {} / batch 1: {:.2}x",
            BATCH_SIZES[2],
            wick_rates[2] / wick_rates[0]
        );
    }
}
