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
        self.store.events_after(stream, after, limit).await.map_err(store_error)
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
        match &access.providers {
            None => self.store.events_after(access.stream, after, limit).await,
            Some(providers) => {
                self.store
                    .events_after_for_providers(access.stream, providers, after, limit)
                    .await
            }
        }
        .map_err(store_error)
    }

    /// The newest number in the stream (0 when empty). For a filtered reader this is still the
    /// stream's position, so a follower can start "from now".
    pub async fn last_event_seq_with(&self, access: &StreamAccess) -> Result<i64, DomainError> {
        self.store.last_event_seq(access.stream).await.map_err(store_error)
    }
}
