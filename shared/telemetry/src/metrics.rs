//! Metrics: the process-wide recorder and its Prometheus rendering for `/metrics`.
//!
//! Counters, gauges and histograms are moved through the `metrics` facade (by the named events of
//! [`crate::events`] and the auditor's gauges). Until [`install`] runs, the facade drops them, which
//! is what tests and the command line's one-shot commands want. A process installs the recorder
//! once; `choreo up`'s six services share it, told apart by their `stage` label.

use crate::events::{InternalEvent, counted, emit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Upper bounds of the buckets of every `_seconds` histogram: from a handler that only acknowledges
/// (milliseconds) to one that streams a large file (minutes). Set, so that they render as
/// Prometheus histograms (quantiles computed by the server, summable across replicas) rather than
/// as the exporter's default summaries.
pub const SECONDS_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How often histograms' old samples are drained (the exporter leaves it to its user).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The installed recorder's handle; `None` when a recorder of another kind was installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for the whole process, once; later calls do nothing. Returns
/// whether metrics are recorded for [`render`]: false when a recorder of another kind was
/// installed before (logged).
pub fn install() -> bool {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    let upkeep = handle.clone();
                    // A thread rather than a task: the recorder outlives any one runtime.
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_EVERY);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(error) = spawned {
                        emit(MetricsUpkeepError { error });
                    }
                    Some(handle)
                }
                Err(error) => {
                    emit(MetricsRecorderError { error });
                    None
                }
            }
        })
        .is_some()
}

/// Every metric recorded so far, in the Prometheus text exposition format (version 0.0.4); empty
/// before [`install`].
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(handle)) => handle.render(),
        _ => String::new(),
    }
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The upkeep thread could not start: histograms keep every sample until the process ends.
struct MetricsUpkeepError<E: std::fmt::Display> {
    error: E,
}

impl<E: std::fmt::Display> InternalEvent for MetricsUpkeepError<E> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "MetricsUpkeepError");
        counted("MetricsUpkeepError");
    }
}

/// The recorder could not be installed (another is): `/metrics` stays empty.
struct MetricsRecorderError<E: std::fmt::Display> {
    error: E,
}

impl<E: std::fmt::Display> InternalEvent for MetricsRecorderError<E> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "MetricsRecorderError");
        counted("MetricsRecorderError");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_renders_seconds_as_histograms() {
        assert!(install());
        assert!(install(), "a second call keeps the first recorder");
        metrics::counter!("choreo_test_events_total", "stage" => "validator").increment(2);
        metrics::histogram!("choreo_test_duration_seconds", "stage" => "validator").record(0.2);
        metrics::gauge!("choreo_test_depth", "queue" => "q").set(7.0);
        let text = render();
        assert!(
            text.contains("choreo_test_events_total{stage=\"validator\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE choreo_test_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("choreo_test_duration_seconds_bucket{stage=\"validator\",le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(text.contains("choreo_test_depth{queue=\"q\"} 7"), "{text}");
    }
}
