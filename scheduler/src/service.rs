//! The public `wick.v1.Generation` service: checks, templates and
//! tokenizes each request before its stream starts, then hands it to the
//! batching loop.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;
use wick_proto::trace_context;
use wick_proto::v1 as pb;
use wick_proto::v1::generation_server::Generation;

use crate::catalog::{Catalog, ModelEntry};
use crate::error::RequestError;
use crate::event_loop::LoopEvent;
use crate::metrics::metrics;
use crate::sequence::{NewSequence, Sequence};
use crate::{template, validate, SchedulerConfig};

/// Events beyond one per generated token: a flushed tail, leftover ids,
/// and the final event.
const EXTRA_EVENTS: usize = 4;

pub struct GenerationService {
    pub config: SchedulerConfig,
    pub catalog: Arc<RwLock<Catalog>>,
    pub events: mpsc::Sender<LoopEvent>,
    pub cancels: mpsc::UnboundedSender<u64>,
    pub next_id: AtomicU64,
}

/// A prompt that passed every check, with its token budget.
struct Prepared {
    model: Arc<ModelEntry>,
    prompt: Vec<u32>,
    max_tokens: u32,
}

impl GenerationService {
    fn prepare(&self, request: &pb::GenerateRequest) -> Result<Prepared, RequestError> {
        validate::check_fields(request)?;
        let model = self
            .catalog
            .read()
            .expect("catalog lock is never poisoned: no code panics while holding it")
            .resolve(&request.model)?;
        if !request.lora.is_empty() && !model.lora_adapters.contains(&request.lora) {
            return Err(RequestError::UnknownLora {
                lora: request.lora.clone(),
                available: model.lora_adapters.clone(),
            });
        }
        let input = request
            .input
            .as_ref()
            .expect("check_fields requires an input");
        let text = template::render(input, request.raw, model.chat_template.as_deref())?;
        let encoding = model
            .tokenizer
            .encode(text, false)
            .map_err(|e| RequestError::Tokenizer(e.to_string()))?;
        let mut prompt: Vec<u32> = model.bos_token_id.into_iter().collect();
        prompt.extend_from_slice(encoding.get_ids());
        let max_tokens = self.token_budget(&model, prompt.len(), request.max_tokens)?;
        Ok(Prepared {
            model,
            prompt,
            max_tokens,
        })
    }

    /// Applies the context rule: the prompt must leave room for at least
    /// one token; an explicit `max_tokens` must fit with the prompt; without
    /// one, the default is capped by the room left. The same holds for the
    /// largest worker's KV cache, so no sequence can outgrow every worker.
    fn token_budget(
        &self,
        model: &ModelEntry,
        prompt_tokens: usize,
        max_tokens: Option<u32>,
    ) -> Result<u32, RequestError> {
        let context = model.context_length;
        if prompt_tokens >= context {
            return Err(RequestError::PromptTooLong {
                prompt_tokens,
                context,
            });
        }
        let room = context - prompt_tokens;
        let max_tokens = match max_tokens {
            Some(max) if max as usize > room => {
                return Err(RequestError::MaxTokensTooLarge {
                    max_tokens: max,
                    prompt_tokens,
                    context,
                })
            }
            Some(max) => max,
            None => self.config.default_max_tokens.min(room as u32),
        };
        let kv_tokens = model.max_kv_tokens();
        let block = model.block_size.max(1);
        // A sequence recomputed after preemption needs its decode reserve
        // on top, or it could never be admitted again.
        let needed = (prompt_tokens + max_tokens as usize).div_ceil(block)
            + self.config.decode_reserve_blocks;
        if needed > kv_tokens / block {
            return Err(RequestError::ExceedsKvCache {
                needed,
                available: kv_tokens / block,
            });
        }
        Ok(max_tokens)
    }

    /// Queues a checked request; its span's parent is `trace_parent`, the
    /// trace context of the `Generate` call.
    async fn submit(
        &self,
        request: pb::GenerateRequest,
        trace_parent: opentelemetry::Context,
    ) -> Result<CancelOnDrop, RequestError> {
        let prepared = self.prepare(&request)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = if request.request_id.is_empty() {
            format!("req-{id}")
        } else {
            request.request_id.clone()
        };
        let (events, receiver) = mpsc::channel(prepared.max_tokens as usize + EXTRA_EVENTS);
        let tools = match request.input {
            Some(pb::generate_request::Input::Chat(chat)) => chat.tools,
            _ => Vec::new(),
        };
        let sampling =
            validate::resolve_sampling(request.sampling.as_ref(), self.config.default_temperature);
        debug!(%request_id, sequence_id = id, prompt_tokens = prepared.prompt.len(), max_tokens = prepared.max_tokens, "accepted");
        let sequence = Sequence::new(NewSequence {
            id,
            request_id,
            model: Arc::clone(&prepared.model.id),
            tokenizer: Arc::clone(&prepared.model.tokenizer),
            prompt: prepared.prompt,
            sampling,
            max_tokens: prepared.max_tokens,
            eos_token_ids: prepared.model.eos_token_ids.clone(),
            stop: request.stop,
            tools,
            events,
            trace_parent,
        });
        // From here on, dropping the stream cancels the sequence.
        let stream = CancelOnDrop {
            id,
            inner: ReceiverStream::new(receiver),
            cancels: self.cancels.clone(),
        };
        let (reply, accepted) = oneshot::channel();
        let submit = LoopEvent::Submit {
            sequence: Box::new(sequence),
            reply,
        };
        self.events
            .send(submit)
            .await
            .map_err(|_| RequestError::ShuttingDown)?;
        accepted.await.map_err(|_| RequestError::ShuttingDown)??;
        Ok(stream)
    }
}

fn outcome_label(error: &RequestError) -> &'static str {
    match error {
        RequestError::QueueFull { .. } => "queue_full",
        RequestError::UnknownModel { .. } => "not_found",
        RequestError::NoWorker | RequestError::ShuttingDown => "unavailable",
        RequestError::Tokenizer(_) => "failed",
        _ => "invalid",
    }
}

#[tonic::async_trait]
impl Generation for GenerationService {
    type GenerateStream = CancelOnDrop;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let trace_parent = trace_context::extract_metadata(request.metadata());
        match self.submit(request.into_inner(), trace_parent).await {
            Ok(stream) => Ok(Response::new(stream)),
            Err(error) => {
                let label = outcome_label(&error);
                // The loop counts queue_full itself, where it decides it.
                if label != "queue_full" {
                    metrics().requests.with_label_values(&[label]).inc();
                }
                debug!(%error, "request rejected");
                Err(error.into())
            }
        }
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let catalog = self
            .catalog
            .read()
            .expect("catalog lock is never poisoned: no code panics while holding it");
        Ok(Response::new(catalog.list()))
    }
}

/// A request's event stream that notifies the batching loop when the
/// client drops it, so the sequence leaves the queue or its worker at once.
pub struct CancelOnDrop {
    id: u64,
    inner: ReceiverStream<Result<pb::GenerateEvent, Status>>,
    cancels: mpsc::UnboundedSender<u64>,
}

impl Stream for CancelOnDrop {
    type Item = Result<pb::GenerateEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // After a normal finish the loop has forgotten the id and ignores
        // this; when the loop is gone there is nothing left to cancel.
        let _ = self.cancels.send(self.id);
    }
}
