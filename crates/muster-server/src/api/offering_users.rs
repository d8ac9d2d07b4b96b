//! `/api/marketplace-offering-users/`: offering accounts, on Waldur's wire contract (trailing
//! slashes, bare JSON arrays, `Link` and `X-Result-Count`, labels for states, Waldur's 400 for
//! invalid transitions). Callers authenticate with a session (`Bearer`) or, as hosting-site
//! agents do, with a provider API token (`Token`).

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{AnyCaller, ApiJson, ApiPath, Ctx};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::{AccountState, Action, RuntimeState};
use muster_offerings::{
    AccountFilter, CommentsInput, CommentsView, CreateAccountInput, HistoryView, OfferingUserView, PosixAllocationView,
    PosixAttributesInput, PosixAttributesView, PosixIdentityView, RuntimeStateInput, TransitionInput, UsernameInput,
};
use muster_store::AccountOrder;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(retrieve, put_username, patch_username, destroy))
        .routes(routes!(history))
        .routes(routes!(begin_creating))
        .routes(routes!(set_pending_account_linking))
        .routes(routes!(set_pending_additional_validation))
        .routes(routes!(set_validation_complete))
        .routes(routes!(set_ok))
        .routes(routes!(set_error_creating))
        .routes(routes!(request_deletion))
        .routes(routes!(set_deleting))
        .routes(routes!(set_deleted))
        .routes(routes!(set_error_deleting))
        .routes(routes!(update_comments))
        .routes(routes!(update_restricted))
        .routes(routes!(update_runtime_state))
        .routes(routes!(set_posix_attributes))
        .routes(routes!(posix_allocations))
        .routes(routes!(posix_identities))
}

/// Default and largest page sizes (Waldur's `PAGE_SIZE` and `max_page_size`).
const DEFAULT_PAGE_SIZE: i64 = 10;
const MAX_PAGE_SIZE: i64 = 300;
const BASE: &str = "/api/marketplace-offering-users/";

/// A JSON body that may be absent: an empty body is `T::default()`; anything else must parse
/// strictly, like [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| OptionalJson(v))
    }
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError(DomainError::invalid_field(field, codes::INVALID_INPUT, message))
}

/// `2024-01-01` (midnight UTC) or an RFC 3339 date-time.
fn parse_time(field: &str, v: &str) -> Result<OffsetDateTime, ApiError> {
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(t);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(v, &date_format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| bad(field, "expected a date (YYYY-MM-DD) or an RFC 3339 date-time"))
}

fn parse_bool(field: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(field, "expected true or false")),
    }
}

fn parse_uuids(field: &str, v: &str, into: &mut Vec<uuid::Uuid>) -> Result<(), ApiError> {
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        into.push(uuid::Uuid::parse_str(part).map_err(|_| bad(field, format!("{field} must be UUIDs")))?);
    }
    Ok(())
}

/// The parsed query string: filters, paging and the sparse field list.
struct ListParams {
    filter: AccountFilter,
    fields: Vec<String>,
}

fn parse_list(pairs: &[(String, String)]) -> Result<ListParams, ApiError> {
    let mut f = AccountFilter {
        page: 1,
        page_size: DEFAULT_PAGE_SIZE,
        ..Default::default()
    };
    let mut fields = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "state" => {
                // Labels, repeatable, OR-ed; an unknown label is the caller's 400.
                let s = AccountState::parse_label(v).ok_or_else(|| {
                    let known: Vec<&str> = AccountState::ALL.iter().map(|s| s.label()).collect();
                    bad(
                        "state",
                        format!(
                            "Select a valid choice. {v:?} is not one of the available choices: {}.",
                            known.join(", ")
                        ),
                    )
                })?;
                f.states.push(s);
            }
            "runtime_state" => {
                let s = RuntimeState::parse_label(v)
                    .ok_or_else(|| bad("runtime_state", "Select a valid choice of runtime state."))?;
                f.runtime_states.push(s);
            }
            "offering_uuid" => parse_uuids("offering_uuid", v, &mut f.offering_uuids)?,
            "provider_uuid" | "customer_uuid" => parse_uuids(k, v, &mut f.provider_uuids)?,
            "user_uuid" => {
                f.user_uuid =
                    Some(uuid::Uuid::parse_str(v.trim()).map_err(|_| bad("user_uuid", "user_uuid must be a UUID"))?)
            }
            "user_username" => f.user_username = Some(v.clone()),
            "is_restricted" => f.is_restricted = Some(parse_bool("is_restricted", v)?),
            "query" => f.query = Some(v.clone()),
            // Waldur's `created` means "created at or after"; `created_after` is muster's alias.
            "created" | "created_after" => f.created_from = Some(parse_time(k, v)?),
            "created_before" => f.created_before = Some(parse_time(k, v)?),
            "modified" | "modified_after" => f.modified_from = Some(parse_time(k, v)?),
            "modified_before" => f.modified_before = Some(parse_time(k, v)?),
            "o" => {
                for key in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (desc, name) = match key.strip_prefix('-') {
                        Some(n) => (true, n),
                        None => (false, key),
                    };
                    let order = match name {
                        "created" => AccountOrder::Created,
                        "modified" => AccountOrder::Modified,
                        "username" => AccountOrder::Username,
                        "user_first_name" => AccountOrder::UserFirstName,
                        "user_last_name" => AccountOrder::UserLastName,
                        _ => {
                            return Err(bad(
                                "o",
                                "o must be created, modified, username, user_first_name or user_last_name (- for descending)",
                            ));
                        }
                    };
                    f.order.push((order, desc));
                }
            }
            "page" => {
                f.page = v
                    .parse::<i64>()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| bad("page", "page must be a positive integer"))?
            }
            "page_size" => {
                let n = v
                    .parse::<i64>()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| bad("page_size", "page_size must be a positive integer"))?;
                f.page_size = n.min(MAX_PAGE_SIZE);
            }
            "field" => fields.extend(v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())),
            other => {
                return Err(ApiError(DomainError::invalid_field(
                    other,
                    "unknown_field",
                    format!("unknown query parameter {other:?}"),
                )));
            }
        }
    }
    Ok(ListParams { filter: f, fields })
}

