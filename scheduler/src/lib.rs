//! The wick scheduler: the public `Generation` API and continuous batching.
//!
//! Modules:
//! - `detokenizer`: token ids to complete UTF-8 text deltas.
//! - `stop`: stop strings across delta boundaries.

pub mod detokenizer;
pub mod stop;
