//! Incremental detokenization: token ids in, complete UTF-8 text out.
//!
//! Byte-level BPE tokens are byte strings, so one character may span
//! several tokens and one token may end inside a character. Decoding the
//! whole sequence after every token would cost O(n^2), so instead the decoder
//! decodes a short window of recent tokens twice, with and without the
//! tokens not yet sent, and sends the difference. The window slides
//! forward whenever the text ends on a character boundary.

use std::sync::Arc;

use tokenizers::Tokenizer;

/// The character that lossy UTF-8 decoding puts in place of an incomplete
/// character.
const REPLACEMENT: char = '\u{FFFD}';

/// Turns one sequence's generated tokens into text deltas that never split
/// a UTF-8 character and never drop a leading space.
///
/// Rules:
/// - Special tokens (such as `<|endoftext|>`) decode to nothing, so they
///   never reach a client. Other added tokens, such as phi-2's whitespace
///   runs, decode to their text.
/// - Ids that the tokenizer does not know decode to nothing. phi-2's
///   model can produce them because its embedding is padded to 51200 rows
///   past the tokenizer's 50295 tokens.
/// - Spaces are kept as decoded, including a leading one.
/// - Text ending in an incomplete character is held back until the
///   character completes. Only that character is held: complete text
///   before it is sent at once.
/// - [`IncrementalDecoder::finish`] sends the complete text still held and
///   drops an incomplete trailing character, so the client gets the text
///   up to the last complete character.
///
/// NOTE: a model output that ends in U+FFFD itself looks incomplete, so
/// that character is held until the next token and dropped by `finish`.
pub struct IncrementalDecoder {
    tokenizer: Arc<Tokenizer>,
    tokens: Vec<u32>,
    /// Start of the decoding window. The tokens from here to `read_offset`
    /// were sent already. They stay in the window as context, because some
    /// decoders (such as SentencePiece's) treat the first token of a
    /// decoded sequence differently.
    prefix_offset: usize,
    /// First token whose text was not fully sent.
    read_offset: usize,
    /// Bytes of the text of the tokens from `read_offset` on that were
    /// already sent: the complete characters before an incomplete one.
    sent_past_read: usize,
}

impl IncrementalDecoder {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        IncrementalDecoder {
            tokenizer,
            tokens: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            sent_past_read: 0,
        }
    }

    /// Adds one generated token and returns the text it completes, if any.
    ///
    /// Errors: the tokenizer's decoding errors.
    pub fn push(&mut self, token: u32) -> Result<Option<String>, tokenizers::Error> {
        self.tokens.push(token);
        let (prefix_len, text) = self.decode_window()?;
        let start = prefix_len + self.sent_past_read;

        if let Some(complete) = text.strip_suffix(REPLACEMENT) {
            // Hold only the incomplete character and send what precedes it.
            // NOTE: the window cannot slide here, so it grows by one token
            // per push while every new token ends inside a character. Real
            // text reaches a boundary within a few tokens, but a stream of
            // invalid bytes may not.
            let delta = slice_from(complete, start);
            self.sent_past_read += delta.len();
            return Ok(non_empty(delta));
        }

        let delta = slice_from(&text, start).to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        self.sent_past_read = 0;
        Ok(non_empty(&delta))
    }

    /// Ends the sequence and returns any complete text still held back. An
    /// incomplete trailing UTF-8 character is dropped.
    ///
    /// Errors: the tokenizer's decoding errors.
    pub fn finish(&mut self) -> Result<Option<String>, tokenizers::Error> {
        let (prefix_len, text) = self.decode_window()?;
        let complete = text.strip_suffix(REPLACEMENT).unwrap_or(&text);
        let delta = slice_from(complete, prefix_len + self.sent_past_read).to_string();

        self.prefix_offset = self.tokens.len();
        self.read_offset = self.tokens.len();
        self.sent_past_read = 0;
        Ok(non_empty(&delta))
    }

    /// Decodes the window without and with the unsent tokens, returning the
    /// byte length of the first and the text of the second.
    fn decode_window(&self) -> Result<(usize, String), tokenizers::Error> {
        let sent = &self.tokens[self.prefix_offset..self.read_offset];
        let prefix_len = self.tokenizer.decode(sent, true)?.len();
        let text = self
            .tokenizer
            .decode(&self.tokens[self.prefix_offset..], true)?;
        Ok((prefix_len, text))
    }
}

