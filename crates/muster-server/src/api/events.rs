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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// The stream to read: `directory` (super-users) or `offering_users` (super-users; provider
    /// managers and provider tokens see their providers' events only).
    pub stream: String,
    /// Events numbered after this. JSON default: the oldest event still kept; SSE default: the
    /// current end (only new events), unless `Last-Event-ID` says where to resume. A cursor
    /// older than what retention kept is refused with 410 `events_expired`.
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
    /// Where to continue: pass it as `after` for the next page. It moves past the events on
    /// this page and, when the page is not full, past every number up to `last_seq`,
    /// including those of events this reader does not see.
    pub next_after: i64,
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
#[utoipa::path(get, operation_id = "read_events", path = "/api/events", tag = "events", security(("session" = []), ("token" = [])),
    params(EventParams, ("Last-Event-ID" = Option<i64>, Header, description = "SSE: resume after this event (sent by EventSource on reconnect)")),
    responses(
        (status = 200, description = "A page of events, or with `Accept: text/event-stream` a Server-Sent Events stream (`id` the event's number, `event` its kind, `data` the event as JSON)",
            content((EventPage = "application/json"), (String = "text/event-stream"))),
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
        let after = match p.after {
            Some(after) => after,
            None => state.directory.oldest_cursor_with(&access).await?,
        };
        let page = state.directory.read_page_with(&access, after, limit).await?;
        return Ok(Json(EventPage {
            stream: access.stream.to_owned(),
            events: page.events,
            last_seq: page.last_seq,
            next_after: page.next_after,
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
        sent: cursor,
        buffer: VecDeque::new(),
        numbered: state.events.subscribe(),
        checked: Instant::now(),
        announced: Instant::now(),
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
    /// How far the stream has been read (events in `buffer` included).
    cursor: i64,
    /// The last id the client was sent.
    sent: i64,
    buffer: VecDeque<EventRecord>,
    numbered: tokio::sync::watch::Receiver<u64>,
    checked: Instant,
    /// When the client was last told of a position it had no event for.
    announced: Instant,
}

impl Follower {
    /// The next event; None ends the stream (session gone, or the database failing).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.sent = e.seq;
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
            match self.state.directory.follow_with(&self.access, self.cursor, 100).await {
                Ok((events, next)) if !events.is_empty() => {
                    self.cursor = next;
                    self.buffer.extend(events);
                }
                Ok((_, next)) => {
                    self.cursor = next;
                    // A filtered follower's position moves on with other providers' events it
                    // does not see. Now and then it is sent as an id without data, which moves
                    // the client's Last-Event-ID and dispatches nothing, so a reconnect after a
                    // long quiet spell resumes from there rather than from behind the
                    // retention horizon.
                    if self.cursor > self.sent && self.announced.elapsed() >= REAUTH {
                        self.sent = self.cursor;
                        self.announced = Instant::now();
                        return Some(Event::default().id(self.cursor.to_string()).comment("position"));
                    }
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
