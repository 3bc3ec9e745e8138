//! Regenerates `worker/assets/phi2-tokenizer.json` from GPT-2's
//! `encoder.json` and `vocab.bpe` as shipped in the `tiktoken-rs` crate.
//!
//! Run: `cargo run -p wick-worker --example gen-phi2-tokenizer`

use std::path::Path;

use anyhow::Context;
use wick_worker::tokenizer::{build_phi2_tokenizer_json, find_tiktoken_assets};

fn main() -> anyhow::Result<()> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let assets = find_tiktoken_assets(&crate_dir.join("../Cargo.toml"))?;

    let encoder_path = assets.join("encoder.json");
    let merges_path = assets.join("vocab.bpe");
    let encoder = std::fs::read_to_string(&encoder_path)
        .with_context(|| format!("failed to read {}", encoder_path.display()))?;
    let merges = std::fs::read_to_string(&merges_path)
        .with_context(|| format!("failed to read {}", merges_path.display()))?;

    let json = build_phi2_tokenizer_json(&encoder, &merges)?;
    let output = crate_dir.join("assets/phi2-tokenizer.json");
    std::fs::write(&output, json)
        .with_context(|| format!("failed to write {}", output.display()))?;
    println!("wrote {}", output.display());
    Ok(())
}
