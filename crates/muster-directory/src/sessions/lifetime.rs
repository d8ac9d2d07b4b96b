//! A session's lifetime after login: renewal, logout, listing, revocation of one or all, and
//! the periodic purge of expired sessions and lapsed throttle counters.
//!
//! A caller sees and ends their own sessions; a super-user also lists and ends all of anyone's.
//! A session is never shown with its token, and every ending a caller asks for is audited.

use crate::{Auth, Directory, UserTarget, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::error::DomainError;
use muster_store::SessionRecord;
use serde::Serialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

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

impl Directory {
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
