//! Changing users: partial updates, lock and unlock, approval and rejection (API and command
//! line), and the command line's recovery.
//!
//! Every change is read, checked by `muster_core::directory::update` against the fresh row and
//! written only if the row did not move meanwhile (a few retries), with its audit record and
//! `user_updated` event; a change that changes nothing writes nothing, and a refused update is
//! audited.

use super::UserTarget;
use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::directory::update::{Caller, UpdateUserInput};
use muster_core::directory::{ApprovalStatus, User, UserView};
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use serde_json::json;

/// The audit action and the update that lock (true) or unlock (false) a user.
fn lock_update(locked: bool) -> (&'static str, UpdateUserInput) {
    let action = if locked {
        actions::USER_LOCK
    } else {
        actions::USER_UNLOCK
    };
    (
        action,
        UpdateUserInput {
            is_locked: Some(Some(locked)),
            ..Default::default()
        },
    )
}

impl Directory {
    pub async fn update_user(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        target: UserTarget,
        input: UpdateUserInput,
    ) -> Result<UserView, DomainError> {
        self.apply_update(ctx, auth, target, actions::USER_UPDATE, input).await
    }

    /// Lock (true) or unlock (false). Super-user only; locking ends the user's sessions.
    pub async fn set_locked(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        id: UserId,
        locked: bool,
    ) -> Result<UserView, DomainError> {
        let (action, input) = lock_update(locked);
        self.apply_update(
            ctx,
            auth,
            UserTarget::Id(id),
            action,
            self.super_only(ctx, auth, action, id, input).await?,
        )
        .await
    }

    /// Approve or reject. Super-user only; rejection ends the user's sessions.
    pub async fn set_approval(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        id: UserId,
        approve: bool,
    ) -> Result<UserView, DomainError> {
        let (action, status) = if approve {
            (actions::USER_APPROVE, ApprovalStatus::Approved)
        } else {
            (actions::USER_REJECT, ApprovalStatus::Rejected)
        };
        let input = UpdateUserInput {
            approval_status: Some(Some(status)),
            ..Default::default()
        };
        self.apply_update(
            ctx,
            auth,
            UserTarget::Id(id),
            action,
            self.super_only(ctx, auth, action, id, input).await?,
        )
        .await
    }

    /// Super-user-only calls answer a regular user with 403 before anything is looked up; the
    /// refusal is audited like every other.
    async fn super_only<T>(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        action: &'static str,
        id: UserId,
        value: T,
    ) -> Result<T, DomainError> {
        match auth.require_super_user() {
            Ok(()) => Ok(value),
            Err(e) => {
                let entry = AuditEntry::new(ctx, action, Some(auth.user_id()), Some(id.to_string()));
                self.audit_refusal(entry, &e).await;
                Err(e)
            }
        }
    }

    /// Partial update; `action` names it in the audit log (update, lock, approve, …).
    async fn apply_update(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        target: UserTarget,
        action: &'static str,
        input: UpdateUserInput,
    ) -> Result<UserView, DomainError> {
        let uuid = match self.target_uuid(auth, target) {
            Ok(uuid) => uuid,
            Err(e) => {
                let target_id = match target {
                    UserTarget::Me => auth.user_id(),
                    UserTarget::Id(id) => id.to_string(),
                };
                let entry = AuditEntry::new(ctx, action, Some(auth.user_id()), Some(target_id));
                self.audit_refusal(entry, &e).await;
                return Err(e);
            }
        };
        let user = self
            .update_by(ctx, &auth.user_id(), auth.is_super_user(), uuid, action, input)
            .await?;
        Ok(UserView::of(&user, auth.is_super_user()))
    }

