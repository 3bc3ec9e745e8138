//! Stop strings: finds them in streamed text and holds back text that may
//! be the start of one.
//!
//! CONTRACT (fixed; the scheduler codes against it). STUB until the real
//! matcher lands.

/// What to do with a text delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Send this text (possibly empty: the rest is held back) and go on.
    Continue(String),
    /// A stop string matched: send this text, which ends before the match,
    /// and finish the sequence.
    Stopped(String),
}

/// Matches stop strings across delta boundaries.
pub struct StopMatcher {
    stops: Vec<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops }
    }

    /// Feeds the next delta.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        let _ = &self.stops;
        StopOutcome::Continue(delta.to_string())
    }

    /// Ends the text and returns whatever is still held back.
    pub fn finish(&mut self) -> String {
        String::new()
    }
}
