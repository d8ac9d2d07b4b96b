//! Sending one message over SMTP (lettre).
//!
//! `MUSTER_SMTP_URL` is lettre's URL form: `smtp://host:25` (no TLS),
//! `smtp://user:pass@host:587?tls=required` (STARTTLS, refused without it),
//! `smtp://host:587?tls=opportunistic`, `smtps://user:pass@host:465` (TLS from the start).
//! See <https://docs.rs/lettre/latest/lettre/transport/smtp/struct.AsyncSmtpTransport.html#method.from_url>.

use crate::templates::Rendered;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// How long one SMTP conversation may take before it counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused for good (a 5xx: unknown recipient, relaying denied, …): trying again
    /// will not help.
    #[error("refused: {0}")]
    Permanent(String),
    /// Anything that may pass later: no connection, a timeout, a 4xx.
    #[error("{0}")]
    Transient(String),
    /// The message could not be built (a recipient that is not an address).
    #[error("bad message: {0}")]
    Message(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, SendError::Transient(_))
    }
}

/// An SMTP relay and the sender address.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the sender is shown.
        f.debug_struct("Smtp")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Smtp {
    /// `url` as described in the module documentation; `from` an address (`Name <a@b>` too).
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("mail_from {from:?} is not a mail address: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            // The error never echoes the URL (it may carry a password).
            .map_err(|e| format!("smtp_url is not a valid SMTP URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Self { transport, from })
    }

    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Sends `message` to `to`. `message_id` becomes the `Message-ID` (the outbox id, so that a
    /// message sent twice after a crash can be recognised as one).
    pub async fn send(&self, to: &str, message: &Rendered, message_id: &str) -> Result<(), SendError> {
        let to: Mailbox = to.parse().map_err(|e| SendError::Message(format!("recipient: {e}")))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .message_id(Some(message_id.to_owned()))
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| SendError::Message(e.to_string()))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}
