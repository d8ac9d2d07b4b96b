//! The directory service: users, credentials, sessions and the audit log, with Zato SSO's
//! semantics and muster's security fixes.
//!
//! A [`Directory`] sits between the HTTP layer (which parses and authenticates) and the
//! [`Store`] (which persists). It applies the rules from `muster_core::directory`, runs
//! password hashing on a bounded blocking pool, and hands every change to the store together
//! with its audit record so both commit in one transaction.

mod access;
mod api_tokens;
mod audit_log;
mod events;
mod hashing;
mod invitations;
mod mail;
mod password_reset;
mod sessions;
mod signup;
mod totp;
mod users;
mod workflow_ops;

pub use access::{Auth, Caller, ProviderToken};
pub use api_tokens::API_TOKEN_CACHE_MAX_AGE;
pub use events::{EventPage, StreamAccess};
pub use hashing::HashPool;
pub use invitations::{INVITATION_PATH, IssuedInvitation, PendingInvitation};
pub use mail::{MAIL_LIST_MAX, MailConfig, MailView, SignupMode};
pub use password_reset::{RESET_PATH, ResetFor};
pub use sessions::{LoginInput, LoginOutcome, SessionView};
pub use signup::{SIGNUP_CONFIRM_PATH, SignupConfirmed};
pub use totp::TotpEnrollment;
pub use users::{SearchInput, SearchPage, UserTarget, password_changed};

use muster_core::audit::{AuditEntry, RequestCtx};
use muster_core::credentials::secretbox::SecretBox;
use muster_core::directory::DirectoryConfig;
use muster_core::directory::throttle::ThrottleKeys;
use muster_core::error::{DomainError, codes};
use muster_store::{Store, StoreError};
use std::sync::Arc;

/// The directory service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Directory {
    store: Store,
    config: Arc<DirectoryConfig>,
    hashes: HashPool,
    secrets: SecretBox,
    /// Keys the login throttle's counters (a key derived from the server key).
    throttle_keys: ThrottleKeys,
    /// Links and templates of the mails this directory writes.
    mail: Arc<mail::MailConfig>,
    /// Seals mails for the outbox and wakes this node's delivery.
    outbox: muster_mail::Outbox,
}

impl Directory {
    pub fn new(store: Store, config: DirectoryConfig, hashes: HashPool, secrets: SecretBox) -> Self {
        Self {
            store,
            config: Arc::new(config),
            hashes,
            throttle_keys: ThrottleKeys::new(secrets.derive_key("login throttle keys")),
            mail: Arc::default(),
            outbox: muster_mail::Outbox::new(secrets.clone()),
            secrets,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hashes(&self) -> &HashPool {
        &self.hashes
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    /// Writes a failure record for a refused call. A failure to write it is logged, not
    /// returned: the caller gets the original refusal.
    async fn audit_refusal(&self, entry: AuditEntry, error: &DomainError) {
        if error.kind == muster_core::ErrorKind::Internal {
            return;
        }
        if let Err(e) = self.store.insert_audit(&entry.failed(error.code)).await {
            tracing::error!(error = %e, "could not write audit record for a refused call");
        }
    }
}

/// Store errors as the domain sees them.
pub(crate) fn store_error(e: StoreError) -> DomainError {
    match e {
        StoreError::Duplicate("username") => DomainError::conflict(
            codes::USERNAME_EXISTS,
            "username already exists, or one that looks like it (the same name ignoring case, width \
             and look-alike characters)",
        ),
        StoreError::Duplicate(what) => DomainError::conflict(codes::CONFLICT, format!("{what} already exists")),
        other => other.into(),
    }
}

/// Shorthand for a request context used by the command line.
pub fn cli_ctx() -> RequestCtx {
    RequestCtx {
        cid: format!("cli-{}", uuid::Uuid::new_v4()),
        ..Default::default()
    }
}
