//! Sessions: `/api/session` (the caller's own) and `/api/sessions` (all of the caller's).

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, Ctx};
use crate::middleware::NoStore;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use muster_directory::{LoginInput, LoginOutcome, SessionView, UserTarget};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login, current, logout))
        .routes(routes!(renew))
        .routes(routes!(verify))
        .routes(routes!(list, revoke_all))
        .routes(routes!(revoke))
}

/// Log in. Unknown users, wrong passwords and wrong TOTP codes all answer `401 E005001`.
#[utoipa::path(post, path = "/api/session", tag = "session", request_body = LoginInput,
    responses(
        (status = 201, body = LoginOutcome, description = "Logged in; the token is shown only here"),
        (status = 400, body = Problem), (status = 401, body = Problem, description = "E005001 invalid credentials, E005008 TOTP code required"),
        (status = 403, body = Problem, description = "Locked (E005002), not approved (E005004), sign-up not final (E005003), password expired (E003004) or must be changed (E003007)"),
        (status = 429, body = Problem, description = "Too many failures; see Retry-After"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(input): ApiJson<LoginInput>,
) -> ApiResult<NoStore<(StatusCode, Json<LoginOutcome>)>> {
    Ok(NoStore((
        StatusCode::CREATED,
        Json(state.directory.login(&ctx, input).await?),
    )))
}

/// The caller's session (verifies the token).
#[utoipa::path(get, operation_id = "get_session", path = "/api/session", tag = "session", security(("session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = Problem)))]
pub async fn current(State(state): State<AppState>, AuthUser(auth): AuthUser) -> ApiResult<Json<SessionView>> {
    Ok(Json(state.directory.current_session(&auth).await?))
}

/// Log out: end the caller's session.
#[utoipa::path(delete, path = "/api/session", tag = "session", security(("session" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn logout(State(state): State<AppState>, Ctx(ctx): Ctx, AuthUser(auth): AuthUser) -> ApiResult<StatusCode> {
    state.directory.logout(&auth.ctx(ctx), &auth).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renew the caller's session: the idle clock restarts; the absolute expiry stays.
#[utoipa::path(post, operation_id = "renew_session", path = "/api/session/renew", tag = "session", security(("session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = Problem)))]
pub async fn renew(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(state.directory.renew(&auth.ctx(ctx), &auth).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyInput {
    pub token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VerifyOutcome {
    pub is_valid: bool,
}

/// Whether another session token is valid (super-user only).
#[utoipa::path(post, operation_id = "verify_session_token", path = "/api/session/verify", tag = "session", security(("session" = [])), request_body = VerifyInput,
    responses((status = 200, body = VerifyOutcome), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn verify(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<VerifyInput>,
) -> ApiResult<Json<VerifyOutcome>> {
    Ok(Json(VerifyOutcome {
        is_valid: state.directory.verify_token(&auth, &input.token).await?,
    }))
}

/// The caller's live sessions (never their tokens).
#[utoipa::path(get, operation_id = "list_sessions", path = "/api/sessions", tag = "session", security(("session" = [])),
    responses((status = 200, body = [SessionView]), (status = 401, body = Problem)))]
pub async fn list(State(state): State<AppState>, AuthUser(auth): AuthUser) -> ApiResult<Json<Vec<SessionView>>> {
    Ok(Json(state.directory.list_sessions(&auth, UserTarget::Me).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllParams {
    /// Keep the session this request came with. Default false.
    pub keep_current: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// End all of the caller's sessions.
#[utoipa::path(delete, operation_id = "revoke_own_sessions", path = "/api/sessions", tag = "session", security(("session" = [])), params(RevokeAllParams),
    responses((status = 200, body = Revoked), (status = 401, body = Problem)))]
pub async fn revoke_all(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiQuery(params): ApiQuery<RevokeAllParams>,
) -> ApiResult<Json<Revoked>> {
    let revoked = state
        .directory
        .revoke_all(
            &auth.ctx(ctx),
            &auth,
            UserTarget::Me,
            params.keep_current.unwrap_or(false),
        )
        .await?;
    Ok(Json(Revoked { revoked }))
}

/// End one of the caller's sessions.
#[utoipa::path(delete, operation_id = "revoke_session", path = "/api/sessions/{session_id}", tag = "session", security(("session" = [])),
    params(("session_id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(session_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = Uuid::parse_str(&session_id).map_err(|_| muster_core::DomainError::not_found("session"))?;
    state.directory.revoke_session(&auth.ctx(ctx), &auth, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
