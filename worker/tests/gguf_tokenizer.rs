//! The tokenizer wick builds from SmolLM2's GGUF metadata against ids from
//! an independent route (Python `gguf` and `tokenizers`, recorded in
//! `fixtures/smollm2-tokenizer.json` by `scripts/gen-smollm2-tokenizer-fixture`).

mod smollm2;

use std::str::FromStr;

use serde::Deserialize;
use tokenizers::Tokenizer;
use wick_worker::gguf::tokenizer::tokenizer_from_gguf;
use wick_worker::gguf::GgufFile;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let text = include_str!("fixtures/smollm2-tokenizer.json");
    serde_json::from_str(text).expect("the fixture is valid JSON")
}

#[test]
fn smollm2_tokenizer_matches_python() {
    let Some(path) = smollm2::smollm2_path("smollm2_tokenizer_matches_python") else {
        return;
    };
    let file = GgufFile::open(&path).expect("SmolLM2 opens");
    let built = tokenizer_from_gguf(&file).expect("the tokenizer builds");
    let tokenizer = Tokenizer::from_str(&built.json).expect("the tokenizer.json text loads");

    for case in fixture().cases {
        let encoding = tokenizer
            .encode(case.text.as_str(), false)
            .expect("the prompt encodes");
        assert_eq!(encoding.get_ids(), case.ids, "ids of {:?}", case.text);
        let decoded = tokenizer.decode(&case.ids, false).expect("the ids decode");
        assert_eq!(decoded, case.text, "decoding the ids of {:?}", case.text);
    }
}

#[test]
fn smollm2_special_ids_and_template() {
    let Some(path) = smollm2::smollm2_path("smollm2_special_ids_and_template") else {
        return;
    };
    let file = GgufFile::open(&path).expect("SmolLM2 opens");
    let built = tokenizer_from_gguf(&file).expect("the tokenizer builds");
    let tokenizer = Tokenizer::from_str(&built.json).expect("the tokenizer.json text loads");

    assert_eq!(built.eos_token_ids, vec![2], "<|im_end|> ends a sequence");
    assert_eq!(built.bos_token_id, None, "SmolLM2 sets add_bos_token false");
    assert_eq!(tokenizer.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tokenizer.token_to_id("<|im_end|>"), Some(2));
    let template = built.chat_template.expect("SmolLM2 has a chat template");
    assert!(
        template.contains("<|im_start|>"),
        "ChatML template: {template}"
    );

    let decoded = tokenizer
        .decode(&[1, 4093, 198, 2], true)
        .expect("the ids decode");
    assert_eq!(decoded, "user\n", "special tokens are skipped on request");
}
