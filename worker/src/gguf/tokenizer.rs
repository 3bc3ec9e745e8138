//! A Hugging Face tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*`
//! metadata, serialized as `tokenizer.json` text for the scheduler.
//!
//! Only byte-level BPE (`tokenizer.ggml.model` = `gpt2`) is supported. The
//! vocabulary is `tokenizer.ggml.tokens` in id order, the merges are
//! `tokenizer.ggml.merges` in rank order, and tokens of type control (3)
//! become special added tokens, so `<|im_end|>` in a prompt encodes to its
//! id and decoding with `skip_special_tokens` drops it.

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::gguf::GgufFile;
use crate::LoadError;

/// llama.cpp's token type for control tokens such as `<|im_end|>`.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// llama.cpp's token type for tokens a user added to the vocabulary.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// What the worker reports about a GGUF file's tokenizer.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    /// The tokenizer as `tokenizer.json` text.
    pub json: String,
    pub eos_token_ids: Vec<u32>,
    /// Set only when the file asks for a BOS token before every prompt
    /// (`tokenizer.ggml.add_bos_token`).
    pub bos_token_id: Option<u32>,
    /// `tokenizer.chat_template`, a Jinja template.
    pub chat_template: Option<String>,
}

/// Builds the tokenizer of `file` and reads its special ids and chat
/// template.
///
/// Errors: `InvalidTokenizer` naming the file and the key, when the
/// tokenizer model is not `gpt2`, the pre-tokenizer is unknown, a token
/// list is missing or malformed, a merge names an unknown token, or no
/// end-of-sequence id is recorded.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<GgufTokenizer, LoadError> {
    let invalid = |reason: String| LoadError::InvalidTokenizer {
        path: file.path().to_path_buf(),
        reason,
    };
    match file.string("tokenizer.ggml.model")? {
        Some("gpt2") => {}
        Some(other) => {
            return Err(invalid(format!(
                "tokenizer.ggml.model {other:?} is not supported; wick builds only gpt2 \
                 (byte-level BPE) tokenizers"
            )))
        }
        None => return Err(invalid("tokenizer.ggml.model is missing".into())),
    }
    let tokens = string_array(file, "tokenizer.ggml.tokens")?;
    let merges = string_array(file, "tokenizer.ggml.merges")?;
    let token_types = match file.metadata("tokenizer.ggml.token_type") {
        Some(_) => int_array(file, "tokenizer.ggml.token_type")?,
        None => Vec::new(),
    };
    let pre_tokenizer = pre_tokenizer(file.string("tokenizer.ggml.pre")?).map_err(invalid)?;
    let tokenizer =
        build_tokenizer(&tokens, &merges, &token_types, pre_tokenizer).map_err(invalid)?;
    let json = tokenizer
        .to_string(false)
        .map_err(|error| invalid(format!("cannot serialize the tokenizer: {error}")))?;

    let token_id = |key: &str| -> Result<Option<u32>, LoadError> {
        let Some(value) = file.metadata(key) else {
            return Ok(None);
        };
        let id = value
            .to_u32()
            .ok()
            .filter(|&id| (id as usize) < tokens.len())
            .ok_or_else(|| {
                invalid(format!(
                    "{key} is {value:?}, not a token id below {}",
                    tokens.len()
                ))
            })?;
        Ok(Some(id))
    };
    let mut eos_token_ids: Vec<u32> = [
        token_id("tokenizer.ggml.eos_token_id")?,
        token_id("tokenizer.ggml.eot_token_id")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    eos_token_ids.dedup();
    if eos_token_ids.is_empty() {
        return Err(invalid("tokenizer.ggml.eos_token_id is missing".into()));
    }
    let add_bos = matches!(
        file.metadata("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    let bos_token_id = match add_bos {
        true => token_id("tokenizer.ggml.bos_token_id")?,
        false => None,
    };
    let chat_template = file.string("tokenizer.chat_template")?.map(str::to_string);
    Ok(GgufTokenizer {
        json,
        eos_token_ids,
        bos_token_id,
        chat_template,
    })
}

/// The pre-tokenizer for `tokenizer.ggml.pre`. GPT-2 and phi-2 split with
/// the GPT-2 regex alone; SmolLM2 (`smollm`) first splits each digit apart,
/// which the fixture test checks against SmolLM2's token ids.
fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizerWrapper, String> {
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    match pre {
        None | Some("default" | "gpt-2" | "phi-2") => Ok(byte_level),
        Some("smollm") => Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ]))),
        Some(other) => Err(format!(
            "tokenizer.ggml.pre {other:?} is not supported; wick knows default, gpt-2, phi-2 \
             and smollm"
        )),
    }
}

/// Assembles the byte-level BPE tokenizer.
fn build_tokenizer(
    tokens: &[String],
    merges: &[String],
    token_types: &[i32],
    pre_tokenizer: PreTokenizerWrapper,
) -> Result<Tokenizer, String> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), id as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(format!(
            "tokenizer.ggml.tokens has {} entries but only {} distinct tokens",
            tokens.len(),
            vocab.len()
        ));
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(rank, merge)| {
            merge
                .split_once(' ')
                .map(|(left, right)| (left.to_string(), right.to_string()))
                .ok_or_else(|| {
                    format!("tokenizer.ggml.merges[{rank}] {merge:?} is not two tokens separated by a space")
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|error| format!("invalid BPE vocabulary or merges: {error}"))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_post_processor(Some(ByteLevel::new(true, false, true)))
        .with_decoder(Some(ByteLevel::default()));
    let added = |token_type: i32, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(token_types)
            .filter(|(_, &kind)| kind == token_type)
            .map(|(token, _)| AddedToken::from(token.clone(), special))
            .collect()
    };
    let add_error = |error: tokenizers::Error| format!("cannot add the special tokens: {error}");
    tokenizer
        .add_special_tokens(added(TOKEN_TYPE_CONTROL, true))
        .map_err(add_error)?;
    tokenizer
        .add_tokens(added(TOKEN_TYPE_USER_DEFINED, false))
        .map_err(add_error)?;
    Ok(tokenizer)
}

fn array<'a>(file: &'a GgufFile, key: &str) -> Result<&'a [Value], LoadError> {
    match file.metadata(key) {
        Some(Value::Array(values)) => Ok(values),
        Some(other) => Err(LoadError::InvalidTokenizer {
            path: file.path().to_path_buf(),
            reason: format!("{key} is {:?}, expected an array", other.value_type()),
        }),
        None => Err(LoadError::InvalidTokenizer {
            path: file.path().to_path_buf(),
            reason: format!("{key} is missing"),
        }),
    }
}

fn string_array(file: &GgufFile, key: &str) -> Result<Vec<String>, LoadError> {
    array(file, key)?
        .iter()
        .enumerate()
        .map(|(index, value)| match value {
            Value::String(text) => Ok(text.clone()),
            other => Err(LoadError::InvalidTokenizer {
                path: file.path().to_path_buf(),
                reason: format!(
                    "{key}[{index}] is {:?}, expected a string",
                    other.value_type()
                ),
            }),
        })
        .collect()
}

fn int_array(file: &GgufFile, key: &str) -> Result<Vec<i32>, LoadError> {
    array(file, key)?
        .iter()
        .enumerate()
        .map(|(index, value)| {
            value.to_i32().map_err(|_| LoadError::InvalidTokenizer {
                path: file.path().to_path_buf(),
                reason: format!(
                    "{key}[{index}] is {:?}, expected an i32",
                    value.value_type()
                ),
            })
        })
        .collect()
}
