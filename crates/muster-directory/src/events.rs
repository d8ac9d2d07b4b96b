//! Reading the event stream. Who may read which stream is decided here, not in the handler.

use crate::{Auth, Directory, store_error};
use muster_core::audit::streams;
use muster_core::error::{DomainError, codes};
use muster_store::EventRecord;

impl Directory {
    /// The stream by name, if `auth` may read it. Unknown streams are a 400; the directory
    /// stream carries user data, so only super-users read it.
    pub fn readable_stream(&self, auth: &Auth, stream: &str) -> Result<&'static str, DomainError> {
        let Some(known) = streams::ALL.iter().copied().find(|s| *s == stream) else {
            return Err(DomainError::invalid_field(
                "stream",
                codes::INVALID_INPUT,
                format!("unknown stream; known: {}", streams::ALL.join(", ")),
            ));
        };
        auth.require_super_user()?;
        Ok(known)
    }

    /// Events of `stream` numbered after `after`, oldest first, at most `limit`.
    pub async fn read_events(
        &self,
        auth: &Auth,
        stream: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, DomainError> {
        let stream = self.readable_stream(auth, stream)?;
        let events = self
            .store
            .events_after(stream, after, limit)
            .await
            .map_err(store_error)?;
        self.check_not_purged(stream, after, events.first().map(|e| e.seq))
            .await?;
        Ok(events)
    }

    /// Refuses (410) a read after `after` when retention has deleted events numbered after it:
    /// the reader would otherwise skip them without knowing. Numbers in a stream have no gaps,
    /// so an unfiltered read whose first event is `after + 1` has missed nothing and needs no
    /// look at `purged_seq`; any other read (empty, or filtered) looks.
    async fn check_not_purged(&self, stream: &str, after: i64, first: Option<i64>) -> Result<(), DomainError> {
        if first == Some(after + 1) {
            return Ok(());
        }
        let purged = self.store.purged_event_seq(stream).await.map_err(store_error)?;
        if after < purged {
            return Err(DomainError::new(
                muster_core::error::ErrorKind::Gone,
                codes::EVENTS_EXPIRED,
                format!(
                    "events up to {purged} of this stream are no longer kept; read the current state, then follow from last_seq"
                ),
            ));
        }
        Ok(())
    }

    /// The newest number in `stream` (0 when empty).
    pub async fn last_event_seq(&self, auth: &Auth, stream: &str) -> Result<i64, DomainError> {
        let stream = self.readable_stream(auth, stream)?;
        self.store.last_event_seq(stream).await.map_err(store_error)
    }
}

/// What a caller may read of one stream, decided once per request (and again when a long-lived
/// follower re-authenticates).
#[derive(Debug, Clone)]
pub struct StreamAccess {
    pub stream: &'static str,
    /// `None`: every event. `Some`: only events whose data names one of these providers (hex
    /// `provider_uuid`); the filter runs in the database, so nothing else leaves the server.
    pub providers: Option<Vec<String>>,
}

impl Directory {
    /// Who may read which stream, for any caller:
    /// - `directory`: super-users only (it carries user data);
    /// - `offering_users`: super-users everything; a provider token its provider's events; a
    ///   provider manager the events of the providers they manage; anyone else 403.
    pub async fn stream_access(&self, caller: &crate::Caller, stream: &str) -> Result<StreamAccess, DomainError> {
        let Some(known) = streams::ALL.iter().copied().find(|s| *s == stream) else {
            return Err(DomainError::invalid_field(
                "stream",
                codes::INVALID_INPUT,
                format!("unknown stream; known: {}", streams::ALL.join(", ")),
            ));
        };
        if caller.is_super_user() {
            return Ok(StreamAccess {
                stream: known,
                providers: None,
            });
        }
        if known != streams::OFFERING_USERS {
            return Err(DomainError::super_user_required());
        }
        let providers: Vec<String> = match caller {
            crate::Caller::Provider(t) => vec![t.provider_uuid.simple().to_string()],
            crate::Caller::User(auth) => self
                .store
                .managed_providers(auth.user.uuid)
                .await
                .map_err(store_error)?
                .into_iter()
                .map(|p| p.simple().to_string())
                .collect(),
        };
        if providers.is_empty() {
            return Err(DomainError::forbidden(
                codes::SUPER_USER_REQUIRED,
                "this stream is for super-users and provider managers or tokens",
            ));
        }
        Ok(StreamAccess {
            stream: known,
            providers: Some(providers),
        })
    }

    /// Events after `after` that `access` allows, oldest first, at most `limit`.
    pub async fn read_events_with(
        &self,
        access: &StreamAccess,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, DomainError> {
        let (events, first) = match &access.providers {
            None => {
                let events = self.store.events_after(access.stream, after, limit).await;
                let first = events.as_ref().ok().and_then(|e| e.first()).map(|e| e.seq);
                (events, first)
            }
            // A filtered read skips other providers' numbers, so it always looks.
            Some(providers) => (
                self.store
                    .events_after_for_providers(access.stream, providers, after, limit)
                    .await,
                None,
            ),
        };
        let events = events.map_err(store_error)?;
        self.check_not_purged(access.stream, after, first).await?;
        Ok(events)
    }

    /// Refuses (410) a follower that would resume after `after` when events numbered after it
    /// are no longer kept: checked once as an SSE stream opens, so the client gets a status
    /// instead of a stream that ends at once.
    pub async fn check_cursor_with(&self, access: &StreamAccess, after: i64) -> Result<(), DomainError> {
        self.check_not_purged(access.stream, after, None).await
    }

    /// The newest number in the stream (0 when empty). For a filtered reader this is still the
    /// stream's position, so a follower can start "from now".
    pub async fn last_event_seq_with(&self, access: &StreamAccess) -> Result<i64, DomainError> {
        self.store.last_event_seq(access.stream).await.map_err(store_error)
    }
}
