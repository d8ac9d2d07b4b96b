//! Logging in: Zato's checks in Zato's order (throttle, password, TOTP, password expiry and
//! must-change), then the session opened together with its audit record.
//!
//! An unknown user, a wrong password and a wrong TOTP code give the same `E005001` after the
//! same work; a session opens only if the user did not change since it was read, and a TOTP
//! code is spent only by the session it opens.

use super::throttle::Attempt;
use crate::{Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::{token, totp};
use muster_core::directory::User;
use muster_core::directory::login::check_login;
use muster_core::error::{DomainError, codes};
use muster_store::{LoginGuard, LoginPassword, SessionRecord, ThrottleReset};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// `POST /api/session`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
    /// Required when the user has TOTP enabled.
    pub totp_code: Option<String>,
    /// One of the configured applications; default: the first.
    pub current_app: Option<String>,
    /// Replaces an expired password, or one that must be changed, as part of the login.
    #[schema(format = Password)]
    pub new_password: Option<String>,
}

muster_core::debug_redacted!(LoginInput { username, current_app } redact { password, totp_code, new_password });

/// A successful login. The token is shown here and never again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginOutcome {
    pub token: String,
    /// When the session ends if unused (idle expiry, capped by the absolute expiry).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the session ends however much it is used.
    #[serde(with = "time::serde::rfc3339")]
    pub absolute_expires_at: OffsetDateTime,
    pub session_id: Uuid,
    pub user_id: String,
    /// Zato warning codes, e.g. `W003005` (password about to expire).
    pub warnings: Vec<String>,
}

muster_core::debug_redacted!(LoginOutcome {
    expires_at, absolute_expires_at, session_id, user_id, warnings
} redact { token });

impl Directory {
    /// A refusal after the credentials were verified: the attempt is given back and the
    /// refusal audited.
    async fn refuse_verified(&self, entry: AuditEntry, attempt: &Attempt, e: DomainError) -> DomainError {
        self.release_attempt(attempt).await;
        self.audit_refusal(entry, &e).await;
        e
    }