/// The list URL for `page`, keeping every other parameter as the client sent it.
fn page_link(pairs: &[(String, String)], page: i64) -> String {
    let mut out = url_encode_pairs(pairs.iter().filter(|(k, _)| k != "page"));
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(&format!("page={page}"));
    format!("{BASE}?{out}")
}

fn url_encode_pairs<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    pairs
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `Link` (first/prev/next/last, only those that exist) and `X-Result-Count`.
fn paging_headers(headers: &mut HeaderMap, pairs: &[(String, String)], f: &AccountFilter, total: i64) {
    let last = ((total + f.page_size - 1) / f.page_size).max(1);
    let mut links = vec![format!("<{}>; rel=\"first\"", page_link(pairs, 1))];
    if f.page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", page_link(pairs, (f.page - 1).min(last))));
    }
    if f.page < last {
        links.push(format!("<{}>; rel=\"next\"", page_link(pairs, f.page + 1)));
    }
    links.push(format!("<{}>; rel=\"last\"", page_link(pairs, last)));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        headers.insert("link", v);
    }
    headers.insert("x-result-count", HeaderValue::from(total));
}

/// The list's query parameters, as the OpenAPI document declares them. The handler reads the
/// raw query itself ([`parse_list`]): Waldur's clients repeat some parameters and
/// comma-separate others, which a derived deserializer would not take.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by utoipa only
pub struct AccountListParams {
    /// Lifecycle state labels; repeat the parameter to match any of them.
    state: Option<Vec<AccountState>>,
    /// Runtime state labels; repeat the parameter to match any of them.
    runtime_state: Option<Vec<RuntimeState>>,
    /// Offering UUIDs, repeated or comma-separated.
    offering_uuid: Option<Vec<uuid::Uuid>>,
    /// The provider organisation's UUIDs, repeated or comma-separated.
    provider_uuid: Option<Vec<uuid::Uuid>>,
    /// Waldur's name for `provider_uuid`.
    customer_uuid: Option<Vec<uuid::Uuid>>,
    /// The directory user's UUID.
    user_uuid: Option<uuid::Uuid>,
    /// The directory username, exact and case-insensitive.
    user_username: Option<String>,
    is_restricted: Option<bool>,
    /// Substring of the offering name, the local username, the person's names or username.
    query: Option<String>,
    /// Created at or after: a date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 date-time.
    created: Option<String>,
    /// Same as `created`.
    created_after: Option<String>,
    /// Created before: a date or an RFC 3339 date-time.
    created_before: Option<String>,
    /// Modified at or after: a date or an RFC 3339 date-time.
    modified: Option<String>,
    /// Same as `modified`.
    modified_after: Option<String>,
    /// Modified before: a date or an RFC 3339 date-time.
    modified_before: Option<String>,
    /// Order: comma-separated `created`, `modified`, `username`, `user_first_name`,
    /// `user_last_name`, each with `-` for descending. Default `username`.
    o: Option<String>,
    /// Sparse fieldset: answer only these fields (repeated or comma-separated).
    field: Option<Vec<String>>,
    /// 1-based page number. Default 1.
    #[param(minimum = 1)]
    page: Option<i64>,
    /// Default 10; larger values are capped at 300.
    #[param(minimum = 1)]
    page_size: Option<i64>,
}

/// One item of the list: the whole account or, with `field`, only the fields named.
pub struct OfferingUserListItem;

impl utoipa::PartialSchema for OfferingUserListItem {
    fn schema() -> RefOr<Schema> {
        // The sparse form is the account's own schema with nothing required, so it stays in
        // step with `OfferingUserView`.
        let sparse = match OfferingUserView::schema() {
            RefOr::T(Schema::Object(mut object)) => {
                object.required.clear();
                object.description = Some("With `field`: only the fields named".to_owned());
                RefOr::T(Schema::Object(object))
            }
            other => other,
        };
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(OfferingUserView::name()))
            .item(sparse)
            .into()
    }
}

