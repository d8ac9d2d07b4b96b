//! Delivering the outbox.
//!
//! Each node with SMTP configured runs [`run`]: it claims due mails (a claim keeps other nodes
//! off a mail while it is being sent), sends each, and records the outcome. A failure that may
//! pass (no connection, a timeout, a 4xx) makes the mail due again after a back-off that
//! doubles per attempt; a permanent refusal, or too many attempts, marks it `failed`, visible
//! in `GET /api/mail` and retryable. A node that dies mid-send leaves a claim that lapses, and
//! the mail is sent again: delivery is at least once, with the outbox id as `Message-ID` so
//! that a duplicate can be recognised.

use crate::smtp::{SendError, Smtp};
use crate::templates::Rendered;
use muster_core::credentials::secretbox::SecretBox;
use muster_store::{MailRow, NewMail, Store};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// How long a node may take to send a mail it claimed before another node may.
const CLAIM: Duration = Duration::from_secs(120);
/// Mails claimed per round.
const BATCH: i64 = 20;
/// The longest wait between two attempts at one mail.
const MAX_BACKOFF_SECS: u64 = 3600;

/// Seals messages for the outbox, and wakes this node's delivery task when one is queued.
#[derive(Clone, Debug)]
pub struct Outbox {
    secrets: SecretBox,
    wake: Arc<tokio::sync::Notify>,
}

impl Outbox {
    pub fn new(secrets: SecretBox) -> Self {
        Self {
            secrets,
            wake: Arc::default(),
        }
    }

    /// A mail for the outbox: the message sealed with the server key.
    pub fn mail(
        &self,
        kind: &'static str,
        to: &str,
        user: Option<Uuid>,
        message: &Rendered,
        at: OffsetDateTime,
    ) -> NewMail {
        let json = serde_json::to_string(message).unwrap_or_default();
        NewMail {
            id: Uuid::new_v4(),
            kind,
            recipient: to.to_owned(),
            user_uuid: user,
            sealed_message: self.secrets.seal(&json),
            created_at: at,
        }
    }

    /// The message of a stored mail (None once sent, or if it cannot be opened).
    pub fn open(&self, row: &MailRow) -> Option<Rendered> {
        let sealed = row.sealed_message.as_deref()?;
        let json = self.secrets.open(sealed).ok()?;
        serde_json::from_str(&json).ok()
    }

    /// Tells this node's delivery task that mail was queued (other nodes find it by polling).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// The wait after the first failed attempt; doubles per attempt, at most an hour.
    pub retry_base: Duration,
    /// Attempts before a mail is marked `failed`.
    pub max_attempts: u32,
    /// How often the outbox is looked at without being woken (mail queued by other nodes).
    pub poll: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(30),
            max_attempts: 10,
            poll: Duration::from_secs(5),
        }
    }
}

/// The wait after `attempts` failed attempts.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u64 << attempts.saturating_sub(1).min(20);
    Duration::from_secs(base.as_secs().max(1).saturating_mul(factor).min(MAX_BACKOFF_SECS))
}

/// Delivers the outbox until `stop` turns true.
pub async fn run(
    store: Store,
    outbox: Outbox,
    smtp: Smtp,
    options: DeliveryOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match round(&store, &outbox, &smtp, &options).await {
            // A full batch: there may be more due at once.
            Ok(n) if n as i64 >= BATCH => continue,
            Ok(_) => {}
            Err(_) if store.is_closed() => return,
            Err(e) => tracing::warn!(error = %e, "the mail outbox could not be read"),
        }
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(options.poll) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One round: claims the due mails and tries each once. Returns how many were claimed.
async fn round(
    store: &Store,
    outbox: &Outbox,
    smtp: &Smtp,
    options: &DeliveryOptions,
) -> Result<usize, muster_store::StoreError> {
    let now = muster_core::clock::now();
    let claimed = store.claim_due_mail(now, now + CLAIM, BATCH).await?;
    let n = claimed.len();
    for mail in claimed {
        let outcome = match outbox.open(&mail) {
            Some(message) => {
                smtp.send(&mail.recipient, &message, &format!("<{}@muster>", mail.id))
                    .await
            }
            None => Err(SendError::Message(
                "the stored message cannot be opened (a different server key?)".into(),
            )),
        };
        let now = muster_core::clock::now();
        match outcome {
            Ok(()) => {
                tracing::info!(mail_id = %mail.id, kind = %mail.kind, "mail sent");
                store.mail_sent(mail.id, now).await?;
            }
            Err(e) => {
                let attempts = u32::try_from(mail.attempts).unwrap_or(0) + 1;
                let give_up = e.is_permanent() || attempts >= options.max_attempts;
                let next = now + backoff(options.retry_base, attempts);
                tracing::warn!(mail_id = %mail.id, kind = %mail.kind, attempts, give_up, error = %e, "mail not sent");
                store
                    .mail_attempt_failed(mail.id, next, &e.to_string(), give_up)
                    .await?;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_and_stops_at_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), Duration::from_secs(30));
        assert_eq!(backoff(base, 2), Duration::from_secs(60));
        assert_eq!(backoff(base, 4), Duration::from_secs(240));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
    }
}
