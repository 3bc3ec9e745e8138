//! Loading bad GGUF files: every error is a `LoadError` that names the
//! file and the key or tensor at fault.

mod gguf_models;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use gguf_models::{write_gguf, write_gguf_parts, TempFile, TinyModel};
use wick_worker::gguf::load_gguf;
use wick_worker::LoadError;

fn load(path: &Path) -> Result<(), LoadError> {
    load_gguf(path, &Device::Cpu, "cpu".to_string()).map(|_| ())
}

/// The metadata and tensors of a GGUF file.
type Parts = (Vec<(String, Value)>, Vec<(String, QTensor)>);

/// The parts of a valid tiny llama, to break one of them.
fn llama_parts(file: &TempFile) -> Parts {
    write_gguf(file.path(), &TinyModel::llama(), 3);
    let mut reader = std::fs::File::open(file.path()).expect("the file opens");
    let content = gguf_file::Content::read(&mut reader).expect("the file reads");
    let tensors = content
        .tensor_infos
        .keys()
        .map(|name| {
            let tensor = content
                .tensor(&mut reader, name, &Device::Cpu)
                .expect("the tensor reads");
            (name.clone(), tensor)
        })
        .collect();
    (content.metadata.into_iter().collect(), tensors)
}

fn assert_names(error: &LoadError, path: &Path, fragment: &str) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error names the file: {message}"
    );
    assert!(
        message.contains(fragment),
        "the error mentions {fragment:?}: {message}"
    );
}

#[test]
fn missing_file_is_reported() {
    let file = TempFile::new("errors-missing");
    let error = load(file.path()).expect_err("a missing file fails");
    assert!(matches!(error, LoadError::MissingFile { .. }), "{error}");
}

#[test]
fn non_gguf_file_is_rejected() {
    let file = TempFile::new("errors-not-gguf");
    std::fs::write(file.path(), b"{\"not\": \"gguf\"}").expect("the file writes");
    let error = load(file.path()).expect_err("JSON is not GGUF");
    assert!(matches!(error, LoadError::InvalidWeights { .. }), "{error}");
    assert_names(&error, file.path(), "not a readable GGUF file");
}

#[test]
fn unsupported_tensor_type_is_rejected() {
    let file = TempFile::new("errors-tensor-type");
    write_gguf(file.path(), &TinyModel::llama(), 3);
    let mut bytes = std::fs::read(file.path()).expect("the file reads");
    // The tensor table stores the name, the dimension count (u32), one u64
    // per dimension and then the type (u32); 16 is llama.cpp's IQ2_XXS,
    // which candle cannot read.
    let name = b"output_norm.weight";
    let start = bytes
        .windows(name.len())
        .position(|window| window == name)
        .expect("the tensor table names output_norm.weight");
    let type_offset = start + name.len() + 4 + 8;
    bytes[type_offset..type_offset + 4].copy_from_slice(&16u32.to_le_bytes());
    std::fs::write(file.path(), bytes).expect("the file writes");

    let error = load(file.path()).expect_err("IQ2_XXS is not readable");
    assert!(matches!(error, LoadError::InvalidWeights { .. }), "{error}");
    assert_names(&error, file.path(), "Q4_1");
}

#[test]
fn unsupported_architecture_is_rejected() {
    let file = TempFile::new("errors-architecture");
    let (mut metadata, tensors) = llama_parts(&file);
    for (key, value) in metadata.iter_mut() {
        if key == "general.architecture" {
            *value = Value::String("mamba".into());
        }
    }
    write_gguf_parts(file.path(), &metadata, &tensors);
    let error = load(file.path()).expect_err("mamba is not supported");
    assert!(matches!(error, LoadError::InvalidConfig { .. }), "{error}");
    assert_names(&error, file.path(), "\"mamba\"");
}

#[test]
fn missing_hyperparameter_is_rejected() {
    let file = TempFile::new("errors-hyperparameter");
    let (mut metadata, tensors) = llama_parts(&file);
    metadata.retain(|(key, _)| key != "llama.block_count");
    write_gguf_parts(file.path(), &metadata, &tensors);
    let error = load(file.path()).expect_err("the block count is required");
    assert!(matches!(error, LoadError::InvalidConfig { .. }), "{error}");
    assert_names(&error, file.path(), "llama.block_count: missing");
}

#[test]
fn missing_tensor_is_rejected() {
    let file = TempFile::new("errors-tensor");
    let (metadata, mut tensors) = llama_parts(&file);
    tensors.retain(|(name, _)| name != "blk.1.ffn_up.weight");
    write_gguf_parts(file.path(), &metadata, &tensors);
    let error = load(file.path()).expect_err("every block needs ffn_up");
    assert!(matches!(error, LoadError::InvalidWeights { .. }), "{error}");
    assert_names(&error, file.path(), "blk.1.ffn_up.weight: missing");
}

#[test]
fn unsupported_tokenizer_is_rejected() {
    let file = TempFile::new("errors-tokenizer");
    let (mut metadata, tensors) = llama_parts(&file);
    for (key, value) in metadata.iter_mut() {
        if key == "tokenizer.ggml.model" {
            *value = Value::String("llama".into());
        }
    }
    write_gguf_parts(file.path(), &metadata, &tensors);
    let error = load(file.path()).expect_err("SentencePiece is not supported");
    assert!(
        matches!(error, LoadError::InvalidTokenizer { .. }),
        "{error}"
    );
    assert_names(&error, file.path(), "\"llama\" is not supported");
}

#[test]
fn tiny_model_loads_with_tokenizer() {
    let file = TempFile::new("errors-valid");
    write_gguf(file.path(), &TinyModel::phi2(), 3);
    let (model, info) = load_gguf(file.path(), &Device::Cpu, "cpu".into()).expect("it loads");
    assert_eq!(info.family, "phi");
    assert_eq!(info.eos_token_ids, vec![0]);
    assert_eq!(info.vocab_size, 96);
    assert_eq!(info.context_length, 256);
    assert_eq!(info.chat_template, None);
    assert_eq!(model.config().rotary_dim, 4);
    let tokenizer: tokenizers::Tokenizer = info.tokenizer_json.parse().expect("the JSON loads");
    let ids = tokenizer
        .encode("ab<|endoftext|>", false)
        .expect("it encodes");
    assert_eq!(
        ids.get_ids(),
        [27, 0],
        "the merge and the control token apply"
    );
}

#[test]
fn unknown_pre_tokenizer_is_rejected() {
    let file = TempFile::new("errors-pre-tokenizer");
    let (mut metadata, tensors) = llama_parts(&file);
    metadata.push((
        "tokenizer.ggml.pre".to_string(),
        Value::String("qwen2".into()),
    ));
    write_gguf_parts(file.path(), &metadata, &tensors);
    let error = load(file.path()).expect_err("qwen2's pre-tokenizer is unknown");
    assert!(
        matches!(error, LoadError::InvalidTokenizer { .. }),
        "{error}"
    );
    assert_names(&error, file.path(), "tokenizer.ggml.pre \"qwen2\"");
}
