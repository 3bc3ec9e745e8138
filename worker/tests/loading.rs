//! Loading models from the Hugging Face layout: the demo model round trip,
//! sharded weights, dtypes, sources, the hub cache, and a clear error for
//! every broken file.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use wick_worker::config::PhiConfig;
use wick_worker::demo::{random_weights, write_demo_model};
use wick_worker::loading::{load_dir, parse_device, parse_dtype, resolve_hub_repo};
use wick_worker::{Engine, LoadError, LoadOptions, ModelSource};

fn small_model(name: &str) -> (TempDir, PhiConfig) {
    let dir = TempDir::new(name);
    let config = small_config(32, 2, 1, 0.5, false);
    write_model(dir.path(), &config, 17);
    (dir, config)
}

fn load_error(dir: &Path) -> LoadError {
    match load_dir(dir, "test", &Device::Cpu, DType::F32) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(error) => error,
    }
}

/// Asserts that `error`'s message names `file` and contains `detail`.
fn assert_names(error: &LoadError, file: &str, detail: &str) {
    let message = error.to_string();
    assert!(message.contains(file), "{message:?} names {file}");
    assert!(message.contains(detail), "{message:?} contains {detail:?}");
}

#[test]
fn demo_round_trip_same_logits() {
    let dir = TempDir::new("demo-round-trip");
    write_demo_model(dir.path()).expect("demo model writes");
    let options = LoadOptions::default();
    let limits = wick_worker::EngineLimits::default();
    let from_memory =
        Engine::load(&ModelSource::Demo, &options, limits.clone()).expect("demo loads");
    let source = ModelSource::parse(dir.path().to_str().expect("utf-8 path")).expect("parses");
    let from_files = Engine::load(&source, &options, limits).expect("written demo loads");

    let prompt = [15496, 2159, 318, 257];
    let expected = wick_logits(from_memory.model(), &prompt);
    assert_eq!(wick_logits(from_files.model(), &prompt), expected);
    let info = from_memory.model_info();
    assert_eq!(info.id, "wick/demo-phi");
    assert_eq!(info.family, "phi");
    assert_eq!(info.eos_token_ids, vec![50256]);
    assert_eq!(info.context_length, 2048);
    assert_eq!(info.tokenizer_json, from_files.model_info().tokenizer_json);
}

#[test]
fn sharded_weights_match_single_file() {
    let (dir, config) = small_model("sharded");
    let (model, _) = load_dir(dir.path(), "single", &Device::Cpu, DType::F32).expect("loads");
    let prompt = tokens(3, 7, config.vocab_size);
    let expected = wick_logits(&model, &prompt);

    let sharded = TempDir::new("sharded-split");
    std::fs::copy(
        dir.path().join("config.json"),
        sharded.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("tokenizer.json"),
        sharded.path().join("tokenizer.json"),
    )
    .unwrap();
    let tensors = random_weights(&config, 17).expect("weights generate");
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (index, (name, tensor)) in tensors.into_iter().enumerate() {
        let shard = index % 2;
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        weight_map.insert(name.clone(), file.into());
        shards[shard].insert(name, tensor);
    }
    for (shard, tensors) in shards.iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        candle_core::safetensors::save(tensors, sharded.path().join(file)).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let (model, _) = load_dir(sharded.path(), "sharded", &Device::Cpu, DType::F32).expect("loads");
    assert_eq!(wick_logits(&model, &prompt), expected);

    std::fs::remove_file(sharded.path().join("model-00002-of-00002.safetensors")).unwrap();
    let error = load_error(sharded.path());
    assert!(matches!(error, LoadError::MissingFile { .. }));
    assert_names(&error, "model-00002-of-00002.safetensors", "not found");
}

#[test]
fn half_dtypes_load_and_run() {
    let (dir, config) = small_model("half");
    let prompt = tokens(5, 6, config.vocab_size);
    let (model, _) = load_dir(dir.path(), "f32", &Device::Cpu, DType::F32).expect("loads");
    let expected = wick_logits(&model, &prompt);
    for dtype in [DType::F16, DType::BF16] {
        let (model, info) = load_dir(dir.path(), "half", &Device::Cpu, dtype).expect("loads");
        assert_eq!(model.dtype(), dtype);
        assert_eq!(info.dtype, if dtype == DType::F16 { "f16" } else { "bf16" });
        let logits = wick_logits(&model, &prompt);
        assert!(
            max_abs_diff(&logits, &expected) < 0.1,
            "{dtype:?} logits stay close to f32"
        );
    }
}

