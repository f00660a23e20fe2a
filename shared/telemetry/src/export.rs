//! Where spans go: over OTLP when the standard variables say where, and nowhere otherwise.
//!
//! Only the standard variables configure it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns export on; `OTEL_EXPORTER_OTLP_PROTOCOL` may say
//! `http/protobuf`, the one protocol built in; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//! name the process; `OTEL_TRACES_SAMPLER` (and `…_ARG`) and `OTEL_BSP_*` are the SDK's own. Spans
//! are batched on a thread of the SDK's and flushed by [`shutdown`].
//!
//! Trace ids are X-Ray compatible (their first 8 hex digits are the start time), so traces exported
//! through an ADOT collector join those of the AWS services a message passed through.

use crate::{Process, STAGE_ATTRIBUTE};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use std::sync::OnceLock;
use std::time::Duration;

static STATE: OnceLock<(SdkTracerProvider, Exporting)> = OnceLock::new();

/// What was decided about export, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exporting {
    /// No endpoint is set: spans stay in the process (their ids still reach records and messages).
    Off,
    /// Spans go over OTLP/HTTP to this endpoint.
    To(String),
    /// The variables ask for something this build cannot do; nothing is exported.
    Refused(String),
}

/// The process's tracer, building its provider on first use.
pub(crate) fn tracer(process: Process<'_>) -> (SdkTracer, Exporting) {
    let (provider, exporting) = STATE.get_or_init(|| build(process));
    (provider.tracer("choreo"), exporting.clone())
}

impl crate::events::InternalEvent for &Exporting {
    /// Says where spans go, or why nowhere although asked; nothing when export is simply off.
    fn emit(self) {
        match self {
            Exporting::Off => {}
            Exporting::To(endpoint) => {
                tracing::info!(%endpoint, "TraceExportOn");
                crate::events::counted("TraceExportOn");
            }
            Exporting::Refused(reason) => {
                tracing::error!(%reason, "TraceExportRefused");
                crate::events::counted("TraceExportRefused");
            }
        }
    }
}

/// Flushes the spans not yet exported and stops export: call it once, as the process ends (after
/// SIGTERM's drain). Blocks for at most a few seconds if the collector does not answer.
pub fn shutdown() {
    if let Some((provider, Exporting::To(_))) = STATE.get() {
        let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn build(process: Process<'_>) -> (SdkTracerProvider, Exporting) {
    let base = env("OTEL_SERVICE_NAME");
    let name = match process {
        Process::Stage(stage) => base.unwrap_or_else(|| format!("choreo-{stage}")),
        Process::Pipeline(_) => base.unwrap_or_else(|| "choreo".into()),
    };
    // The resource detectors read OTEL_RESOURCE_ATTRIBUTES (and OTEL_SERVICE_NAME, which the name
    // above already honours).
    let resource = Resource::builder().with_service_name(name.clone()).build();
    let builder = SdkTracerProvider::builder()
        .with_id_generator(XrayIdGenerator::default())
        .with_resource(resource);
    let exporting = decide();
    let Exporting::To(_) = &exporting else {
        return (builder.build(), exporting);
    };
    let otlp = || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
    };
    let provider = match process {
        Process::Stage(_) => otlp().map(|e| builder.with_batch_exporter(e).build()),
        // The process's name prefixes each stage's: `choreo-validator`, or `acme-validator`.
        Process::Pipeline(stages) => stages
            .iter()
            .map(|stage| Ok((stage.to_string(), format!("{name}-{stage}"), otlp()?)))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|by_stage| {
                let rest = otlp()?;
                Ok(builder
                    .with_batch_exporter(ByStage { by_stage, rest })
                    .build())
            }),
    };
    match provider {
        Ok(p) => (p, exporting),
        Err(e) => (
            SdkTracerProvider::builder()
                .with_id_generator(XrayIdGenerator::default())
                .build(),
            Exporting::Refused(format!("the OTLP exporter could not be built: {e}")),
        ),
    }
}

/// Reads the standard variables: whether to export, and where.
fn decide() -> Exporting {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
    {
        return Exporting::Off;
    }
    let Some(endpoint) =
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Exporting::Off;
    };
    let protocol =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match protocol.as_deref() {
        None | Some("http/protobuf") => Exporting::To(endpoint),
        Some(other) => Exporting::Refused(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not built in: Choreo exports OTLP over \
             http/protobuf (a collector's port 4318)"
        )),
    }
}

/// One OTLP exporter per stage, each under its stage's service name, and one for spans of no stage:
/// a span goes out as the service its `choreo.stage` attribute names. A resource belongs to a whole
/// export request, hence one exporter per name.
#[derive(Debug)]
struct ByStage<E> {
    by_stage: Vec<(String, String, E)>,
    rest: E,
}

