//! The domain's error type.
//!
//! Every refusal carries a stable machine `code`. Where Zato SSO has a sub-status code for the
//! situation (`E001002` username exists, `E003002` password too short, …) that code is used, so
//! clients written against Zato keep their error handling; elsewhere the code is a short
//! snake_case word. The HTTP layer maps [`ErrorKind`] to a status in one place.

use serde::Serialize;

/// Zato SSO sub-status codes muster uses, and muster's own codes.
pub mod codes {
    pub const USERNAME_INVALID: &str = "E001001";
    pub const USERNAME_EXISTS: &str = "E001002";
    pub const USERNAME_TOO_LONG: &str = "E001003";
    pub const USERNAME_HAS_WHITESPACE: &str = "E001004";
    pub const USER_ID_INVALID: &str = "E001100";
    pub const EMAIL_INVALID: &str = "E002001";
    pub const EMAIL_TOO_LONG: &str = "E002003";
    pub const PASSWORD_REJECTED: &str = "E003001";
    pub const PASSWORD_TOO_SHORT: &str = "E003002";
    pub const PASSWORD_TOO_LONG: &str = "E003003";
    pub const PASSWORD_EXPIRED: &str = "E003004";
    pub const PASSWORD_ABOUT_TO_EXPIRE: &str = "W003005";
    pub const PASSWORD_MUST_CHANGE: &str = "E003007";
    pub const APP_INVALID: &str = "E004001";
    /// The generic authentication failure: unknown user, wrong password and wrong TOTP code
    /// all give this one code so that a caller cannot tell them apart.
    pub const NOT_ALLOWED: &str = "E005001";
    pub const LOCKED: &str = "E005002";
    pub const SIGN_UP_NOT_FINAL: &str = "E005003";
    pub const NOT_APPROVED: &str = "E005004";
    pub const SUPER_USER_REQUIRED: &str = "E005005";
    pub const TOTP_MISSING: &str = "E005008";
    pub const NO_SUCH_SESSION: &str = "E007001";
    pub const INVALID_OPERATION: &str = "E008001";
    pub const INVALID_INPUT: &str = "E008002";
    pub const MISSING_INPUT: &str = "E008003";
    pub const INTERNAL: &str = "E008004";
    // muster's own
    pub const NOT_FOUND: &str = "not_found";
    pub const THROTTLED: &str = "throttled";
    pub const CONFLICT: &str = "conflict";
    pub const ENGINE_PAUSED: &str = "engine_paused";
    pub const WORKFLOW_BLOCKED: &str = "workflow_blocked";
    pub const INVALID_TRANSITION: &str = "invalid_transition";
    pub const EVENTS_EXPIRED: &str = "events_expired";
    /// The database has no room for the write (disk full, or the configured size limit):
    /// nothing was written; reads still work.
    pub const STORAGE_FULL: &str = "storage_full";
    /// The database could not be reached, or did not answer in time: nothing was written.
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    /// The connection was lost while the write was committing: it may or may not have been
    /// written. Re-read (the audit log's `cid` is the request id) before trying again.
    pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
    /// A provider API token on a route that needs a person's session.
    pub const SESSION_REQUIRED: &str = "session_required";
    /// A one-time link (password reset, invitation) that is unknown, used, expired or replaced:
    /// one code for all four, so a link tells nothing about its user.
    pub const LINK_INVALID: &str = "link_invalid";
}

/// What kind of refusal this is; the HTTP layer turns it into a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or fails validation (400).
    Invalid,
    /// No valid credentials (401).
    Unauthenticated,
    /// Valid credentials, not allowed (403).
    Forbidden,
    /// The thing does not exist, or the caller may not know that it does (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// Too many attempts; try again later (429).
    Throttled,
    /// What was asked for is no longer kept, e.g. events past their retention (410).
    Gone,
    /// Not now: the engine is paused, or the database cannot be reached (503).
    Unavailable,
    /// The database has no room for the write (507).
    InsufficientStorage,
    /// Something broke on our side (500). The message is never shown to the caller.
    Internal,
}

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub errors: Vec<FieldError>,
    /// Seconds until a retry may succeed (throttling, an unavailable or full database).
    pub retry_after: Option<u64>,
}

impl DomainError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    /// An invalid value in a named field; the field is listed in `errors` too.
    pub fn invalid_field(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::invalid(code, message.clone());
        e.errors.push(FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message,
        });
        e
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, codes::NOT_FOUND, format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// The one answer for every failed login, whatever failed.
    pub fn not_allowed() -> Self {
        Self::new(ErrorKind::Unauthenticated, codes::NOT_ALLOWED, "invalid credentials")
    }

    pub fn no_session() -> Self {
        Self::new(ErrorKind::Unauthenticated, codes::NO_SUCH_SESSION, "no valid session")
    }

    pub fn super_user_required() -> Self {
        Self::forbidden(codes::SUPER_USER_REQUIRED, "this call needs a super-user")
    }

    pub fn throttled(retry_after: u64) -> Self {
        let mut e = Self::new(
            ErrorKind::Throttled,
            codes::THROTTLED,
            "too many failed attempts; try again later",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    /// The database has no room: nothing was written.
    pub fn storage_full() -> Self {
        let mut e = Self::new(
            ErrorKind::InsufficientStorage,
            codes::STORAGE_FULL,
            "the database is full; nothing was written",
        );
        e.retry_after = Some(30);
        e
    }

    /// The database could not be reached: nothing was written.
    pub fn database_unavailable() -> Self {
        let mut e = Self::new(
            ErrorKind::Unavailable,
            codes::DATABASE_UNAVAILABLE,
            "the database is unavailable; nothing was written",
        );
        e.retry_after = Some(2);
        e
    }

    /// The database connection was lost while a write was committing.
    pub fn outcome_unknown() -> Self {
        let mut e = Self::new(
            ErrorKind::Unavailable,
            codes::OUTCOME_UNKNOWN,
            "the database connection was lost while the change was being committed: it may or \
             may not have been made; look it up by this request's id before trying again",
        );
        e.retry_after = Some(2);
        e
    }

    /// Whether trying the same thing again later may succeed because the failure was the
    /// database's (unreachable, full), not the request's.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            codes::STORAGE_FULL | codes::DATABASE_UNAVAILABLE | codes::OUTCOME_UNKNOWN
        )
    }

    /// An internal failure. `detail` goes to the log, never to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, codes::INTERNAL, detail.to_string())
    }
}
