//! Creating users: Zato SSO's `create_user` (by a super-user over the API, from the command
//! line, by sign-up and by workflows) and the first super-user.
//!
//! Every new user passes `muster_core::directory::create::plan` (defaults, the password or a
//! random one nobody knows, the TOTP key, approval, who may make a super-user) and leaves here
//! with its audit record and `user_created` event, to be written in one transaction with them;
//! one created without a password but with an address is invited in the same transaction.

use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::credentials::password::hash_generated;
use muster_core::directory::create::{self, CreateUserInput, Creator, PasswordPlan};
use muster_core::directory::{User, UserView};
use muster_core::error::{DomainError, codes};
use serde_json::json;

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
}