/// Returns the text from byte `start` on, or "" if `start` is past the end
/// or not on a character boundary. Byte-level decoders only ever append to the
/// window's text, so the second case does not occur with them.
fn slice_from(text: &str, start: usize) -> &str {
    text.get(start..).unwrap_or("")
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phi2() -> Arc<Tokenizer> {
        Arc::new(wick_worker::tokenizer::load_phi2_tokenizer().expect("phi-2 tokenizer loads"))
    }

    fn encode(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        let encoding = tokenizer.encode(text, false).expect("encode");
        encoding.get_ids().to_vec()
    }

    /// Pushes the ids one at a time, then finishes, and returns every delta.
    fn stream(tokenizer: &Arc<Tokenizer>, ids: &[u32]) -> Vec<String> {
        let mut decoder = IncrementalDecoder::new(tokenizer.clone());
        let mut deltas = Vec::new();
        for &id in ids {
            deltas.extend(decoder.push(id).expect("push"));
        }
        deltas.extend(decoder.finish().expect("finish"));
        deltas
    }

    #[test]
    fn emoji_and_cjk_wait_for_whole_characters() {
        let tokenizer = phi2();
        let text = "🙂你好";
        let ids = encode(&tokenizer, text);
        assert!(
            ids.len() > 3,
            "expected characters split over tokens: {ids:?}"
        );

        let mut decoder = IncrementalDecoder::new(tokenizer.clone());
        let mut received = String::new();
        for (i, &id) in ids.iter().enumerate() {
            if let Some(delta) = decoder.push(id).expect("push") {
                assert!(!delta.contains(REPLACEMENT), "token {i}: {delta:?}");
                received.push_str(&delta);
            }
            // Whatever was sent must be exactly the characters completed so
            // far, with nothing broken in between.
            let decoded = tokenizer.decode(&ids[..=i], true).expect("decode");
            let complete = decoded.trim_end_matches(REPLACEMENT);
            assert_eq!(received, complete, "after token {i}");
        }
        assert_eq!(decoder.finish().expect("finish"), None);
        assert_eq!(received, text);
    }

    #[test]
    fn english_deltas_join_to_full_decode() {
        let tokenizer = phi2();
        let text = " Hello world, how are you? 1 + 1 = 2";
        let ids = encode(&tokenizer, text);
        let deltas = stream(&tokenizer, &ids);
        assert_eq!(deltas.len(), ids.len(), "one delta per token: {deltas:?}");
        assert_eq!(deltas[0], " Hello");
        assert_eq!(
            deltas.concat(),
            tokenizer.decode(&ids, true).expect("decode")
        );
        assert_eq!(deltas.concat(), text);
    }

    #[test]
    fn mixed_scripts_round_trip() {
        let tokenizer = phi2();
        for text in [
            "日本語のテキスト",
            "😀👍🏽 family 👨‍👩‍👧",
            "Crème brûlée à Zürich, ñandú",
            "a\u{FFFD}b",
        ] {
            let ids = encode(&tokenizer, text);
            assert_eq!(stream(&tokenizer, &ids).concat(), text, "text {text:?}");
        }
    }

    #[test]
    fn whitespace_runs_are_kept() {
        let tokenizer = phi2();
        let text = "if x:\n        return\n\t\tpass";
        let ids = encode(&tokenizer, text);
        assert_eq!(stream(&tokenizer, &ids).concat(), text);
    }

    #[test]
    fn special_tokens_are_skipped() {
        let tokenizer = phi2();
        let mut ids = encode(&tokenizer, "Done.");
        ids.push(wick_worker::tokenizer::PHI2_EOS_TOKEN_ID);
        assert_eq!(stream(&tokenizer, &ids).concat(), "Done.");
    }

    #[test]
    fn finish_drops_incomplete_character() {
        let tokenizer = phi2();
        let ids = encode(&tokenizer, "ok🙂");
        // Drop the last token, which leaves the emoji incomplete.
        let cut = &ids[..ids.len() - 1];
        let decoded = tokenizer.decode(cut, true).expect("decode");
        assert!(
            decoded.ends_with(REPLACEMENT),
            "cut must end mid-character: {decoded:?}"
        );

        assert_eq!(stream(&tokenizer, cut).concat(), "ok");
    }

    #[test]
    fn invalid_bytes_do_not_block_stream() {
        let tokenizer = phi2();
        // A lone UTF-8 lead byte followed by plain text: the byte can never
        // complete, so it is sent as U+FFFD and the text flows on.
        let lead_byte = tokenizer.token_to_id("ä").expect("byte token for 0xE4");
        let mut ids = vec![lead_byte];
        ids.extend(encode(&tokenizer, "abc"));
        assert_eq!(stream(&tokenizer, &ids).concat(), "\u{FFFD}abc");
    }

    #[test]
    fn random_ids_match_full_decode() {
        let tokenizer = phi2();
        // A fixed linear congruential generator, so the ids are the same on
        // every run. Half the ids are single-byte tokens (ids 0..256), which
        // produce many split and invalid UTF-8 sequences.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next_id = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let value = (state >> 33) as u32;
            if value % 2 == 0 {
                value % 256
            } else {
                value % 50_295
            }
        };

        for case in 0..40 {
            let ids: Vec<u32> = (0..30).map(|_| next_id()).collect();
            let full = tokenizer.decode(&ids, true).expect("decode");
            let expected = full.strip_suffix(REPLACEMENT).unwrap_or(&full);
            assert_eq!(
                stream(&tokenizer, &ids).concat(),
                expected,
                "case {case}: {ids:?}"
            );
        }
    }

    #[test]
    fn id_without_token_decodes_to_nothing() {
        let tokenizer = phi2();
        let mut decoder = IncrementalDecoder::new(tokenizer.clone());
        // phi-2's embedding has 51200 rows, more than its 50295 tokens.
        assert_eq!(decoder.push(51_000).expect("push"), None);

        let ids = encode(&tokenizer, "still fine");
        let mut text = String::new();
        for id in ids {
            text.extend(decoder.push(id).expect("push"));
        }
        assert_eq!(text, "still fine");
    }
}
