//! Listing offering accounts: `GET` (a page of accounts, or only the fields named) and `HEAD`
//! (the count alone) on the collection. The query string is parsed here, strictly (an unknown
//! parameter or label is a 400), and the paging headers are built from the same parameters the
//! client sent.

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::AnyCaller;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::{AccountState, RuntimeState};
use muster_offerings::{AccountFilter, OfferingUserView};
use muster_store::AccountOrder;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// Default and largest page sizes (Waldur's `PAGE_SIZE` and `max_page_size`).
const DEFAULT_PAGE_SIZE: i64 = 10;
const MAX_PAGE_SIZE: i64 = 300;
const BASE: &str = "/api/marketplace-offering-users/";

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
