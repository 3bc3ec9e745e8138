//! A scripted `wick.v1.Worker` for scheduler tests that must not depend on
//! model speed: every step, each live sequence gets the next token of a
//! fixed text, and the server records every admit it receives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use wick_proto::v1 as pb;
use wick_proto::v1::worker_server::{Worker, WorkerServer};

pub const BLOCK_SIZE: u32 = 16;

#[derive(Clone)]
pub struct FakeOptions {
    pub kv_blocks_total: u32,
    pub max_sequences: u32,
    pub step_delay: Duration,
    /// Token ids every sequence produces, in order, cycling.
    pub script: Vec<u32>,
}

/// What the fake saw, for assertions.
#[derive(Default)]
pub struct Record {
    pub admitted: Vec<u64>,
    pub released: Vec<u64>,
    pub live: BTreeMap<u64, (usize, u32)>,
}

pub struct FakeWorker {
    pub url: String,
    pub record: Arc<Mutex<Record>>,
    killed: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWorker {
    pub async fn start(options: FakeOptions) -> FakeWorker {
        Self::start_on("127.0.0.1:0", options).await
    }

    /// Starts on `addr`, for example the address of a killed worker.
    pub async fn start_on(addr: &str, options: FakeOptions) -> FakeWorker {
        let listener = TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let record = Arc::new(Mutex::new(Record::default()));
        let (stop, stopped) = oneshot::channel::<()>();
        let (killed, _) = watch::channel(false);
        let service = FakeService {
            options,
            record: Arc::clone(&record),
            killed: killed.clone(),
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<WorkerServer<FakeService>>().await;
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(WorkerServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeWorker {
            url,
            record,
            killed,
            stop: Some(stop),
            server,
        }
    }

    /// Kills the server and every stream at once, as a crash would.
    pub fn kill(&mut self) {
        self.killed.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

#[derive(Clone)]
struct FakeService {
    options: FakeOptions,
    record: Arc<Mutex<Record>>,
    killed: watch::Sender<bool>,
}

#[tonic::async_trait]
impl Worker for FakeService {
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(pb::DescribeResponse {
            model_id: "wick/fake".into(),
            family: "phi".into(),
            tokenizer_json: wick_worker::tokenizer::phi2_tokenizer_json().to_string(),
            eos_token_ids: vec![wick_worker::tokenizer::PHI2_EOS_TOKEN_ID],
            context_length: 2048,
            kv_block_size: BLOCK_SIZE,
            kv_blocks_total: self.options.kv_blocks_total,
            kv_blocks_free: self.options.kv_blocks_total,
            max_batch_sequences: self.options.max_sequences,
            max_step_tokens: 512,
            device: "cpu".into(),
            dtype: "f32".into(),
            vocab_size: 51200,
            ..Default::default()
        }))
    }

    type RunStream = ReceiverStream<Result<pb::WorkerEvent, Status>>;

    async fn run(
        &self,
        request: Request<Streaming<pb::WorkerCommand>>,
    ) -> Result<Response<Self::RunStream>, Status> {
        let (events, receiver) = mpsc::channel(64);
        let service = self.clone();
        tokio::spawn(service.step_loop(request.into_inner(), events));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl FakeService {
    async fn step_loop(
        self,
        mut inbound: Streaming<pb::WorkerCommand>,
        events: mpsc::Sender<Result<pb::WorkerEvent, Status>>,
    ) {
        let mut tick = tokio::time::interval(self.options.step_delay);
        let mut killed = self.killed.subscribe();
        let mut step = 0;
        loop {
            tokio::select! {
                () = async { let _ = killed.wait_for(|k| *k).await; } => {
                    let _ = events.send(Err(Status::unavailable("worker killed"))).await;
                    return;
                }
                message = inbound.next() => match message {
                    Some(Ok(command)) => self.apply(command),
                    _ => return,
                },
                _ = tick.tick() => {
                    let Some(result) = self.step(&mut step) else { continue };
                    let event = pb::WorkerEvent { event: Some(pb::worker_event::Event::Step(result)) };
                    if events.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn apply(&self, command: pb::WorkerCommand) {
        let mut record = self.record.lock().unwrap();
        match command.command {
            Some(pb::worker_command::Command::Admit(admit)) => {
                record.admitted.push(admit.sequence_id);
                let generated = admit.generated_token_ids.len();
                record
                    .live
                    .insert(admit.sequence_id, (generated, admit.max_new_tokens));
            }
            Some(pb::worker_command::Command::Release(release)) => {
                record.released.push(release.sequence_id);
                record.live.remove(&release.sequence_id);
            }
            None => {}
        }
    }

    fn step(&self, step: &mut u64) -> Option<pb::StepResult> {
        let mut record = self.record.lock().unwrap();
        if record.live.is_empty() {
            return None;
        }
        *step += 1;
        let script = &self.options.script;
        let mut tokens = Vec::new();
        let mut ended = Vec::new();
        for (&id, (generated, max)) in record.live.iter_mut() {
            let token_id = script[*generated % script.len()];
            *generated += 1;
            let finish = if token_id == wick_worker::tokenizer::PHI2_EOS_TOKEN_ID {
                ended.push(id);
                pb::SequenceFinish::Eos
            } else if *generated as u32 >= *max {
                ended.push(id);
                pb::SequenceFinish::Length
            } else {
                pb::SequenceFinish::None
            };
            tokens.push(pb::SampledToken {
                sequence_id: id,
                token_id,
                finish: finish as i32,
            });
        }
        for id in ended {
            record.live.remove(&id);
        }
        Some(pb::StepResult {
            step: *step,
            tokens,
            kv_blocks_total: self.options.kv_blocks_total,
            running_sequences: record.live.len() as u32,
            ..Default::default()
        })
    }
}
