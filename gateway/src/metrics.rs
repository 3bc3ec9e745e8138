//! Prometheus metrics of the gateway, registered once per process in the
//! default registry, which `GET /metrics` serves with every other
//! component's metrics in the same process.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, TextEncoder,
};

/// The gateway's metrics.
pub struct Metrics {
    /// Finished HTTP requests by route pattern and status code.
    pub requests: IntCounterVec,
    /// Seconds from request arrival to the last byte, by route pattern.
    pub duration: HistogramVec,
    /// Seconds from request arrival to the first generated text sent, by
    /// route pattern.
    pub time_to_first_byte: HistogramVec,
    /// SSE responses currently open.
    pub active_streams: IntGauge,
}

/// Returns buckets from 5 ms to about 5 minutes, for responses that range
/// from an instant rejection to a long generation on a CPU.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.005, 2.5, 14).expect("constant bucket parameters are valid")
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let requests = IntCounterVec::new(
        Opts::new(
            "wick_gateway_requests_total",
            "HTTP requests by route and status code",
        ),
        &["route", "status"],
    )
    .expect("constant metric options are valid");
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "wick_gateway_request_duration_seconds",
            "Seconds from request arrival to the last byte",
        )
        .buckets(latency_buckets()),
        &["route"],
    )
    .expect("constant metric options are valid");
    let time_to_first_byte = HistogramVec::new(
        HistogramOpts::new(
            "wick_gateway_time_to_first_byte_seconds",
            "Seconds from request arrival to the first generated text sent",
        )
        .buckets(latency_buckets()),
        &["route"],
    )
    .expect("constant metric options are valid");
    let active_streams = IntGauge::new(
        "wick_gateway_active_streams",
        "SSE responses currently open",
    )
    .expect("constant metric options are valid");

    let registry = prometheus::default_registry();
    let collectors: [Box<dyn prometheus::core::Collector>; 4] = [
        Box::new(requests.clone()),
        Box::new(duration.clone()),
        Box::new(time_to_first_byte.clone()),
        Box::new(active_streams.clone()),
    ];
    for collector in collectors {
        if let Err(error) = registry.register(collector) {
            tracing::warn!(%error, "gateway metric not registered; /metrics will lack it");
        }
    }
    Metrics {
        requests,
        duration,
        time_to_first_byte,
        active_streams,
    }
});

/// Counts every request by route and status, and times the ones that are
/// complete when their headers go out. SSE responses time themselves when
/// their stream ends.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_of(&request);
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    METRICS
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    if !is_event_stream(&response) {
        let seconds = started.elapsed().as_secs_f64();
        METRICS
            .duration
            .with_label_values(&[route.as_str()])
            .observe(seconds);
    }
    response
}

/// Returns the route pattern of a request, which keeps label values
/// bounded.
pub fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string())
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// Serves the default registry in the Prometheus text format.
pub async fn serve_metrics() -> Response {
    LazyLock::force(&METRICS);
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut buffer) {
        tracing::error!(%error, "failed to encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        buffer,
    )
        .into_response()
}