impl<E: SpanExporter> ByStage<E> {
    fn index_of(&self, span: &SpanData) -> Option<usize> {
        let stage = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == STAGE_ATTRIBUTE)?;
        let Value::String(stage) = &stage.value else {
            return None;
        };
        self.by_stage
            .iter()
            .position(|(name, _, _)| name == stage.as_str())
    }
}

impl<E: SpanExporter> SpanExporter for ByStage<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut groups: Vec<Vec<SpanData>> = vec![Vec::new(); self.by_stage.len() + 1];
        for span in batch {
            let i = self.index_of(&span).unwrap_or(self.by_stage.len());
            groups[i].push(span);
        }
        let mut result = Ok(());
        for (i, spans) in groups.into_iter().enumerate() {
            if spans.is_empty() {
                continue;
            }
            let exporter = self.by_stage.get(i).map_or(&self.rest, |(_, _, e)| e);
            if let Err(e) = exporter.export(spans).await {
                result = Err(e);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let mut result = self.rest.shutdown_with_timeout(timeout);
        for (_, _, e) in &self.by_stage {
            if let Err(err) = e.shutdown_with_timeout(timeout) {
                result = Err(err);
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut result = self.rest.force_flush();
        for (_, _, e) in &self.by_stage {
            if let Err(err) = e.force_flush() {
                result = Err(err);
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.rest.set_resource(resource);
        for (_, service, e) in &mut self.by_stage {
            let named = Resource::builder_empty()
                .with_attributes(
                    resource
                        .iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                )
                .with_service_name(service.clone())
                .build();
            e.set_resource(&named);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use std::sync::{Arc, Mutex};

    /// Records what it is given: its resource's service name, and the names of the spans exported.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        service: Arc<Mutex<String>>,
        spans: Arc<Mutex<Vec<String>>>,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let names = batch.iter().map(|s| s.name.to_string());
            self.spans.lock().unwrap().extend(names);
            Ok(())
        }

        fn set_resource(&mut self, resource: &Resource) {
            let name = resource.get(&"service.name".into()).unwrap();
            *self.service.lock().unwrap() = name.to_string();
        }
    }

    #[test]
    fn each_stage_s_spans_go_out_under_the_stage_s_service_name() {
        let stages = ["ingestor", "validator"];
        let recorders: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
        let router = ByStage {
            by_stage: stages
                .iter()
                .zip(&recorders)
                .map(|(s, r)| (s.to_string(), format!("acme-{s}"), r.clone()))
                .collect(),
            rest: recorders[2].clone(),
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("acme")
                    .with_attribute(KeyValue::new("deployment.environment", "test"))
                    .build(),
            )
            .with_simple_exporter(router)
            .build();
        let tracer = provider.tracer("test");
        for (name, stage) in [
            ("validate", Some("validator")),
            ("ingest", Some("ingestor")),
            ("cli", None),
            ("odd", Some("nobody")),
        ] {
            let mut builder = tracer.span_builder(name);
            if let Some(stage) = stage {
                builder = builder.with_attributes([KeyValue::new(STAGE_ATTRIBUTE, stage)]);
            }
            builder.start(&tracer).end();
        }
        provider.force_flush().unwrap();

        let seen = |r: &Recorder| {
            (
                r.service.lock().unwrap().clone(),
                r.spans.lock().unwrap().clone(),
            )
        };
        assert_eq!(
            seen(&recorders[0]),
            ("acme-ingestor".into(), vec!["ingest".into()])
        );
        assert_eq!(
            seen(&recorders[1]),
            ("acme-validator".into(), vec!["validate".into()])
        );
        assert_eq!(
            seen(&recorders[2]),
            ("acme".into(), vec!["cli".into(), "odd".into()])
        );
    }

    #[test]
    fn only_the_standard_variables_turn_export_on() {
        // One test for all cases: the variables are the process's.
        let clear = || {
            for v in [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_SDK_DISABLED",
                "OTEL_TRACES_EXPORTER",
            ] {
                // SAFETY: this test is the only one in its binary touching the environment.
                unsafe { std::env::remove_var(v) };
            }
        };
        let set = |k: &str, v: &str| unsafe { std::env::set_var(k, v) };
        clear();
        assert_eq!(decide(), Exporting::Off);
        set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(decide(), Exporting::To("http://127.0.0.1:4318".into()));
        set("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        assert_eq!(decide(), Exporting::To("http://127.0.0.1:4318".into()));
        set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        assert!(matches!(decide(), Exporting::Refused(why) if why.contains("grpc")));
        set("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        set("OTEL_TRACES_EXPORTER", "none");
        assert_eq!(decide(), Exporting::Off);
        clear();
        set(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces",
        );
        assert_eq!(
            decide(),
            Exporting::To("http://collector:4318/v1/traces".into())
        );
        clear();
    }
}
