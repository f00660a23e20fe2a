//! The validator's named events (see [`choreo_telemetry::events`]). Its moves NEW → VALID |
//! INVALID emit `FileTransitioned` through `choreo_runtime::transition`.

use choreo_domain::{FileId, FileState};
use choreo_telemetry::events::{InternalEvent, counted};

/// A file was checked against its dataset's schema and its verdict recorded.
pub struct FileValidated<'a> {
    pub file_id: &'a FileId,
    pub dataset: &'a str,
    /// VALID or INVALID.
    pub state: FileState,
    pub rows: u64,
    /// Bytes read after decompression.
    pub bytes: u64,
    pub summary: &'a str,
}

impl FileValidated<'_> {
    fn verdict(&self) -> &'static str {
        if self.state == FileState::Valid {
            "valid"
        } else {
            "invalid"
        }
    }
}

impl InternalEvent for FileValidated<'_> {
    fn emit(self) {
        let verdict = self.verdict();
        let dataset = self.dataset.to_string();
        tracing::info!(
            file_id = %self.file_id,
            dataset = self.dataset,
            state = self.state.as_str(),
            rows = self.rows,
            bytes = self.bytes,
            summary = self.summary,
            "FileValidated"
        );
        counted("FileValidated");
        metrics::counter!("choreo_validation_bytes_total", "dataset" => dataset.clone())
            .increment(self.bytes);
        metrics::counter!("choreo_validation_rows_total", "dataset" => dataset.clone())
            .increment(self.rows);
        metrics::counter!("choreo_files_validated_total", "dataset" => dataset, "verdict" => verdict)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_telemetry::events::{Recorded, emit};

    #[test]
    fn counts_bytes_rows_and_verdicts_by_dataset() {
        let recorded = Recorded::new();
        let id = FileId::from("f-1");
        recorded.run(|| {
            for (state, rows, bytes) in [(FileState::Valid, 10, 400), (FileState::Invalid, 3, 90)] {
                emit(FileValidated {
                    file_id: &id,
                    dataset: "orders",
                    state,
                    rows,
                    bytes,
                    summary: "",
                });
            }
        });
        let orders = ("dataset", "orders");
        assert_eq!(
            recorded.value("choreo_validation_bytes_total", &[orders]),
            490.0
        );
        assert_eq!(
            recorded.value("choreo_validation_rows_total", &[orders]),
            13.0
        );
        for verdict in ["valid", "invalid"] {
            assert_eq!(
                recorded.value(
                    "choreo_files_validated_total",
                    &[orders, ("verdict", verdict)]
                ),
                1.0
            );
        }
    }
}
