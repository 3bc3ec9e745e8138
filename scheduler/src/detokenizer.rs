//! Incremental detokenization: token ids in, complete UTF-8 text out.
//!
//! CONTRACT (fixed; the scheduler codes against it). STUB until the real
//! decoder lands.

use std::sync::Arc;

use tokenizers::Tokenizer;

/// Turns one sequence's generated tokens into text deltas that never split
/// a UTF-8 character and never drop a leading space.
pub struct IncrementalDecoder {
    tokenizer: Arc<Tokenizer>,
    tokens: Vec<u32>,
    emitted: usize,
}

impl IncrementalDecoder {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        IncrementalDecoder {
            tokenizer,
            tokens: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds one generated token and returns the text it completes, if any.
    pub fn push(&mut self, token: u32) -> Result<Option<String>, tokenizers::Error> {
        self.tokens.push(token);
        let text = self.tokenizer.decode(&self.tokens, false)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return Ok(None);
        }
        let delta = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(delta))
    }

    /// Ends the sequence and returns any complete text still held back. An
    /// incomplete trailing UTF-8 character is dropped.
    pub fn finish(&mut self) -> Result<Option<String>, tokenizers::Error> {
        Ok(None)
    }
}
