//! Processes (workflow runs), with orchestrator-core's paths and form protocol:
//! `POST /api/processes/{workflow}` answers 510 with the next page while the form is
//! incomplete, 400 with `validation_errors` when a page is invalid, 201 `{"id"}` once started.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, Ctx};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::error::{DomainError, codes};
use muster_core::workflow::ProcessStatus;
use muster_core::workflow::form::FormStop;
use muster_engine::StartError;
use muster_store::{ProcessQuery, ProcessSort};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(status_counts))
        .routes(routes!(start, get_process))
        .routes(routes!(resume))
        .routes(routes!(abort))
        .routes(routes!(callback))
        .routes(routes!(engine_status, set_engine_status))
}

/// An answer of the form protocol, as orchestrator-core (pydantic-forms) sends it: 510
/// `FormNotCompleteError` with the next page, 400 `FormValidationError` or `FormOverflowError`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FormAnswer {
    /// `FormNotCompleteError`, `FormValidationError` or `FormOverflowError`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    /// The next page's title (510), or what was wrong (400).
    pub detail: Option<String>,
    /// `E008002` on the 400s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// 510: the next page, as a JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub form: Option<Value>,
    /// 510: where the form stands (pages filled, pages left).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// `FormValidationError`: one entry per invalid field (pydantic's error list).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub validation_errors: Option<Value>,
}

/// The form protocol's answers.
pub(crate) fn form_response(stop: FormStop) -> Response {
    let (status, answer) = match stop {
        FormStop::NotComplete { form, meta } => (
            StatusCode::NOT_EXTENDED,
            FormAnswer {
                kind: "FormNotCompleteError",
                title: "Form not complete",
                status: 510,
                detail: form.get("title").and_then(Value::as_str).map(str::to_owned),
                code: None,
                form: Some(form),
                meta: Some(meta),
                validation_errors: None,
            },
        ),
        FormStop::Invalid { title, errors } => {
            let n = errors.len();
            let noun = if n == 1 { "error" } else { "errors" };
            (
                StatusCode::BAD_REQUEST,
                FormAnswer {
                    kind: "FormValidationError",
                    title: "Form not valid",
                    status: 400,
                    detail: Some(format!("{n} validation {noun} for {title}")),
                    code: Some(codes::INVALID_INPUT),
                    form: None,
                    meta: None,
                    validation_errors: Some(json!(errors)),
                },
            )
        }
        FormStop::Overflow => (
            StatusCode::BAD_REQUEST,
            FormAnswer {
                kind: "FormOverflowError",
                title: "Form overflow",
                status: 400,
                detail: Some("more pages were posted than the form has".to_owned()),
                code: Some(codes::INVALID_INPUT),
                form: None,
                meta: None,
                validation_errors: None,
            },
        ),
    };
    (status, Json(answer)).into_response()
}

/// The answer to a started process.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Started {
    pub id: Uuid,
    /// Present when no workflow worker runs anywhere: the process waits until one starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
}

/// The answer to an accepted callback.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallbackAccepted {
    pub process_id: Uuid,
}

fn start_error(e: StartError) -> Response {
    match e {
        StartError::Form(stop) => form_response(stop),
        StartError::Domain(d) => ApiError(d).into_response(),
    }
}

/// A path id: a malformed one names nothing, so it is a 404 problem like an unknown one.
pub(crate) fn uuid_of(id: &str, what: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError(DomainError::not_found(what)))
}

/// Starts a workflow. The body is the list of form pages filled so far (`[]` to get page 1).
#[utoipa::path(post, operation_id = "start_process", path = "/api/processes/{id}", tag = "processes", security(("session" = [])),
    params(("id" = String, Path, description = "The workflow name, e.g. create_user")),
    request_body(content = Vec<Object>),
    responses((status = 201, body = Started, description = "Started"),
        (status = 400, description = "A page is invalid (FormValidationError), there are more pages than the form has (FormOverflowError), or the body is not a JSON list of pages (a problem document)",
            content((FormAnswer = "application/json"), (Problem = "application/problem+json"))),
        (status = 510, body = FormAnswer, description = "FormNotCompleteError with the next page's JSON Schema"), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem, description = "The engine is paused (`engine_paused`), or the database is unavailable (`database_unavailable`)"),
        (status = 403, body = Problem)))]
pub async fn start(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    Ctx(ctx): Ctx,
    ApiPath(workflow): ApiPath<String>,
    ApiJson(inputs): ApiJson<Vec<Value>>,
) -> Response {
    match state.processes.start(&ctx, &auth, &workflow, inputs).await {
        Ok(id) => {
            let warning = state.processes.no_worker_warning().await;
            (StatusCode::CREATED, Json(Started { id, warning })).into_response()
        }
        Err(e) => start_error(e),
    }
}

