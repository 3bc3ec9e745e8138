//! Errors a `Generate` call can end with before its stream starts, and
//! their one mapping to gRPC status codes.

use tonic::Status;

/// A reason a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A field breaks its rule; the message names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    #[error("model {model:?} is not served by any connected worker; ListModels returns the models that are")]
    UnknownModel { model: String },
    #[error("lora {lora:?} is not served by any connected worker: LoRA adapters available: {available:?}")]
    UnknownLora {
        lora: String,
        available: Vec<String>,
    },
    #[error(
        "the prompt is {prompt_tokens} tokens, which does not fit the context of {context} tokens"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error(
        "max_tokens {max_tokens} plus the prompt's {prompt_tokens} tokens exceeds the context of \
         {context} tokens; lower max_tokens to at most {room}",
        room = context.saturating_sub(*prompt_tokens)
    )]
    MaxTokensTooLarge {
        max_tokens: u32,
        prompt_tokens: usize,
        context: usize,
    },
    #[error(
        "the prompt plus max_tokens needs {needed} KV-cache blocks, but the largest worker has \
         {available}; shorten the prompt or lower max_tokens"
    )]
    ExceedsKvCache { needed: usize, available: usize },
    #[error("the waiting queue is full ({max_queue} requests); retry later")]
    QueueFull { max_queue: usize },
    #[error("no worker is connected; retry later")]
    NoWorker,
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error("tokenizing the prompt failed: {0}")]
    Tokenizer(String),
    #[error("rendering the chat template failed: {0}")]
    Template(String),
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Status {
        let message = error.to_string();
        match error {
            RequestError::Invalid(_)
            | RequestError::UnknownLora { .. }
            | RequestError::PromptTooLong { .. }
            | RequestError::MaxTokensTooLarge { .. }
            | RequestError::ExceedsKvCache { .. }
            | RequestError::Template(_) => Status::invalid_argument(message),
            RequestError::UnknownModel { .. } => Status::not_found(message),
            RequestError::QueueFull { .. } => Status::resource_exhausted(message),
            RequestError::NoWorker | RequestError::ShuttingDown => Status::unavailable(message),
            RequestError::Tokenizer(_) => Status::internal(message),
        }
    }
}
