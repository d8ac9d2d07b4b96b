//! Self-service TOTP: enrol (password, then a code from the new key), and disable (password
//! and a current code).
//!
//! Zato lets an owner switch TOTP on or off with nothing but a session, and never shows a
//! generated key, so a user cannot actually enrol an app. Here a new key is *pending* until a
//! code proves the user's app holds it, so enrolling can never lock anyone out, and the active
//! key is replaced only at that moment. Password checks count against the login throttle, so
//! these calls are no way around it.

use crate::{Auth, Directory, UserTarget, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::credentials::totp;
use muster_core::directory::UserView;
use muster_core::error::{DomainError, codes};
use serde::Serialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};

/// How long a pending key waits for its first code.
const ENROLLMENT_TTL: Duration = Duration::minutes(10);

/// A pending key, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrollment {
    /// Base32; enter it in an authenticator app, or use `otpauth_uri`.
    pub totp_key: String,
    /// `otpauth://totp/…` for QR codes.
    pub otpauth_uri: String,
    /// Confirm with a code before this time.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

muster_core::debug_redacted!(TotpEnrollment { expires_at } redact { totp_key, otpauth_uri });

fn wrong_credentials() -> DomainError {
    // 403, not 401: the session is fine; the proof of presence is not.
    DomainError::forbidden(codes::NOT_ALLOWED, "password or code is not correct")
}

impl Directory {
    /// Re-authenticates the caller with their password and, when given, a current TOTP code
    /// (spent), counted like a login attempt: the attempt is given back only when everything
    /// asked for was right, so neither passwords nor codes can be guessed through these calls.
    pub(crate) async fn reauthenticate(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        password: String,
        code: Option<&str>,
    ) -> Result<(), DomainError> {
        let now = clock::now();
        let attempt = match self.claim_attempt(&auth.user.username, ctx, now).await? {
            Ok(attempt) => attempt,
            Err(wait) => return Err(DomainError::throttled(wait)),
        };
        let (user, _) = self.load_self(auth).await?;
        let mut ok = self.hashes.verify(Some(user.password_hash.clone()), password).await?;
        if let (true, Some(code)) = (ok, code) {
            ok = self.check_totp(&user, code, now).await?;
        }
        if ok {
            self.release_attempt(&attempt).await;
            Ok(())
        } else {
            Err(wrong_credentials())
        }
    }

    async fn load_self(&self, auth: &Auth) -> Result<(muster_core::directory::User, i64), DomainError> {
        self.load_uuid(auth.user.uuid).await
    }

