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
}

/// Event numbers start at 1, so a cursor is 0 (before the first) or more; a negative one is a
/// malformed request (400), not a cursor from before what retention kept (410).
fn valid_cursor(after: i64) -> Result<(), DomainError> {
    if after < 0 {
        return Err(DomainError::invalid_field(
            "after",
            codes::INVALID_INPUT,
            "after must be 0 or more",
        ));
    }
    Ok(())
}

/// Where a reader continues after `events`, read after `after` with `limit` once the stream's
/// end was `last_seq`: past the last event, and past `last_seq` too when the page is not full
/// (it then holds every event up to there that the reader may see).
fn next_cursor(events: &[EventRecord], after: i64, limit: i64, last_seq: i64) -> i64 {
    let last_read = events.last().map_or(after, |e| e.seq);
    let full = i64::try_from(events.len()).unwrap_or(i64::MAX) >= limit;
    if full { last_read } else { last_read.max(last_seq) }
}

/// A page of events, and where to continue (see `Directory::read_page_with`).
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
    /// The newest number in the stream, read before the events.
    pub last_seq: i64,
    /// The cursor to read the next page after.
    pub next_after: i64,
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

    /// A page of the events `access` allows after `after`, oldest first, at most `limit`, for
    /// a reader of JSON pages.
    ///
    /// `last_seq` is read before the events, so every number up to it was committed and
    /// numbered when they were read: a page that is not full holds every event up to
    /// `last_seq` the reader may see, and `next_after` moves past all of them, including the
    /// numbers of events a filtered reader does not see. (A quiet provider's cursor therefore
    /// keeps up with the stream instead of falling behind the retention horizon.)
    ///
    /// A read after a cursor older than what retention kept is refused (410): the reader would
    /// otherwise skip what was deleted without knowing.
    pub async fn read_page_with(
        &self,
        access: &StreamAccess,
        after: i64,
        limit: i64,
    ) -> Result<EventPage, DomainError> {
        valid_cursor(after)?;
        let last_seq = self.store.last_event_seq(access.stream).await.map_err(store_error)?;
        let events = self.events_after(access, after, limit).await?;
        // Numbers in a stream have no gaps, so an unfiltered page that starts right after the
        // cursor has missed nothing, and needs no look at what was deleted.
        let contiguous =
            access.providers.is_none() && events.first().is_some_and(|e| e.seq.checked_sub(1) == Some(after));
        if !contiguous {
            self.check_cursor_with(access, after).await?;
        }
        let next_after = next_cursor(&events, after, limit, last_seq);
        Ok(EventPage {
            events,
            last_seq,
            next_after,
        })
    }

    /// The next events for a connected SSE follower, and its new cursor (as in
    /// `read_page_with`). Not checked against retention: a follower is checked as it connects
    /// and keeps up from there. An unfiltered follower does without `last_seq` (one query less
    /// per wake-up): its stream's numbers have no gaps.
    pub async fn follow_with(
        &self,
        access: &StreamAccess,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<EventRecord>, i64), DomainError> {
        if access.providers.is_none() {
            let events = self.events_after(access, after, limit).await?;
            let next = events.last().map_or(after, |e| e.seq);
            return Ok((events, next));
        }
        let last_seq = self.store.last_event_seq(access.stream).await.map_err(store_error)?;
        let events = self.events_after(access, after, limit).await?;
        let next = next_cursor(&events, after, limit, last_seq);
        Ok((events, next))
    }

    async fn events_after(
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

    /// Refuses (410) a reader that would continue after `after` when retention has deleted
    /// events numbered after it. Checked on every JSON page that does not start right after its
    /// cursor, and once as an SSE stream opens, so the client gets a status instead of a
    /// stream that ends at once; a connected follower keeps up and is not checked again.
    pub async fn check_cursor_with(&self, access: &StreamAccess, after: i64) -> Result<(), DomainError> {
        valid_cursor(after)?;
        let purged = self.store.purged_event_seq(access.stream).await.map_err(store_error)?;
        if after < purged {
            return Err(DomainError::new(
                muster_core::error::ErrorKind::Gone,
                codes::EVENTS_EXPIRED,
                format!(
                    "events up to {purged} of this stream are no longer kept; read the current state, \
                     then follow from the last_seq of a page read without `after`"
                ),
            ));
        }
        Ok(())
    }

    /// Where a reader that gives no cursor starts: right after the events retention deleted
    /// (0 when none were), i.e. at the oldest event still kept.
    pub async fn oldest_cursor_with(&self, access: &StreamAccess) -> Result<i64, DomainError> {
        self.store.purged_event_seq(access.stream).await.map_err(store_error)
    }

    /// The newest number in the stream (0 when empty). For a filtered reader this is still the
    /// stream's position, so a follower can start "from now".
    pub async fn last_event_seq_with(&self, access: &StreamAccess) -> Result<i64, DomainError> {
        self.store.last_event_seq(access.stream).await.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> EventRecord {
        EventRecord {
            seq,
            stream: "offering_users".into(),
            kind: "offering_user.updated".into(),
            subject: None,
            at: muster_store::Ts(time::OffsetDateTime::UNIX_EPOCH),
            cid: None,
            data: sqlx::types::Json(serde_json::json!({})),
        }
    }

    #[test]
    fn a_page_that_is_not_full_moves_the_cursor_to_the_streams_end() {
        // Filtered: the reader saw 12 and 15 of 11..=20; nothing else of its own is there.
        assert_eq!(next_cursor(&[event(12), event(15)], 10, 100, 20), 20);
        // Nothing of its own at all: it still keeps up.
        assert_eq!(next_cursor(&[], 10, 100, 20), 20);
        // A full page may have more of its own after it: continue right after the last one.
        assert_eq!(next_cursor(&[event(12), event(15)], 10, 2, 20), 15);
        // A cursor ahead of the stream stays where it is.
        assert_eq!(next_cursor(&[], 30, 100, 20), 30);
    }
}
