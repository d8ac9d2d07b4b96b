//! The Unix identity of offering accounts: overriding an account's POSIX attributes, reading
//! the uid and gid it holds with their pools, and a person's identities across the accounts the
//! caller can see.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{AnyCaller, ApiJson, ApiPath, Ctx};
use axum::Json;
use axum::extract::{RawQuery, State};
use muster_offerings::{PosixAllocationView, PosixAttributesInput, PosixAttributesView, PosixIdentityView};

/// Override the account's login shell, home directory, uid or gid (at least one). A uid or gid
/// outside the offering's pool, held by another account or handed out before is a 400 naming
/// the field. A home directory equal to the home prefix and the username keeps following
/// renames; any other value sticks.
#[utoipa::path(post, operation_id = "offering_user_set_posix_attributes", path = "/api/marketplace-offering-users/{uuid}/set_posix_attributes/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body = PosixAttributesInput,
    responses((status = 200, body = PosixAttributesView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn set_posix_attributes(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<PosixAttributesInput>,
) -> ApiResult<Json<PosixAttributesView>> {
    Ok(Json(
        state
            .offerings
            .set_posix_attributes(&ctx, &caller, &uuid, input)
            .await?,
    ))
}

/// The account's uid and gid with the pools they come from (empty without a Unix identity).
#[utoipa::path(get, operation_id = "offering_user_posix_allocations", path = "/api/marketplace-offering-users/{uuid}/posix_allocations/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
    responses((status = 200, body = [PosixAllocationView]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn posix_allocations(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<Vec<PosixAllocationView>>> {
    Ok(Json(state.offerings.posix_allocations(&caller, &uuid).await?))
}

/// The Unix identities of a person's accounts that the caller can see (400 without `user_uuid`).
#[utoipa::path(get, operation_id = "offering_user_posix_identities", path = "/api/marketplace-offering-users/posix_identities/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(("user_uuid" = String, Query)),
    responses((status = 200, body = [PosixIdentityView]), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn posix_identities(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<PosixIdentityView>>> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let user = pairs.iter().find(|(k, _)| k == "user_uuid").map(|(_, v)| v.as_str());
    Ok(Json(state.offerings.posix_identities(&caller, user).await?))
}
