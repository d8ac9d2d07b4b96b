//! Changes to an offering account's fields that leave its lifecycle state alone: the comment
//! and its URL, the restricted flag and the runtime state.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{AnyCaller, ApiJson, ApiPath, Ctx};
use axum::Json;
use axum::extract::State;
use muster_offerings::{CommentsInput, CommentsView, OfferingUserView, RuntimeStateInput};
use serde::Deserialize;

/// Set the comment and/or its URL without changing the state (not on a Deleted account: 403).
#[utoipa::path(patch, operation_id = "offering_user_update_comments", path = "/api/marketplace-offering-users/{uuid}/update_comments/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body = CommentsInput,
    responses((status = 200, body = CommentsView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update_comments(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<CommentsInput>,
) -> ApiResult<Json<CommentsView>> {
    Ok(Json(
        state.offerings.update_comments(&ctx, &caller, &uuid, input).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictedInput {
    pub is_restricted: bool,
}

/// Restrict or unrestrict the account (agents skip restricted accounts).
#[utoipa::path(post, operation_id = "offering_user_update_restricted", path = "/api/marketplace-offering-users/{uuid}/update_restricted/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body = RestrictedInput,
    responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update_restricted(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<RestrictedInput>,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(
        state
            .offerings
            .update_restricted(&ctx, &caller, &uuid, input.is_restricted)
            .await?,
    ))
}

/// Set the runtime state (`Active`, `Pending account linking`, `Pending additional
/// validation`), optionally with comments; any lifecycle state but Deleted.
#[utoipa::path(post, operation_id = "offering_user_update_runtime_state", path = "/api/marketplace-offering-users/{uuid}/update_runtime_state/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body = RuntimeStateInput,
    responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update_runtime_state(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<RuntimeStateInput>,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(
        state
            .offerings
            .update_runtime_state(&ctx, &caller, &uuid, input)
            .await?,
    ))
}
