//! The engine on GGUF models: `Engine::load` with a `.gguf` source, steps
//! to the end of every sequence, and real text from SmolLM2.

mod gguf_models;
mod smollm2;

use std::str::FromStr;

use gguf_models::{write_gguf, TempFile, TinyModel};
use wick_worker::{
    Engine, EngineLimits, FinishReason, KvCapacity, LoadError, LoadOptions, ModelSource,
    SamplingParams, SequenceRequest,
};

fn limits() -> EngineLimits {
    EngineLimits {
        block_size: 4,
        kv_capacity: KvCapacity::Tokens(512),
        max_batch_sequences: 8,
        max_step_tokens: 16,
    }
}

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

/// Steps until no sequence is live (at most `max_steps` steps) and returns
/// the tokens of each sequence id with its finish reason.
fn run_to_end(engine: &mut Engine, max_steps: usize) -> Vec<(u64, Vec<u32>, FinishReason)> {
    let mut outputs: Vec<(u64, Vec<u32>, Option<FinishReason>)> = Vec::new();
    for _ in 0..max_steps {
        if !engine.has_work() {
            break;
        }
        let step = engine.step().expect("the step runs");
        assert!(step.preempted.is_empty(), "the cache is large enough");
        for sampled in step.tokens {
            let index = match outputs
                .iter()
                .position(|(id, _, _)| *id == sampled.sequence_id)
            {
                Some(index) => index,
                None => {
                    outputs.push((sampled.sequence_id, Vec::new(), None));
                    outputs.len() - 1
                }
            };
            outputs[index].1.push(sampled.token);
            outputs[index].2 = sampled.finish;
        }
    }
    assert!(
        !engine.has_work(),
        "every sequence finished within {max_steps} steps"
    );
    outputs
        .into_iter()
        .map(|(id, tokens, finish)| (id, tokens, finish.expect("the last token finishes")))
        .collect()
}

#[test]
fn engine_runs_tiny_gguf_models() {
    for (name, tiny) in [("llama", TinyModel::llama()), ("phi2", TinyModel::phi2())] {
        let file = TempFile::new(&format!("engine-{name}"));
        write_gguf(file.path(), &tiny, 21);
        let source = ModelSource::parse(file.path().to_str().expect("a UTF-8 path"))
            .expect("a .gguf path parses");
        let mut engine =
            Engine::load(&source, &LoadOptions::default(), limits()).expect("the model loads");
        assert_eq!(engine.model_info().dtype, "f32", "{name}");
        assert_eq!(engine.model().vocab_size(), tiny.vocab, "{name}");

        engine
            .admit(request(
                1,
                vec![
                    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                ],
                5,
            ))
            .expect("admits");
        engine.admit(request(2, vec![7], 3)).expect("admits");
        let outputs = run_to_end(&mut engine, 50);
        assert_eq!(outputs.len(), 2, "{name}: both sequences sampled");
        for (id, tokens, finish) in outputs {
            assert!(
                tokens.len() <= 5,
                "{name}: sequence {id} respects max_new_tokens"
            );
            if finish == FinishReason::Length {
                let expected = if id == 1 { 5 } else { 3 };
                assert_eq!(tokens.len(), expected, "{name}: sequence {id}");
            }
        }
        assert_eq!(
            engine.kv_blocks_free(),
            engine.kv_blocks_total(),
            "{name}: no block leaks"
        );
    }
}

#[test]
fn gguf_rejects_half_precision_dtype() {
    let file = TempFile::new("engine-dtype");
    write_gguf(file.path(), &TinyModel::llama(), 21);
    let source = ModelSource::Gguf(file.path().to_path_buf());
    let options = LoadOptions {
        dtype: Some("bf16".to_string()),
        ..LoadOptions::default()
    };
    let error = Engine::load(&source, &options, limits())
        .err()
        .expect("bf16 is not supported for GGUF");
    assert!(matches!(error, LoadError::GgufDtype { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("bf16"), "{message}");
}

/// SmolLM2's ChatML chat template rendered for a system and a user
/// message.
///
/// NOTE: the explicit system message matters. With the default one that
/// the template adds ("You are a helpful AI assistant named SmolLM..."),
/// greedy decoding of this Q4_1 file answers this question in broken
/// French, in wick and in candle's reference alike.
fn chatml(system: &str, user: &str) -> String {
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n\
         <|im_start|>assistant\n"
    )
}

#[test]
fn smollm2_answers_paris() {
    let Some(path) = smollm2::smollm2_path("smollm2_answers_paris") else {
        return;
    };
    let mut engine = Engine::load(&ModelSource::Gguf(path), &LoadOptions::default(), limits())
        .expect("SmolLM2 loads");
    let info = engine.model_info().clone();
    assert_eq!(info.family, "llama");
    assert_eq!(info.eos_token_ids, vec![2]);
    let tokenizer = tokenizers::Tokenizer::from_str(&info.tokenizer_json).expect("it loads");
    let prompt = tokenizer
        .encode(
            chatml(
                "You are a helpful assistant.",
                "What is the capital of France?",
            ),
            false,
        )
        .expect("the prompt encodes")
        .get_ids()
        .to_vec();

    engine.admit(request(1, prompt, 48)).expect("admits");
    let outputs = run_to_end(&mut engine, 200);
    let (_, tokens, finish) = &outputs[0];
    let answer = tokenizer.decode(tokens, true).expect("the answer decodes");
    assert_eq!(
        *finish,
        FinishReason::Eos,
        "the answer ends with <|im_end|>: {answer:?}"
    );
    assert_eq!(tokens.last(), Some(&2), "the last token is <|im_end|>");
    assert!(
        answer.contains("Paris"),
        "the answer names Paris: {answer:?}"
    );
    assert!(
        !answer.contains("<|im_end|>"),
        "special tokens are skipped: {answer:?}"
    );
}
