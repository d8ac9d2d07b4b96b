//! Using a session: resolving a token to its caller on every request, and Zato's `verify`.
//!
//! Expired, revoked and unknown tokens, and users who may no longer hold sessions, are all the
//! same `E007001`; a use restarts the session's idle clock at most once per touch interval.

use crate::{Auth, Directory, store_error};
use muster_core::clock;
use muster_core::credentials::token;
use muster_core::directory::User;
use muster_core::directory::login::session_usable;
use muster_core::error::DomainError;
use muster_store::SessionRecord;
use time::Duration;
use uuid::Uuid;

/// How often at most a session's last-use time is written: often enough for the idle clock,
/// rarely enough that reads do not turn into writes.
const TOUCH_INTERVAL_SECS: i64 = 60;

impl Directory {
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
}
