//! The phi-2 tokenizer, rebuilt offline from GPT-2's BPE files.
//!
//! phi-2 uses GPT-2's byte-level BPE (50257 tokens, 50000 merges,
//! `<|endoftext|>` as its one special token) plus 38 added whitespace
//! tokens: ids 50257..=50286 are runs of 31 down to 2 spaces and ids
//! 50287..=50294 runs of 9 down to 2 tabs. [`build_phi2_tokenizer_json`]
//! writes that `tokenizer.json` from GPT-2's `encoder.json` and `vocab.bpe`;
//! the result is checked in as `assets/phi2-tokenizer.json` and
//! [`phi2_tokenizer_json`] returns it. Regenerate it with
//! `cargo run -p wick-worker --example gen-phi2-tokenizer`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use thiserror::Error;
use tokenizers::Tokenizer;

/// phi-2's `<|endoftext|>`.
pub const PHI2_EOS_TOKEN_ID: u32 = 50256;

/// Number of tokens in phi-2's tokenizer: GPT-2's 50257 plus 38 added.
/// The model's embedding is padded further, to 51200 rows.
pub const PHI2_TOKENIZER_SIZE: usize = 50295;

const EOS_TOKEN: &str = "<|endoftext|>";
const GPT2_VOCAB_SIZE: usize = 50257;
const GPT2_MERGE_COUNT: usize = 50000;
const VOCAB_BPE_HEADER: &str = "#version: 0.2";

/// The longest added run of spaces (id 50257); runs go down to 2.
const MAX_SPACE_RUN: usize = 31;
/// The longest added run of tabs (id 50287); runs go down to 2.
const MAX_TAB_RUN: usize = 9;

/// Returns phi-2's `tokenizer.json`, built into the binary.
pub fn phi2_tokenizer_json() -> &'static str {
    include_str!("../assets/phi2-tokenizer.json")
}

/// Loads phi-2's tokenizer from the copy built into the binary.
///
/// Errors: only if the checked-in JSON is invalid, which the tests rule out.
pub fn load_phi2_tokenizer() -> Result<Tokenizer, tokenizers::Error> {
    Tokenizer::from_str(phi2_tokenizer_json())
}

/// A failure to build phi-2's tokenizer from GPT-2's files.
#[derive(Debug, Error)]
pub enum TokenizerBuildError {
    #[error("encoder.json is not a JSON object of token to id: {0}")]
    EncoderJson(#[from] serde_json::Error),
    #[error("encoder.json has {found} tokens, expected {GPT2_VOCAB_SIZE}")]
    VocabSize { found: usize },
    #[error(
        "encoder.json has no token with id {id}; ids must be 0..{GPT2_VOCAB_SIZE} without gaps"
    )]
    MissingId { id: u32 },
    #[error("encoder.json maps {EOS_TOKEN:?} to {found:?}, expected id {PHI2_EOS_TOKEN_ID}")]
    EosId { found: Option<u32> },
    #[error("vocab.bpe must start with the line {VOCAB_BPE_HEADER:?}")]
    MergesHeader,
    #[error("vocab.bpe line {line}: {text:?} is not two tokens separated by one space")]
    MergeSyntax { line: usize, text: String },
    #[error("vocab.bpe line {line}: {token:?} is not in encoder.json")]
    MergeUnknownToken { line: usize, token: String },
    #[error("vocab.bpe has {found} merges, expected {GPT2_MERGE_COUNT}")]
    MergeCount { found: usize },
    #[error("the generated tokenizer.json does not load: {0}")]
    Load(tokenizers::Error),
    #[error("cannot locate the tiktoken-rs sources with `cargo metadata`: {0}")]
    CargoMetadata(String),
}

