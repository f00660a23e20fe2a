use crate::{OutgoingMessage, PortError};
use async_trait::async_trait;

/// The events topic. Routing is configuration, not code: each stage's queue subscribes with a filter on
/// the `event_type` attribute, and the auditor's queue subscribes to everything.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes to every subscribed queue whose filter accepts the message's `event_type` attribute,
    /// attributes included. Once this returns `Ok`, every such queue holds the message durably.
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PortError>;
}
