//! `/api/marketplace-service-providers/` and `/api/marketplace-provider-offerings/`: providers,
//! their managers and API tokens, and offerings (Waldur's paths, trailing slashes included).

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{AnyCaller, ApiJson, ApiPath, Ctx};
use crate::middleware::NoStore;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use muster_offerings::{
    AddManagerInput, ApiTokenView, CreateApiTokenInput, CreateOfferingInput, CreateProviderInput, NewApiToken,
    OfferingView, PosixPoolUseView, ProviderView, ReleasePosixIdInput, ReleasedPosixIdView, UpdateOfferingInput,
    UpdateProviderInput,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
        .routes(routes!(add_manager))
        .routes(routes!(remove_manager))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_offerings, create_offering))
        .routes(routes!(get_offering, update_offering, delete_offering))
        .routes(routes!(release_posix_id))
        .routes(routes!(posix_pools))
}

/// The providers the caller manages (every provider for super-users).
#[utoipa::path(get, path = "/api/marketplace-service-providers/", tag = "providers", security(("session" = []), ("token" = [])),
    responses((status = 200, body = [ProviderView]), (status = 401, body = Problem)))]
pub async fn list_providers(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
) -> ApiResult<Json<Vec<ProviderView>>> {
    Ok(Json(state.offerings.list_providers(&caller).await?))
}

/// Create a service provider (super-users).
#[utoipa::path(post, path = "/api/marketplace-service-providers/", tag = "providers", security(("session" = [])),
    request_body = CreateProviderInput,
    responses((status = 201, body = ProviderView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn create_provider(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiJson(input): ApiJson<CreateProviderInput>,
) -> ApiResult<(StatusCode, Json<ProviderView>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.offerings.create_provider(&ctx, &caller, input).await?),
    ))
}

