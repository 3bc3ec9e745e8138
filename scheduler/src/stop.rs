//! Stop strings: finds them in streamed text and holds back text that may
//! be the start of one.
//!
//! The matcher keeps the unsent tail of the text, which is shorter than
//! the longest stop string. Each delta is appended to that tail and
//! searched whole, so a stop string split over any number of deltas is
//! found at the position where it starts.

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
///
/// When several stop strings occur, the one that starts first in the text
/// wins, so the client never sees text past the earliest match. Empty stop
/// strings are ignored. Text is only ever cut at character boundaries.
pub struct StopMatcher {
    stops: Vec<String>,
    /// Unsent text: the longest tail of the text so far that is the start
    /// of some stop string.
    held_back: String,
    /// Set once a stop string matched; later deltas are discarded.
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|stop| !stop.is_empty()).collect();
        StopMatcher {
            stops,
            held_back: String::new(),
            stopped: false,
        }
    }

    /// Feeds the next delta. After a `Stopped` outcome every later delta
    /// also returns `Stopped` with no text.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome::Stopped(String::new());
        }
        if self.stops.is_empty() {
            return StopOutcome::Continue(delta.to_string());
        }

        self.held_back.push_str(delta);
        if let Some(start) = self.first_match() {
            self.stopped = true;
            self.held_back.truncate(start);
            return StopOutcome::Stopped(std::mem::take(&mut self.held_back));
        }

        let hold_from = self.partial_match_start();
        let tail = self.held_back.split_off(hold_from);
        StopOutcome::Continue(std::mem::replace(&mut self.held_back, tail))
    }

    /// Ends the text and returns whatever is still held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held_back)
    }

    /// Finds the byte offset in `held_back` of the earliest full stop-string
    /// match.
    fn first_match(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| self.held_back.find(stop.as_str()))
            .min()
    }

    /// Finds where the longest tail of `held_back` that is a proper prefix of
    /// some stop string begins, as a byte offset, or `held_back.len()` if no
    /// tail is.
    fn partial_match_start(&self) -> usize {
        let longest_stop = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A proper prefix is at least one byte shorter than its stop string.
        let earliest = self
            .held_back
            .len()
            .saturating_sub(longest_stop.saturating_sub(1));

        let boundaries =
            (earliest..self.held_back.len()).filter(|&i| self.held_back.is_char_boundary(i));
        for start in boundaries {
            let tail = &self.held_back[start..];
            if self.stops.iter().any(|stop| stop.starts_with(tail)) {
                return start;
            }
        }
        self.held_back.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|stop| stop.to_string()).collect())
    }

    fn cont(text: &str) -> StopOutcome {
        StopOutcome::Continue(text.to_string())
    }

    fn stopped(text: &str) -> StopOutcome {
        StopOutcome::Stopped(text.to_string())
    }

    #[test]
    fn stop_split_over_three_deltas() {
        let mut m = matcher(&["<END>"]);
        assert_eq!(m.push("Hello <E"), cont("Hello "));
        assert_eq!(m.push("N"), cont(""));
        assert_eq!(m.push("D> ignored"), stopped(""));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn text_before_split_stop_is_sent() {
        let mut m = matcher(&["###"]);
        assert_eq!(m.push("a#"), cont("a"));
        assert_eq!(m.push("b#"), cont("#b"));
        assert_eq!(m.push("#"), cont(""));
        assert_eq!(m.push("#c"), stopped(""));
    }

    #[test]
    fn unfinished_partial_match_is_released() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("go ST"), cont("go "));
        assert_eq!(m.push("OR"), cont("STOR"));
        assert_eq!(m.push("ST"), cont(""));
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn stop_at_very_start() {
        let mut m = matcher(&["\n\n"]);
        assert_eq!(m.push("\n\nmore"), stopped(""));
        assert_eq!(m.push("after"), stopped(""));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn earlier_stop_in_text_wins() {
        // "World" is listed first but "lo" starts earlier in the text.
        let mut m = matcher(&["World", "lo"]);
        assert_eq!(m.push("Hello World"), stopped("Hel"));
    }

    #[test]
    fn overlapping_stops_across_deltas() {
        // "abcd" starts before "bc", which completes first.
        let mut m = matcher(&["bc", "abcd"]);
        assert_eq!(m.push("xa"), cont("x"));
        assert_eq!(m.push("bcd"), stopped(""));

        let mut m = matcher(&["abcd", "bc"]);
        assert_eq!(m.push("xab"), cont("x"));
        assert_eq!(m.push("ce"), stopped("a"));
    }

    #[test]
    fn cjk_stop_strings() {
        let mut m = matcher(&["结束", "。"]);
        assert_eq!(m.push("你好"), cont("你好"));
        assert_eq!(m.push("世界结"), cont("世界"));
        assert_eq!(m.push("果"), cont("结果"));
        assert_eq!(m.push("再见结"), cont("再见"));
        assert_eq!(m.push("束吧"), stopped(""));
    }

    #[test]
    fn multibyte_tail_never_split() {
        // The held-back tail is always whole characters: "é", never its last
        // byte alone.
        let mut m = matcher(&["ée"]);
        assert_eq!(m.push("café"), cont("caf"));
        assert_eq!(m.push("!"), cont("é!"));
        assert_eq!(m.push("éé"), cont("é"));
        assert_eq!(m.push("e"), stopped(""));
    }

    #[test]
    fn no_stops_pass_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("any text"), cont("any text"));
        assert_eq!(m.finish(), "");

        let mut m = matcher(&[""]);
        assert_eq!(
            m.push("empty stops are ignored"),
            cont("empty stops are ignored")
        );
    }

    #[test]
    fn random_deltas_match_reference() {
        // A fixed linear congruential generator over a small alphabet with
        // multi-byte characters, so stops and near-misses are frequent.
        let alphabet: Vec<char> = "ab é你🙂".chars().collect();
        let mut state: u64 = 7;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize % bound
        };
        let stops = ["ab a", "é你", "🙂🙂", "bb"];
        let cases = 300;
        let mut stopped_cases = 0;

        for case in 0..cases {
            let deltas: Vec<String> = (0..12)
                .map(|_| {
                    (0..next(4))
                        .map(|_| alphabet[next(alphabet.len())])
                        .collect()
                })
                .collect();
            let text = deltas.concat();
            let first_stop = stops.iter().filter_map(|stop| text.find(stop)).min();
            let expected = &text[..first_stop.unwrap_or(text.len())];

            let mut m = matcher(&stops);
            let mut received = String::new();
            let mut was_stopped = false;
            for delta in &deltas {
                match m.push(delta) {
                    StopOutcome::Continue(sent) => received.push_str(&sent),
                    StopOutcome::Stopped(sent) => {
                        received.push_str(&sent);
                        was_stopped = true;
                        break;
                    }
                }
            }
            received.push_str(&m.finish());
            assert_eq!(received, expected, "case {case}: {deltas:?}");
            assert_eq!(was_stopped, first_stop.is_some(), "case {case}: {deltas:?}");
            stopped_cases += usize::from(was_stopped);
        }
        // Both outcomes must occur, or the cases test only one path.
        assert!(stopped_cases > 0, "no case stopped");
        assert!(stopped_cases < cases, "every case stopped");
    }

    #[test]
    fn stop_across_held_and_new_text() {
        let mut m = matcher(&["</s>"]);
        assert_eq!(m.push("answer </"), cont("answer "));
        assert_eq!(m.push("s"), cont(""));
        assert_eq!(m.push("x>"), cont("</sx>"));
        assert_eq!(m.push("done</s>"), stopped("done"));
    }
}
