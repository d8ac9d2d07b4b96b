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