/// One process: steps, current state, subscriptions, and its form while suspended.
#[utoipa::path(get, path = "/api/processes/{id}", tag = "processes", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Object), (status = 404, body = Problem), (status = 403, body = Problem)))]
pub async fn get_process(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let view = state.processes.get(&auth, &id).await?;
    Ok(Json(serde_json::to_value(view).map_err(DomainError::internal)?))
}

/// Resumes a suspended (with its input form), failed or waiting process.
#[utoipa::path(put, operation_id = "resume_process", path = "/api/processes/{id}/resume", tag = "processes", security(("session" = [])),
    params(("id" = Uuid, Path)), request_body(content = Vec<Object>),
    responses((status = 204),
        (status = 400, description = "The input page is invalid (FormValidationError), or the body is not a JSON list (a problem document)",
            content((FormAnswer = "application/json"), (Problem = "application/problem+json"))),
        (status = 510, body = FormAnswer, description = "FormNotCompleteError: the input form has more pages; the next one's JSON Schema"),
        (status = 409, body = Problem), (status = 404, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem, description = "The engine is paused (`engine_paused`), or the database is unavailable (`database_unavailable`)")))]
pub async fn resume(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    Ctx(ctx): Ctx,
    ApiPath(id): ApiPath<String>,
    ApiJson(inputs): ApiJson<Vec<Value>>,
) -> Response {
    match state.processes.resume(&ctx, &auth, &id, inputs).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => start_error(e),
    }
}

/// Aborts a process and undoes what it made (an aborted create leaves no subscription or
/// directory user behind; held subscriptions are released).
#[utoipa::path(put, operation_id = "abort_process", path = "/api/processes/{id}/abort", tag = "processes", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 409, body = Problem), (status = 404, body = Problem), (status = 403, body = Problem)))]
pub async fn abort(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    Ctx(ctx): Ctx,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.processes.abort(&ctx, &auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An outside system reports back to a callback step. The token in the path is the credential.
#[utoipa::path(post, operation_id = "process_callback", path = "/api/processes/{id}/callback/{token}", tag = "processes",
    params(("id" = Uuid, Path), ("token" = String, Path)), request_body(content = Object),
    responses((status = 200, body = CallbackAccepted), (status = 404, body = Problem),
        (status = 503, body = Problem, description = "The engine is paused (`engine_paused`), or the database is unavailable (`database_unavailable`)")))]
pub async fn callback(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiPath((id, token)): ApiPath<(String, String)>,
    ApiJson(data): ApiJson<Value>,
) -> ApiResult<Json<CallbackAccepted>> {
    let id = state.processes.callback(&ctx, &id, &token, data).await?;
    Ok(Json(CallbackAccepted { process_id: id }))
}

/// `{"process_counts": {status: n}, "task_counts": {status: n}}`
#[utoipa::path(get, operation_id = "get_process_status_counts", path = "/api/processes/status-counts", tag = "processes", security(("session" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
pub async fn status_counts(State(state): State<AppState>, AuthUser(auth): AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(state.processes.status_counts(&auth).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `start,end` (end exclusive). Default `0,20`; at most 1000 per page.
    pub range: Option<String>,
    /// `field,ASC|DESC[,field,DESC…]`: started, modified, status, workflow, creator, assignee.
    pub sort: Option<String>,
    /// `key,value[,key,value…]`; values may be `a|b` (any of). Keys: status, workflow_name,
    /// target, subscription_id, created_by, is_task, started_after, started_before.
    pub filter: Option<String>,
}

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError(DomainError::invalid_field(field, codes::INVALID_INPUT, msg))
}

pub(crate) fn parse_range(range: Option<&str>) -> Result<(i64, i64), ApiError> {
    let Some(r) = range else { return Ok((0, 20)) };
    let (a, b) = r.split_once(',').ok_or_else(|| bad("range", "range is start,end"))?;
    let start: i64 = a
        .trim()
        .parse()
        .map_err(|_| bad("range", "range start is not a number"))?;
    let end: i64 = b
        .trim()
        .parse()
        .map_err(|_| bad("range", "range end is not a number"))?;
    if start < 0 || end <= start || end - start > 1000 {
        return Err(bad("range", "range needs 0 <= start < end and at most 1000 items"));
    }
    Ok((start, end))
}

