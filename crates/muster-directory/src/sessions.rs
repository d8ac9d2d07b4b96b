//! Login, session checks, renewal, logout, listing and revocation.

use crate::{Auth, Directory, UserTarget, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::{token, totp};
use muster_core::directory::User;
use muster_core::directory::login::{check_login, session_usable};
use muster_core::directory::throttle::{LoginKeys, ThrottlePolicy};
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

/// A session as its owner sees it: never the token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: Uuid,
    pub user_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub absolute_expires_at: OffsetDateTime,
    pub current_app: Option<String>,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    /// This is the session the request came with.
    pub current: bool,
}

/// One password check's claim on the login throttle, to give back when the credentials were
/// right.
pub(crate) struct Attempt {
    keys: LoginKeys,
    /// This attempt added the name to the address's failing names.
    noted_address: bool,
}

/// The longest of the waits found so far.
#[derive(Default)]
struct Wait(Option<u64>);

impl Wait {
    fn add(&mut self, wait: Option<u64>) {
        if let Some(w) = wait {
            self.0 = Some(self.0.map_or(w, |x| x.max(w)));
        }
    }
}

/// How often at most a session's last-use time is written: often enough for the idle clock,
/// rarely enough that reads do not turn into writes.
const TOUCH_INTERVAL_SECS: i64 = 60;

impl Directory {
    fn idle(&self) -> Duration {
        Duration::seconds(self.config.session_idle_secs)
    }

    pub(crate) fn effective_expiry(&self, s: &SessionRecord) -> OffsetDateTime {
        (s.last_seen_at + self.idle()).min(s.expires_at)
    }

    fn view(&self, s: &SessionRecord, current: Option<Uuid>) -> SessionView {
        SessionView {
            session_id: s.id,
            user_id: muster_core::ids::UserId::from_uuid(s.user_uuid).to_string(),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: self.effective_expiry(s),
            absolute_expires_at: s.expires_at,
            current_app: s.current_app.clone(),
            remote_addr: s.remote_addr.clone(),
            user_agent: s.user_agent.clone(),
            current: Some(s.id) == current,
        }
    }

    /// Counts one password check by `username` from `ctx` on the login throttle before the
    /// password is looked at (see `muster_core::directory::throttle`): Err(wait) when the
    /// attempt must not be made, and then nothing stays counted.
    pub(crate) async fn claim_attempt(
        &self,
        username: &str,
        ctx: &RequestCtx,
        now: OffsetDateTime,
    ) -> Result<Result<Attempt, u64>, DomainError> {
        let t = &self.config.throttle;
        let keys = self.throttle_keys.of(username, ctx.remote_addr.as_deref());
        let known = match &keys.address {
            Some(address) => self
                .store
                .login_address_known(&keys.account, address, now - Duration::days(t.known_address_days))
                .await
                .map_err(store_error)?,
            None => false,
        };
        // A name new to the address's failing names is held to the address's limit; a name
        // already failing from it is held back by its own counter instead.
        let new_name = match (&keys.address, known) {
            (Some(address), false) => !self
                .store
                .address_failure_live(address, &keys.account, t.per_address.since(now))
                .await
                .map_err(store_error)?,
            _ => false,
        };

        // First look at every counter without writing: a throttled attempt must not bump (and
        // so keep fresh) the counters that did not hold it back.
        let mut wait = Wait::default();
        let pair = self.store.throttle_state(&keys.pair).await.map_err(store_error)?;
        wait.add(t.per_account_and_address.admit(pair, now).err());
        if !known {
            let account = self.store.throttle_state(&keys.account).await.map_err(store_error)?;
            wait.add(t.per_account.admit(account, now).err());
        }
        if let (Some(address), true) = (&keys.address, new_name) {
            wait.add(self.address_wait(address, &keys.account, now).await?);
        }
        if let Some(w) = wait.0 {
            return Ok(Err(w));
        }

        let mut attempt = Attempt {
            keys,
            noted_address: false,
        };
        if let Err(w) = self
            .bump(&attempt.keys.pair, &t.per_account_and_address, true, now)
            .await?
        {
            return Ok(Err(w));
        }
        if let Err(w) = self.bump(&attempt.keys.account, &t.per_account, !known, now).await? {
            self.release_throttle_keys(&[&attempt.keys.pair]).await;
            return Ok(Err(w));
        }
        if let (Some(address), false) = (attempt.keys.address.clone(), known) {
            self.store
                .note_address_failure(&address, &attempt.keys.account, now)
                .await
                .map_err(store_error)?;
            if new_name {
                attempt.noted_address = true;
                // Counted again after writing: of two attempts racing on new names, the later
                // to count sees the other.
                if let Some(w) = self.address_wait(&address, &attempt.keys.account, now).await? {
                    self.release_attempt(&attempt).await;
                    return Ok(Err(w));
                }
            }
        }
        Ok(Ok(attempt))
    }

