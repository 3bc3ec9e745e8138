//! Finding the SmolLM2 GGUF file that `scripts/fetch-smollm2` caches, for
//! the tests that need a real trained model.

#![allow(dead_code)]

use std::path::PathBuf;

pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cached SmolLM2 file, or None (with a printed note) when it is
/// missing. The cache folder is `$WICK_CACHE/models`, by default
/// `$HOME/.cache/wick/models`, as in `scripts/fetch-smollm2`.
///
/// Panics when the file is missing and `WICK_REQUIRE_SMOLLM2=1`, so a CI
/// run that fetched the model cannot skip these tests silently.
pub fn smollm2_path(test: &str) -> Option<PathBuf> {
    let cache = match std::env::var_os("WICK_CACHE") {
        Some(cache) => PathBuf::from(cache),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wick"),
    };
    let path = cache.join("models").join(FILE_NAME);
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var("WICK_REQUIRE_SMOLLM2").is_ok_and(|value| value == "1");
    assert!(
        !required,
        "{test}: {} is missing but WICK_REQUIRE_SMOLLM2=1; run scripts/fetch-smollm2 first",
        path.display()
    );
    eprintln!(
        "{test}: skipped because {} is missing; run scripts/fetch-smollm2 to enable it",
        path.display()
    );
    None
}
