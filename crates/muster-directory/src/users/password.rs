//! Setting passwords: one's own (with the old one, keeping the current session), a
//! super-user's for another user, and the command line's.
//!
//! Every new password passes the password policy (except a generated one, which nobody
//! knows), is stored with a fresh expiry and publishes `user_password_changed` (never the
//! password); every session of the user ends, except the caller's own when they change their
//! own password.

use super::UserTarget;
use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::credentials::password::hash_generated;
use muster_core::directory::User;
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use serde_json::json;
use time::Duration;

/// `entry` publishing that `user`'s password was changed by `by` (never the password).
pub fn password_changed(entry: AuditEntry, user: &User, by: &str) -> AuditEntry {
    let user_id = user.user_id().to_string();
    let data = json!({ "user_id": user_id, "by": by, "password_must_change": user.password_must_change });
    entry.with_event(streams::DIRECTORY, kinds::USER_PASSWORD_CHANGED, user_id, data)
}

impl Directory {
    /// Changes the caller's own password. The old one is required; every other session of
    /// the caller ends, the current one stays.
    pub async fn change_own_password(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        old_password: String,
        new_password: String,
    ) -> Result<(), DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::USER_CHANGE_PASSWORD,
            Some(auth.user_id()),
            Some(auth.user_id()),
        );
        let result = async {
            self.config.password_policy.check("new_password", &new_password)?;
            if old_password == new_password {
                return Err(DomainError::invalid_field(
                    "new_password",
                    codes::INVALID_INPUT,
                    "the new password must differ from the old one",
                ));
            }
            // Throttled like a login: a stolen session must not become a password oracle.
            self.reauthenticate(ctx, auth, old_password, None).await?;
            let (mut user, version) = self.load_target(auth, UserTarget::Me).await?;
            let now = clock::now();
            user.password_hash = self.hashes.hash(new_password).await?;
            user.password_is_set = true;
            user.password_last_set = now;
            user.password_expiry = now + Duration::days(self.config.password_expiry_days);
            user.password_must_change = false;
            user.updated_at = now;
            let published = password_changed(entry.clone(), &user, &auth.user_id());
            if self
                .store
                .update_user_keeping_session(&user, version, auth.session_id, &published)
                .await
                .map_err(store_error)?
            {
                Ok(())
            } else {
                Err(DomainError::conflict(
                    codes::CONFLICT,
                    "the user changed concurrently; try again",
                ))
            }
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// A super-user sets another user's password (no old password). Ends all their sessions.
    pub async fn set_password(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        id: UserId,
        new_password: String,
        must_change: Option<bool>,
        expiry_days: Option<i64>,
    ) -> Result<(), DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::USER_SET_PASSWORD,
            Some(auth.user_id()),
            Some(id.to_string()),
        );
        let result = async {
            auth.require_super_user()?;
            if id.uuid() == auth.user.uuid {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "change your own password with PUT /api/users/me/password and your old password",
                ));
            }
            if let Some(d) = expiry_days
                && !(1..=36_500).contains(&d)
            {
                return Err(DomainError::invalid_field(
                    "password_expiry_days",
                    codes::INVALID_INPUT,
                    "must be between 1 and 36500",
                ));
            }
            self.config.password_policy.check("new_password", &new_password)?;
            let hash = self.hashes.hash(new_password).await?;
            self.write_password(
                entry.clone(),
                id.uuid(),
                hash,
                must_change,
                expiry_days,
                &auth.user_id(),
            )
            .await
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// Sets a password from the command line: the one given (checked against the policy), or a
    /// generated one that is returned (to be shown once) and must be changed at next login.
    /// Ends the user's sessions.
    pub async fn cli_set_password(
        &self,
        ctx: &RequestCtx,
        username: &str,
        password: Option<String>,
    ) -> Result<Option<String>, DomainError> {
        let (user, _) = self.load_username(username).await?;
        let entry = AuditEntry::new(
            ctx,
            actions::USER_SET_PASSWORD,
            Some("cli".into()),
            Some(user.user_id().to_string()),
        );
        let (hash, shown) = match password {
            Some(p) => {
                self.config.password_policy.check("password", &p)?;
                (self.hashes.hash(p).await?, None)
            }
            None => {
                let p = muster_core::credentials::password::generate_password();
                (hash_generated(&p), Some(p))
            }
        };
        self.write_password(entry, user.uuid, hash, Some(shown.is_some()), None, "cli")
            .await?;
        Ok(shown)
    }

    /// Stores a new password hash for `uuid` and ends all their sessions, retrying on
    /// concurrent changes.
    async fn write_password(
        &self,
        entry: AuditEntry,
        uuid: uuid::Uuid,
        hash: String,
        must_change: Option<bool>,
        expiry_days: Option<i64>,
        by: &str,
    ) -> Result<(), DomainError> {
        for _ in 0..5 {
            let (mut user, version) = self.load_uuid(uuid).await?;
            let now = clock::now();
            user.password_hash = hash.clone();
            user.password_is_set = true;
            user.password_last_set = now;
            user.password_expiry = now + Duration::days(expiry_days.unwrap_or(self.config.password_expiry_days));
            if let Some(m) = must_change {
                user.password_must_change = m;
            }
            user.updated_at = now;
            let published = password_changed(entry.clone(), &user, by);
            if self
                .store
                .update_user(&user, version, true, &published)
                .await
                .map_err(store_error)?
            {
                return Ok(());
            }
        }
        Err(DomainError::conflict(
            codes::CONFLICT,
            "the user changed concurrently; try again",
        ))
    }
}