/// Builds phi-2's `tokenizer.json` from GPT-2's `encoder.json` (token to
/// id) and `vocab.bpe` (one merge per line, by rank).
///
/// The layout is the one Hugging Face's `tokenizers` wrote for GPT-2-style
/// models before version 0.20: added tokens first, then normalizer,
/// pre-tokenizer, post-processor, decoder and the BPE model, with the
/// vocabulary in id order and merges as `"a b"` strings. The output is
/// deterministic, so it can be compared byte for byte with the checked-in
/// copy.
///
/// NOTE: the model hub is out of reach here, so the output was checked
/// against phi-2's published token ids, not against the hub's file.
///
/// Errors: [`TokenizerBuildError`] names the input rule that failed, or
/// [`TokenizerBuildError::Load`] if `tokenizers` rejects the result.
pub fn build_phi2_tokenizer_json(
    encoder_json: &str,
    vocab_bpe: &str,
) -> Result<String, TokenizerBuildError> {
    let encoder: HashMap<String, u32> = serde_json::from_str(encoder_json)?;
    let vocab = vocab_in_id_order(&encoder)?;
    let merges = parse_merges(vocab_bpe, &encoder)?;

    let file = TokenizerFile {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: added_tokens(),
        normalizer: None,
        pre_tokenizer: ByteLevel::new(false, true),
        post_processor: ByteLevel::new(true, false),
        decoder: ByteLevel::new(true, true),
        model: BpeModel {
            kind: "BPE",
            dropout: None,
            unk_token: None,
            continuing_subword_prefix: "",
            end_of_word_suffix: "",
            fuse_unk: false,
            byte_fallback: false,
            vocab: OrderedVocab(vocab),
            merges,
        },
    };
    let json = serde_json::to_string_pretty(&file)?;
    Tokenizer::from_str(&json).map_err(TokenizerBuildError::Load)?;
    Ok(json)
}

/// Finds the `assets/` folder of the `tiktoken-rs` crate, which ships
/// GPT-2's `encoder.json` and `vocab.bpe`, by asking `cargo metadata` about
/// the workspace whose manifest is `workspace_manifest`. Runs the cargo
/// binary named by `$CARGO` (set by `cargo run` and `cargo test`), else
/// `cargo` from `PATH`.
///
/// Errors: [`TokenizerBuildError::CargoMetadata`] if cargo fails or lists no
/// `tiktoken-rs` package.
pub fn find_tiktoken_assets(workspace_manifest: &Path) -> Result<PathBuf, TokenizerBuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(workspace_manifest)
        .output()
        .map_err(|err| TokenizerBuildError::CargoMetadata(err.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(TokenizerBuildError::CargoMetadata(
            stderr.trim().to_string(),
        ));
    }

    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == "tiktoken-rs")
        .and_then(|package| package["manifest_path"].as_str())
        .ok_or_else(|| {
            TokenizerBuildError::CargoMetadata("no tiktoken-rs package in the workspace".into())
        })?;
    let crate_dir = Path::new(manifest).parent().ok_or_else(|| {
        TokenizerBuildError::CargoMetadata(format!("manifest path {manifest:?} has no parent"))
    })?;
    Ok(crate_dir.join("assets"))
}

/// Checks that the ids are exactly 0..50257 with `<|endoftext|>` last, and
/// returns the tokens ordered by id.
fn vocab_in_id_order(encoder: &HashMap<String, u32>) -> Result<Vec<&str>, TokenizerBuildError> {
    if encoder.len() != GPT2_VOCAB_SIZE {
        return Err(TokenizerBuildError::VocabSize {
            found: encoder.len(),
        });
    }
    let eos_id = encoder.get(EOS_TOKEN).copied();
    if eos_id != Some(PHI2_EOS_TOKEN_ID) {
        return Err(TokenizerBuildError::EosId { found: eos_id });
    }

    let mut by_id: Vec<Option<&str>> = vec![None; GPT2_VOCAB_SIZE];
    for (token, &id) in encoder {
        if let Some(slot) = by_id.get_mut(id as usize) {
            *slot = Some(token.as_str());
        }
    }
    by_id
        .into_iter()
        .enumerate()
        .map(|(id, token)| token.ok_or(TokenizerBuildError::MissingId { id: id as u32 }))
        .collect()
}

