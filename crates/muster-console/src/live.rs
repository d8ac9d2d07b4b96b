//! `GET /live`: the console's Server-Sent Events, from muster's event streams.
//!
//! A page names the streams it follows (`/live?streams=processes,offering_users`); each is
//! read with the signed-in person's rights (`Directory::stream_access`: a provider manager
//! sees only their providers' account events, and no stream they may not read). For every
//! event two SSE messages go out: one named after the stream (`processes`), which list pages
//! use to refresh, and one named after what changed (`process-<id>`, `account-<uuid>`), which
//! a detail page or a table row uses to refresh only itself. The data is the event's number:
//! pages fetch what they show through the services, never from the event.
//!
//! The session is checked again every 15 seconds: a revoked session ends the stream.

use crate::auth::Viewer;
use crate::cookies::Cookies;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use muster_core::audit::streams;
use muster_core::error::DomainError;
use muster_directory::{Caller, StreamAccess};
use muster_server::AppState;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_secs(1);
const REAUTH: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct LiveParams {
    streams: String,
    /// `stream:seq,…`: where each stream stood when the page was read (see [`url`]).
    from: Option<String>,
}

/// The URL a page follows `streams` (comma-separated) at: each stream's position is read now,
/// *before* the page reads what it shows, so no change between the page's read and the
/// connection is missed (one seen twice only refreshes a fragment again).
pub async fn url(state: &AppState, viewer: &Viewer, streams: &str) -> String {
    let caller = viewer.caller();
    let mut from = Vec::new();
    for a in access(state, &caller, streams).await {
        if let Ok(seq) = state.directory.last_event_seq_with(&a).await {
            from.push(format!("{}:{seq}", a.stream));
        }
    }
    format!("/live?streams={streams}&from={}", from.join(","))
}

/// The name of the message about one changed thing.
pub fn subject_event(stream: &str, subject: &str) -> Option<String> {
    let prefix = match stream {
        streams::PROCESSES => "process",
        streams::OFFERING_USERS => "account",
        streams::SUBSCRIPTIONS => "subscription",
        streams::DIRECTORY => "user",
        _ => return None,
    };
    Some(format!("{prefix}-{subject}"))
}

struct Follower {
    state: AppState,
    token: String,
    /// Per stream: what may be read, and how far it has been read.
    streams: Vec<(StreamAccess, i64)>,
    buffer: VecDeque<Event>,
    numbered: tokio::sync::watch::Receiver<u64>,
    checked: Instant,
}

async fn access(state: &AppState, caller: &Caller, names: &str) -> Vec<StreamAccess> {
    let mut out = Vec::new();
    for name in names.split(',').map(str::trim).filter(|s| !s.is_empty()).take(4) {
        if let Ok(a) = state.directory.stream_access(caller, name).await {
            out.push(a);
        }
    }
    out
}

/// `GET /live?streams=a,b`.
pub async fn stream(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(p): Query<LiveParams>,
) -> Result<Response, crate::error_page::PageError> {
    let caller = viewer.caller();
    let allowed = access(&state, &caller, &p.streams).await;
    if allowed.is_empty() {
        return Err(DomainError::super_user_required().into());
    }
    let given = |stream: &str| {
        p.from.as_deref().unwrap_or("").split(',').find_map(|pair| {
            let (s, seq) = pair.split_once(':')?;
            (s == stream).then(|| seq.parse::<i64>().ok()).flatten()
        })
    };
    let mut streams = Vec::new();
    for a in allowed {
        let now = state.directory.last_event_seq_with(&a).await?;
        // From where the page stood, unless that is past what retention kept (then from now:
        // the page is reloaded by the person anyway) or ahead of the stream.
        let from = match given(a.stream) {
            Some(seq) if seq <= now && state.directory.check_cursor_with(&a, seq).await.is_ok() => seq,
            _ => now,
        };
        streams.push((a, from));
    }
    let token = Cookies::of(&headers)
        .get(crate::auth::SESSION)
        .unwrap_or_default()
        .to_owned();
    let follower = Follower {
        numbered: state.events.subscribe(),
        state,
        token,
        streams,
        buffer: VecDeque::new(),
        checked: Instant::now(),
    };
    let sse = futures_util::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|e| (Ok::<_, Infallible>(e), f))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(e);
            }
            if self.checked.elapsed() >= REAUTH {
                let auth = self.state.directory.authenticate(&self.token).await.ok()?;
                let caller = Caller::User(auth);
                for (access, _) in &mut self.streams {
                    *access = self.state.directory.stream_access(&caller, access.stream).await.ok()?;
                }
                self.checked = Instant::now();
            }
            let mut any = false;
            for (access, cursor) in &mut self.streams {
                match self.state.directory.follow_with(access, *cursor, 100).await {
                    Ok((events, next)) => {
                        *cursor = next;
                        for e in events {
                            any = true;
                            let seq = e.seq.to_string();
                            if let Some(name) = e.subject.as_deref().and_then(|s| subject_event(access.stream, s)) {
                                self.buffer.push_back(Event::default().event(name).data(&seq));
                            }
                            self.buffer.push_back(Event::default().event(access.stream).data(&seq));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(code = e.code, "console live stream stopped");
                        return None;
                    }
                }
            }
            if !any {
                let _ = tokio::time::timeout(POLL, self.numbered.changed()).await;
            }
        }
    }
}
