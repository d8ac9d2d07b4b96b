//! Self-service password reset, in Zato SSO's three steps (request, a link by mail, a new
//! password; <https://zato.io/en/docs/3.2/sso/rest/password-reset.html>) with what Zato lacks:
//! the link's token is stored only as a hash and expires (30 minutes by default), a new request
//! kills the older link, a TOTP code is required when TOTP is on, every session of the user
//! ends, and the user is told by mail that the password changed.
//!
//! A request always gets the same answer after the same time, whether or not the name or
//! address belongs to anyone, so the endpoint tells nothing about who exists.

use crate::{Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::token;
use muster_core::directory::login::check_login;
use muster_core::directory::throttle::ThrottlePolicy;
use muster_core::directory::{ApprovalStatus, SignUpStatus, User};
use muster_core::error::{DomainError, codes};
use muster_mail::kinds;
use muster_store::{Followups, Redemption, UserQuery};
use serde_json::json;
use time::{Duration, OffsetDateTime};

/// Prefix of password-reset tokens.
pub const RESET_PREFIX: &str = "mrt_";
/// The token purpose stored with a reset link.
pub const RESET_PURPOSE: &str = "password_reset";
/// The console's page that a reset link opens.
pub const RESET_PATH: &str = "/password-reset";
/// Every request is answered no sooner than this after it arrived, so the time taken does not
/// tell a known name from an unknown one.
const ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(300);
/// Longest username or address accepted in a request.
const MAX_IDENTIFIER: usize = 320;
/// Users one address may reach in one request (an address shared by several accounts).
const MAX_USERS_PER_ADDRESS: i64 = 5;

/// Whom a reset is for.
#[derive(Debug, Clone)]
pub enum ResetFor {
    Username(String),
    Email(String),
}

/// The refusal of a link that is unknown, used, expired or replaced.
pub(crate) fn link_invalid() -> DomainError {
    DomainError::invalid(
        codes::LINK_INVALID,
        "the link is unknown, used or expired; ask for a new one",
    )
}

/// Whether `user` may set a password from a mailed link: someone who may log in, but for the
/// password (locked, rejected, not yet approved or not signed up: no).
pub(crate) fn may_use_link(user: &User, now: OffsetDateTime, config: &muster_core::directory::DirectoryConfig) -> bool {
    user.is_active
        && user.approval_status != ApprovalStatus::Rejected
        && user.sign_up_status == SignUpStatus::Final
        && check_login(user, now, config, true).is_ok()
}

impl Directory {
    /// `POST /api/password-reset`: mails a reset link to the user named, or to every user with
    /// the address given, if they may reset. Ok whatever was found: only a malformed request
    /// or a throttled client address is refused.
    pub async fn request_password_reset(&self, ctx: &RequestCtx, input: ResetFor) -> Result<(), DomainError> {
        let started = tokio::time::Instant::now();
        let result = self.request_password_reset_now(ctx, input).await;
        // Malformed input is refused at once: its refusal tells nothing about anyone.
        if !matches!(&result, Err(e) if e.kind == muster_core::ErrorKind::Invalid) {
            tokio::time::sleep_until(started + ANSWER_FLOOR).await;
        }
        result
    }

    async fn request_password_reset_now(&self, ctx: &RequestCtx, input: ResetFor) -> Result<(), DomainError> {
        let (field, identifier) = match &input {
            ResetFor::Username(u) => ("username", u.trim()),
            ResetFor::Email(e) => ("email", e.trim()),
        };
        if identifier.is_empty() || identifier.chars().count() > MAX_IDENTIFIER {
            return Err(DomainError::invalid_field(
                field,
                codes::INVALID_INPUT,
                format!("must be 1 to {MAX_IDENTIFIER} characters"),
            ));
        }
        let entry =
            AuditEntry::new(ctx, actions::USER_PASSWORD_RESET_REQUEST, None, None).with_details(json!({ "by": field }));
        let now = clock::now();

        // Per client address: a refusal the client sees (it says nothing about any account).
        let (account_key, address_key) = self.throttle_keys.reset_keys(identifier, ctx.remote_addr.as_deref());
        if let Some(address_key) = &address_key {
            let policy = self.reset_policy(self.mail.reset_per_address);
            if let Err(wait) = self.bump(address_key, &policy, true, now).await? {
                let e = DomainError::throttled(wait);
                self.audit_refusal(entry, &e).await;
                return Err(e);
            }
        }
        // Per name or address asked for: past the limit, no more mail goes out for it (so
        // nobody can flood someone's mailbox), but the answer stays the same, whoever asks.
        let policy = self.reset_policy(self.mail.reset_per_account);
        if self.bump(&account_key, &policy, true, now).await?.is_err() {
            self.audit_refusal(entry, &DomainError::throttled(1)).await;
            return Ok(());
        }

        let users: Vec<User> = match &input {
            ResetFor::Username(u) => self
                .store
                .user_by_username(u.trim())
                .await
                .map_err(store_error)?
                .map(|(u, _)| u)
                .into_iter()
                .collect(),
            ResetFor::Email(e) => {
                let q = UserQuery {
                    email: Some(e.trim().to_owned()),
                    limit: MAX_USERS_PER_ADDRESS,
                    ..Default::default()
                };
                self.store.search_users(&q).await.map_err(store_error)?.1
            }
        };
        let mut sent = false;
        for user in users {
            let entry = entry.clone().with_target(user.user_id().to_string());
            let Some(email) = user.email.clone().filter(|_| may_use_link(&user, now, &self.config)) else {
                self.audit_refusal(entry, &DomainError::not_allowed()).await;
                continue;
            };
            let (followups, _) = self.link_mail(
                kinds::PASSWORD_RESET,
                RESET_PREFIX,
                RESET_PURPOSE,
                RESET_PATH,
                self.mail.reset_ttl,
                &user,
                &email,
                now,
            )?;
            self.store
                .write_followups(&followups, &entry)
                .await
                .map_err(store_error)?;
            sent = true;
        }
        if sent {
            self.outbox.wake();
        } else {
            // Nobody by that name or address: recorded, so that probing shows in the audit.
            let e = DomainError::not_found("user");
            self.audit_refusal(entry, &e).await;
        }
        Ok(())
    }

    /// A doubling wait after `free` requests within an hour.
    pub(crate) fn reset_policy(&self, free: u32) -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: free.max(1),
            base_delay_secs: 60,
            max_delay_secs: 3600,
            window_secs: 3600,
        }
    }

    /// `POST /api/password-reset/complete`: sets a new password from a reset link. The policy
    /// applies; a TOTP code is required when TOTP is on (its wrong guesses are throttled like a
    /// login's). Every session of the user ends, and the user is told by mail.
    pub async fn complete_password_reset(
        &self,
        ctx: &RequestCtx,
        token: &str,
        new_password: String,
        totp_code: Option<String>,
    ) -> Result<(), DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_PASSWORD_RESET, None, None);
        let result = async {
            let hash = token::hash_token(token);
            let now = clock::now();
            let Some((uuid, expires)) = self
                .store
                .action_token(&hash, RESET_PURPOSE)
                .await
                .map_err(store_error)?
            else {
                return Err(Refusal(link_invalid(), None));
            };
            let target = Some(muster_core::ids::UserId::from_uuid(uuid).to_string());
            if expires <= now {
                return Err(Refusal(link_invalid(), target));
            }
            let Some((mut user, version)) = self.store.user_by_uuid(uuid).await.map_err(store_error)? else {
                return Err(Refusal(link_invalid(), target));
            };
            if !may_use_link(&user, now, &self.config) {
                return Err(Refusal(DomainError::not_allowed(), target));
            }
            self.config
                .password_policy
                .check("new_password", &new_password)
                .map_err(|e| Refusal(e, target.clone()))?;
            let totp_step = if user.is_totp_enabled {
                let Some(code) = totp_code.as_deref() else {
                    let e = DomainError::new(
                        muster_core::ErrorKind::Unauthenticated,
                        codes::TOTP_MISSING,
                        "totp_code is required",
                    );
                    return Err(Refusal(e, target));
                };
                // Guesses at the code count on the login throttle: a stolen link must not
                // become a way around it.
                let attempt = match self.claim_attempt(&user.username, ctx, now).await? {
                    Ok(a) => a,
                    Err(wait) => return Err(Refusal(DomainError::throttled(wait), target)),
                };
                match self.verify_totp(&user, code, now)? {
                    Some(step) => {
                        self.release_attempt(&attempt).await;
                        Some(step)
                    }
                    None => return Err(Refusal(DomainError::not_allowed(), target)),
                }
            } else {
                None
            };
            user.password_hash = self.hashes.hash(new_password).await?;
            user.password_is_set = true;
            user.password_last_set = now;
            user.password_expiry = now + Duration::days(self.config.password_expiry_days);
            user.password_must_change = false;
            if let Some(step) = totp_step {
                user.totp_last_step = Some(step);
            }
            user.updated_at = now;
            let by = user.user_id().to_string();
            let entry = crate::users::password_changed(entry.clone().with_target(by.clone()), &user, &by);
            let followups = self.password_changed_mail(&user, now)?;
            let redeemed = self
                .store
                .redeem_token(
                    &hash,
                    RESET_PURPOSE,
                    now,
                    Redemption {
                        user: &user,
                        version,
                        session: None,
                        followups: &followups,
                        verify_email: None,
                        audit: &entry,
                    },
                )
                .await
                .map_err(store_error)?;
            if !redeemed {
                // Used or replaced meanwhile, or the user changed (locked, say): try again.
                return Err(Refusal(link_invalid(), target));
            }
            if !followups.mails.is_empty() {
                self.outbox.wake();
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(()),
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

    /// The mail telling `user` that the password changed (none without an address).
    pub(crate) fn password_changed_mail(&self, user: &User, now: OffsetDateTime) -> Result<Followups, DomainError> {
        let mut f = Followups::default();
        if let Some(email) = &user.email {
            let message = self.render(
                kinds::PASSWORD_CHANGED,
                &[
                    ("username", &user.username),
                    ("changed_at", &super::mail::human_time(now)),
                ],
                None,
            )?;
            f.mails.push(
                self.outbox
                    .mail(kinds::PASSWORD_CHANGED, email, Some(user.uuid), &message, now),
            );
        }
        Ok(f)
    }
}

/// A refusal and the user it concerns, when known (for the audit record).
pub(crate) struct Refusal(pub DomainError, pub Option<String>);

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Self {
        Refusal(e, None)
    }
}
