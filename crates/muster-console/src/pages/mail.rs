//! The mail outbox for super-users: what is queued, sent or failed (with the mail server's last
//! answer), and a button to queue a failed mail again.

use crate::auth::{SecureCookies, Viewer};
use crate::layout::{Layout, render};
use crate::pages::{PageResult, done, when};
use askama::Template;
use axum::extract::{Path, Query, State};
use muster_directory::MailView;
use muster_server::AppState;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "mail.html")]
struct MailPage {
    layout: Layout,
    status: String,
    mails: Vec<MailView>,
}

impl MailPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
}

#[derive(Deserialize)]
pub struct StatusParam {
    status: Option<String>,
}

/// `GET /mail[?status=]`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, Query(q): Query<StatusParam>) -> PageResult {
    let status = q.status.filter(|s| !s.is_empty());
    let mails = state
        .directory
        .list_mail(&viewer.auth, status.as_deref(), muster_directory::MAIL_LIST_MAX)
        .await?;
    Ok(render(&MailPage {
        layout: Layout::new(&viewer, "Mail", "dashboard"),
        status: status.unwrap_or_default(),
        mails,
    }))
}

/// `POST /mail/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<uuid::Uuid>,
) -> PageResult {
    state.directory.retry_mail(&viewer.ctx, &viewer.auth, id).await?;
    Ok(done("/mail?status=failed", "Queued again.", secure))
}
