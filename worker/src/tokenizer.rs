//! The phi-2 tokenizer, rebuilt offline from GPT-2's BPE files.
//!
//! CONTRACT (fixed; the engine codes against it). STUB until the real
//! generator lands.

/// phi-2's `<|endoftext|>`.
pub const PHI2_EOS_TOKEN_ID: u32 = 50256;

/// Returns phi-2's `tokenizer.json`, built into the binary.
pub fn phi2_tokenizer_json() -> &'static str {
    todo!("tokenizer")
}
