//! Audit records: who did what to whom, from where, with which outcome.
//!
//! An entry holds identifiers and reason codes, never secrets or attribute values: the
//! `details` object carries only non-secret facts such as the names of changed fields.

use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// Where a call came from. Every service call takes one.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    /// Correlation id: the request's `X-Request-Id`.
    pub cid: String,
    pub remote_addr: Option<String>,
    pub current_app: Option<String>,
    pub user_agent: Option<String>,
}

/// An audit record about to be written.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    pub cid: String,
    /// The acting user's `user_id`, `cli` for the command line, or None when unauthenticated.
    pub actor: Option<String>,
    pub current_app: Option<String>,
    pub remote_addr: Option<String>,
    pub action: &'static str,
    /// The `user_id` (or other id) acted upon.
    pub target: Option<String>,
    pub outcome: Outcome,
    /// For failures, the error code.
    pub reason: Option<String>,
    pub details: serde_json::Value,
    /// The event this change publishes, written in the same transaction as this record.
    pub event: Option<Event>,
}

/// An event for the event stream: what changed, for followers (agents, consoles, other
/// systems). Events carry identifiers and non-secret state, never credentials.
#[derive(Debug, Clone)]
pub struct Event {
    /// Which stream followers read it from (see [`streams`]).
    pub stream: &'static str,
    /// What happened, e.g. `user.created`.
    pub kind: &'static str,
    /// The id of what changed.
    pub subject: Option<String>,
    pub data: serde_json::Value,
}

/// Event streams.
pub mod streams {
    /// Directory users: created, updated, deleted, credentials changed.
    pub const DIRECTORY: &str = "directory";
    /// Workflow runs: started, each step's outcome, resumed, aborted.
    pub const PROCESSES: &str = "processes";
    /// Subscriptions: created, changed (status, sync, attributes), deleted.
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    /// Offering accounts: created, every transition and field change, deleted. Each event's
    /// data carries `provider_uuid`, which decides who may read it.
    pub const OFFERING_USERS: &str = "offering_users";
    pub const ALL: &[&str] = &[DIRECTORY, PROCESSES, SUBSCRIPTIONS, OFFERING_USERS];
}

/// Event kinds.
pub mod kinds {
    pub const USER_CREATED: &str = "user.created";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_PASSWORD_CHANGED: &str = "user.password_changed";
    pub const PROCESS_CREATED: &str = "process.created";
    /// A step ran (or the process was resumed, aborted, failed): `data` has the new status.
    pub const PROCESS_UPDATED: &str = "process.updated";
    pub const SUBSCRIPTION_CREATED: &str = "subscription.created";
    pub const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
    pub const SUBSCRIPTION_DELETED: &str = "subscription.deleted";
    pub const OFFERING_USER_CREATED: &str = "offering_user.created";
    pub const OFFERING_USER_UPDATED: &str = "offering_user.updated";
    pub const OFFERING_USER_DELETED: &str = "offering_user.deleted";
}

impl AuditEntry {
    pub fn new(ctx: &RequestCtx, action: &'static str, actor: Option<String>, target: Option<String>) -> Self {
        Self {
            at: crate::clock::now(),
            cid: ctx.cid.clone(),
            actor,
            current_app: ctx.current_app.clone(),
            remote_addr: ctx.remote_addr.clone(),
            action,
            target,
            outcome: Outcome::Success,
            reason: None,
            details: serde_json::Value::Object(Default::default()),
            event: None,
        }
    }

