//! `/api/users`: the directory (Zato SSO's user API, with proper HTTP semantics).

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, BearerToken, Ctx};
use crate::middleware::NoStore;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use muster_core::directory::create::CreateUserInput;
use muster_core::directory::update::UpdateUserInput;
use muster_core::directory::{ApprovalStatus, SignUpStatus, UserView};
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use muster_directory::{SearchInput, SearchPage, SessionView, TotpEnrollment, UserTarget};
use muster_store::UserOrder;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::session::Revoked;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, search))
        .routes(routes!(get_me, update_me))
        .routes(routes!(change_own_password))
        .routes(routes!(begin_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(disable_totp))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(lock))
        .routes(routes!(unlock))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(set_password))
        .routes(routes!(user_sessions, revoke_user_sessions))
}

/// `musr…` or the user's UUID.
pub(crate) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse_any(raw).ok_or_else(|| {
        ApiError(DomainError::invalid(
            codes::USER_ID_INVALID,
            "user_id is not a valid muster user id",
        ))
    })
}

/// Create a user (super-user only), with Zato `create_user`'s defaults.
///
/// The answer is the user enriched with every server-assigned value. A password that was not
/// given is generated (192 bits) and never shown.
#[utoipa::path(post, operation_id = "create_user", path = "/api/users", tag = "users", security(("session" = [])), request_body = CreateUserInput,
    responses(
        (status = 201, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem, description = "E001002 username exists"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<CreateUserInput>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.directory.create_user(&auth.ctx(ctx), &auth, input).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Exact, case-insensitive.
    pub username: Option<String>,
    /// Exact, case-insensitive.
    pub email: Option<String>,
    /// Substring of display, first, middle or last name; case-insensitive.
    pub name: Option<String>,
    pub approval_status: Option<ApprovalStatus>,
    pub sign_up_status: Option<SignUpStatus>,
    pub is_locked: Option<bool>,
    /// `username` (default), `sign_up_time` or `-sign_up_time`.
    pub order_by: Option<String>,
    /// 1-based. Default 1.
    pub page: Option<i64>,
    /// Default 50, at most 100.
    pub page_size: Option<i64>,
}

/// Search users (super-user only), with Zato's paging metadata.
#[utoipa::path(get, operation_id = "list_users", path = "/api/users", tag = "users", security(("session" = [])), params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn search(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> ApiResult<Json<SearchPage>> {
    let order = match p.order_by.as_deref() {
        None | Some("username") => UserOrder::Username,
        Some("sign_up_time") => UserOrder::SignUpTime,
        Some("-sign_up_time") => UserOrder::SignUpTimeDesc,
        Some(_) => {
            return Err(ApiError(DomainError::invalid_field(
                "order_by",
                codes::INVALID_INPUT,
                "order_by must be username, sign_up_time or -sign_up_time",
            )));
        }
    };
    let input = SearchInput {
        username: p.username,
        email: p.email,
        name: p.name.filter(|n| !n.is_empty()),
        approval_status: p.approval_status,
        sign_up_status: p.sign_up_status,
        is_locked: p.is_locked,
        order,
        page: p.page.unwrap_or(1),
        page_size: p.page_size.unwrap_or(0),
    };
    Ok(Json(state.directory.search_users(&auth, input).await?))
}

/// The caller. Regular users see their own regular fields; super-users see everything.
#[utoipa::path(get, path = "/api/users/me", tag = "users", security(("session" = [])),
    responses((status = 200, body = UserView), (status = 401, body = Problem)))]
pub async fn get_me(State(state): State<AppState>, AuthUser(auth): AuthUser) -> ApiResult<Json<UserView>> {
    Ok(Json(state.directory.get_user(&auth, UserTarget::Me).await?))
}

/// Update the caller. Owners may change email, names, display name and TOTP label; the other
/// fields need a super-user.
#[utoipa::path(patch, path = "/api/users/me", tag = "users", security(("session" = [])), request_body = UpdateUserInput,
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn update_me(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<UpdateUserInput>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        state
            .directory
            .update_user(&auth.ctx(ctx), &auth, UserTarget::Me, input)
            .await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordInput {
    #[schema(format = Password)]
    pub old_password: String,
    #[schema(format = Password)]
    pub new_password: String,
}

/// Change the caller's password. The old password is required; the caller's other sessions end.
#[utoipa::path(put, path = "/api/users/me/password", tag = "users", security(("session" = [])), request_body = ChangePasswordInput,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem, description = "E005001 old password wrong"),
        (status = 429, body = Problem, description = "Too many wrong passwords (counted like logins); see Retry-After")))]
pub async fn change_own_password(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<ChangePasswordInput>,
) -> ApiResult<StatusCode> {
    state
        .directory
        .change_own_password(&auth.ctx(ctx), &auth, input.old_password, input.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordProof {
    #[schema(format = Password)]
    pub password: String,
    /// A current code from the active key; required when TOTP is already enabled.
    pub totp_code: Option<String>,
}

/// Start enrolling an authenticator app: a new TOTP key, shown once, pending until confirmed.
///
/// Needs the password (counted like a login attempt). TOTP stays as it was until the new key
/// is confirmed, so an abandoned enrolment changes nothing.
#[utoipa::path(post, path = "/api/users/me/totp", tag = "users", security(("session" = [])), request_body = PasswordProof,
    responses((status = 201, body = TotpEnrollment), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "E005001 wrong password"), (status = 429, body = Problem)))]
