use crate::{OutgoingMessage, PortError};
use async_trait::async_trait;

/// The events topic. Routing is configuration, not code: each stage's queue subscribes with a filter on
/// the `event_type` attribute, and the auditor's queue subscribes to everything.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes to every subscribed queue whose filter accepts the message's `event_type` attribute,
    /// attributes included, its body as it was (not wrapped in an envelope). A message no filter
    /// accepts goes nowhere, and that is `Ok`; one without an `event_type` attribute is refused with
    /// a `Permanent` error. Once this returns `Ok`, every such queue holds the message durably
    /// (SNS: it has accepted the message, and its delivery to SQS follows, retried by SNS).
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PortError>;
}
