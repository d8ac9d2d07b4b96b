//! User operations: create, read, update, delete, lock, approve, passwords, search.

use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::credentials::password::hash_generated;
use muster_core::directory::create::{self, CreateUserInput, Creator, PasswordPlan};
use muster_core::directory::update::{Caller, UpdateUserInput};
use muster_core::directory::{ApprovalStatus, SignUpStatus, User, UserView};
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use muster_store::{UserCursor, UserOrder, UserQuery};
use serde::Serialize;
use serde_json::json;
use time::Duration;

/// Which user a call is about.
#[derive(Debug, Clone, Copy)]
pub enum UserTarget {
    Me,
    Id(UserId),
}

/// Search criteria (Zato's `search`, with working ordering).
#[derive(Debug, Clone, Default)]
pub struct SearchInput {
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub approval_status: Option<ApprovalStatus>,
    pub sign_up_status: Option<SignUpStatus>,
    pub is_locked: Option<bool>,
    pub order: UserOrder,
    /// 1-based.
    pub page: i64,
    pub page_size: i64,
}

impl SearchInput {
    /// The filters and order (paging is the caller's).
    fn query(self) -> UserQuery {
        UserQuery {
            username: self.username,
            email: self.email,
            name: self.name,
            approval_status: self.approval_status,
            sign_up_status: self.sign_up_status,
            is_locked: self.is_locked,
            order: self.order,
            offset: 0,
            limit: 0,
        }
    }
}

pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The most users one export batch reads.
pub const EXPORT_BATCH: i64 = 1000;
pub const MAX_PAGE_SIZE: i64 = 100;

/// One page of users, with Zato's paging metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    pub total: i64,
    pub num_pages: i64,
    pub page_size: i64,
    pub cur_page: i64,
    pub has_next_page: bool,
    pub has_prev_page: bool,
    pub next_page: Option<i64>,
    pub prev_page: Option<i64>,
    pub result: Vec<UserView>,
}

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

/// `entry` publishing that `user`'s password was changed by `by` (never the password).
pub fn password_changed(entry: AuditEntry, user: &User, by: &str) -> AuditEntry {
    let user_id = user.user_id().to_string();
    let data = json!({ "user_id": user_id, "by": by, "password_must_change": user.password_must_change });
    entry.with_event(streams::DIRECTORY, kinds::USER_PASSWORD_CHANGED, user_id, data)
}

/// Names of the keys present in a create request, for the audit record (never the values).
fn present_keys(input: &CreateUserInput) -> Vec<&'static str> {
    let mut keys = vec!["username"];
    let flags = [
        ("password", input.password.is_some()),
        ("password_must_change", input.password_must_change.is_some()),
        ("display_name", input.display_name.is_some()),
        ("first_name", input.first_name.is_some()),
        ("middle_name", input.middle_name.is_some()),
        ("last_name", input.last_name.is_some()),
        ("email", input.email.is_some()),
        ("is_locked", input.is_locked.is_some()),
        ("sign_up_status", input.sign_up_status.is_some()),
        ("is_totp_enabled", input.is_totp_enabled.is_some()),
        ("totp_key", input.totp_key.is_some()),
        ("totp_label", input.totp_label.is_some()),
    ];
    keys.extend(flags.iter().filter(|(_, p)| *p).map(|(k, _)| *k));
    keys
}

