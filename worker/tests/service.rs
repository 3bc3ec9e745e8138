//! The worker gRPC service around the demo engine, over loopback gRPC.

use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use wick_proto::v1 as pb;
use wick_proto::v1::worker_client::WorkerClient;
use wick_worker::{Engine, EngineLimits, KvCapacity, LoadOptions, ModelSource};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(name: &str) -> Server {
    let limits = EngineLimits {
        block_size: 16,
        kv_capacity: KvCapacity::Tokens(1024),
        max_batch_sequences: 4,
        max_step_tokens: 256,
    };
    let engine = tokio::task::spawn_blocking(move || {
        Engine::load(&ModelSource::Demo, &LoadOptions::default(), limits).unwrap()
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        wick_worker::service::serve(listener, engine, name, shutdown)
            .await
            .unwrap();
    });
    Server {
        url,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn client(&self) -> WorkerClient<Channel> {
        WorkerClient::connect(self.url.clone()).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn admit(id: u64, prompt: Vec<u32>, max_new_tokens: u32) -> pb::WorkerCommand {
    pb::WorkerCommand {
        command: Some(pb::worker_command::Command::Admit(pb::Admit {
            sequence_id: id,
            prompt_token_ids: prompt,
            max_new_tokens,
            sampling: Some(pb::SequenceSampling {
                top_p: 1.0,
                repetition_penalty: 1.0,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

struct RunStream {
    commands: mpsc::Sender<pb::WorkerCommand>,
    events: tonic::Streaming<pb::WorkerEvent>,
}

async fn open_run(client: &mut WorkerClient<Channel>) -> RunStream {
    let (commands, receiver) = mpsc::channel(16);
    let events = client
        .run(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    RunStream { commands, events }
}

impl RunStream {
    async fn next(&mut self) -> Option<pb::worker_event::Event> {
        let message = tokio::time::timeout(TIMEOUT, self.events.next())
            .await
            .unwrap();
        message.map(|event| event.unwrap().event.unwrap())
    }

    /// Reads step results until `id` finishes; returns its tokens.
    async fn run_to_end(&mut self, id: u64) -> Vec<u32> {
        let mut tokens = Vec::new();
        loop {
            let Some(pb::worker_event::Event::Step(step)) = self.next().await else {
                panic!("expected a step result");
            };
            for token in step.tokens.iter().filter(|t| t.sequence_id == id) {
                tokens.push(token.token_id);
                if token.finish != pb::SequenceFinish::None as i32 {
                    return tokens;
                }
            }
        }
    }
}

async fn free_blocks(client: &mut WorkerClient<Channel>) -> (u32, u32) {
    let describe = client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    (describe.kv_blocks_free, describe.kv_blocks_total)
}

#[tokio::test]
async fn describe_and_health_report_the_model() {
    use tonic_health::pb::health_client::HealthClient;
    let server = start("svc-describe").await;
    let mut client = server.client().await;
    let describe = client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(describe.context_length, 2048);
    assert_eq!(describe.kv_block_size, 16);
    assert_eq!(describe.kv_blocks_total, 64);
    assert_eq!(describe.kv_blocks_free, 64);
    assert_eq!(describe.max_batch_sequences, 4);
    assert!(describe.tokenizer_json.contains("<|endoftext|>"));
    assert_eq!(describe.eos_token_ids, vec![50256]);
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "wick.v1.Worker"] {
        let request = tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        };
        let status = health.check(request).await.unwrap().into_inner().status;
        assert_eq!(status, 1, "service {service:?} is not SERVING");
    }
    server.stop().await;
}

#[tokio::test]
async fn run_streams_tokens_until_length() {
    let server = start("svc-run").await;
    let mut client = server.client().await;
    let mut run = open_run(&mut client).await;
    run.commands
        .send(admit(7, vec![10, 20, 30], 5))
        .await
        .unwrap();
    let tokens = run.run_to_end(7).await;
    assert!(!tokens.is_empty());
    assert!(tokens.len() <= 5, "{tokens:?}");
    assert_eq!(free_blocks(&mut client).await.0, 64);
    server.stop().await;
}

#[tokio::test]
async fn bad_admits_are_rejected() {
    let server = start("svc-reject").await;
    let mut client = server.client().await;
    let mut run = open_run(&mut client).await;
    run.commands
        .send(admit(1, vec![99_999_999], 5))
        .await
        .unwrap();
    let Some(pb::worker_event::Event::Rejected(rejected)) = run.next().await else {
        panic!("expected a rejection");
    };
    assert_eq!(rejected.sequence_id, 1);
    assert_eq!(rejected.reason, pb::rejected::Reason::Invalid as i32);
    assert!(
        rejected.message.contains("99999999"),
        "{}",
        rejected.message
    );
    run.commands
        .send(admit(2, vec![1, 2, 3], 4000))
        .await
        .unwrap();
    let Some(pb::worker_event::Event::Rejected(rejected)) = run.next().await else {
        panic!("expected a rejection");
    };
    assert_eq!(rejected.reason, pb::rejected::Reason::TooLong as i32);
    server.stop().await;
}

#[tokio::test]
async fn release_and_stream_end_free_blocks() {
    let server = start("svc-release").await;
    let mut client = server.client().await;
    let mut run = open_run(&mut client).await;
    run.commands
        .send(admit(1, vec![5; 40], 1000))
        .await
        .unwrap();
    let Some(pb::worker_event::Event::Step(_)) = run.next().await else {
        panic!("expected a step result");
    };
    assert!(free_blocks(&mut client).await.0 < 64);
    let release = pb::WorkerCommand {
        command: Some(pb::worker_command::Command::Release(pb::Release {
            sequence_id: 1,
        })),
    };
    run.commands.send(release).await.unwrap();
    let mut released = false;
    for _ in 0..10 {
        if let Some(pb::worker_event::Event::Step(step)) = run.next().await {
            if step.released.contains(&1) {
                released = true;
                assert_eq!(step.kv_blocks_free, 64);
                break;
            }
        }
    }
    assert!(released, "release was not reported");

    // A new stream replaces the old one, whose sequences are released.
    run.commands
        .send(admit(2, vec![5; 40], 1000))
        .await
        .unwrap();
    let Some(pb::worker_event::Event::Step(_)) = run.next().await else {
        panic!("expected a step result");
    };
    let mut second = open_run(&mut client).await;
    let mut old_stream_ended = false;
    for _ in 0..100 {
        if run.next().await.is_none() {
            old_stream_ended = true;
            break;
        }
    }
    assert!(old_stream_ended, "the replaced stream is still open");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while free_blocks(&mut client).await.0 != 64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "blocks of the replaced stream not freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    second.commands.send(admit(3, vec![1, 2], 2)).await.unwrap();
    assert!(!second.run_to_end(3).await.is_empty());

    // Ending the command side releases everything too.
    second
        .commands
        .send(admit(4, vec![5; 40], 1000))
        .await
        .unwrap();
    let Some(pb::worker_event::Event::Step(_)) = second.next().await else {
        panic!("expected a step result");
    };
    drop(second);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while free_blocks(&mut client).await.0 != 64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "blocks of the ended stream not freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
}