#[test]
fn missing_files_are_named() {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let (dir, _) = small_model(&format!("missing-{file}"));
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let error = load_error(dir.path());
        assert!(
            matches!(error, LoadError::MissingFile { .. }),
            "{file}: {error}"
        );
        assert_names(&error, file, "file not found");
    }
    let error = load_error(Path::new("/nonexistent/wick-model"));
    assert_names(&error, "/nonexistent/wick-model", "file not found");
}

#[test]
fn broken_config_is_named() {
    let cases = [
        ("{ not json", "key must be a string"),
        (r#"{"vocab_size": 10}"#, "missing field"),
        (
            "CONFIG_WITH_GQA",
            "grouped-query attention is not supported",
        ),
    ];
    for (text, detail) in cases {
        let (dir, config) = small_model("broken-config");
        let text = if text == "CONFIG_WITH_GQA" {
            let mut json = wick_worker::demo::config_json(&config);
            json["num_key_value_heads"] = 1.into();
            json.to_string()
        } else {
            text.to_string()
        };
        std::fs::write(dir.path().join("config.json"), text).unwrap();
        let error = load_error(dir.path());
        assert!(matches!(error, LoadError::InvalidConfig { .. }), "{error}");
        assert_names(&error, "config.json", detail);
    }
}

#[test]
fn broken_tokenizer_is_named() {
    let (dir, _) = small_model("broken-tokenizer");
    std::fs::write(dir.path().join("tokenizer.json"), r#"{"model": 3}"#).unwrap();
    let error = load_error(dir.path());
    assert!(
        matches!(error, LoadError::InvalidTokenizer { .. }),
        "{error}"
    );
    assert_names(&error, "tokenizer.json", "not a tokenizer.json");
}

/// Rewrites the weights of `dir` with `change` applied to the tensor map.
fn rewrite_weights(
    dir: &Path,
    config: &PhiConfig,
    change: impl FnOnce(&mut HashMap<String, Tensor>),
) {
    let mut tensors = random_weights(config, 17).unwrap();
    change(&mut tensors);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

#[test]
fn broken_weights_are_named() {
    let (dir, _) = small_model("garbage-weights");
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let error = load_error(dir.path());
    assert_names(&error, "model.safetensors", "not a valid safetensors file");

    let (dir, config) = small_model("missing-tensor");
    rewrite_weights(dir.path(), &config, |tensors| {
        tensors.remove("model.layers.0.mlp.fc1.bias");
    });
    let error = load_error(dir.path());
    assert!(matches!(error, LoadError::InvalidWeights { .. }), "{error}");
    assert_names(
        &error,
        "model.safetensors",
        "tensor model.layers.0.mlp.fc1.bias not found",
    );

    let (dir, config) = small_model("wrong-shape");
    rewrite_weights(dir.path(), &config, |tensors| {
        let wrong = Tensor::zeros((32, 31), DType::F32, &Device::Cpu).unwrap();
        tensors.insert("model.layers.0.self_attn.dense.weight".into(), wrong);
    });
    let error = load_error(dir.path());
    assert_names(
        &error,
        "model.safetensors",
        "has shape [32, 31], expected [32, 32]",
    );

    let (dir, config) = small_model("integer-tensor");
    rewrite_weights(dir.path(), &config, |tensors| {
        let integers = Tensor::zeros(32, DType::U32, &Device::Cpu).unwrap();
        tensors.insert("model.final_layernorm.bias".into(), integers);
    });
    let error = load_error(dir.path());
    assert_names(
        &error,
        "model.final_layernorm.bias",
        "expected a float dtype",
    );
}

#[test]
fn options_are_checked() {
    let error = parse_dtype(Some("f64"), &Device::Cpu).expect_err("f64 is unsupported");
    assert_eq!(
        error.to_string(),
        "unsupported dtype \"f64\": expected f32, f16 or bf16"
    );
    assert_eq!(parse_dtype(None, &Device::Cpu).unwrap(), DType::F32);
    assert!(parse_device("cpu").unwrap().is_cpu());
    let error = parse_device("tpu:0").expect_err("unknown device");
    assert!(
        error.to_string().contains("expected cpu or cuda:N"),
        "{error}"
    );
    let error = parse_device("cuda:x").expect_err("bad ordinal");
    assert!(error.to_string().contains("GPU index"), "{error}");
    if !cfg!(feature = "cuda") {
        let error = parse_device("cuda:0").expect_err("no CUDA in this build");
        assert!(error.to_string().contains("--features cuda"), "{error}");
    }
}

#[test]
fn sources_parse() {
    let (dir, _) = small_model("source-dir");
    let path = dir.path().to_str().unwrap();
    assert_eq!(ModelSource::parse("demo").unwrap(), ModelSource::Demo);
    assert_eq!(
        ModelSource::parse(path).unwrap(),
        ModelSource::Dir(dir.path().to_path_buf())
    );
    assert_eq!(
        ModelSource::parse("microsoft/phi-2").unwrap(),
        ModelSource::Hub {
            repo: "microsoft/phi-2".into(),
            revision: None
        }
    );
    assert_eq!(
        ModelSource::parse("microsoft/phi-2@main").unwrap(),
        ModelSource::Hub {
            repo: "microsoft/phi-2".into(),
            revision: Some("main".into())
        }
    );
    for bad in ["phi-2", "a/b/c", "microsoft/phi-2@", "/no/such/folder", ""] {
        let error = ModelSource::parse(bad).expect_err("invalid source");
        assert!(
            matches!(error, LoadError::InvalidSource { .. }),
            "{bad}: {error}"
        );
    }
    let gguf = ModelSource::parse("models/smol.gguf").unwrap();
    assert_eq!(gguf, ModelSource::Gguf("models/smol.gguf".into()));
    let error = wick_worker::loading::load_model(&gguf, &LoadOptions::default())
        .err()
        .unwrap();
    assert_names(&error, "models/smol.gguf", "file not found");
}

#[test]
fn hub_repo_resolves_from_cache() {
    let (model_dir, _) = small_model("hub-model");
    let home = TempDir::new("hub-cache");
    let cache = hf_hub::Cache::new(home.path().to_path_buf());

    let error = resolve_hub_repo("owner/tiny-phi", None, &cache, true).expect_err("not cached");
    assert!(matches!(error, LoadError::HubUnavailable { .. }));
    assert_names(&error, "owner/tiny-phi", "HF_HUB_OFFLINE");
    assert!(error.to_string().contains("pass its folder"), "{error}");

    let snapshot = fill_hub_cache(home.path(), model_dir.path());
    let resolved = resolve_hub_repo("owner/tiny-phi", None, &cache, true).expect("cached");
    assert_eq!(resolved, snapshot);
    load_dir(&resolved, "owner/tiny-phi", &Device::Cpu, DType::F32).expect("loads from cache");
}

/// Copies the model in `model_dir` into a Hugging Face cache at `home` as
/// repo `owner/tiny-phi`, and returns its snapshot folder.
fn fill_hub_cache(home: &Path, model_dir: &Path) -> std::path::PathBuf {
    // The cache layout hf-hub reads: refs/<revision> contains the commit,
    // and snapshots/<commit>/ contains the files.
    let repo_dir = home.join("models--owner--tiny-phi");
    let snapshot = repo_dir.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), "abc123").unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(model_dir.join(file), snapshot.join(file)).unwrap();
    }
    snapshot
}

#[test]
fn hub_source_loads_from_env_cache() {
    let (model_dir, _) = small_model("hub-env-model");
    let home = TempDir::new("hub-env-home");
    fill_hub_cache(&home.path().join("hub"), model_dir.path());
    // Only this test reads these variables, so setting them does not race
    // with the other tests of this binary.
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let source = ModelSource::parse("owner/tiny-phi").expect("parses");
    let limits = wick_worker::EngineLimits::default();
    let engine = Engine::load(&source, &LoadOptions::default(), limits.clone()).expect("loads");
    assert_eq!(engine.model_info().id, "owner/tiny-phi");

    let missing = ModelSource::parse("owner/absent").expect("parses");
    let error = Engine::load(&missing, &LoadOptions::default(), limits)
        .err()
        .expect("fails");
    assert!(matches!(error, LoadError::HubUnavailable { .. }), "{error}");
}
