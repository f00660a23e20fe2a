//! Telemetry shared by every service.
//!
//! Logs go to stderr, as text or JSON lines (`CHOREO_LOG_FORMAT=json`, the default in containers),
//! filtered by `RUST_LOG`. Spans are OpenTelemetry spans, so every file gets one trace across all stages:
//! the ingestor starts it, and each message carries its W3C `traceparent` in a message attribute that the
//! consumer loop turns back into the parent of its span ([`set_parent_from`]), and that publishers read
//! from the current span ([`current_traceparent`]).

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `CHOREO_LOG_FORMAT=json` or `text`; text when unset.
    pub fn from_env() -> LogFormat {
        match std::env::var("CHOREO_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the global subscriber: a log layer and the OpenTelemetry layer. Spans are kept in-process
/// unless an exporter is configured; their ids are real either way, so trace ids reach file records and
/// message attributes. Safe to call twice (the second call does nothing).
pub fn init(service: &str, format: LogFormat, default_filter: &str) {
    let provider = PROVIDER.get_or_init(|| SdkTracerProvider::builder().build());
    let tracer = provider.tracer(service.to_string());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // The log filter applies to the log layer only: spans must reach the OpenTelemetry layer
    // whatever is logged, or trace ids would vanish with `RUST_LOG=warn`.
    let spans = EnvFilter::new("choreo=info");
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans),
        )
        .try_init();
}

/// For tests: trace ids without log noise (set `RUST_LOG` to see logs).
pub fn init_for_tests() {
    init("choreo-test", LogFormat::Text, "off");
}

/// The W3C `traceparent` of the current span, if tracing is on.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id (32 hex digits) of the current span, if tracing is on.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Makes `span` a child of the remote span named by `traceparent`. An absent or malformed header leaves
/// the span a root, which starts a new trace.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id inside a `traceparent` header.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_, id) = (parts.next()?, parts.next()?);
    (id.len() == 32).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_crosses_a_message_boundary() {
        init_for_tests();
        let first = tracing::info_span!("ingest");
        let (tp, trace) = first.in_scope(|| (current_traceparent(), current_trace_id()));
        let tp = tp.expect("a traceparent once telemetry is on");
        let trace = trace.unwrap();
        assert_eq!(trace_id_of(&tp), Some(trace.as_str()));

        let next = tracing::info_span!("validate");
        set_parent_from(&next, Some(&tp));
        let continued = next.in_scope(current_trace_id).unwrap();
        assert_eq!(continued, trace, "the next stage joins the same trace");

        let fresh = tracing::info_span!("other");
        set_parent_from(&fresh, Some("garbage"));
        assert_ne!(fresh.in_scope(current_trace_id).unwrap(), trace);
    }
}