    async fn audited<T>(&self, entry: AuditEntry, result: Result<T, DomainError>) -> Result<T, DomainError> {
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// Starts enrolment: a new pending key, returned once. The active key (if any) stays in
    /// force until the new one is confirmed. Replacing an active key needs a current code from
    /// it too: otherwise a stolen session plus a phished password would move the second factor
    /// to an attacker's app.
    pub async fn begin_totp_enrollment(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        password: String,
        code: Option<String>,
    ) -> Result<TotpEnrollment, DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::USER_TOTP_ENROLL,
            Some(auth.user_id()),
            Some(auth.user_id()),
        );
        let result = async {
            if auth.user.is_totp_enabled && code.is_none() {
                return Err(DomainError::new(
                    muster_core::ErrorKind::Forbidden,
                    codes::TOTP_MISSING,
                    "TOTP is enabled: replacing the key needs a current totp_code",
                ));
            }
            let code = code.filter(|_| auth.user.is_totp_enabled);
            self.reauthenticate(ctx, auth, password, code.as_deref()).await?;
            let key = totp::generate_key();
            let now = clock::now();
            self.store
                .put_totp_enrollment(auth.user.uuid, &self.secrets.seal(&key), now, &entry)
                .await
                .map_err(store_error)?;
            let issuer = if auth.user.totp_label.is_empty() {
                &self.config.default_totp_label
            } else {
                &auth.user.totp_label
            };
            Ok(TotpEnrollment {
                otpauth_uri: totp::otpauth_uri(issuer, &auth.user.username, &key),
                totp_key: key,
                expires_at: now + ENROLLMENT_TTL,
            })
        }
        .await;
        self.audited(entry, result).await
    }

    /// Confirms enrolment with a code from the pending key: it becomes the active key and TOTP
    /// is on. The code's step is spent, so it cannot also be used to log in.
    pub async fn confirm_totp_enrollment(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        code: String,
    ) -> Result<UserView, DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::USER_TOTP_ENABLE,
            Some(auth.user_id()),
            Some(auth.user_id()),
        );
        let result = async {
            let now = clock::now();
            let pending = self.store.totp_enrollment(auth.user.uuid).await.map_err(store_error)?;
            let Some((sealed, _)) = pending.filter(|(_, created)| now - *created < ENROLLMENT_TTL) else {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "no TOTP enrolment in progress (or it expired); start one with POST /api/users/me/totp",
                ));
            };
            let key = self.secrets.open(&sealed).map_err(DomainError::internal)?;
            let bytes = totp::decode_key(&key).ok_or_else(|| DomainError::internal("pending TOTP key does not decode"))?;
            let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
            let Some(step) = totp::verify(&bytes, &code, unix, None) else {
                return Err(DomainError::invalid_field("totp_code", codes::INVALID_INPUT, "the code does not match the new key"));
            };
            let (mut user, version) = self.load_self(auth).await?;
            user.totp_key_sealed = sealed.clone();
            user.is_totp_enabled = true;
            user.totp_last_step = Some(i64::try_from(step).map_err(DomainError::internal)?);
            user.updated_at = now;
            let user_id = user.user_id().to_string();
            let data = json!({ "action": actions::USER_TOTP_ENABLE, "changed": ["is_totp_enabled", "totp_key"], "user": UserView::of(&user, true) });
            let published = entry.clone().with_event(streams::DIRECTORY, kinds::USER_UPDATED, user_id, data);
            if !self.store.complete_totp_enrollment(&user, version, &sealed, &published).await.map_err(store_error)? {
                return Err(DomainError::conflict(codes::CONFLICT, "the enrolment or the user changed concurrently; try again"));
            }
            Ok(UserView::of(&user, auth.is_super_user()))
        }
        .await;
        self.audited(entry, result).await
    }

    /// Turns TOTP off, proven with the password and a current code. The old key is replaced by
    /// a fresh random one, so re-enabling later never revives it.
    pub async fn disable_totp(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        password: String,
        code: String,
    ) -> Result<UserView, DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::USER_TOTP_DISABLE,
            Some(auth.user_id()),
            Some(auth.user_id()),
        );
        let result = async {
            if !auth.user.is_totp_enabled {
                return Err(DomainError::invalid(codes::INVALID_OPERATION, "TOTP is not enabled"));
            }
            self.reauthenticate(ctx, auth, password, Some(&code)).await?;
            let now = clock::now();
            let (mut user, version) = self.load_self(auth).await?;
            user.is_totp_enabled = false;
            user.totp_key_sealed = self.secrets.seal(&totp::generate_key());
            user.totp_last_step = None;
            user.updated_at = now;
            let user_id = user.user_id().to_string();
            let data = json!({ "action": actions::USER_TOTP_DISABLE, "changed": ["is_totp_enabled", "totp_key"], "user": UserView::of(&user, true) });
            let published = entry.clone().with_event(streams::DIRECTORY, kinds::USER_UPDATED, user_id, data);
            if !self.store.update_user(&user, version, false, &published).await.map_err(store_error)? {
                return Err(DomainError::conflict(codes::CONFLICT, "the user changed concurrently; try again"));
            }
            self.get_user(auth, UserTarget::Me).await
        }
        .await;
        self.audited(entry, result).await
    }
}
