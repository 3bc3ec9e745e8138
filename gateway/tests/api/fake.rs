//! A fake scheduler: a real tonic server for `wick.v1.Generation` and
//! `grpc.health.v1` on 127.0.0.1:0 that plays scripted events and records
//! what it received.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use wick_proto::v1::generate_event::Event;
use wick_proto::v1::generation_server::{Generation, GenerationServer};
use wick_proto::v1::{
    error, Error as EventError, FinishReason, Finished, GenerateEvent, GenerateRequest,
    ListModelsRequest, ListModelsResponse, ModelInfo, TextDelta, ToolCall, Usage,
};

/// One step of a scripted generation.
#[derive(Clone)]
pub enum Step {
    Delta(&'static str),
    Sleep(Duration),
    /// Waits until the test calls `notify_one` on the `Notify`.
    WaitFor(Arc<Notify>),
    Finish(FinishReason, Vec<ToolCall>),
    ErrorEvent(error::Code, &'static str),
    /// Ends the stream with a gRPC status after it started.
    StatusItem(Status),
}

/// What the fake does with one request.
pub struct Script {
    /// A status returned instead of a stream.
    pub reject: Option<Status>,
    pub steps: Vec<Step>,
}

impl Script {
    pub fn steps(steps: Vec<Step>) -> Self {
        Self {
            reject: None,
            steps,
        }
    }

    pub fn reject(status: Status) -> Self {
        Self {
            reject: Some(status),
            steps: Vec::new(),
        }
    }

    /// "Hello" and " world", then a normal stop with 5 prompt tokens.
    pub fn hello() -> Self {
        Self::steps(vec![
            Step::Delta("Hello"),
            Step::Delta(" world"),
            Step::Finish(FinishReason::Stop, Vec::new()),
        ])
    }
}

pub type ScriptFn = Arc<dyn Fn(&GenerateRequest) -> Script + Send + Sync>;

/// What the fake saw; shared with the test.
#[derive(Default)]
pub struct Record {
    pub requests: Mutex<Vec<GenerateRequest>>,
    pub traceparents: Mutex<Vec<Option<String>>>,
    /// Streams whose client went away before the script ended.
    pub dropped: AtomicUsize,
    /// Streams whose script ran to its end.
    pub completed: AtomicUsize,
}

impl Record {
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last_request(&self) -> GenerateRequest {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the fake received a request")
    }
}

struct Fake {
    script: ScriptFn,
    record: Arc<Record>,
    models: Vec<ModelInfo>,
}

pub fn phi2_model() -> ModelInfo {
    ModelInfo {
        id: "microsoft/phi-2".to_string(),
        aliases: vec!["@cf/microsoft/phi-2".to_string()],
        context_length: 2048,
        workers: 1,
        lora_adapters: vec!["served-adapter".to_string()],
        family: "phi".to_string(),
    }
}

fn event(event: Event) -> Result<GenerateEvent, Status> {
    Ok(GenerateEvent { event: Some(event) })
}

fn finished(reason: FinishReason, tool_calls: Vec<ToolCall>, completion_tokens: u32) -> Event {
    Event::Finished(Finished {
        reason: reason as i32,
        usage: Some(Usage {
            prompt_tokens: 5,
            completion_tokens,
            total_tokens: 5 + completion_tokens,
        }),
        tool_calls,
        request_id: "fake".to_string(),
        model: "microsoft/phi-2".to_string(),
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<GenerateEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Generation for Fake {
    type GenerateStream = EventStream;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.record.traceparents.lock().unwrap().push(traceparent);
        let request = request.into_inner();
        let script = (self.script)(&request);
        self.record.requests.lock().unwrap().push(request);
        if let Some(status) = script.reject {
            return Err(status);
        }
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(play(script.steps, sender, self.record.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse {
            models: self.models.clone(),
        }))
    }
}

async fn play(
    steps: Vec<Step>,
    sender: mpsc::Sender<Result<GenerateEvent, Status>>,
    record: Arc<Record>,
) {
    let mut deltas = 0;
    for step in steps {
        let item = match step {
            Step::Sleep(duration) => {
                tokio::select! {
                    _ = tokio::time::sleep(duration) => continue,
                    _ = sender.closed() => break,
                }
            }
            Step::WaitFor(notify) => {
                tokio::select! {
                    _ = notify.notified() => continue,
                    _ = sender.closed() => break,
                }
            }
            Step::Delta(text) => {
                deltas += 1;
                event(Event::Delta(TextDelta {
                    text: text.to_string(),
                    token_ids: vec![deltas],
                }))
            }
            Step::Finish(reason, tool_calls) => event(finished(reason, tool_calls, deltas)),
            Step::ErrorEvent(code, message) => event(Event::Error(EventError {
                code: code as i32,
                message: message.to_string(),
            })),
            Step::StatusItem(status) => Err(status),
        };
        if sender.send(item).await.is_err() {
            break;
        }
    }
    if sender.is_closed() {
        record.dropped.fetch_add(1, Ordering::SeqCst);
    } else {
        record.completed.fetch_add(1, Ordering::SeqCst);
    }
}

/// A running fake scheduler.
pub struct FakeScheduler {
    pub url: String,
    pub record: Arc<Record>,
    pub health: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl FakeScheduler {
    pub async fn start(script: ScriptFn) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let record = Arc::new(Record::default());
        let fake = Fake {
            script,
            record: record.clone(),
            models: vec![phi2_model()],
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<GenerationServer<Fake>>().await;
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(GenerationServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            server.await.expect("fake scheduler serves");
        });
        Self {
            url,
            record,
            health,
            task,
        }
    }

    pub async fn set_not_serving(&self) {
        self.health
            .set_not_serving::<GenerationServer<Fake>>()
            .await;
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