    /// The wait before `account` may be tried as a new name from `address`, if any.
    async fn address_wait(
        &self,
        address: &str,
        account: &str,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, DomainError> {
        let policy = &self.config.throttle.per_address;
        let (others, latest) = self
            .store
            .address_failures_besides(address, account, policy.since(now))
            .await
            .map_err(store_error)?;
        Ok(policy.admit_another(others, latest, now).err())
    }

    /// Counts one attempt on the counter `key` by compare-and-swap (a lost race means another
    /// attempt was counted first: read again). `limited`: the policy may refuse it.
    pub(crate) async fn bump(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        limited: bool,
        now: OffsetDateTime,
    ) -> Result<Result<(), u64>, DomainError> {
        // Sixteen lost races in a row means a burst on this key: treat it as throttled.
        for _ in 0..16 {
            let state = self.store.throttle_state(key).await.map_err(store_error)?;
            let next = if limited {
                match policy.admit(state, now) {
                    Ok(next) => next,
                    Err(wait) => return Ok(Err(wait)),
                }
            } else {
                policy.count(state, now)
            };
            if self.store.throttle_cas(key, state, next).await.map_err(store_error)? {
                return Ok(Ok(()));
            }
        }
        Ok(Err(1))
    }

    async fn release_throttle_keys(&self, keys: &[&str]) {
        for key in keys {
            if let Err(e) = self.store.release_throttle(key).await {
                tracing::warn!(error = %e, "could not release a login attempt");
            }
        }
    }

    /// Gives a counted attempt back: the credentials were right.
    pub(crate) async fn release_attempt(&self, attempt: &Attempt) {
        self.release_throttle_keys(&[&attempt.keys.pair, &attempt.keys.account])
            .await;
        if let (Some(address), true) = (&attempt.keys.address, attempt.noted_address)
            && let Err(e) = self.store.forget_address_failure(address, &attempt.keys.account).await
        {
            tracing::warn!(error = %e, "could not release a login attempt");
        }
    }

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

    /// Resolves a session token to its caller. Expired, revoked and unknown tokens, and users
    /// who may no longer hold sessions (locked, rejected, expired password), all give `E007001`.
    pub async fn authenticate(&self, token: &str) -> Result<Auth, DomainError> {
        self.resolve(token, true).await
    }

    /// `touch`: count this as a use of the session (restarts its idle clock).
    async fn resolve(&self, token: &str, touch: bool) -> Result<Auth, DomainError> {
        let hash = token::hash_token(token);
        let Some((session, user, _)) = self.store.session_by_token_hash(&hash).await.map_err(store_error)? else {
            return Err(DomainError::no_session());
        };
        self.admit_session(session, user, touch).await
    }

    /// Authenticates `token` and loads the user `target` in the same round trip (reading a
    /// user by id is the directory's hottest path). The target is None when it does not exist.
    pub async fn authenticate_with(&self, token: &str, target: Uuid) -> Result<(Auth, Option<User>), DomainError> {
        let hash = token::hash_token(token);
        let Some((session, user, _, other)) = self
            .store
            .session_by_token_hash_with(&hash, target)
            .await
            .map_err(store_error)?
        else {
            return Err(DomainError::no_session());
        };
        let auth = self.admit_session(session, user, true).await?;
        Ok((auth, other.map(|(u, _)| u)))
    }

    /// The checks every use of a session passes: not expired (idle or absolute), and the user
    /// may still hold sessions. Restarts the idle clock when `touch` and it is due.
    async fn admit_session(&self, session: SessionRecord, user: User, touch: bool) -> Result<Auth, DomainError> {
        let now = clock::now();
        if now >= self.effective_expiry(&session) || !session_usable(&user, now) {
            return Err(DomainError::no_session());
        }
        let interval = Duration::seconds(TOUCH_INTERVAL_SECS.min(self.config.session_idle_secs / 2).max(1));
        if touch && now - session.last_seen_at >= interval {
            self.store.touch_session(session.id, now).await.map_err(store_error)?;
        }
        Ok(Auth {
            user,
            session_id: session.id,
            current_app: session.current_app,
        })
    }

    /// The caller's current session.
    pub async fn current_session(&self, auth: &Auth) -> Result<SessionView, DomainError> {
        let sessions = self
            .store
            .list_sessions(auth.user.uuid, clock::now())
            .await
            .map_err(store_error)?;
        sessions
            .iter()
            .find(|s| s.id == auth.session_id)
            .map(|s| self.view(s, Some(auth.session_id)))
            .ok_or_else(DomainError::no_session)
    }

    /// Renews the caller's session: its idle clock restarts (the absolute expiry stays).
    pub async fn renew(&self, ctx: &RequestCtx, auth: &Auth) -> Result<SessionView, DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::SESSION_RENEW,
            Some(auth.user_id()),
            Some(auth.session_id.to_string()),
        );
        if !self
            .store
            .renew_session(auth.session_id, clock::now(), &entry)
            .await
            .map_err(store_error)?
        {
            return Err(DomainError::no_session());
        }
        self.current_session(auth).await
    }

    pub async fn logout(&self, ctx: &RequestCtx, auth: &Auth) -> Result<(), DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::SESSION_LOGOUT,
            Some(auth.user_id()),
            Some(auth.session_id.to_string()),
        );
        self.store
            .delete_session(auth.session_id, auth.user.uuid, &entry)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Live sessions of the caller, or of any user for a super-user.
    pub async fn list_sessions(&self, auth: &Auth, target: UserTarget) -> Result<Vec<SessionView>, DomainError> {
        let uuid = self.session_owner(auth, target)?;
        let now = clock::now();
        let sessions = self.store.list_sessions(uuid, now).await.map_err(store_error)?;
        Ok(sessions
            .iter()
            .filter(|s| now < self.effective_expiry(s))
            .map(|s| self.view(s, Some(auth.session_id)))
            .collect())
    }

    fn session_owner(&self, auth: &Auth, target: UserTarget) -> Result<Uuid, DomainError> {
        match target {
            UserTarget::Me => Ok(auth.user.uuid),
            UserTarget::Id(id) if id.uuid() == auth.user.uuid => Ok(id.uuid()),
            UserTarget::Id(id) => auth.require_super_user().map(|_| id.uuid()),
        }
    }

    /// Ends one of the caller's own sessions.
    pub async fn revoke_session(&self, ctx: &RequestCtx, auth: &Auth, session_id: Uuid) -> Result<(), DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::SESSION_REVOKE,
            Some(auth.user_id()),
            Some(session_id.to_string()),
        );
        if self
            .store
            .delete_session(session_id, auth.user.uuid, &entry)
            .await
            .map_err(store_error)?
        {
            Ok(())
        } else {
            Err(DomainError::not_found("session"))
        }
    }

    /// Ends every session of the caller (keeping the current one if asked), or of any user
    /// for a super-user. Returns how many ended.
    pub async fn revoke_all(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        target: UserTarget,
        keep_current: bool,
    ) -> Result<u64, DomainError> {
        let uuid = self.session_owner(auth, target)?;
        let target_id = muster_core::ids::UserId::from_uuid(uuid).to_string();
        let entry = AuditEntry::new(ctx, actions::SESSION_REVOKE_ALL, Some(auth.user_id()), Some(target_id));
        let keep = (keep_current && uuid == auth.user.uuid).then_some(auth.session_id);
        let entry = entry.with_details(json!({ "kept_current": keep.is_some() }));
        self.store
            .delete_user_sessions(uuid, keep, &entry)
            .await
            .map_err(store_error)
    }

    /// Zato's `verify`: whether another token is valid. Super-user only; never errors on the
    /// token itself.
    pub async fn verify_token(&self, auth: &Auth, token: &str) -> Result<bool, DomainError> {
        auth.require_super_user()?;
        // Checking someone's token is not a use of their session: no touch.
        match self.resolve(token, false).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == muster_core::ErrorKind::Internal => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Deletes expired sessions and lapsed throttle counters. Run periodically.
    pub async fn purge_expired(&self) -> Result<(u64, u64), DomainError> {
        let now = clock::now();
        let sessions = self
            .store
            .purge_sessions(now, now - self.idle())
            .await
            .map_err(store_error)?;
        let t = &self.config.throttle;
        let counters = self
            .store
            .purge_throttle(now - Duration::seconds(t.longest_window_secs()))
            .await
            .map_err(store_error)?
            + self
                .store
                .purge_login_records(t.per_address.since(now), now - Duration::days(t.known_address_days))
                .await
                .map_err(store_error)?;
        Ok((sessions, counters))
    }
}
