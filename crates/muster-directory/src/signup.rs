//! Sign-up with confirmation (`MUSTER_SIGNUP=open|approval`), Zato SSO's `signup` and
//! `confirm_signup` (<https://zato.io/en/docs/3.2/sso/rest/user/signup.html>) with what Zato
//! lacks: muster sends the confirmation mail itself, the link's token is hashed at rest and
//! expires, unconfirmed accounts are deleted after a while, and a taken username or address
//! gets the same answer as a free one (the mailbox is told, not the requester).

use crate::mail::SignupMode;
use crate::password_reset::{Refusal, link_invalid};
use crate::{Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds as event_kinds, streams};
use muster_core::clock;
use muster_core::credentials::token;
use muster_core::directory::create::{CreateUserInput, Creator};
use muster_core::directory::{ApprovalStatus, SignUpStatus, UserView};
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_core::ids::UserId;
use muster_mail::kinds;
use muster_store::{Followups, Redemption, StoreError, UserQuery};
use serde::Serialize;
use serde_json::json;

/// Prefix of sign-up confirmation tokens.
pub const SIGNUP_PREFIX: &str = "msu_";
/// The token purpose stored with a confirmation link.
pub const SIGNUP_PURPOSE: &str = "signup";
/// The console's page that a confirmation link opens.
pub const SIGNUP_CONFIRM_PATH: &str = "/signup/confirm";
/// Marks the accounts people made themselves (`approval_status_mod_by`), the only ones the
/// purge of unconfirmed sign-ups deletes.
pub(crate) const SIGNUP_ACTOR: &str = "signup";
/// Every sign-up is answered no sooner than this, taken name or not.
const ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(300);

/// What a confirmation did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignupConfirmed {
    pub user_id: String,
    /// The account now waits for a super-user's approval (`MUSTER_SIGNUP=approval`).
    pub awaiting_approval: bool,
}

impl Directory {
    /// `POST /api/signup`: makes an unconfirmed account and mails its confirmation link. A
    /// taken username or address is answered the same; the address is mailed why nothing was
    /// made. Refused: sign-up off (403), input that fails `create_user`'s checks or a domain not
    /// allowed (400), too many from the client address (429).
    pub async fn sign_up(
        &self,
        ctx: &RequestCtx,
        username: String,
        email: String,
        password: String,
    ) -> Result<(), DomainError> {
        let started = tokio::time::Instant::now();
        let result = self.sign_up_now(ctx, username, email, password).await;
        if !matches!(&result, Err(e) if matches!(e.kind, ErrorKind::Invalid | ErrorKind::Forbidden)) {
            tokio::time::sleep_until(started + ANSWER_FLOOR).await;
        }
        result
    }

