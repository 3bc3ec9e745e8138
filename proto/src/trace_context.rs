//! W3C trace context across wick's gRPC calls, so one trace covers the
//! gateway, the scheduler and the worker.
//!
//! Context travels in two carriers: gRPC metadata (the gateway's
//! `Generate` call) and a string map (the `trace_context` field of the
//! worker's `Admit` command, because one `Run` stream carries many
//! sequences). Both use the process's global OpenTelemetry propagator.
//!
//! The `wick` binary installs the W3C `TraceContextPropagator` only when it
//! exports spans. Otherwise the global propagator is a no-op: injection
//! writes nothing and extraction returns an empty context.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Writes `span`'s context into `metadata`; returns false when nothing was
/// written (no propagator installed, or the span is not exported).
pub fn inject_metadata(span: &tracing::Span, metadata: &mut MetadataMap) -> bool {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        inject_metadata_with(propagator, span, metadata)
    })
}

/// Reads a parent context from `metadata`.
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&MetadataCarrier(metadata))
    })
}

/// Returns `span`'s context as string pairs, empty when nothing is
/// propagated.
pub fn inject_map(span: &tracing::Span) -> HashMap<String, String> {
    opentelemetry::global::get_text_map_propagator(|propagator| inject_map_with(propagator, span))
}

/// Reads a parent context from string pairs.
pub fn extract_map(map: &HashMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(map))
}

/// Makes `parent` the parent of `span`. Call it right after creating the
/// span: once a span is entered or its context read, its parent is fixed.
///
/// Without the OpenTelemetry layer (spans not exported) or when the span
/// is filtered out, there is no parent to set, and nothing happens.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if let Err(error) = span.set_parent(parent) {
        tracing::trace!(%error, "trace parent not set");
    }
}

fn inject_metadata_with(
    propagator: &dyn TextMapPropagator,
    span: &tracing::Span,
    metadata: &mut MetadataMap,
) -> bool {
    let mut carrier = MetadataInjector {
        metadata,
        written: 0,
    };
    propagator.inject_context(&span.context(), &mut carrier);
    carrier.written > 0
}

fn inject_map_with(
    propagator: &dyn TextMapPropagator,
    span: &tracing::Span,
) -> HashMap<String, String> {
    let mut map = HashMap::new();
    propagator.inject_context(&span.context(), &mut map);
    map
}

/// Reads ASCII metadata entries; binary (`-bin`) keys carry no trace
/// context.
struct MetadataCarrier<'a>(&'a MetadataMap);

impl Extractor for MetadataCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes entries into metadata and counts them. An entry that is not a
/// valid metadata key or value is logged and skipped, so that bad trace
/// context cannot fail the call that carries it.
struct MetadataInjector<'a> {
    metadata: &'a mut MetadataMap,
    written: usize,
}

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes());
        let parsed = MetadataValue::try_from(value.as_str());
        match (name, parsed) {
            (Ok(name), Ok(parsed)) => {
                self.metadata.insert(name, parsed);
                self.written += 1;
            }
            _ => tracing::debug!(
                key,
                "skipped a trace context entry that is not valid gRPC metadata"
            ),
        }
    }
}

#[cfg(test)]
#[path = "trace_context_tests.rs"]
mod tests;