impl Directory {
    /// `create_user`, by a super-user over the API.
    pub async fn create_user(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        input: CreateUserInput,
    ) -> Result<UserView, DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_CREATE, Some(auth.user_id()), None);
        let result = async {
            auth.require_super_user()?;
            let actor = auth.user_id();
            self.insert_new_user(entry.clone(), input, Creator::SuperUser(&actor), false)
                .await
        }
        .await;
        match result {
            Ok(user) => Ok(UserView::of(&user, true)),
            Err(e) => {
                self.audit_refusal(entry, &e).await;
                Err(e)
            }
        }
    }

    /// Creates a user from the command line: approved automatically; `super_user` only here.
    pub async fn create_user_cli(
        &self,
        ctx: &RequestCtx,
        input: CreateUserInput,
        super_user: bool,
    ) -> Result<User, DomainError> {
        let action = if super_user {
            actions::USER_CREATE_SUPER_USER
        } else {
            actions::USER_CREATE
        };
        let entry = AuditEntry::new(ctx, action, Some("cli".into()), None);
        self.insert_new_user(entry, input, Creator::Auto, super_user).await
    }

    async fn insert_new_user(
        &self,
        entry: AuditEntry,
        input: CreateUserInput,
        creator: Creator<'_>,
        super_user: bool,
    ) -> Result<User, DomainError> {
        let (user, entry, generated) = self.build_new_user(entry, input, creator, super_user, None).await?;
        let (followups, entry) = self.invite_new_user(&user, entry, generated)?;
        self.store
            .insert_user_with(&user, &entry, &followups)
            .await
            .map_err(store_error)?;
        if !followups.mails.is_empty() {
            self.outbox.wake();
        }
        Ok(user)
    }

    /// A user created without a password (one was generated that nobody knows) but with an
    /// address is invited to set one: the token and mail to write with the user, and the
    /// creation's audit record saying so.
    pub(crate) fn invite_new_user(
        &self,
        user: &User,
        entry: AuditEntry,
        generated: bool,
    ) -> Result<(muster_store::Followups, AuditEntry), DomainError> {
        let invitation = if generated {
            self.invitation_followups(user, user.updated_at)?
        } else {
            None
        };
        Ok(match invitation {
            Some((followups, expires)) => {
                let mut details = entry.details.clone();
                if let Some(d) = details.as_object_mut() {
                    d.insert("invited".into(), json!(true));
                    d.insert("invitation_expires_at".into(), json!(expires.unix_timestamp()));
                }
                (followups, entry.with_details(details))
            }
            None => (muster_store::Followups::default(), entry),
        })
    }

    /// Applies `create_user`'s rules and defaults to `input` and returns the user to insert
    /// with its audit record (and event). `chosen_hash`: a password hashed beforehand (a
    /// workflow hashes outside its step's transaction), used instead of hashing here.
    pub(crate) async fn build_new_user(
        &self,
        entry: AuditEntry,
        input: CreateUserInput,
        creator: Creator<'_>,
        super_user: bool,
        chosen_hash: Option<String>,
    ) -> Result<(User, AuditEntry, bool), DomainError> {
        let keys = present_keys(&input);
        let now = clock::now();
        let plan = create::plan(input, creator, super_user, &self.config, now)?;
        let (password_hash, generated) = match (plan.password, chosen_hash) {
            (_, Some(h)) => (h, false),
            (PasswordPlan::Chosen(p), None) => (self.hashes.hash(p).await?, false),
            (PasswordPlan::Generated(p), None) => (hash_generated(&p), true),
        };
        let user = User {
            uuid: plan.uuid,
            username: plan.username,
            email: plan.email,
            display_name: plan.display_name,
            first_name: plan.first_name,
            middle_name: plan.middle_name,
            last_name: plan.last_name,
            is_active: true,
            is_internal: false,
            is_super_user: plan.is_super_user,
            is_approval_needed: plan.is_approval_needed,
            approval_status: plan.approval_status,
            approval_status_mod_by: plan.approval_status_mod_by,
            approval_status_mod_time: now,
            is_locked: plan.is_locked,
            locked_time: None,
            locked_by: None,
            password_hash,
            password_is_set: true,
            password_must_change: plan.password_must_change,
            password_last_set: plan.password_last_set,
            password_expiry: plan.password_expiry,
            sign_up_status: plan.sign_up_status,
            sign_up_time: plan.sign_up_time,
            is_totp_enabled: plan.is_totp_enabled,
            totp_key_sealed: self.secrets.seal(&plan.totp_key),
            totp_label: plan.totp_label,
            totp_last_step: None,
            updated_at: now,
        };
        let user_id = user.user_id().to_string();
        let entry = entry
            .with_target(user_id.clone())
            .with_details(json!({ "fields": keys, "password_generated": generated }))
            .with_event(
                streams::DIRECTORY,
                kinds::USER_CREATED,
                user_id,
                json!(UserView::of(&user, true)),
            );
        Ok((user, entry, generated))
    }

    /// Creates the first super-user when the directory is empty. Returns the generated
    /// one-time password when none was given (to be shown once), or None when nothing was done.
    pub async fn bootstrap_admin(
        &self,
        username: &str,
        password: Option<String>,
    ) -> Result<Option<Option<String>>, DomainError> {
        if self.store.count_users().await.map_err(store_error)? > 0 {
            return Ok(None);
        }
        let generated = password
            .is_none()
            .then(muster_core::credentials::password::generate_password);
        let input = CreateUserInput {
            username: Some(username.to_owned()),
            password: password.or_else(|| generated.clone()),
            // A printed one-time password must be replaced at first login.
            password_must_change: Some(generated.is_some()),
            ..Default::default()
        };
        let ctx = RequestCtx {
            cid: format!("bootstrap-{}", uuid::Uuid::new_v4()),
            ..Default::default()
        };
        match self.create_user_cli(&ctx, input, true).await {
            Ok(_) => Ok(Some(generated)),
            // Another node bootstrapped at the same moment.
            Err(e) if e.code == codes::USERNAME_EXISTS => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resolves a target the caller may see. A regular user asking about anyone else gets the
    /// same 404 as for a user that does not exist: no enumeration.
    async fn load_target(&self, auth: &Auth, target: UserTarget) -> Result<(User, i64), DomainError> {
        self.load_uuid(self.target_uuid(auth, target)?).await
    }

    /// `GET /api/users/{id}` in one round trip: authenticates `token` and reads `id` together.
    /// The same visibility rule as [`Directory::get_user`]: a regular user sees only themself.
    pub async fn get_user_with_token(&self, token: &str, id: UserId) -> Result<UserView, DomainError> {
        let (auth, target) = self.authenticate_with(token, id.uuid()).await?;
        match target {
            Some(user) if auth.is_super_user() || user.uuid == auth.user.uuid => {
                Ok(UserView::of(&user, auth.is_super_user()))
            }
            _ => Err(DomainError::not_found("user")),
        }
    }

    pub async fn get_user(&self, auth: &Auth, target: UserTarget) -> Result<UserView, DomainError> {
        let (user, _) = self.load_target(auth, target).await?;
        Ok(UserView::of(&user, auth.is_super_user()))
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

    /// The uuid of a target the caller may see (no lookup): a regular user asking about anyone
    /// else gets the same 404 as for a user that does not exist.
    fn target_uuid(&self, auth: &Auth, target: UserTarget) -> Result<uuid::Uuid, DomainError> {
        match target {
            UserTarget::Me => Ok(auth.user.uuid),
            UserTarget::Id(id) if id.uuid() == auth.user.uuid || auth.is_super_user() => Ok(id.uuid()),
            UserTarget::Id(_) => Err(DomainError::not_found("user")),
        }
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

    /// Deletes a user. Super-user only, never oneself.
    pub async fn delete_user(&self, ctx: &RequestCtx, auth: &Auth, id: UserId) -> Result<(), DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_DELETE, Some(auth.user_id()), Some(id.to_string()));
        let result = async {
            auth.require_super_user()?;
            if id.uuid() == auth.user.uuid {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "a user cannot delete themselves",
                ));
            }
            let published = entry.clone().with_event(
                streams::DIRECTORY,
                kinds::USER_DELETED,
                id.to_string(),
                json!({ "user_id": id.to_string(), "uuid": id.uuid() }),
            );
            if self
                .store
                .delete_user(id.uuid(), &published)
                .await
                .map_err(store_error)?
            {
                Ok(())
            } else {
                Err(DomainError::not_found("user"))
            }
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

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

    /// Super-user search with filters and paging.
    pub async fn search_users(&self, auth: &Auth, input: SearchInput) -> Result<SearchPage, DomainError> {
        auth.require_super_user()?;
        let page_size = if input.page_size <= 0 {
            DEFAULT_PAGE_SIZE
        } else {
            input.page_size.min(MAX_PAGE_SIZE)
        };
        let cur_page = input.page.max(1);
        let query = UserQuery {
            offset: (cur_page - 1).saturating_mul(page_size),
            limit: page_size,
            ..input.query()
        };
        let (total, users) = self.store.search_users(&query).await.map_err(store_error)?;
        let num_pages = (total + page_size - 1) / page_size;
        Ok(SearchPage {
            total,
            num_pages,
            page_size,
            cur_page,
            has_next_page: cur_page < num_pages,
            has_prev_page: cur_page > 1,
            next_page: (cur_page < num_pages).then(|| cur_page + 1),
            prev_page: (cur_page > 1).then(|| cur_page - 1),
            result: users.iter().map(|u| UserView::of(u, true)).collect(),
        })
    }

    /// Super-user export: the next `limit` users matching `input` (its paging fields unused)
    /// after `after`, and where the next batch starts (None after the last). For streaming
    /// every match, e.g. as CSV: keyset paging, so the whole export costs one pass.
    pub async fn export_users(
        &self,
        auth: &Auth,
        input: SearchInput,
        after: Option<UserCursor>,
        limit: i64,
    ) -> Result<(Vec<UserView>, Option<UserCursor>), DomainError> {
        auth.require_super_user()?;
        let (users, next) = self
            .store
            .export_users(&input.query(), after.as_ref(), limit.clamp(1, EXPORT_BATCH))
            .await
            .map_err(store_error)?;
        Ok((users.iter().map(|u| UserView::of(u, true)).collect(), next))
    }
}