/// One provider, with its managers (super-users, its managers and its tokens).
#[utoipa::path(get, path = "/api/marketplace-service-providers/{uuid}/", tag = "providers", security(("session" = []), ("token" = [])),
    params(("uuid" = String, Path)),
    responses((status = 200, body = ProviderView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_provider(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<ProviderView>> {
    Ok(Json(state.offerings.get_provider(&caller, &uuid).await?))
}

/// Rename a provider (super-users).
#[utoipa::path(patch, path = "/api/marketplace-service-providers/{uuid}/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)), request_body = UpdateProviderInput,
    responses((status = 200, body = ProviderView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update_provider(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<UpdateProviderInput>,
) -> ApiResult<Json<ProviderView>> {
    Ok(Json(
        state.offerings.update_provider(&ctx, &caller, &uuid, input).await?,
    ))
}

/// Delete a provider that has no offerings (super-users).
#[utoipa::path(delete, path = "/api/marketplace-service-providers/{uuid}/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_provider(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.offerings.delete_provider(&ctx, &caller, &uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a directory user a manager of the provider (super-users).
#[utoipa::path(post, operation_id = "add_provider_manager", path = "/api/marketplace-service-providers/{uuid}/add_manager/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)), request_body = AddManagerInput,
    responses((status = 200, body = ProviderView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn add_manager(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<AddManagerInput>,
) -> ApiResult<Json<ProviderView>> {
    Ok(Json(
        state.offerings.add_manager(&ctx, &caller, &uuid, input, true).await?,
    ))
}

/// Remove a manager from the provider (super-users).
#[utoipa::path(post, operation_id = "remove_provider_manager", path = "/api/marketplace-service-providers/{uuid}/remove_manager/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)), request_body = AddManagerInput,
    responses((status = 200, body = ProviderView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_manager(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<AddManagerInput>,
) -> ApiResult<Json<ProviderView>> {
    Ok(Json(
        state.offerings.add_manager(&ctx, &caller, &uuid, input, false).await?,
    ))
}

/// The provider's API tokens (never their keys): super-users and the provider's managers.
#[utoipa::path(get, operation_id = "list_api_tokens", path = "/api/marketplace-service-providers/{uuid}/api_tokens/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)),
    responses((status = 200, body = [ApiTokenView]), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<Vec<ApiTokenView>>> {
    Ok(Json(state.offerings.list_api_tokens(&caller, &uuid).await?))
}

/// Mint an API token for the provider's agents (super-users and the provider's managers). The
/// key is in this answer only; agents send it as `Authorization: Token <key>`.
#[utoipa::path(post, operation_id = "create_api_token", path = "/api/marketplace-service-providers/{uuid}/api_tokens/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)), request_body = CreateApiTokenInput,
    responses((status = 201, body = NewApiToken), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn create_token(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<CreateApiTokenInput>,
) -> ApiResult<NoStore<(StatusCode, Json<NewApiToken>)>> {
    Ok(NoStore((
        StatusCode::CREATED,
        Json(state.offerings.create_api_token(&ctx, &caller, &uuid, input).await?),
    )))
}

/// Revoke an API token: its next use is a 401.
#[utoipa::path(delete, operation_id = "revoke_api_token", path = "/api/marketplace-service-providers/{uuid}/api_tokens/{token_uuid}/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path), ("token_uuid" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath((uuid, token_uuid)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .offerings
        .revoke_api_token(&ctx, &caller, &uuid, &token_uuid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Offerings: all for super-users, the managed providers' for managers and tokens.
#[utoipa::path(get, path = "/api/marketplace-provider-offerings/", tag = "providers", security(("session" = []), ("token" = [])),
    responses((status = 200, body = [OfferingView]), (status = 401, body = Problem)))]
pub async fn list_offerings(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
) -> ApiResult<Json<Vec<OfferingView>>> {
    Ok(Json(state.offerings.list_offerings(&caller).await?))
}

/// Create an offering of a provider (super-users).
#[utoipa::path(post, path = "/api/marketplace-provider-offerings/", tag = "providers", security(("session" = [])),
    request_body = CreateOfferingInput,
    responses((status = 201, body = OfferingView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_offering(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiJson(input): ApiJson<CreateOfferingInput>,
) -> ApiResult<(StatusCode, Json<OfferingView>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.offerings.create_offering(&ctx, &caller, input).await?),
    ))
}

/// One offering.
#[utoipa::path(get, path = "/api/marketplace-provider-offerings/{uuid}/", tag = "providers", security(("session" = []), ("token" = [])),
    params(("uuid" = String, Path)),
    responses((status = 200, body = OfferingView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_offering(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<OfferingView>> {
    Ok(Json(state.offerings.get_offering(&caller, &uuid).await?))
}

/// Change an offering (super-users). A new username policy never renames existing accounts.
#[utoipa::path(patch, path = "/api/marketplace-provider-offerings/{uuid}/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)), request_body = UpdateOfferingInput,
    responses((status = 200, body = OfferingView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn update_offering(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<UpdateOfferingInput>,
) -> ApiResult<Json<OfferingView>> {
    Ok(Json(
        state.offerings.update_offering(&ctx, &caller, &uuid, input).await?,
    ))
}

/// Delete an offering without accounts (super-users).
#[utoipa::path(delete, path = "/api/marketplace-provider-offerings/{uuid}/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_offering(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.offerings.delete_offering(&ctx, &caller, &uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Release a uid (`{"uidnumber": N}`) or gid (`{"primarygroup": N}`) of the offering's pools
/// (super-users): a number no account holds any more may then be claimed once more with
/// `set_posix_attributes`. Otherwise a number handed out once is never given again. Audited.
#[utoipa::path(post, path = "/api/marketplace-provider-offerings/{uuid}/release_posix_id/", tag = "providers", security(("session" = [])),
    params(("uuid" = String, Path)), request_body = ReleasePosixIdInput,
    responses((status = 200, body = ReleasedPosixIdView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn release_posix_id(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    AnyCaller(caller): AnyCaller,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(input): ApiJson<ReleasePosixIdInput>,
) -> ApiResult<Json<ReleasedPosixIdView>> {
    Ok(Json(
        state.offerings.release_posix_id(&ctx, &caller, &uuid, input).await?,
    ))
}

/// Every Unix id pool the caller may see (super-users: all; a provider's managers and tokens:
/// the provider's and its offerings') with how much of it is handed out.
#[utoipa::path(get, path = "/api/marketplace-posix-pools/", tag = "providers", security(("session" = []), ("token" = [])),
    responses((status = 200, body = [PosixPoolUseView]), (status = 401, body = Problem)))]
pub async fn posix_pools(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
) -> ApiResult<Json<Vec<PosixPoolUseView>>> {
    Ok(Json(state.offerings.posix_pool_use(&caller).await?))
}
