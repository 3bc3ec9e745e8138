//! One request's trace across the gateway, the scheduler and the worker:
//! `wick serve` exports its spans over OTLP/gRPC to a collector that the
//! test runs on loopback.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::start_serve_with_env;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;

const CALLER_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN_ID: &str = "b7ad6b7169203331";

/// How long spans may take to reach the collector after `wick serve` exits.
const SPANS_TIMEOUT: Duration = Duration::from_secs(10);

/// An OTLP trace collector that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves the collector on a free loopback port; returns its URL.
    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("the fake OTLP collector failed: {error}");
            }
        });
        (url, task)
    }

    /// Waits until the caller's trace has a span for each `(crate, name)`
    /// in `expected`, or `SPANS_TIMEOUT` passes; returns the spans of the
    /// caller's trace either way.
    async fn wait_for(&self, expected: &[(&str, &str)]) -> Vec<Span> {
        let deadline = Instant::now() + SPANS_TIMEOUT;
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| hex(&span.trace_id) == CALLER_TRACE_ID)
                .cloned()
                .collect();
            let complete = expected
                .iter()
                .all(|(target, name)| find(&spans, target, name).is_some());
            if complete || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Formats a trace or span id as lowercase hex, as `traceparent` does.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns a span attribute as text; integer attributes are formatted.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    match value {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(number) => Some(number.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Finds the span named `name` whose tracing target is in crate `target`.
fn find<'a>(spans: &'a [Span], target: &str, name: &str) -> Option<&'a Span> {
    spans.iter().find(|span| {
        span.name == name
            && attribute(span, "target").is_some_and(|module| module.starts_with(target))
    })
}

fn describe(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|span| {
            format!(
                "{} target={:?} span={} parent={}",
                span.name,
                attribute(span, "target"),
                hex(&span.span_id),
                hex(&span.parent_span_id)
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_covers_gateway_scheduler_worker() {
    let collector = Collector::default();
    let (endpoint, collector_task) = collector.start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Export within 100 ms rather than the default 5 s, so spans
        // arrive even if the flush at exit were lost.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let (mut serve, http) = start_serve_with_env("demo", &[], &env).await;

    let traceparent = format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01");
    let response = reqwest::Client::new()
        .post(format!("http://{http}/ai/run/@cf/microsoft/phi-2"))
        .header("traceparent", &traceparent)
        .timeout(Duration::from_secs(60))
        .json(&json!({"prompt": "The sky is", "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .expect("a response within 60 s");
    assert_eq!(response.status(), 200);

    let status = serve
        .terminate(Duration::from_secs(30))
        .expect("wick serve exits within 30 s of SIGTERM");
    assert!(status.success(), "wick serve exit status: {status}");

    let expected = [
        ("wick_gateway", "request"),
        ("wick_scheduler", "request"),
        ("wick_worker", "sequence"),
    ];
    let spans = collector.wait_for(&expected).await;
    collector_task.abort();
    let found: Vec<&Span> = expected
        .iter()
        .map(|(target, name)| {
            find(&spans, target, name).unwrap_or_else(|| {
                panic!(
                    "no {name} span of {target} in the caller's trace; spans: {:#?}",
                    describe(&spans)
                )
            })
        })
        .collect();
    let [gateway, scheduler, worker] = found[..] else {
        unreachable!("one span per expected entry");
    };

    assert_eq!(
        hex(&gateway.parent_span_id),
        CALLER_SPAN_ID,
        "the gateway span's parent is the caller's span"
    );
    assert_eq!(
        hex(&scheduler.parent_span_id),
        hex(&gateway.span_id),
        "the scheduler span's parent is the gateway span"
    );
    assert_eq!(
        hex(&worker.parent_span_id),
        hex(&scheduler.span_id),
        "the worker span's parent is the scheduler span"
    );
    let sequence_id = attribute(scheduler, "sequence_id");
    assert!(
        sequence_id.is_some(),
        "the scheduler span has a sequence_id"
    );
    assert_eq!(attribute(worker, "sequence_id"), sequence_id);
    let outcome = attribute(worker, "outcome");
    assert!(
        matches!(outcome.as_deref(), Some("length" | "eos")),
        "the worker span ends with the sequence: outcome {outcome:?}"
    );
}
