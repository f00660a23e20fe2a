use crate::PortError;
use async_trait::async_trait;
use choreo_domain::alert::Message;

/// Where alerts reach people: on AWS the alerts topic (whose e-mail subscription delivers them), on
/// the local backend SMTP when configured. (The log has every alert whatever the backend: the
/// auditor writes it as it sends.)
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends one message. `Ok` once it is handed over (to SNS, to the SMTP server); an error leaves
    /// the alerts it carries waiting, to be sent at the next delivery.
    async fn notify(&self, message: &Message) -> Result<(), PortError>;
}
