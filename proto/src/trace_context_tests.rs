use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::MetadataMap;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01")
}

/// Runs `body` under a subscriber that builds OpenTelemetry spans, as the
/// `wick` binary does when it exports them.
fn with_otel_layer<T>(body: impl FnOnce() -> T) -> T {
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, body)
}

/// Splits a `traceparent` value into its trace id and span id.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "malformed traceparent {traceparent:?}");
    (parts[1].to_string(), parts[2].to_string())
}

fn caller_metadata() -> MetadataMap {
    let mut metadata = MetadataMap::new();
    let value = caller_traceparent().parse().expect("valid metadata value");
    metadata.insert("traceparent", value);
    metadata
}

#[test]
fn metadata_round_trip_keeps_trace() {
    let propagator = TraceContextPropagator::new();
    let injected = with_otel_layer(|| {
        let parent = propagator.extract(&MetadataCarrier(&caller_metadata()));
        let span = tracing::info_span!("child");
        set_parent(&span, parent);
        let mut outgoing = MetadataMap::new();
        let written = inject_metadata_with(&propagator, &span, &mut outgoing);
        assert!(written, "nothing injected for an exported span");
        outgoing
    });

    let traceparent = injected
        .get("traceparent")
        .expect("traceparent injected")
        .to_str()
        .expect("ASCII traceparent");
    let (trace_id, span_id) = ids(traceparent);
    assert_eq!(trace_id, CALLER_TRACE_ID);
    assert_ne!(
        span_id, CALLER_SPAN_ID,
        "the child must have its own span id"
    );
}

#[test]
fn map_round_trip_keeps_trace() {
    let propagator = TraceContextPropagator::new();
    let caller: HashMap<String, String> =
        HashMap::from([("traceparent".to_string(), caller_traceparent())]);
    let (injected, child_span_id) = with_otel_layer(|| {
        let span = tracing::info_span!("child");
        set_parent(&span, propagator.extract(&caller));
        let map = inject_map_with(&propagator, &span);
        let child_span_id = span.context().span().span_context().span_id();
        (map, child_span_id.to_string())
    });

    let (trace_id, span_id) = ids(&injected["traceparent"]);
    assert_eq!(trace_id, CALLER_TRACE_ID);
    assert_eq!(span_id, child_span_id);

    let extracted = propagator.extract(&injected);
    let context = extracted.span().span_context().clone();
    assert!(context.is_remote());
    assert_eq!(context.trace_id().to_string(), CALLER_TRACE_ID);
    assert_eq!(context.span_id().to_string(), child_span_id);
}

#[test]
fn invalid_traceparent_starts_new_trace() {
    let propagator = TraceContextPropagator::new();
    let mut metadata = MetadataMap::new();
    metadata.insert("traceparent", "00-not-a-trace-01".parse().unwrap());
    let parent = propagator.extract(&MetadataCarrier(&metadata));
    assert!(!parent.span().span_context().is_valid());

    let injected = with_otel_layer(|| {
        let span = tracing::info_span!("root");
        set_parent(&span, parent);
        inject_map_with(&propagator, &span)
    });
    let (trace_id, _) = ids(&injected["traceparent"]);
    assert_ne!(trace_id, "00000000000000000000000000000000");
}

#[test]
fn noop_propagator_injects_nothing() {
    let propagator = opentelemetry::trace::noop::NoopTextMapPropagator::new();
    let (written, metadata, map) = with_otel_layer(|| {
        let span = tracing::info_span!("span");
        let mut metadata = MetadataMap::new();
        let written = inject_metadata_with(&propagator, &span, &mut metadata);
        (written, metadata, inject_map_with(&propagator, &span))
    });
    assert!(!written);
    assert!(metadata.is_empty());
    assert!(map.is_empty());
}

#[test]
fn set_parent_without_layer_is_ignored() {
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&MetadataCarrier(&caller_metadata()));
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("plain");
        set_parent(&span, parent);
        let map = inject_map_with(&propagator, &span);
        assert!(
            map.is_empty(),
            "a span without the layer has no context: {map:?}"
        );
    });
}

#[test]
fn binary_metadata_keys_are_skipped() {
    let mut metadata = caller_metadata();
    metadata.insert_bin(
        "trace-bin",
        tonic::metadata::MetadataValue::from_bytes(b"\x00"),
    );
    let carrier = MetadataCarrier(&metadata);
    let keys = carrier.keys();
    assert_eq!(keys, vec!["traceparent"]);
}

#[test]
fn invalid_metadata_entries_are_skipped() {
    let mut metadata = MetadataMap::new();
    let mut injector = MetadataInjector {
        metadata: &mut metadata,
        written: 0,
    };
    injector.set("bad key", "value".into());
    injector.set("tracestate", "line\nbreak".into());
    injector.set("traceparent", caller_traceparent());
    assert_eq!(injector.written, 1);
    assert_eq!(metadata.len(), 1);
    assert!(metadata.get("traceparent").is_some());
}
