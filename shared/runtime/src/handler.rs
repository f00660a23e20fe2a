use async_trait::async_trait;
use choreo_ports::{PortError, PortErrorKind, ReceivedMessage};

/// One stage's reaction to one message. Returning `Ok` means every effect is durable: the consumer
/// deletes the message next. Handlers must be idempotent: the queue delivers at least once.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, message: &ReceivedMessage) -> Result<(), HandlerError>;
}

/// Why a handler did not finish. The variant decides what happens to the message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (throttling, a busy store, a network error): retried in-process with backoff,
    /// then left for redelivery.
    #[error("transient: {0}")]
    Transient(String),
    /// The message cannot be handled as it is (malformed, unknown contract version): handed back at
    /// once so that it reaches the dead-letter queue after `maxReceiveCount` receives.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

impl From<PortError> for HandlerError {
    fn from(e: PortError) -> Self {
        match e.kind {
            PortErrorKind::Transient => HandlerError::Transient(e.to_string()),
            PortErrorKind::Permanent | PortErrorKind::NotFound => {
                HandlerError::Permanent(e.to_string())
            }
        }
    }
}
