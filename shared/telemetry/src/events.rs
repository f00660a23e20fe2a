//! Named events: one type per thing worth observing, after Vector's `internal_events`. A type's
//! [`InternalEvent::emit`] writes its structured log line and moves its metrics, so nothing is logged
//! without being counted, and the log's event name and the metric's are defined in one place.

/// An observable event. Build it with the facts it reports, then `emit()` it (or [`emit`]).
pub trait InternalEvent: Sized {
    /// Writes the log line and moves the event's counters, gauges or histograms.
    fn emit(self);
}

/// Emits `event`: `emit(FileValidated { .. })` reads as the sentence it logs.
pub fn emit(event: impl InternalEvent) {
    event.emit()
}