    /// Logs in. Checks run in Zato's order; an unknown user, a wrong password and a wrong TOTP
    /// code all give the same `E005001` after the same work (one argon2id verification).
    pub async fn login(&self, ctx: &RequestCtx, input: LoginInput) -> Result<LoginOutcome, DomainError> {
        let app = match input.current_app.clone() {
            Some(app) if self.config.apps.contains(&app) => app,
            Some(_) => {
                let e = DomainError::invalid_field(
                    "current_app",
                    codes::APP_INVALID,
                    "current_app is not a configured application",
                );
                let entry = AuditEntry::new(ctx, actions::SESSION_LOGIN, None, None);
                self.audit_refusal(entry, &e).await;
                return Err(e);
            }
            None => self.config.apps.first().cloned().unwrap_or_default(),
        };
        let ctx = &RequestCtx {
            current_app: Some(app.clone()),
            ..ctx.clone()
        };
        let entry = AuditEntry::new(ctx, actions::SESSION_LOGIN, None, None);
        let now = clock::now();

        let attempt = match self.claim_attempt(&input.username, ctx, now).await? {
            Ok(attempt) => attempt,
            Err(wait) => {
                let e = DomainError::throttled(wait);
                self.audit_refusal(entry, &e).await;
                return Err(e);
            }
        };

        let found = self
            .store
            .user_by_username(&input.username)
            .await
            .map_err(store_error)?;
        let stored_hash = found.as_ref().map(|(u, _)| u.password_hash.clone());
        let password_ok = self.hashes.verify(stored_hash, input.password.clone()).await?;
        let (user, version) = match found {
            Some((user, version)) if password_ok => (user, version),
            // Attempts on an existing account name it, so an attack on it shows in its audit.
            Some((user, _)) => return Err(self.login_failed(entry.with_target(user.user_id().to_string())).await),
            None => return Err(self.login_failed(entry).await),
        };
        let entry = entry.with_target(user.user_id().to_string());

        let mut totp_step = None;
        if user.is_totp_enabled {
            let Some(code) = input.totp_code.as_deref() else {
                // The password was right: say what is missing (Zato: inform_if_totp_missing).
                let e = DomainError::new(
                    muster_core::ErrorKind::Unauthenticated,
                    codes::TOTP_MISSING,
                    "totp_code is required",
                );
                return Err(self.refuse_verified(entry, &attempt, e).await);
            };
            // Verified now, spent only when the session is opened: a refusal further down
            // (must-change, a weak new password) must not burn the code.
            match self.verify_totp(&user, code, now)? {
                Some(step) => totp_step = Some(step),
                None => return Err(self.login_failed(entry).await),
            }
        }

        let verdict = match check_login(&user, now, &self.config, input.new_password.is_some()) {
            Ok(v) => v,
            Err(e) => return Err(self.refuse_verified(entry, &attempt, e).await),
        };

        let password = if verdict.must_set_new_password {
            let new_password = input.new_password.unwrap_or_default();
            let checked = self
                .config
                .password_policy
                .check("new_password", &new_password)
                .and_then(|_| {
                    if new_password == input.password {
                        Err(DomainError::invalid_field(
                            "new_password",
                            codes::INVALID_INPUT,
                            "the new password must differ from the old one",
                        ))
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = checked {
                return Err(self.refuse_verified(entry, &attempt, e).await);
            }
            Some(LoginPassword {
                hash: self.hashes.hash(new_password).await?,
                last_set: now,
                expiry: now + Duration::days(self.config.password_expiry_days),
                must_change: false,
                revoke_other_sessions: true,
            })
        } else if self.hashes.hasher().needs_rehash(&user.password_hash) {
            // Parameters were raised since this hash was made: store a fresh one.
            Some(LoginPassword {
                hash: self.hashes.hash(input.password).await?,
                last_set: user.password_last_set,
                expiry: user.password_expiry,
                must_change: user.password_must_change,
                revoke_other_sessions: false,
            })
        } else {
            None
        };

        let (token, token_hash) = token::new_token(token::SESSION_PREFIX);
        let session = SessionRecord {
            id: Uuid::new_v4(),
            user_uuid: user.uuid,
            created_at: now,
            last_seen_at: now,
            expires_at: now + Duration::seconds(self.config.session_absolute_secs),
            current_app: Some(app),
            remote_addr: ctx.remote_addr.clone(),
            user_agent: ctx.user_agent.clone().map(|ua| ua.chars().take(512).collect()),
        };
        let warnings: Vec<String> = if verdict.about_to_expire {
            vec![codes::PASSWORD_ABOUT_TO_EXPIRE.to_owned()]
        } else {
            vec![]
        };
        let mut entry = entry.with_details(json!({
            "session_id": session.id,
            "password_changed": verdict.must_set_new_password,
            "warnings": warnings,
        }));
        if verdict.must_set_new_password {
            let changed = User {
                password_must_change: false,
                ..user.clone()
            };
            entry = crate::users::password_changed(entry, &changed, &user.user_id().to_string());
        }
        let guard = LoginGuard {
            user_version: version,
            totp_step,
        };
        let reset = ThrottleReset {
            clear: vec![attempt.keys.pair.clone(), attempt.keys.account.clone()],
            address: attempt
                .keys
                .address
                .clone()
                .map(|address| (address, attempt.keys.account.clone())),
        };
        let opened = match self
            .store
            .open_session(&session, &token_hash, guard, password.as_ref(), &reset, &entry)
            .await
        {
            Ok(opened) => opened,
            Err(e) => {
                // The database failed (full, unreachable), not the credentials: the attempt
                // must not count against the account, or an outage would lock people out.
                self.release_attempt(&attempt).await;
                return Err(store_error(e));
            }
        };
        if !opened {
            // The user changed since it was read (a reset, a lock, …) or the code was spent by
            // a concurrent login: this login does not stand.
            return Err(self.login_failed(entry.clone()).await);
        }
        Ok(LoginOutcome {
            token,
            expires_at: self.effective_expiry(&session),
            absolute_expires_at: session.expires_at,
            session_id: session.id,
            user_id: user.user_id().to_string(),
            warnings,
        })
    }

    /// A failed login (already counted): audit it and give the generic error.
    async fn login_failed(&self, entry: AuditEntry) -> DomainError {
        let e = DomainError::not_allowed();
        self.audit_refusal(entry, &e).await;
        e
    }

    /// Verifies a TOTP code and spends its step, so the same code cannot log in twice.
    /// The step `code` matches for `user` (not yet spent), or None.
    pub(crate) fn verify_totp(&self, user: &User, code: &str, now: OffsetDateTime) -> Result<Option<i64>, DomainError> {
        let key = self
            .secrets
            .open(&user.totp_key_sealed)
            .map_err(DomainError::internal)?;
        let Some(key) = totp::decode_key(&key) else {
            return Err(DomainError::internal("stored TOTP key does not decode"));
        };
        let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        totp::verify(&key, code, unix, last)
            .map(|step| i64::try_from(step).map_err(DomainError::internal))
            .transpose()
    }

    /// Verifies a TOTP code and spends its step, so the same code cannot be used twice.
    pub(crate) async fn check_totp(&self, user: &User, code: &str, now: OffsetDateTime) -> Result<bool, DomainError> {
        match self.verify_totp(user, code, now)? {
            Some(step) => self.store.consume_totp_step(user.uuid, step).await.map_err(store_error),
            None => Ok(false),
        }
    }
}
