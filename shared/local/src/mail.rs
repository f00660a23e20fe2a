//! Alerts on the local backend: a log line each, and an e-mail through SMTP when configured.

use async_trait::async_trait;
use choreo_domain::alert::Message;
use choreo_domain::config::AlertSettings;
use choreo_ports::{Notifier, PortError};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// The local backend's [`Notifier`].
pub struct MailNotifier {
    smtp: Option<Smtp>,
}

struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    url: String,
}

impl MailNotifier {
    /// Checks the SMTP settings now, so that a typo fails at start rather than at the first alert.
    pub fn new(settings: &AlertSettings) -> Result<MailNotifier, PortError> {
        let Some(url) = &settings.smtp_url else {
            return Ok(MailNotifier { smtp: None });
        };
        let bad = |what: String| PortError::permanent("configure", "alerts.smtp_url", what);
        // `smtp://host:port` is plain (or STARTTLS when the server offers it), `smtps://` is TLS.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| bad(format!("{url}: {e}")))?
            .build();
        let from = settings
            .smtp_from
            .parse()
            .map_err(|e| bad(format!("smtp_from {:?}: {e}", settings.smtp_from)))?;
        let to = settings
            .smtp_to
            .iter()
            .map(|a| a.parse().map_err(|e| bad(format!("smtp_to {a:?}: {e}"))))
            .collect::<Result<Vec<Mailbox>, _>>()?;
        if to.is_empty() {
            return Err(bad("smtp_url is set but smtp_to names no recipient".into()));
        }
        Ok(MailNotifier {
            smtp: Some(Smtp {
                transport,
                from,
                to,
                url: url.clone(),
            }),
        })
    }
}

#[async_trait]
impl Notifier for MailNotifier {
    async fn notify(&self, message: &Message) -> Result<(), PortError> {
        tracing::warn!(subject = %message.subject, "Alert\n{}", message.body);
        let Some(smtp) = &self.smtp else {
            return Ok(());
        };
        let mut email = lettre::Message::builder()
            .from(smtp.from.clone())
            .subject(&message.subject);
        for to in &smtp.to {
            email = email.to(to.clone());
        }
        let email = email
            .body(message.body.clone())
            .map_err(|e| PortError::permanent("notify", &smtp.url, format!("e-mail: {e}")))?;
        smtp.transport
            .send(email)
            .await
            .map_err(|e| PortError::transient("notify", &smtp.url, format!("SMTP: {e}")))?;
        Ok(())
    }
}