    /// Publishes `kind` about `subject` on `stream` together with this record.
    pub fn with_event(
        mut self,
        stream: &'static str,
        kind: &'static str,
        subject: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        self.event = Some(Event {
            stream,
            kind,
            subject: Some(subject.into()),
            data,
        });
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// A refusal: recorded, but nothing changed, so nothing is published.
    pub fn failed(mut self, reason: &str) -> Self {
        self.event = None;
        self.outcome = Outcome::Failure;
        self.reason = Some(reason.to_owned());
        self
    }
}

/// Action names written to the audit log.
pub mod actions {
    pub const USER_CREATE: &str = "user.create";
    pub const USER_CREATE_SUPER_USER: &str = "user.create_super_user";
    pub const USER_UPDATE: &str = "user.update";
    pub const USER_DELETE: &str = "user.delete";
    pub const USER_LOCK: &str = "user.lock";
    pub const USER_UNLOCK: &str = "user.unlock";
    pub const USER_APPROVE: &str = "user.approve";
    pub const USER_REJECT: &str = "user.reject";
    pub const USER_CHANGE_PASSWORD: &str = "user.change_password";
    pub const USER_SET_PASSWORD: &str = "user.set_password";
    /// A password reset was asked for (by username or e-mail address).
    pub const USER_PASSWORD_RESET_REQUEST: &str = "user.password_reset_request";
    /// A password was set from a reset link.
    pub const USER_PASSWORD_RESET: &str = "user.password_reset";
    /// An invitation (a link to set a first password) was issued.
    pub const USER_INVITE: &str = "user.invite";
    /// A super-user read a pending invitation's link.
    pub const USER_INVITATION_READ: &str = "user.invitation_read";
    /// An invitation's link was used: first password set, address verified, logged in.
    pub const USER_INVITATION_ACCEPT: &str = "user.invitation_accept";
    /// Someone signed up (or tried to: the refusal of a taken name or address is audited too).
    pub const USER_SIGN_UP: &str = "user.sign_up";
    /// A sign-up was confirmed from its mailed link.
    pub const USER_SIGN_UP_CONFIRM: &str = "user.sign_up_confirm";
    /// An unconfirmed sign-up was deleted after its time ran out.
    pub const USER_SIGN_UP_PURGE: &str = "user.sign_up_purge";
    /// A failed mail was queued again.
    pub const MAIL_RETRY: &str = "mail.retry";
    pub const USER_TOTP_ENROLL: &str = "user.totp_enroll";
    pub const USER_TOTP_ENABLE: &str = "user.totp_enable";
    pub const USER_TOTP_DISABLE: &str = "user.totp_disable";
    /// A username found, when migrating, to clash with another user's (see migration 0008).
    pub const USER_USERNAME_CONFLICT: &str = "user.username_conflict";
    pub const USER_RECOVER: &str = "user.recover";
    pub const SESSION_LOGIN: &str = "session.login";
    pub const SESSION_LOGOUT: &str = "session.logout";
    pub const SESSION_RENEW: &str = "session.renew";
    pub const SESSION_REVOKE: &str = "session.revoke";
    pub const SESSION_REVOKE_ALL: &str = "session.revoke_all";
    pub const PROCESS_START: &str = "process.start";
    pub const PROCESS_RESUME: &str = "process.resume";
    pub const PROCESS_ABORT: &str = "process.abort";
    pub const PROCESS_CALLBACK: &str = "process.callback";
    pub const SUBSCRIPTION_SET_IN_SYNC: &str = "subscription.set_in_sync";
    pub const SUBSCRIPTION_DELETE: &str = "subscription.delete";
    pub const ENGINE_SET_STATUS: &str = "engine.set_status";
    pub const PROVIDER_CREATE: &str = "provider.create";
    pub const PROVIDER_UPDATE: &str = "provider.update";
    pub const PROVIDER_DELETE: &str = "provider.delete";
    pub const PROVIDER_ADD_MANAGER: &str = "provider.add_manager";
    pub const PROVIDER_REMOVE_MANAGER: &str = "provider.remove_manager";
    pub const OFFERING_CREATE: &str = "offering.create";
    pub const OFFERING_UPDATE: &str = "offering.update";
    pub const OFFERING_DELETE: &str = "offering.delete";
    /// An operator released a uid or gid of an offering's pool so it may be given again.
    pub const OFFERING_POSIX_RELEASE: &str = "offering.posix_release";
    pub const API_TOKEN_CREATE: &str = "api_token.create";
    pub const API_TOKEN_REVOKE: &str = "api_token.revoke";
    pub const OFFERING_USER_CREATE: &str = "offering_user.create";
    /// A lifecycle transition; the action name is in the details.
    pub const OFFERING_USER_TRANSITION: &str = "offering_user.transition";
    pub const OFFERING_USER_UPDATE: &str = "offering_user.update";
    pub const OFFERING_USER_DELETE: &str = "offering_user.delete";
    // The membership operations (see `offering::membership`), each its own action.
    pub const OFFERING_USER_RESTORE: &str = "offering_user.restore";
    pub const OFFERING_USER_REREQUEST: &str = "offering_user.rerequest";
    pub const OFFERING_USER_DISCARD: &str = "offering_user.discard";
    pub const OFFERING_USER_WITHDRAW: &str = "offering_user.withdraw";
}
