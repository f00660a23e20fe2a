//! Named events: one type per thing worth observing, after Vector's `internal_events`. A type's
//! [`InternalEvent::emit`] writes its structured log line and moves its metrics, so nothing is logged
//! without being counted, and the log's event name and the metric's are defined in one place.
//!
//! The types live beside the code that emits them, in an `events` module of each crate
//! (`choreo_runtime::events`, `choreo_validator::events`, …). Each `emit()` logs the type's name as
//! the message with its facts as fields, calls [`counted`] with that name, and moves its own metric
//! when the metrics contract names one (`choreo_messages_handled_total`, …).

/// An observable event. Build it with the facts it reports, then `emit()` it (or [`emit`]).
pub trait InternalEvent: Sized {
    /// Writes the log line and moves the event's counters, gauges or histograms.
    fn emit(self);
}

/// Emits `event`: `emit(FileValidated { .. })` reads as the sentence it logs.
pub fn emit(event: impl InternalEvent) {
    event.emit()
}

/// Counts one `event` (the type's name) in `choreo_events_total{event}`. Every `emit()` calls it,
/// so a rate of any named event can be graphed without its own metric.
pub fn counted(event: &'static str) {
    metrics::counter!("choreo_events_total", "event" => event).increment(1);
}

/// A Prometheus recorder of its own, for tests that assert what events counted: install it on the
/// test's thread and read series back by name and labels.
///
/// [`Recorded::run`] covers synchronous code; [`Recorded::install`] covers everything that runs on
/// the current thread while its guard lives (a current-thread tokio runtime's tasks included).
pub struct Recorded {
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            recorder: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        }
    }
}

impl Recorded {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with this recorder receiving its metrics.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Makes this recorder the current thread's until the guard drops.
    pub fn install(&self) -> metrics::LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(&self.recorder)
    }

    /// The sum of the series named `name` whose labels include every one of `labels` (0 when none
    /// matches). A histogram's observations are read as `NAME_count`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.recorder.handle().render();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: f64,
}

/// One line of Prometheus text: `name{k="v",…} value`. Our label values hold no quotes or commas.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let labels = body
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (name, labels)
        }
        None => (series, Vec::new()),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pinged {
        stage: &'static str,
    }

    impl InternalEvent for Pinged {
        fn emit(self) {
            tracing::info!(stage = self.stage, "Pinged");
            counted("Pinged");
            metrics::counter!("choreo_pings_total", "stage" => self.stage).increment(1);
        }
    }

    #[test]
    fn counts_every_event_by_name_and_reads_series_by_labels() {
        let recorded = Recorded::new();
        recorded.run(|| {
            emit(Pinged { stage: "validator" });
            emit(Pinged { stage: "validator" });
            emit(Pinged { stage: "crawler" });
        });
        assert_eq!(
            recorded.value("choreo_events_total", &[("event", "Pinged")]),
            3.0
        );
        assert_eq!(
            recorded.value("choreo_pings_total", &[("stage", "validator")]),
            2.0
        );
        assert_eq!(recorded.value("choreo_pings_total", &[]), 3.0);
        assert_eq!(
            recorded.value("choreo_pings_total", &[("stage", "ingestor")]),
            0.0
        );
    }
}
