//! Mail-driven flows: password reset (`/api/password-reset`), invitations
//! (`/api/users/{user_id}/invitation`, `/api/invitation/accept`), sign-up (`/api/signup`) and
//! the outbox (`/api/mail`).

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, Ctx};
use crate::middleware::NoStore;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use muster_core::error::{DomainError, codes};
use muster_directory::{IssuedInvitation, LoginOutcome, MailView, PendingInvitation, ResetFor, SignupConfirmed};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_reset))
        .routes(routes!(complete_reset))
        .routes(routes!(invite, pending_invitation))
        .routes(routes!(accept_invitation))
        .routes(routes!(list_mail))
        .routes(routes!(retry_mail))
        .routes(routes!(sign_up))
        .routes(routes!(confirm_sign_up))
}

/// One of `username` or `email`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    pub username: Option<String>,
    pub email: Option<String>,
}

/// Ask for a password reset by username or e-mail address. Always `202` after the same time,
/// whether or not anyone has that name or address; a user who may reset (not locked, rejected
/// or unapproved, and with an address) is mailed a single-use link. Requests naming the same
/// account or address are limited: past the limit they are answered the same and no mail goes
/// out. Too many requests from one client address are refused with `429`.
#[utoipa::path(post, operation_id = "request_password_reset", path = "/api/password-reset", tag = "password-reset", request_body = ResetRequest,
    responses(
        (status = 202, description = "Accepted; a link is mailed if the account may reset"),
        (status = 400, body = Problem), (status = 429, body = Problem, description = "Too many requests from this address; see Retry-After"),
    ))]
pub async fn request_reset(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(input): ApiJson<ResetRequest>,
) -> ApiResult<StatusCode> {
    let target = match (input.username, input.email) {
        (Some(u), None) => ResetFor::Username(u),
        (None, Some(e)) => ResetFor::Email(e),
        _ => {
            return Err(DomainError::invalid(codes::MISSING_INPUT, "give exactly one of username and email").into());
        }
    };
    state.directory.request_password_reset(&ctx, target).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteReset {
    /// The `token` of the mailed link.
    pub token: String,
    pub new_password: String,
    /// Required when the user has TOTP on.
    pub totp_code: Option<String>,
}

/// Set a new password from a reset link. Every session of the user ends; the user is mailed
/// that the password changed.
#[utoipa::path(post, operation_id = "complete_password_reset", path = "/api/password-reset/complete", tag = "password-reset", request_body = CompleteReset,
    responses(
        (status = 204, description = "The password is set"),
        (status = 400, body = Problem, description = "link_invalid (unknown, used, expired or replaced link), or the password policy"),
        (status = 401, body = Problem, description = "E005001 wrong TOTP code, E005008 TOTP code required"),
        (status = 429, body = Problem),
    ))]
pub async fn complete_reset(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(input): ApiJson<CompleteReset>,
) -> ApiResult<StatusCode> {
    state
        .directory
        .complete_password_reset(&ctx, &input.token, input.new_password, input.totp_code)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new invitation to a user (super-user only): a mail with a single-use link to set a
/// password; the older link stops working.
#[utoipa::path(post, operation_id = "invite_user", path = "/api/users/{user_id}/invitation", tag = "users", security(("session" = [])),
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 202, body = IssuedInvitation), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn invite(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<IssuedInvitation>)> {
    let id = super::users::user_id(&id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(state.directory.invite(&auth.ctx(ctx), &auth, id).await?),
    ))
}

