//! User operations, one room each: `create` (Zato SSO's `create_user` rules and the first
//! super-user), `read` (one user, search, export), `update` (partial updates, lock,
//! approval, recovery), `delete` and `password` (every way a password is set).
//!
//! This module holds what they share: which user a call is about, and the rule that a regular
//! user sees only themself — anyone else is the same 404 as a user that does not exist, so no
//! call can be used to enumerate users.

mod create;
mod delete;
mod password;
mod read;
mod update;

pub use password::password_changed;
pub use read::{SearchInput, SearchPage};

use crate::{Auth, Directory, store_error};
use muster_core::directory::User;
use muster_core::error::DomainError;
use muster_core::ids::UserId;

/// Which user a call is about.
#[derive(Debug, Clone, Copy)]
pub enum UserTarget {
    Me,
    Id(UserId),
}

impl Directory {
    /// Resolves a target the caller may see. A regular user asking about anyone else gets the
    /// same 404 as for a user that does not exist: no enumeration.
    async fn load_target(&self, auth: &Auth, target: UserTarget) -> Result<(User, i64), DomainError> {
        self.load_uuid(self.target_uuid(auth, target)?).await
    }

    /// The uuid of a target the caller may see (no lookup): a regular user asking about anyone
    /// else gets the same 404 as for a user that does not exist.
    fn target_uuid(&self, auth: &Auth, target: UserTarget) -> Result<uuid::Uuid, DomainError> {
        match target {
            UserTarget::Me => Ok(auth.user.uuid),
            UserTarget::Id(id) if id.uuid() == auth.user.uuid || auth.is_super_user() => Ok(id.uuid()),
            UserTarget::Id(_) => Err(DomainError::not_found("user")),
        }
    }

    pub(crate) async fn load_uuid(&self, uuid: uuid::Uuid) -> Result<(User, i64), DomainError> {
        self.store
            .user_by_uuid(uuid)
            .await
            .map_err(store_error)?
            .ok_or_else(|| DomainError::not_found("user"))
    }

    async fn load_username(&self, username: &str) -> Result<(User, i64), DomainError> {
        self.store
            .user_by_username(username)
            .await
            .map_err(store_error)?
            .ok_or_else(|| DomainError::not_found("user"))
    }
}
