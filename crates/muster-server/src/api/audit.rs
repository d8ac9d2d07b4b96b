//! `GET /api/audit`: the audit log, newest first (super-user only).

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, AuthUser};
use axum::Json;
use axum::extract::State;
use muster_core::audit::Outcome;
use muster_core::error::{DomainError, codes};
use muster_store::{AuditQuery, AuditRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// The acting user's `user_id` (or `cli`).
    pub actor: Option<String>,
    /// The `user_id` (or session id) acted upon.
    pub target: Option<String>,
    /// e.g. `user.create`, `session.login`.
    pub action: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// Correlation id (`X-Request-Id`).
    pub cid: Option<String>,
    /// RFC 3339; records at or after.
    pub since: Option<String>,
    /// RFC 3339; records before.
    pub until: Option<String>,
    /// 1-based. Default 1.
    pub page: Option<i64>,
    /// Default 50, at most 500.
    pub page_size: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
    #[schema(value_type = Vec<Object>)]
    pub result: Vec<AuditRecord>,
}

fn when(field: &str, v: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    let bad = || {
        ApiError(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("{field} must be an RFC 3339 time"),
        ))
    };
    v.map(|s| {
        let t = OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
        // Offsets that push the time past what UTC can hold would panic further down.
        muster_core::clock::to_utc(t).ok_or_else(bad)
    })
    .transpose()
}

/// The audit log: who did what to whom, from where, with which outcome.
#[utoipa::path(get, operation_id = "list_audit_records", path = "/api/audit", tag = "audit", security(("session" = [])), params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<AuditPage>> {
    let outcome = match p.outcome.as_deref() {
        None => None,
        Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
            ApiError(DomainError::invalid_field(
                "outcome",
                codes::INVALID_INPUT,
                "outcome must be success or failure",
            ))
        })?),
    };
    let page = p.page.unwrap_or(1).max(1);
    let page_size = match p.page_size {
        Some(n) if n > 0 => n.min(500),
        _ => 50,
    };
    let query = AuditQuery {
        actor: p.actor,
        target: p.target,
        action: p.action,
        outcome,
        cid: p.cid,
        since: when("since", p.since)?,
        until: when("until", p.until)?,
        offset: (page - 1).saturating_mul(page_size),
        limit: page_size,
    };
    let (total, result) = state.directory.list_audit(&auth, query).await?;
    Ok(Json(AuditPage {
        total,
        page,
        page_size,
        result,
    }))
}
