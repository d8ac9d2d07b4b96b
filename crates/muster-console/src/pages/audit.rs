//! The audit log: every filter the API has, paging, CSV; a request id (`cid`) opens every
//! record of that request.

use crate::auth::Viewer;
use crate::layout::{Layout, render};
use crate::lists::{self, Pager};
use crate::pages::{PageResult, when};
use crate::urls::{Params, Query};
use askama::Template;
use axum::extract::State;
use muster_core::audit::Outcome;
use muster_core::error::{DomainError, codes};
use muster_server::AppState;
use muster_store::{AuditQuery, AuditRecord};

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    params: Params,
    records: Vec<AuditRecord>,
    pager: Pager,
}

impl AuditPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
    fn val(&self, key: &str) -> String {
        self.params.get(key).unwrap_or("").to_owned()
    }
    fn details(&self, r: &AuditRecord) -> String {
        match &r.details.0 {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(m) if m.is_empty() => String::new(),
            v => v.to_string(),
        }
    }
}

fn time_of(field: &str, v: &str) -> Result<time::OffsetDateTime, DomainError> {
    let full = if v.len() == 16 {
        format!("{v}:00Z")
    } else {
        v.to_owned()
    };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .map_err(|_| DomainError::invalid_field(field, codes::INVALID_INPUT, "not a date and time"))
}

fn query(p: &Params, offset: i64, limit: i64) -> Result<AuditQuery, DomainError> {
    Ok(AuditQuery {
        actor: p.get("actor").map(str::to_owned),
        target: p.get("target").map(str::to_owned),
        action: p.get("action").map(str::to_owned),
        outcome: match p.get("outcome") {
            Some(o) => Some(
                Outcome::parse(o)
                    .ok_or_else(|| DomainError::invalid_field("outcome", codes::INVALID_INPUT, "success or failure"))?,
            ),
            None => None,
        },
        cid: p.get("cid").map(str::to_owned),
        since: p.get("since").map(|v| time_of("since", v)).transpose()?,
        until: p.get("until").map(|v| time_of("until", v)).transpose()?,
        offset,
        limit,
    })
}

/// `GET /audit`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    let q = query(&params, Pager::offset(&params), params.page_size())?;
    let (total, records) = state.directory.list_audit(&viewer.auth, q).await?;
    let pager = Pager::new(&params, "/audit", "/audit.csv", total, records.len());
    Ok(render(&AuditPage {
        layout: Layout::new(&viewer, "Audit", "audit"),
        records,
        pager,
        params,
    }))
}

/// `GET /audit.csv`.
pub async fn csv(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    query(&params, 0, 1)?;
    let auth = viewer.auth.clone();
    Ok(lists::csv(
        "audit.csv",
        &[
            "id",
            "at",
            "cid",
            "actor",
            "action",
            "target",
            "outcome",
            "reason",
            "remote_addr",
            "current_app",
            "details",
        ],
        move |offset| {
            let (state, auth, params) = (state.clone(), auth.clone(), params.clone());
            async move {
                let (_, records) = state
                    .directory
                    .list_audit(&auth, query(&params, offset, lists::EXPORT_PAGE)?)
                    .await?;
                Ok(records
                    .into_iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            when(&r.at.0),
                            r.cid,
                            r.actor.unwrap_or_default(),
                            r.action,
                            r.target.unwrap_or_default(),
                            r.outcome,
                            r.reason.unwrap_or_default(),
                            r.remote_addr.unwrap_or_default(),
                            r.current_app.unwrap_or_default(),
                            r.details.0.to_string(),
                        ]
                    })
                    .collect())
            }
        },
    )
    .await?)
}
