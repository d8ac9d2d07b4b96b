//! Mail settings as the directory sees them, and the outbox's administration: listing mails
//! (failed deliveries included) and queuing a failed one again.

use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_mail::{Rendered, Templates};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// What the directory needs to write mails.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The base of every link in a mail, without a trailing slash (`https://id.example.org`).
    pub public_url: String,
    pub templates: Templates,
    /// How long a password-reset link works.
    pub reset_ttl: Duration,
    /// How long an invitation link works.
    pub invitation_ttl: Duration,
    /// Password-reset requests per account name (or address) before it is slowed.
    pub reset_per_account: u32,
    /// Password-reset requests per client address before it is slowed.
    pub reset_per_address: u32,
    /// Whether people may sign up by themselves.
    pub signup: SignupMode,
    /// How long a sign-up's confirmation link works.
    pub signup_confirm_ttl: Duration,
    /// Unconfirmed sign-ups are deleted this long after they were made.
    pub signup_unconfirmed_ttl: Duration,
    /// Mail domains sign-ups may use (lower case); empty: any.
    pub signup_domains: Vec<String>,
}

/// `MUSTER_SIGNUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignupMode {
    /// Nobody signs up by themselves.
    #[default]
    Off,
    /// A confirmed sign-up can log in.
    Open,
    /// A confirmed sign-up then waits for a super-user's approval.
    Approval,
}

impl SignupMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "open" => Some(Self::Open),
            "approval" => Some(Self::Approval),
            _ => None,
        }
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            templates: Templates::default(),
            reset_ttl: Duration::minutes(30),
            invitation_ttl: Duration::days(7),
            reset_per_account: 3,
            reset_per_address: 20,
            signup: SignupMode::Off,
            signup_confirm_ttl: Duration::hours(48),
            signup_unconfirmed_ttl: Duration::days(7),
            signup_domains: Vec::new(),
        }
    }
}

/// A mail in the outbox, as a super-user sees it: never the message (which may hold a link).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailView {
    pub id: Uuid,
    /// `invitation`, `password_reset`, `password_changed` or `test`.
    pub kind: String,
    pub recipient: String,
    pub user_id: Option<String>,
    /// `pending` (queued or being retried), `sent`, or `failed` (given up; can be retried).
    pub status: String,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// The last refusal or failure from the mail server.
    pub last_error: Option<String>,
}

/// How long `list_mail` answers at most.
pub const MAIL_LIST_MAX: i64 = 200;

impl Directory {
    /// Uses `mail` for the links and templates of every mail this directory writes.
    pub fn with_mail(mut self, mail: MailConfig) -> Self {
        self.mail = std::sync::Arc::new(mail);
        self
    }

    pub fn mail_config(&self) -> &MailConfig {
        &self.mail
    }

    /// The outbox's sealing and this node's delivery wake-up.
    pub fn outbox(&self) -> &muster_mail::Outbox {
        &self.outbox
    }

    /// `public_url` + `path` + `?token=` + `token`.
    pub(crate) fn link(&self, path: &str, token: &str) -> String {
        format!("{}{path}?token={token}", self.mail.public_url)
    }

    /// A fresh one-time link for `user`, mailed to `email`: the token (only its hash is
    /// stored, with its `purpose`) and the mail of template `kind` that carries the link to
    /// `path`, both to write with the change that makes them; and when the link expires.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn link_mail(
        &self,
        kind: &'static str,
        prefix: &str,
        purpose: &'static str,
        path: &str,
        ttl: Duration,
        user: &muster_core::directory::User,
        email: &str,
        now: OffsetDateTime,
    ) -> Result<(muster_store::Followups, OffsetDateTime), DomainError> {
        let (token, hash) = muster_core::credentials::token::new_token(prefix);
        let expires = now + ttl;
        let link = self.link(path, &token);
        let message = self.render(
            kind,
            &[
                ("username", &user.username),
                ("link", &link),
                ("expires", &human_time(expires)),
            ],
            Some(&link),
        )?;
        let followups = muster_store::Followups {
            tokens: vec![muster_store::NewActionToken {
                hash,
                purpose,
                user_uuid: user.uuid,
                created_at: now,
                expires_at: expires,
            }],
            mails: vec![self.outbox.mail(kind, email, Some(user.uuid), &message, now)],
        };
        Ok((followups, expires))
    }

    /// Renders `kind`; a template error is ours, not the caller's.
    pub(crate) fn render(
        &self,
        kind: &str,
        vars: &[(&str, &str)],
        link: Option<&str>,
    ) -> Result<Rendered, DomainError> {
        let public_url = self.mail.public_url.as_str();
        let mut all = vec![("public_url", public_url)];
        all.extend_from_slice(vars);
        self.mail
            .templates
            .render(kind, &all, link)
            .map_err(DomainError::internal)
    }

    /// The outbox, newest first (super-user). `status`: `pending`, `sent` or `failed`.
    pub async fn list_mail(&self, auth: &Auth, status: Option<&str>, limit: i64) -> Result<Vec<MailView>, DomainError> {
        auth.require_super_user()?;
        if let Some(s) = status
            && !matches!(s, "pending" | "sent" | "failed")
        {
            return Err(DomainError::invalid_field(
                "status",
                codes::INVALID_INPUT,
                "must be pending, sent or failed",
            ));
        }
        let rows = self
            .store
            .list_mail(status, limit.clamp(1, MAIL_LIST_MAX))
            .await
            .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|m| MailView {
                id: m.id,
                kind: m.kind,
                recipient: m.recipient,
                user_id: m.user_uuid.map(|u| muster_core::ids::UserId::from_uuid(u).to_string()),
                status: m.status,
                attempts: m.attempts,
                created_at: m.created_at.0,
                next_attempt_at: m.next_attempt_at.0,
                sent_at: m.sent_at.map(|t| t.0),
                last_error: m.last_error,
            })
            .collect())
    }

    /// Queues a failed mail again (super-user), its attempts counted afresh.
    pub async fn retry_mail(&self, ctx: &RequestCtx, auth: &Auth, id: Uuid) -> Result<(), DomainError> {
        let entry = AuditEntry::new(ctx, actions::MAIL_RETRY, Some(auth.user_id()), Some(id.to_string()));
        let result = async {
            auth.require_super_user()?;
            if self
                .store
                .retry_mail(id, clock::now(), &entry)
                .await
                .map_err(store_error)?
            {
                self.outbox.wake();
                Ok(())
            } else {
                Err(DomainError::not_found("failed mail"))
            }
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// Counts of mails per status, for the console's dashboard.
    pub async fn mail_counts(&self, auth: &Auth) -> Result<Vec<(String, i64)>, DomainError> {
        auth.require_super_user()?;
        self.store.mail_counts().await.map_err(store_error)
    }

    /// Deletes one-time tokens past their expiry.
    pub async fn purge_expired_tokens(&self) -> Result<u64, DomainError> {
        self.store.purge_action_tokens(clock::now()).await.map_err(store_error)
    }
}

/// `at` as people read it in a mail: `2026-01-31 14:05 UTC`.
pub(crate) fn human_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}