impl ToSchema for OfferingUserListItem {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((OfferingUserView::name().into(), OfferingUserView::schema()));
        <OfferingUserView as ToSchema>::schemas(schemas);
    }
}

/// List offering accounts (bare JSON array; `HEAD` for the count alone).
///
/// Filters are AND-ed; the values of a repeated filter are OR-ed. An unknown parameter or an
/// unknown state label is a 400.
#[utoipa::path(get, operation_id = "list_offering_users", path = "/api/marketplace-offering-users/", tag = "offering-users",
    security(("session" = []), ("token" = [])), params(AccountListParams),
    responses(
        (status = 200, body = [OfferingUserListItem], description = "A page, with `Link` and `X-Result-Count` headers",
            headers(("Link" = String, description = "first, prev, next and last pages (RFC 8288)"), ("X-Result-Count" = i64, description = "Matching accounts on all pages"))),
        (status = 400, body = Problem), (status = 401, body = Problem),
    ))]
pub async fn list(
    State(state): State<AppState>,
    method: Method,
    AnyCaller(caller): AnyCaller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // Parsed leniently (a malformed escape becomes U+FFFD), then strictly by `parse_list`.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let p = parse_list(&pairs)?;
    let mut headers = HeaderMap::new();
    if method == Method::HEAD {
        let total = state.offerings.count_accounts(&caller, &p.filter).await?;
        paging_headers(&mut headers, &pairs, &p.filter, total);
        return Ok((StatusCode::OK, headers).into_response());
    }
    let (total, items) = state.offerings.list_accounts(&caller, &p.filter).await?;
    paging_headers(&mut headers, &pairs, &p.filter, total);
    if p.fields.is_empty() {
        return Ok((headers, Json(items)).into_response());
    }
    let sparse: Vec<serde_json::Value> = items
        .iter()
        .map(|item| {
            let full = serde_json::to_value(item).unwrap_or_default();
            let mut out = serde_json::Map::new();
            for f in &p.fields {
                if let Some(v) = full.get(f) {
                    out.insert(f.clone(), v.clone());
                }
            }
            serde_json::Value::Object(out)
        })
        .collect();
    Ok((headers, Json(sparse)).into_response())
}

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

async fn run(
    state: AppState,
    ctx: muster_core::audit::RequestCtx,
    caller: muster_directory::Caller,
    uuid: String,
    action: Action,
    input: TransitionInput,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(
        state.offerings.transition(&ctx, &caller, &uuid, action, input).await?,
    ))
}

/// Declares the handler of one lifecycle action. The paths are written out in each
/// `utoipa::path` so the OpenAPI document lists every action.
macro_rules! action {
    ($(#[$m:meta])* $name:ident, $action:expr) => {
        $(#[$m])*
        pub async fn $name(
            State(state): State<AppState>,
            Ctx(ctx): Ctx,
            AnyCaller(caller): AnyCaller,
            ApiPath(uuid): ApiPath<String>,
            OptionalJson(input): OptionalJson<TransitionInput>,
        ) -> ApiResult<Json<OfferingUserView>> {
            run(state, ctx, caller, uuid, $action, input).await
        }
    };
}

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_begin_creating", path = "/api/marketplace-offering-users/{uuid}/begin_creating/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem, description = "Invalid transition: `detail` names the current state and the valid ones"),
            (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    begin_creating,
    Action::BeginCreating
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_pending_account_linking", path = "/api/marketplace-offering-users/{uuid}/set_pending_account_linking/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body(content = TransitionInput, description = "Optional"),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_pending_account_linking,
    Action::SetPendingAccountLinking
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_pending_additional_validation", path = "/api/marketplace-offering-users/{uuid}/set_pending_additional_validation/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body(content = TransitionInput, description = "Optional"),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_pending_additional_validation,
    Action::SetPendingAdditionalValidation
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_validation_complete", path = "/api/marketplace-offering-users/{uuid}/set_validation_complete/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_validation_complete,
    Action::SetValidationComplete
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_ok", path = "/api/marketplace-offering-users/{uuid}/set_ok/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_ok,
    Action::SetOk
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_error_creating", path = "/api/marketplace-offering-users/{uuid}/set_error_creating/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_error_creating,
    Action::SetErrorCreating
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_request_deletion", path = "/api/marketplace-offering-users/{uuid}/request_deletion/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    request_deletion,
    Action::RequestDeletion
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_deleting", path = "/api/marketplace-offering-users/{uuid}/set_deleting/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_deleting,
    Action::SetDeleting
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_deleted", path = "/api/marketplace-offering-users/{uuid}/set_deleted/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_deleted,
    Action::SetDeleted
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_error_deleting", path = "/api/marketplace-offering-users/{uuid}/set_error_deleting/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_error_deleting,
    Action::SetErrorDeleting
);

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
