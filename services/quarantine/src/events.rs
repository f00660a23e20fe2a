//! The quarantine mover's named events (see [`choreo_telemetry::events`]). Its move INVALID →
//! QUARANTINED emits `FileTransitioned` through `choreo_runtime::transition`.

use choreo_domain::FileId;
use choreo_telemetry::events::{InternalEvent, counted};

/// An invalid file was copied to the failed bucket, with its report, and removed from the input.
pub struct FileQuarantined<'a> {
    pub file_id: &'a FileId,
    pub dataset: &'a str,
    pub key: &'a str,
    /// Its key in the failed bucket.
    pub kept: &'a str,
}

impl InternalEvent for FileQuarantined<'_> {
    fn emit(self) {
        tracing::info!(
            file_id = %self.file_id,
            dataset = self.dataset,
            key = self.key,
            kept = self.kept,
            "FileQuarantined"
        );
        counted("FileQuarantined");
    }
}
