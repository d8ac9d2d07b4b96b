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