pub(crate) fn parse_sort<T>(sort: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<(T, bool)>, ApiError> {
    let Some(s) = sort else { return Ok(vec![]) };
    let parts: Vec<&str> = s.split(',').collect();
    if !parts.len().is_multiple_of(2) {
        return Err(bad("sort", "sort takes field,ASC|DESC pairs"));
    }
    parts
        .chunks(2)
        .map(|c| {
            let col = parse(c[0].trim()).ok_or_else(|| bad("sort", format!("cannot sort by {:?}", c[0])))?;
            let desc = match c[1].trim().to_ascii_uppercase().as_str() {
                "ASC" => false,
                "DESC" => true,
                _ => return Err(bad("sort", "the direction is ASC or DESC")),
            };
            Ok((col, desc))
        })
        .collect()
}

pub(crate) fn filter_pairs(filter: Option<&str>) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let Some(f) = filter else { return Ok(vec![]) };
    let parts: Vec<&str> = f.split(',').collect();
    if !parts.len().is_multiple_of(2) {
        return Err(bad("filter", "filter takes key,value pairs"));
    }
    Ok(parts
        .chunks(2)
        .map(|c| {
            (
                c[0].trim().to_owned(),
                c[1].split('|').map(|v| v.trim().to_owned()).collect(),
            )
        })
        .collect())
}

pub(crate) fn time_value(field: &str, v: &str) -> Result<time::OffsetDateTime, ApiError> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad(field, format!("{field} must be an RFC 3339 time")))?;
    muster_core::clock::to_utc(t).ok_or_else(|| bad(field, format!("{field} is out of range")))
}

pub(crate) fn content_range(kind: &str, start: i64, count: usize, total: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    let end = start + count as i64;
    if let Ok(v) = HeaderValue::from_str(&format!("{kind} {start}-{end}/{total}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h
}

/// Processes, newest first unless sorted otherwise; `Content-Range: processes 0-20/1234`.
#[utoipa::path(get, operation_id = "list_processes", path = "/api/processes", tag = "processes", security(("session" = [])), params(ListParams),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let (start, end) = parse_range(p.range.as_deref())?;
    let mut sort = parse_sort(p.sort.as_deref(), ProcessSort::parse)?;
    if sort.is_empty() {
        sort.push((ProcessSort::Started, true));
    }
    let mut q = ProcessQuery {
        sort,
        offset: start,
        limit: end - start,
        ..Default::default()
    };
    for (key, values) in filter_pairs(p.filter.as_deref())? {
        match key.as_str() {
            "status" | "last_status" => {
                for v in &values {
                    q.statuses
                        .push(ProcessStatus::parse(v).ok_or_else(|| bad("filter", format!("unknown status {v:?}")))?);
                }
            }
            "workflow" | "workflow_name" => q.workflow_names.extend(values),
            "target" => q.targets.extend(values.iter().map(|v| v.to_ascii_uppercase())),
            "subscription" | "subscription_id" => {
                let v = values.first().cloned().unwrap_or_default();
                q.subscription_id = Some(v.parse().map_err(|_| bad("filter", "subscription_id is not a uuid"))?);
            }
            "created_by" | "creator" => q.created_by = values.first().cloned(),
            "is_task" => {
                q.is_task = Some(match values.first().map(String::as_str) {
                    Some("true") => true,
                    Some("false") => false,
                    _ => return Err(bad("filter", "is_task is true or false")),
                })
            }
            "started_after" => q.started_after = Some(time_value("started_after", values.first().map_or("", |s| s))?),
            "started_before" => {
                q.started_before = Some(time_value("started_before", values.first().map_or("", |s| s))?)
            }
            other => return Err(bad("filter", format!("cannot filter by {other:?}"))),
        }
    }
    let page = state.processes.list(&auth, &q).await?;
    let headers = content_range("processes", start, page.items.len(), page.total);
    Ok((
        headers,
        Json(serde_json::to_value(page.items).map_err(DomainError::internal)?),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// true pauses the engine: workers finish their current step and claim nothing new.
    pub global_lock: bool,
}

/// `{"global_lock", "global_status": RUNNING|PAUSING|PAUSED, "running_processes"}`
#[utoipa::path(get, path = "/api/settings/status", tag = "processes", security(("session" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
pub async fn engine_status(State(state): State<AppState>, AuthUser(auth): AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(state.processes.engine_status(&auth).await?).map_err(DomainError::internal)?,
    ))
}

/// Pauses or resumes the engine.
#[utoipa::path(put, path = "/api/settings/status", tag = "processes", security(("session" = [])),
    request_body = EngineSettings, responses((status = 200, body = Object), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn set_engine_status(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    Ctx(ctx): Ctx,
    ApiJson(body): ApiJson<EngineSettings>,
) -> ApiResult<Json<Value>> {
    let s = state.processes.set_paused(&ctx, &auth, body.global_lock).await?;
    Ok(Json(serde_json::to_value(s).map_err(DomainError::internal)?))
}
