//! Logs, trace export and the Prometheus endpoint.
//!
//! Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default
//! `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
//! exported over OTLP/gRPC and W3C trace context is propagated.

use std::net::SocketAddr;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::cli::LogFormat;
use crate::shutdown::Shutdown;

/// Keeps the trace exporter alive; flushes pending spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("wick: failed to flush traces: {error}");
            }
        }
    }
}

/// Installs the global tracing subscriber for a program named `service`.
///
/// # Errors
/// Fails when the OTLP exporter cannot be built from its environment.
pub fn init(format: LogFormat, service: &'static str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(otlp_provider(service)?),
        _ => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("wick")));

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("failed to install the log subscriber")?;
    Ok(Telemetry { provider })
}

fn otlp_provider(service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("failed to build the OTLP span exporter from OTEL_EXPORTER_OTLP_*")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(provider)
}

/// Serves every metric of the process (the default Prometheus registry) at
/// `GET /metrics` on `addr` until shutdown.
///
/// # Errors
/// Fails when the address cannot be bound.
pub async fn serve_metrics(addr: SocketAddr, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the metrics address {addr}"))?;
    tracing::info!(%addr, "serving metrics at /metrics");
    let app = axum::Router::new().route("/metrics", axum::routing::get(render_metrics));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, %addr, "metrics endpoint failed");
        }
    });
    Ok(())
}

async fn render_metrics() -> impl axum::response::IntoResponse {
    let families = prometheus::gather();
    let mut body = String::new();
    let encoded = prometheus::TextEncoder::new().encode_utf8(&families, &mut body);
    match encoded {
        Ok(()) => (
            axum::http::StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                prometheus::TEXT_FORMAT.to_string(),
            )],
            body,
        ),
        Err(error) => {
            tracing::error!(%error, "failed to encode metrics");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                [(axum::http::header::CONTENT_TYPE, "text/plain".to_string())],
                format!("failed to encode metrics: {error}"),
            )
        }
    }
}