    async fn sign_up_now(
        &self,
        ctx: &RequestCtx,
        username: String,
        email: String,
        password: String,
    ) -> Result<(), DomainError> {
        let mode = self.mail.signup;
        if mode == SignupMode::Off {
            return Err(DomainError::forbidden(codes::INVALID_OPERATION, "sign-up is off here"));
        }
        let entry = AuditEntry::new(ctx, actions::USER_SIGN_UP, None, None);
        let email = email.trim().to_owned();
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default();
        if !self.mail.signup_domains.is_empty() && !self.mail.signup_domains.contains(&domain) {
            return Err(DomainError::invalid_field(
                "email",
                codes::EMAIL_INVALID,
                "sign-up is open to addresses of certain domains only",
            ));
        }
        let input = CreateUserInput {
            username: Some(username),
            email: Some(email.clone()),
            password: Some(password),
            sign_up_status: Some(SignUpStatus::BeforeConfirmation),
            ..Default::default()
        };
        // The same checks as create_user, before anything is looked up: a refusal here says
        // nothing about who exists.
        let (mut user, entry, _) = self
            .build_new_user(entry, input, Creator::SuperUser(SIGNUP_ACTOR), false, None)
            .await?;
        if user.email.is_none() {
            return Err(DomainError::invalid_field(
                "email",
                codes::EMAIL_INVALID,
                "email is required",
            ));
        }
        let now = clock::now();
        // Mails to one address, and sign-ups from one client address, are limited like resets.
        let (account_key, address_key) = self.throttle_keys.reset_keys(&email, ctx.remote_addr.as_deref());
        if let Some(address_key) = &address_key {
            let policy = self.reset_policy(self.mail.reset_per_address);
            if let Err(wait) = self.bump(address_key, &policy, true, now).await? {
                let e = DomainError::throttled(wait);
                self.audit_refusal(entry, &e).await;
                return Err(e);
            }
        }
        let policy = self.reset_policy(self.mail.reset_per_account);
        if self.bump(&account_key, &policy, true, now).await?.is_err() {
            self.audit_refusal(entry, &DomainError::throttled(1)).await;
            return Ok(());
        }
        user.approval_status = match mode {
            SignupMode::Approval => ApprovalStatus::BeforeDecision,
            _ => ApprovalStatus::Approved,
        };
        user.is_approval_needed = user.approval_status != ApprovalStatus::Approved;
        user.approval_status_mod_by = SIGNUP_ACTOR.to_owned();
        let address_taken = {
            let q = UserQuery {
                email: Some(email.clone()),
                limit: 1,
                ..Default::default()
            };
            self.store.search_users(&q).await.map_err(store_error)?.0 > 0
        };
        if !address_taken {
            let (followups, _) = self.link_mail(
                kinds::SIGNUP_CONFIRMATION,
                SIGNUP_PREFIX,
                SIGNUP_PURPOSE,
                SIGNUP_CONFIRM_PATH,
                self.mail.signup_confirm_ttl,
                &user,
                &email,
                now,
            )?;
            match self.store.insert_user_with(&user, &entry, &followups).await {
                Ok(()) => {
                    self.outbox.wake();
                    return Ok(());
                }
                // The username (or a look-alike) is taken: answered like a free one, below.
                Err(StoreError::Duplicate(_)) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        // Taken: nothing is made; the address is told why, in case it was its owner.
        let message = self.render(kinds::SIGNUP_REFUSED, &[], None)?;
        let followups = Followups {
            tokens: vec![],
            mails: vec![self.outbox.mail(kinds::SIGNUP_REFUSED, &email, None, &message, now)],
        };
        // Not the entry of the user that was not made: no target, no event.
        let refused = AuditEntry::new(ctx, actions::USER_SIGN_UP, None, None).failed(codes::USERNAME_EXISTS);
        self.store
            .write_followups(&followups, &refused)
            .await
            .map_err(store_error)?;
        self.outbox.wake();
        Ok(())
    }

    /// `POST /api/signup/confirm`: confirms the address of an account from its link. With
    /// `MUSTER_SIGNUP=approval` the account then waits for a super-user, and the person is
    /// told so by mail.
    pub async fn confirm_sign_up(&self, ctx: &RequestCtx, token: &str) -> Result<SignupConfirmed, DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_SIGN_UP_CONFIRM, None, None);
        let result = async {
            let hash = token::hash_token(token);
            let now = clock::now();
            let Some((uuid, expires)) = self
                .store
                .action_token(&hash, SIGNUP_PURPOSE)
                .await
                .map_err(store_error)?
            else {
                return Err(Refusal(link_invalid(), None));
            };
            let target = Some(UserId::from_uuid(uuid).to_string());
            if expires <= now {
                return Err(Refusal(link_invalid(), target));
            }
            let Some((mut user, version)) = self.store.user_by_uuid(uuid).await.map_err(store_error)? else {
                return Err(Refusal(link_invalid(), target));
            };
            if user.sign_up_status != SignUpStatus::BeforeConfirmation || user.is_locked {
                return Err(Refusal(link_invalid(), target));
            }
            user.sign_up_status = SignUpStatus::Final;
            user.updated_at = now;
            let awaiting_approval = user.approval_status == ApprovalStatus::BeforeDecision;
            let mut followups = Followups::default();
            if awaiting_approval && let Some(email) = &user.email {
                let message = self.render(kinds::SIGNUP_AWAITING_APPROVAL, &[("username", &user.username)], None)?;
                followups.mails.push(self.outbox.mail(
                    kinds::SIGNUP_AWAITING_APPROVAL,
                    email,
                    Some(user.uuid),
                    &message,
                    now,
                ));
            }
            let id = user.user_id().to_string();
            let entry = entry
                .clone()
                .with_target(id.clone())
                .with_details(json!({ "awaiting_approval": awaiting_approval }))
                .with_event(
                    streams::DIRECTORY,
                    event_kinds::USER_UPDATED,
                    id.clone(),
                    json!(UserView::of(&user, true)),
                );
            let redeemed = self
                .store
                .redeem_token(
                    &hash,
                    SIGNUP_PURPOSE,
                    now,
                    Redemption {
                        user: &user,
                        version,
                        session: None,
                        followups: &followups,
                        verify_email: user.email.as_deref(),
                        audit: &entry,
                    },
                )
                .await
                .map_err(store_error)?;
            if !redeemed {
                return Err(Refusal(link_invalid(), target));
            }
            if !followups.mails.is_empty() {
                self.outbox.wake();
            }
            Ok(SignupConfirmed {
                user_id: id,
                awaiting_approval,
            })
        }
        .await;
        match result {
            Ok(c) => Ok(c),
            Err(Refusal(e, target)) => {
                let entry = match target {
                    Some(t) => entry.with_target(t),
                    None => entry,
                };
                self.audit_refusal(entry, &e).await;
                Err(e)
            }
        }
    }

    /// The mail telling a person who signed up that their account was approved or rejected
    /// (none without an address, or for another decision).
    pub(crate) fn decision_mail(&self, user: &muster_core::directory::User) -> Result<Followups, DomainError> {
        let kind = match user.approval_status {
            ApprovalStatus::Approved => kinds::SIGNUP_APPROVED,
            ApprovalStatus::Rejected => kinds::SIGNUP_REJECTED,
            ApprovalStatus::BeforeDecision => return Ok(Followups::default()),
        };
        let mut f = Followups::default();
        if let Some(email) = &user.email {
            let now = clock::now();
            let message = self.render(kind, &[("username", &user.username)], None)?;
            f.mails
                .push(self.outbox.mail(kind, email, Some(user.uuid), &message, now));
        }
        Ok(f)
    }

    /// Deletes sign-ups left unconfirmed past `MUSTER_SIGNUP_UNCONFIRMED_DAYS`, each audited.
    /// Returns how many.
    pub async fn purge_unconfirmed_sign_ups(&self) -> Result<u64, DomainError> {
        let cutoff = clock::now() - self.mail.signup_unconfirmed_ttl;
        let stale = self
            .store
            .unconfirmed_sign_ups(cutoff, 500)
            .await
            .map_err(store_error)?;
        let mut n = 0;
        for uuid in stale {
            let id = UserId::from_uuid(uuid).to_string();
            let ctx = crate::cli_ctx();
            let entry = AuditEntry::new(
                &ctx,
                actions::USER_SIGN_UP_PURGE,
                Some("purge".into()),
                Some(id.clone()),
            )
            .with_event(
                streams::DIRECTORY,
                event_kinds::USER_DELETED,
                id.clone(),
                json!({ "user_id": id, "uuid": uuid }),
            );
            if self.store.delete_user(uuid, &entry).await.map_err(store_error)? {
                n += 1;
            }
        }
        Ok(n)
    }
}
