//! The checked-in phi-2 tokenizer: check vectors, added tokens, and a
//! byte-for-byte comparison with a fresh build from tiktoken-rs's GPT-2
//! files.

use std::path::Path;

use tokenizers::Tokenizer;
use wick_worker::tokenizer::{
    build_phi2_tokenizer_json, find_tiktoken_assets, load_phi2_tokenizer, phi2_tokenizer_json,
    TokenizerBuildError, PHI2_EOS_TOKEN_ID, PHI2_TOKENIZER_SIZE,
};

const CODE_SAMPLE: &str = "def f(x):\n    return x\n\t\tpass<|endoftext|>";
const CODE_SAMPLE_IDS: [u32; 13] = [
    4299, 277, 7, 87, 2599, 198, 50284, 7783, 2124, 198, 50294, 6603, 50256,
];

fn tokenizer() -> Tokenizer {
    load_phi2_tokenizer().expect("checked-in tokenizer loads")
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    let encoding = tokenizer.encode(text, false).expect("encode");
    encoding.get_ids().to_vec()
}

fn tiktoken_gpt2_files() -> (String, String) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let assets = find_tiktoken_assets(&workspace).expect("cargo metadata finds tiktoken-rs");
    let read = |name: &str| {
        let path = assets.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    };
    (read("encoder.json"), read("vocab.bpe"))
}

#[test]
fn hello_world_ids() {
    assert_eq!(encode(&tokenizer(), "Hello World"), [15496, 2159]);
}

#[test]
fn code_sample_ids() {
    assert_eq!(encode(&tokenizer(), CODE_SAMPLE), CODE_SAMPLE_IDS);
}

#[test]
fn code_sample_decodes_back() {
    let text = tokenizer().decode(&CODE_SAMPLE_IDS, false).expect("decode");
    assert_eq!(text, CODE_SAMPLE);
}

#[test]
fn skipping_special_keeps_whitespace_runs() {
    let text = tokenizer().decode(&CODE_SAMPLE_IDS, true).expect("decode");
    assert_eq!(text, "def f(x):\n    return x\n\t\tpass");
}

#[test]
fn token_count_with_added() {
    assert_eq!(tokenizer().get_vocab_size(true), PHI2_TOKENIZER_SIZE);
    assert_eq!(tokenizer().get_vocab_size(false), 50257);
}

#[test]
fn added_tokens_are_whitespace_runs() {
    let tokenizer = tokenizer();
    let decoder = tokenizer.get_added_tokens_decoder();
    assert_eq!(decoder.len(), 39);

    let eos = &decoder[&PHI2_EOS_TOKEN_ID];
    assert_eq!(eos.content, "<|endoftext|>");
    assert!(eos.special);

    // Each row: first id, character and the run length at that id. Runs go
    // down to 2.
    for (first_id, character, max_run) in [(50257u32, " ", 31usize), (50287, "\t", 9)] {
        for run in (2..=max_run).rev() {
            let id = first_id + (max_run - run) as u32;
            let token = &decoder[&id];
            assert_eq!(token.content, character.repeat(run), "id {id}");
            assert!(!token.special, "id {id}");
        }
    }
}

#[test]
fn long_space_run_uses_longest_token() {
    let ids = encode(&tokenizer(), &" ".repeat(33));
    // 31 spaces, then the remaining 2.
    assert_eq!(ids, [50257, 50286]);
}

#[test]
fn regenerated_matches_checked_in() {
    let (encoder, merges) = tiktoken_gpt2_files();
    let generated = build_phi2_tokenizer_json(&encoder, &merges).expect("build");
    assert!(
        generated == phi2_tokenizer_json(),
        "worker/assets/phi2-tokenizer.json is stale: run \
         `cargo run -p wick-worker --example gen-phi2-tokenizer`"
    );
}

#[test]
fn build_rejects_short_merges() {
    let (encoder, merges) = tiktoken_gpt2_files();
    let short: String = merges
        .lines()
        .take(10)
        .map(|line| format!("{line}\n"))
        .collect();
    let err = build_phi2_tokenizer_json(&encoder, &short).unwrap_err();
    assert!(
        matches!(err, TokenizerBuildError::MergeCount { found: 9 }),
        "{err}"
    );
}

#[test]
fn build_rejects_missing_header() {
    let (encoder, _) = tiktoken_gpt2_files();
    let err = build_phi2_tokenizer_json(&encoder, "a b\n").unwrap_err();
    assert!(matches!(err, TokenizerBuildError::MergesHeader), "{err}");
}

#[test]
fn build_rejects_unknown_merge_token() {
    let (encoder, _) = tiktoken_gpt2_files();
    let err = build_phi2_tokenizer_json(&encoder, "#version: 0.2\nĠt zzzzqq\n").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("line 2") && message.contains("zzzzqq"),
        "{message}"
    );
}

#[test]
fn build_rejects_wrong_vocab_size() {
    let err = build_phi2_tokenizer_json(r#"{"a": 0}"#, "#version: 0.2\n").unwrap_err();
    assert!(
        matches!(err, TokenizerBuildError::VocabSize { found: 1 }),
        "{err}"
    );
}