pub async fn begin_totp(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<PasswordProof>,
) -> ApiResult<NoStore<(StatusCode, Json<TotpEnrollment>)>> {
    let enrollment = state
        .directory
        .begin_totp_enrollment(&auth.ctx(ctx), &auth, input.password, input.totp_code)
        .await?;
    Ok(NoStore((StatusCode::CREATED, Json(enrollment))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub totp_code: String,
}

/// Confirm enrolment with a code from the new key: it becomes the active key and TOTP is on.
#[utoipa::path(post, path = "/api/users/me/totp/confirm", tag = "users", security(("session" = [])), request_body = TotpCode,
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 409, body = Problem)))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<TotpCode>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        state
            .directory
            .confirm_totp_enrollment(&auth.ctx(ctx), &auth, input.totp_code)
            .await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableTotpInput {
    #[schema(format = Password)]
    pub password: String,
    pub totp_code: String,
}

/// Turn TOTP off, proven with the password and a current code.
#[utoipa::path(post, path = "/api/users/me/totp/disable", tag = "users", security(("session" = [])), request_body = DisableTotpInput,
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "E005001 wrong password or code"), (status = 429, body = Problem)))]
pub async fn disable_totp(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiJson(input): ApiJson<DisableTotpInput>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        state
            .directory
            .disable_totp(&auth.ctx(ctx), &auth, input.password, input.totp_code)
            .await?,
    ))
}

/// A user by `user_id` (or UUID). Regular users may read only themselves; anyone else is 404.
#[utoipa::path(get, path = "/api/users/{user_id}", tag = "users", security(("session" = [])),
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_user(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    // Authentication and the read share one database round trip: this is the hottest path.
    let id = match user_id(&id) {
        Ok(id) => id,
        Err(e) => {
            // A missing or bad token is answered 401 first, as on every other route.
            state.directory.authenticate(&token).await?;
            return Err(e);
        }
    };
    Ok(Json(state.directory.get_user_with_token(&token, id).await?))
}

/// Update a user. A key that is absent is left alone; `null` clears the fields that may be empty.
#[utoipa::path(patch, path = "/api/users/{user_id}", tag = "users", security(("session" = [])), request_body = UpdateUserInput,
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<UpdateUserInput>,
) -> ApiResult<Json<UserView>> {
    let id = user_id(&id)?;
    Ok(Json(
        state
            .directory
            .update_user(&auth.ctx(ctx), &auth, UserTarget::Id(id), input)
            .await?,
    ))
}

/// Delete a user (super-user only; not oneself). Their sessions end with them.
#[utoipa::path(delete, path = "/api/users/{user_id}", tag = "users", security(("session" = [])),
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .directory
        .delete_user(&auth.ctx(ctx), &auth, user_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! flag_action {
    ($name:ident, $op:literal, $path:literal, $doc:literal, $call:ident, $value:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, operation_id = $op, path = $path, tag = "users", security(("session" = [])),
            params(("user_id" = String, Path, description = "musr… id or UUID")),
            responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
        pub async fn $name(State(state): State<AppState>, Ctx(ctx): Ctx, AuthUser(auth): AuthUser, ApiPath(id): ApiPath<String>) -> ApiResult<Json<UserView>> {
            let id = user_id(&id)?;
            Ok(Json(state.directory.$call(&auth.ctx(ctx), &auth, id, $value).await?))
        }
    };
}

flag_action!(
    lock,
    "lock_user",
    "/api/users/{user_id}/lock",
    "Lock a user (super-user only). Their sessions end.",
    set_locked,
    true
);
flag_action!(
    unlock,
    "unlock_user",
    "/api/users/{user_id}/unlock",
    "Unlock a user (super-user only).",
    set_locked,
    false
);
flag_action!(
    approve,
    "approve_user",
    "/api/users/{user_id}/approve",
    "Approve a user (super-user only).",
    set_approval,
    true
);
flag_action!(
    reject,
    "reject_user",
    "/api/users/{user_id}/reject",
    "Reject a user (super-user only). Their sessions end; the user is kept.",
    set_approval,
    false
);

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordInput {
    #[schema(format = Password)]
    pub new_password: String,
    /// Must the user change it at next login. Unchanged when absent.
    pub password_must_change: Option<bool>,
    /// Days until it expires. Default: the configured expiry.
    pub password_expiry_days: Option<i64>,
}

/// Set another user's password (super-user only; no old password). Their sessions end.
#[utoipa::path(put, operation_id = "set_user_password", path = "/api/users/{user_id}/password", tag = "users", security(("session" = [])), request_body = SetPasswordInput,
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn set_password(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<SetPasswordInput>,
) -> ApiResult<StatusCode> {
    let id = user_id(&id)?;
    state
        .directory
        .set_password(
            &auth.ctx(ctx),
            &auth,
            id,
            input.new_password,
            input.password_must_change,
            input.password_expiry_days,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's live sessions (super-user, or the user themself).
#[utoipa::path(get, operation_id = "list_user_sessions", path = "/api/users/{user_id}/sessions", tag = "session", security(("session" = [])),
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 200, body = [SessionView]), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn user_sessions(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<SessionView>>> {
    Ok(Json(
        state
            .directory
            .list_sessions(&auth, UserTarget::Id(user_id(&id)?))
            .await?,
    ))
}

/// End all of a user's sessions (super-user, or the user themself).
#[utoipa::path(delete, path = "/api/users/{user_id}/sessions", tag = "session", security(("session" = [])),
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 200, body = Revoked), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn revoke_user_sessions(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Revoked>> {
    let id = user_id(&id)?;
    let revoked = state
        .directory
        .revoke_all(&auth.ctx(ctx), &auth, UserTarget::Id(id), false)
        .await?;
    Ok(Json(Revoked { revoked }))
}
