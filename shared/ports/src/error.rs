use std::fmt;

/// Whether an error is worth retrying: the one place that decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// Throttling, timeouts, a busy database, a dropped connection: retry with backoff.
    Transient,
    /// The request itself is wrong (bad input, missing permission): retrying cannot help.
    Permanent,
    /// The thing asked for does not exist.
    NotFound,
}

/// An adapter's error, naming the operation and what it was applied to (queue, bucket/key, file id).
#[derive(Debug, Clone, thiserror::Error)]
pub struct PortError {
    pub kind: PortErrorKind,
    pub op: &'static str,
    pub target: String,
    pub message: String,
}

impl PortError {
    pub fn new(
        kind: PortErrorKind,
        op: &'static str,
        target: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        PortError {
            kind,
            op,
            target: target.into(),
            message: message.to_string(),
        }
    }

    pub fn transient(
        op: &'static str,
        target: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        Self::new(PortErrorKind::Transient, op, target, message)
    }

    pub fn permanent(
        op: &'static str,
        target: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        Self::new(PortErrorKind::Permanent, op, target, message)
    }

    pub fn not_found(op: &'static str, target: impl Into<String>) -> Self {
        Self::new(PortErrorKind::NotFound, op, target, "not found")
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == PortErrorKind::Transient
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.target, self.message)
    }
}
