//! Who is calling: the authenticated session and its user.

use muster_core::directory::User;
use muster_core::error::DomainError;
use uuid::Uuid;

/// A caller authenticated by a session token.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: User,
    pub session_id: Uuid,
    /// The application the session was opened for.
    pub current_app: Option<String>,
}

impl Auth {
    /// `ctx` with the session's application filled in, for audit records.
    pub fn ctx(&self, ctx: muster_core::audit::RequestCtx) -> muster_core::audit::RequestCtx {
        muster_core::audit::RequestCtx {
            current_app: ctx.current_app.or_else(|| self.current_app.clone()),
            ..ctx
        }
    }

    pub fn user_id(&self) -> String {
        self.user.user_id().to_string()
    }

    pub fn is_super_user(&self) -> bool {
        self.user.is_super_user
    }

    pub fn require_super_user(&self) -> Result<(), DomainError> {
        if self.user.is_super_user {
            Ok(())
        } else {
            Err(DomainError::super_user_required())
        }
    }
}

/// A hosting-site agent authenticated by a provider API token (`Authorization: Token <key>`).
/// It acts for exactly one provider and is no user: it can never reach the directory's calls.
#[derive(Debug, Clone)]
pub struct ProviderToken {
    pub token_uuid: Uuid,
    pub provider_uuid: Uuid,
    pub name: String,
}

impl ProviderToken {
    /// The actor recorded in audit records and history: `token:<uuid>`.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_uuid.simple())
    }
}

/// Whoever is calling: a user with a session, or a provider's agent with an API token.
/// (One per request, moved rarely: the size difference of the variants does not matter.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Caller {
    User(Auth),
    Provider(ProviderToken),
}

impl Caller {
    /// The actor recorded in audit records and history.
    pub fn actor(&self) -> String {
        match self {
            Self::User(auth) => auth.user_id(),
            Self::Provider(t) => t.actor(),
        }
    }

    /// `ctx` with what the caller knows filled in, for audit records.
    pub fn ctx(&self, ctx: muster_core::audit::RequestCtx) -> muster_core::audit::RequestCtx {
        match self {
            Self::User(auth) => auth.ctx(ctx),
            Self::Provider(_) => ctx,
        }
    }

    pub fn is_super_user(&self) -> bool {
        matches!(self, Self::User(auth) if auth.is_super_user())
    }

    /// The session user, or a 403 for a provider token (directory calls need a person).
    pub fn user(&self) -> Result<&Auth, DomainError> {
        match self {
            Self::User(auth) => Ok(auth),
            Self::Provider(_) => Err(DomainError::forbidden(
                muster_core::error::codes::SUPER_USER_REQUIRED,
                "this call needs a user session, not a provider token",
            )),
        }
    }
}
