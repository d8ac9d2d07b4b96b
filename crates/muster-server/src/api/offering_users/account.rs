//! One offering account as a resource: creating it, reading it, setting its local username,
//! deleting its row and reading its history. Each handler hands the caller and the request to
//! the offerings service, which decides who may do what.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{AnyCaller, ApiJson, ApiPath, Ctx};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use muster_offerings::{CreateAccountInput, HistoryView, OfferingUserView, UsernameInput};

/// Create an offering account: super-users, the offering's provider managers or its provider
/// token. Without `username` the account starts in `Requested`; with one, in `OK`.
#[utoipa::path(post, operation_id = "create_offering_user", path = "/api/marketplace-offering-users/", tag = "offering-users",
    security(("session" = []), ("token" = [])), request_body = CreateAccountInput,
    responses(
        (status = 201, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiJson(input): ApiJson<CreateAccountInput>,
) -> ApiResult<(StatusCode, Json<OfferingUserView>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.offerings.create_account(&ctx, &caller, input).await?),
    ))
}

/// One offering account (404 when the caller may not see it).
#[utoipa::path(get, operation_id = "get_offering_user", path = "/api/marketplace-offering-users/{uuid}/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
    responses((status = 200, body = OfferingUserView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn retrieve(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(state.offerings.get_account(&caller, &uuid).await?))
}

/// Set the local username. A new non-empty username on an account being created (Requested,
/// Creating, Pending *, Error creating) moves it to `OK` and clears the comments; the same
/// username again changes nothing.
#[utoipa::path(put, operation_id = "set_offering_user_username", path = "/api/marketplace-offering-users/{uuid}/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body = UsernameInput,
    responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn put_username(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<UsernameInput>,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(state.offerings.set_username(&ctx, &caller, &uuid, input).await?))
}

/// Set the local username (same as `PUT`).
#[utoipa::path(patch, operation_id = "patch_offering_user_username", path = "/api/marketplace-offering-users/{uuid}/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body = UsernameInput,
    responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn patch_username(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<UsernameInput>,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(state.offerings.set_username(&ctx, &caller, &uuid, input).await?))
}

/// Delete the account row (Waldur's hard delete).
#[utoipa::path(delete, operation_id = "delete_offering_user", path = "/api/marketplace-offering-users/{uuid}/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn destroy(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.offerings.delete_account(&ctx, &caller, &uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The account's history: every transition and naming, oldest first (who, when, from, to,
/// comment).
#[utoipa::path(get, operation_id = "get_offering_user_history", path = "/api/marketplace-offering-users/{uuid}/history/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
    responses((status = 200, body = [HistoryView]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn history(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<Vec<HistoryView>>> {
    Ok(Json(state.offerings.history(&caller, &uuid).await?))
}
