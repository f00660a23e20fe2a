//! Telemetry shared by every service.
//!
//! Logs go to stderr, as text or JSON lines (`CHOREO_LOG_FORMAT=json`, the default in containers),
//! filtered by `RUST_LOG`. Spans are OpenTelemetry spans, exported over OTLP when the standard
//! variables say where ([`export`]); a file's spans form one trace across all stages (see
//! `docs/observability.md`): the ingestor starts it, each message carries its W3C `traceparent` (and
//! the same context as an X-Ray `AWSTraceHeader`) that the consumer loop turns back into the parent of
//! its span ([`set_parent_from`]), and publishers read it from the current span
//! ([`current_traceparent`]). Batch work adds a span to each of its files' traces, linked to the
//! batch's own ([`file_span`]).

pub mod events;
pub mod export;
pub mod metrics;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use export::{Exporting, shutdown};

/// The span attribute naming the stage a span belongs to: spans are exported under that stage's
/// service name (`choreo-validator`, …), even when six stages share one process.
pub const STAGE_ATTRIBUTE: &str = "choreo.stage";

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

/// Which process is starting telemetry.
#[derive(Debug, Clone, Copy)]
pub enum Process<'a> {
    /// One stage's own binary: everything it traces is that stage's (`choreo-<stage>`, or
    /// `OTEL_SERVICE_NAME`).
    Stage(&'a str),
    /// The `choreo` command, which may run all six stages (`choreo up`): each span goes out under
    /// its stage's service name, the rest under `choreo` (or `OTEL_SERVICE_NAME`).
    Pipeline(&'a [&'a str]),
}

/// Installs the global subscriber: a log layer and the OpenTelemetry layer. Spans are exported when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, and kept in-process otherwise;
/// their ids are real either way, so trace ids reach file records and message attributes. Safe to
/// call twice (the second call does nothing). Once logging is up, it says where spans go
/// (`TraceExportOn`), or why nowhere although asked (`TraceExportRefused`).
pub fn init(process: Process<'_>, format: LogFormat, default_filter: &str) {
    let (tracer, exporting) = export::tracer(process);
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
    events::emit(&exporting);
}

/// For tests: trace ids without log noise (set `RUST_LOG` to see logs).
pub fn init_for_tests() {
    init(Process::Pipeline(&[]), LogFormat::Text, "off");
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

/// The span context a W3C `traceparent` names, if it is well-formed.
fn remote(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the remote span named by a message's `traceparent`, or failing that by
/// its X-Ray `AWSTraceHeader` (what AWS services that traced the message set). Absent or malformed
/// headers leave the span a root, which starts a new trace.
pub fn set_parent_from(
    span: &tracing::Span,
    traceparent: Option<&str>,
    aws_trace_header: Option<&str>,
) {
    let parent = traceparent.and_then(remote).or_else(|| {
        aws_trace_header.and_then(opentelemetry_aws::trace::xray_propagator::span_context_from_str)
    });
    if let Some(sc) = parent {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

/// The X-Ray `AWSTraceHeader` (`Root=1-…;Parent=…;Sampled=…`) for the same span as `traceparent`,
/// so that AWS services and an ADOT collector join the trace.
pub fn aws_trace_header_of(traceparent: &str) -> Option<String> {
    remote(traceparent)
        .and_then(|sc| opentelemetry_aws::trace::xray_propagator::span_context_to_string(&sc))
}

/// Links `span` to the span `traceparent` names (a batch's, from each of its files' spans).
pub fn add_link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(sc) = traceparent.and_then(remote) {
        span.add_link(sc);
    }
}

/// Sets an attribute on the current span (one declared at its creation or not).
pub fn annotate(key: &'static str, value: impl Into<opentelemetry::Value>) {
    tracing::Span::current().set_attribute(key, value);
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
        set_parent_from(&next, Some(&tp), None);
        let continued = next.in_scope(current_trace_id).unwrap();
        assert_eq!(continued, trace, "the next stage joins the same trace");

        let fresh = tracing::info_span!("other");
        set_parent_from(&fresh, Some("garbage"), None);
        assert_ne!(fresh.in_scope(current_trace_id).unwrap(), trace);
    }

    #[test]
    fn trace_ids_are_x_ray_ids_and_cross_as_aws_trace_headers() {
        init_for_tests();
        let first = tracing::info_span!("ingest");
        let tp = first.in_scope(current_traceparent).unwrap();
        let trace = trace_id_of(&tp).unwrap().to_string();
        // X-Ray takes a trace id whose first 8 hex digits are its start in epoch seconds.
        let start = u64::from_str_radix(&trace[..8], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            now.abs_diff(start) < 600,
            "{trace} does not start with the time"
        );

        let header = aws_trace_header_of(&tp).unwrap();
        assert_eq!(
            header,
            format!(
                "Root=1-{}-{};Parent={};Sampled=1",
                &trace[..8],
                &trace[8..],
                tp.split('-').nth(2).unwrap()
            )
        );
        // A consumer given only the X-Ray header joins the same trace.
        let next = tracing::info_span!("validate");
        set_parent_from(&next, None, Some(&header));
        assert_eq!(next.in_scope(current_trace_id).unwrap(), trace);
    }
}