    /// Applies `input` to the user `uuid` on behalf of `actor`, with the update rules, the audit
    /// record and the event; refusals are audited too. A call that changes nothing writes
    /// nothing.
    async fn update_by(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        actor_is_super_user: bool,
        uuid: uuid::Uuid,
        action: &'static str,
        input: UpdateUserInput,
    ) -> Result<User, DomainError> {
        let entry = AuditEntry::new(
            ctx,
            action,
            Some(actor.to_owned()),
            Some(UserId::from_uuid(uuid).to_string()),
        );
        let result = async {
            // Optimistic concurrency: if the row changes between read and write, read again and
            // re-apply the rules to the fresh row (a few times at most).
            for _ in 0..5 {
                let (mut user, version) = self.load_uuid(uuid).await?;
                // Someone who signed up and waits for a decision is told of it by mail.
                let self_signed_up = user.approval_status == muster_core::directory::ApprovalStatus::BeforeDecision
                    && user.approval_status_mod_by == crate::signup::SIGNUP_ACTOR;
                let caller = Caller {
                    user_id: actor,
                    is_super_user: actor_is_super_user,
                };
                let applied = input.clone().apply(&mut user, caller, clock::now())?;
                if applied.changed.is_empty() {
                    return Ok(user);
                }
                user.updated_at = clock::now();
                let user_id = user.user_id().to_string();
                let data = json!({ "action": action, "changed": applied.changed, "user": UserView::of(&user, true) });
                let entry = entry
                    .clone()
                    .with_details(json!({ "changed": applied.changed }))
                    .with_event(streams::DIRECTORY, kinds::USER_UPDATED, user_id, data);
                let followups = if self_signed_up && applied.changed.contains(&"approval_status") {
                    self.decision_mail(&user)?
                } else {
                    muster_store::Followups::default()
                };
                if self
                    .store
                    .update_user_and(&user, version, applied.revoke_sessions, &entry, &followups)
                    .await
                    .map_err(store_error)?
                {
                    if !followups.mails.is_empty() {
                        self.outbox.wake();
                    }
                    return Ok(user);
                }
            }
            Err(DomainError::conflict(
                codes::CONFLICT,
                "the user changed concurrently; try again",
            ))
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// Lock or unlock from the command line (actor `cli`), with the same rules and records as
    /// the API.
    pub async fn cli_set_locked(&self, ctx: &RequestCtx, username: &str, locked: bool) -> Result<User, DomainError> {
        let (user, _) = self.load_username(username).await?;
        let (action, input) = lock_update(locked);
        self.update_by(ctx, "cli", true, user.uuid, action, input).await
    }

    /// `muster user recover`: lets a user back in (see `update::recover`): unlocked, sign-up
    /// final, approved, TOTP off with a fresh key (a switch-on needs a new enrolment), every
    /// session ended, the account name's login-failure counter cleared. Audited as
    /// `user.recover` by `cli`.
    pub async fn cli_recover(
        &self,
        ctx: &RequestCtx,
        username: &str,
    ) -> Result<(User, Vec<&'static str>), DomainError> {
        let (user, _) = self.load_username(username).await?;
        let entry = AuditEntry::new(
            ctx,
            actions::USER_RECOVER,
            Some("cli".into()),
            Some(user.user_id().to_string()),
        );
        for _ in 0..5 {
            let (mut user, version) = self.load_uuid(user.uuid).await?;
            let now = clock::now();
            let changed = muster_core::directory::update::recover(&mut user, "cli", now);
            if changed.contains(&"is_totp_enabled") {
                user.totp_key_sealed = self.secrets.seal(&muster_core::credentials::totp::generate_key());
            }
            user.updated_at = now;
            let user_id = user.user_id().to_string();
            let data =
                json!({ "action": actions::USER_RECOVER, "changed": changed, "user": UserView::of(&user, true) });
            let published = entry
                .clone()
                .with_details(json!({ "changed": changed, "sessions_ended": true }))
                .with_event(streams::DIRECTORY, kinds::USER_UPDATED, user_id, data);
            if self
                .store
                .update_user(&user, version, true, &published)
                .await
                .map_err(store_error)?
            {
                let account = self.throttle_keys.of(&user.username, None).account;
                if let Err(e) = self.store.clear_throttle(&account).await {
                    tracing::warn!(error = %e, "could not clear the account's login-failure counter");
                }
                return Ok((user, changed));
            }
        }
        Err(DomainError::conflict(
            codes::CONFLICT,
            "the user changed concurrently; try again",
        ))
    }
}
