//! `GET /api/events`: the event stream, as a JSON page or as Server-Sent Events.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{AnyCaller, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use muster_store::EventRecord;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Followers look for events numbered by other nodes at least this often.
const POLL: Duration = Duration::from_secs(1);
/// A follower's session is checked again this often; a revoked session ends the stream.
const REAUTH: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// The stream to read: `directory` (super-users) or `offering_users` (super-users; provider
    /// managers and provider tokens see their providers' events only).
    pub stream: String,
    /// Events numbered after this. JSON default 0; SSE default: the current end (only new
    /// events), unless `Last-Event-ID` says where to resume.
    pub after: Option<i64>,
    /// JSON page size, default 100, at most 1000.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub stream: String,
    /// Events after the cursor, oldest first.
    pub events: Vec<EventRecord>,
    /// The newest number in the stream when this page was read.
    pub last_seq: i64,
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Read an event stream (super-user only for `directory`; `offering_users` also for provider
/// managers and provider tokens, filtered to their providers).
///
/// Every change to the directory appends an event numbered 1, 2, 3, … in its stream, in commit
/// order. With `Accept: text/event-stream` the answer is a Server-Sent Events stream: each
/// event's `id` is its number, so a client that reconnects with `Last-Event-ID` resumes exactly
/// after the last event it saw. Otherwise the answer is one JSON page.
#[utoipa::path(get, path = "/api/events", tag = "events", security(("session" = [])), params(EventParams),
    responses(
        (status = 200, body = EventPage, description = "A page of events (or, with Accept: text/event-stream, an SSE stream)"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 410, body = Problem, description = "Events after the cursor are past their retention (events_expired)"),
    ))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<EventParams>,
) -> ApiResult<Response> {
    let caller = AnyCaller::from_headers(&headers, &state).await?;
    let access = state.directory.stream_access(&caller, &p.stream).await?;

    if !wants_sse(&headers) {
        let limit = p.limit.unwrap_or(100).clamp(1, 1000);
        let events = state
            .directory
            .read_events_with(&access, p.after.unwrap_or(0), limit)
            .await?;
        let last_seq = state.directory.last_event_seq_with(&access).await?;
        return Ok(Json(EventPage {
            stream: access.stream.to_owned(),
            events,
            last_seq,
        })
        .into_response());
    }

    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let cursor = match resume.or(p.after) {
        Some(c) => c,
        None => state.directory.last_event_seq_with(&access).await?,
    };
    state.directory.check_cursor_with(&access, cursor).await?;
    let follower = Follower {
        state: state.clone(),
        headers,
        access,
        cursor,
        buffer: VecDeque::new(),
        numbered: state.events.subscribe(),
        checked: Instant::now(),
    };
    let sse = futures_util::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|e| (Ok::<_, Infallible>(e), f))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}

/// One SSE client's position in a stream.
struct Follower {
    state: AppState,
    /// The request's credentials, to authenticate again now and then.
    headers: HeaderMap,
    access: muster_directory::StreamAccess,
    cursor: i64,
    buffer: VecDeque<EventRecord>,
    numbered: tokio::sync::watch::Receiver<u64>,
    checked: Instant,
}

impl Follower {
    /// The next event; None ends the stream (session gone, or the database failing).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.cursor = e.seq;
                let data = serde_json::to_string(&e).ok()?;
                return Some(Event::default().id(e.seq.to_string()).event(e.kind.clone()).data(data));
            }
            if self.checked.elapsed() >= REAUTH {
                // The credentials (and the caller's right to this stream) are checked again now
                // and then: a revoked session or token ends the stream.
                let caller = AnyCaller::from_headers(&self.headers, &self.state).await.ok()?;
                self.access = self
                    .state
                    .directory
                    .stream_access(&caller, self.access.stream)
                    .await
                    .ok()?;
                self.checked = Instant::now();
            }
            match self
                .state
                .directory
                .read_events_with(&self.access, self.cursor, 100)
                .await
            {
                Ok(batch) if !batch.is_empty() => self.buffer.extend(batch),
                Ok(_) => {
                    let _ = tokio::time::timeout(POLL, self.numbered.changed()).await;
                }
                Err(e) => {
                    tracing::warn!(code = e.code, "event follower stopped");
                    return None;
                }
            }
        }
    }
}
