//! The wick scheduler: the public `Generation` API and continuous batching.
//!
//! Modules:
//! - `config`: [`SchedulerConfig`] and [`BatchingMode`].
//! - `batcher`: the batching policy (queue, KV-block accounts, placement).
//! - `detokenizer`: token ids to complete UTF-8 text deltas.
//! - `stop`: stop strings across delta boundaries.

pub mod batcher;
pub mod config;
pub mod detokenizer;
pub mod stop;

pub use config::{BatchingMode, SchedulerConfig};
