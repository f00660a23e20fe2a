//! Alerts on the local backend: a log line each, and an e-mail through SMTP when configured.

use async_trait::async_trait;
use choreo_domain::alert::Message;
use choreo_domain::config::AlertSettings;
use choreo_domain::secret::redact_url;
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
    /// The URL without its password: what errors (and so logs) name the server by.
    shown: String,
}

impl MailNotifier {
    /// Checks the SMTP settings now, so that a typo fails at start rather than at the first alert.
    pub fn new(settings: &AlertSettings) -> Result<MailNotifier, PortError> {
        let Some(url) = &settings.smtp_url else {
            return Ok(MailNotifier { smtp: None });
        };
        let bad = |what: String| PortError::permanent("configure", "alerts.smtp_url", what);
        let shown = redact_url(url);
        // `smtp://host:port` is plain (or STARTTLS when the server offers it), `smtps://` is TLS.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| bad(format!("{shown}: {e}")))?
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
                shown,
            }),
        })
    }
}

#[async_trait]
impl Notifier for MailNotifier {
    async fn notify(&self, message: &Message) -> Result<(), PortError> {
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
            .map_err(|e| PortError::permanent("notify", &smtp.shown, format!("e-mail: {e}")))?;
        smtp.transport
            .send(email)
            .await
            .map_err(|e| PortError::transient("notify", &smtp.shown, format!("SMTP: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> AlertSettings {
        AlertSettings {
            smtp_url: Some(url.into()),
            smtp_to: vec!["oncall@example.com".into()],
            ..AlertSettings::default()
        }
    }

    #[tokio::test]
    async fn a_failed_delivery_names_the_server_without_its_password() {
        // A port nobody listens on: the delivery fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let notifier = MailNotifier::new(&settings(&format!(
            "smtp://alerts:hunter2@127.0.0.1:{port}"
        )))
        .unwrap();
        let message = Message {
            subject: "s".into(),
            body: "b".into(),
        };
        let error = notifier.notify(&message).await.unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(
            error.contains(&format!("alerts:***@127.0.0.1:{port}")),
            "{error}"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let Err(error) = MailNotifier::new(&settings("smtp://alerts:hunter2@/?tls=maybe")) else {
            panic!("accepted");
        };
        let error = error.to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("alerts.smtp_url"), "{error}");
    }
}