/// The link of a user's pending invitation, while its mail is unsent (super-user only;
/// audited): how an operator without SMTP hands it over.
#[utoipa::path(get, operation_id = "get_pending_invitation", path = "/api/users/{user_id}/invitation", tag = "users", security(("session" = [])),
    params(("user_id" = String, Path, description = "musr… id or UUID")),
    responses((status = 200, body = PendingInvitation), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn pending_invitation(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<NoStore<Json<PendingInvitation>>> {
    let id = super::users::user_id(&id)?;
    Ok(NoStore(Json(
        state.directory.pending_invitation(&auth.ctx(ctx), &auth, id).await?,
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    /// The `token` of the mailed link.
    pub token: String,
    pub password: String,
}

/// Accept an invitation: sets the first password, records the address as verified, and logs
/// in (the answer is a login's).
#[utoipa::path(post, operation_id = "accept_invitation", path = "/api/invitation/accept", tag = "users", request_body = AcceptInvitation,
    responses(
        (status = 201, body = LoginOutcome, description = "Password set and logged in; the token is shown only here"),
        (status = 400, body = Problem, description = "link_invalid (unknown, used, expired or replaced link), or the password policy"),
        (status = 401, body = Problem),
    ))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(input): ApiJson<AcceptInvitation>,
) -> ApiResult<NoStore<(StatusCode, Json<LoginOutcome>)>> {
    Ok(NoStore((
        StatusCode::CREATED,
        Json(
            state
                .directory
                .accept_invitation(&ctx, &input.token, input.password)
                .await?,
        ),
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MailParams {
    /// `pending`, `sent` or `failed`.
    pub status: Option<String>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

/// The mail outbox, newest first (super-user only): what is queued, sent, or failed (with the
/// mail server's last answer). Never the messages themselves.
#[utoipa::path(get, operation_id = "list_mail", path = "/api/mail", tag = "mail", security(("session" = [])), params(MailParams),
    responses((status = 200, body = Vec<MailView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_mail(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiQuery(p): ApiQuery<MailParams>,
) -> ApiResult<Json<Vec<MailView>>> {
    Ok(Json(
        state
            .directory
            .list_mail(&auth, p.status.as_deref(), p.limit.unwrap_or(50))
            .await?,
    ))
}

/// Queue a failed mail again (super-user only), its attempts counted afresh.
#[utoipa::path(post, operation_id = "retry_mail", path = "/api/mail/{mail_id}/retry", tag = "mail", security(("session" = [])),
    params(("mail_id" = Uuid, Path)),
    responses((status = 202), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem, description = "No failed mail with that id")))]
pub async fn retry_mail(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.directory.retry_mail(&auth.ctx(ctx), &auth, id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupInput {
    pub username: String,
    pub email: String,
    pub password: String,
}

/// Sign up (when `MUSTER_SIGNUP` is `open` or `approval`): an unconfirmed account, and a
/// confirmation link by mail. Always `202` after the same time for a valid request, whether or
/// not the username or address is taken (the address is then mailed why nothing was made).
#[utoipa::path(post, operation_id = "sign_up", path = "/api/signup", tag = "signup", request_body = SignupInput,
    responses(
        (status = 202, description = "Check your mail"),
        (status = 400, body = Problem, description = "create_user's checks, or an address of a domain not allowed"),
        (status = 403, body = Problem, description = "Sign-up is off"),
        (status = 429, body = Problem),
    ))]
pub async fn sign_up(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(input): ApiJson<SignupInput>,
) -> ApiResult<StatusCode> {
    state
        .directory
        .sign_up(&ctx, input.username, input.email, input.password)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmInput {
    /// The `token` of the mailed link.
    pub token: String,
}

/// Confirm a sign-up from its link: the account is final (and, with `MUSTER_SIGNUP=approval`,
/// waits for a super-user's approval).
#[utoipa::path(post, operation_id = "confirm_sign_up", path = "/api/signup/confirm", tag = "signup", request_body = ConfirmInput,
    responses(
        (status = 200, body = SignupConfirmed),
        (status = 400, body = Problem, description = "link_invalid (unknown, used or expired link)"),
    ))]
pub async fn confirm_sign_up(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(input): ApiJson<ConfirmInput>,
) -> ApiResult<Json<SignupConfirmed>> {
    Ok(Json(state.directory.confirm_sign_up(&ctx, &input.token).await?))
}