/// Parses `vocab.bpe` into `"a b"` merge strings, checking that each side
/// and the merged token are in the vocabulary.
fn parse_merges(
    vocab_bpe: &str,
    encoder: &HashMap<String, u32>,
) -> Result<Vec<String>, TokenizerBuildError> {
    let mut lines = vocab_bpe.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == VOCAB_BPE_HEADER => {}
        _ => return Err(TokenizerBuildError::MergesHeader),
    }

    let mut merges = Vec::with_capacity(GPT2_MERGE_COUNT);
    for (index, text) in lines {
        let line = index + 1;
        if text.is_empty() {
            continue;
        }
        let Some((left, right)) = text.split_once(' ') else {
            return Err(merge_syntax(line, text));
        };
        if left.is_empty() || right.is_empty() || right.contains(' ') {
            return Err(merge_syntax(line, text));
        }
        for token in [
            left.to_string(),
            right.to_string(),
            format!("{left}{right}"),
        ] {
            if !encoder.contains_key(&token) {
                return Err(TokenizerBuildError::MergeUnknownToken { line, token });
            }
        }
        merges.push(text.to_string());
    }

    if merges.len() != GPT2_MERGE_COUNT {
        return Err(TokenizerBuildError::MergeCount {
            found: merges.len(),
        });
    }
    Ok(merges)
}

fn merge_syntax(line: usize, text: &str) -> TokenizerBuildError {
    TokenizerBuildError::MergeSyntax {
        line,
        text: text.to_string(),
    }
}

/// `<|endoftext|>` as the special token, then phi-2's whitespace runs.
/// The runs are not special, so decoding with special tokens skipped keeps
/// them.
fn added_tokens() -> Vec<AddedToken> {
    let spaces = (2..=MAX_SPACE_RUN).rev().map(|n| " ".repeat(n));
    let tabs = (2..=MAX_TAB_RUN).rev().map(|n| "\t".repeat(n));
    let mut tokens = vec![AddedToken {
        id: PHI2_EOS_TOKEN_ID,
        content: EOS_TOKEN.to_string(),
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
    }];
    for (offset, content) in spaces.chain(tabs).enumerate() {
        tokens.push(AddedToken {
            id: GPT2_VOCAB_SIZE as u32 + offset as u32,
            content,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: true,
            special: false,
        });
    }
    tokens
}

// The types below mirror the JSON layout of `tokenizer.json`. Serde writes
// fields in declaration order, which fixes the byte layout of the output.

#[derive(Serialize)]
struct TokenizerFile<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken>,
    normalizer: Option<()>,
    pre_tokenizer: ByteLevel,
    post_processor: ByteLevel,
    decoder: ByteLevel,
    model: BpeModel<'a>,
}

#[derive(Serialize)]
struct AddedToken {
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
struct ByteLevel {
    #[serde(rename = "type")]
    kind: &'static str,
    add_prefix_space: bool,
    trim_offsets: bool,
    use_regex: bool,
}

impl ByteLevel {
    fn new(add_prefix_space: bool, trim_offsets: bool) -> Self {
        ByteLevel {
            kind: "ByteLevel",
            add_prefix_space,
            trim_offsets,
            use_regex: true,
        }
    }
}

#[derive(Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: &'static str,
    end_of_word_suffix: &'static str,
    fuse_unk: bool,
    byte_fallback: bool,
    vocab: OrderedVocab<'a>,
    merges: Vec<String>,
}

/// Tokens indexed by id, written as a JSON object in id order.
struct OrderedVocab<'a>(Vec<&'a str>);

impl Serialize for OrderedVocab<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, token) in self.0.iter().enumerate() {
            map.serialize_entry(token, &id)?;
        }
        map.end()
    }
}
