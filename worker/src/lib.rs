//! The wick worker: runs one model and steps one batch of sequences.
//!
//! Modules, bottom-up:
//! - `engine`: [`Engine`], the public contract. Admit and release sequences,
//!   then call [`Engine::step`] for one forward pass over the whole batch.
//!
//! The modules below are being built; see each file's header.

pub mod engine;
pub mod sampling;
pub mod service;
pub mod tokenizer;

/// A model that could not be loaded. Every variant names the file or source.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Placeholder(String),
}

pub use engine::{
    Engine, EngineError, EngineLimits, FinishReason, KvCapacity, LoadOptions, ModelInfo,
    ModelSource, SampledToken, SamplingParams, SequenceRequest, StepOutput,
};
