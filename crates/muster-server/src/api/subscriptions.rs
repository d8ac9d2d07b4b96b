//! Subscriptions: list, domain model, startable workflows, set in sync, delete.

use crate::AppState;
use crate::api::processes::{content_range, filter_pairs, parse_range, parse_sort};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiPath, ApiQuery, AuthUser, Ctx};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::error::{DomainError, codes};
use muster_core::workflow::SubscriptionStatus;
use muster_store::{SubscriptionQuery, SubscriptionSort};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(domain_model))
        .routes(routes!(workflows))
        .routes(routes!(set_in_sync))
        .routes(routes!(delete))
}

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError(DomainError::invalid_field(field, codes::INVALID_INPUT, msg))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `start,end` (end exclusive). Default `0,20`.
    pub range: Option<String>,
    /// `field,ASC|DESC[,…]`: start_date, end_date, description, status, product, customer_id, created_at.
    pub sort: Option<String>,
    /// `key,value[,key,value…]`, values `a|b` for any of. Keys: product (id), product_type,
    /// status, insync, customer_id.
    pub filter: Option<String>,
    /// Free text, matched against the description.
    pub query: Option<String>,
}

/// Subscriptions with filters, sorting and paging; `Content-Range: subscriptions 0-20/57`.
#[utoipa::path(get, operation_id = "list_subscriptions", path = "/api/subscriptions", tag = "subscriptions", security(("session" = [])), params(ListParams),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<(HeaderMap, Json<Vec<Value>>)> {
    let (start, end) = parse_range(p.range.as_deref())?;
    let mut sort = parse_sort(p.sort.as_deref(), SubscriptionSort::parse)?;
    if sort.is_empty() {
        sort.push((SubscriptionSort::Created, true));
    }
    let mut q = SubscriptionQuery {
        sort,
        offset: start,
        limit: end - start,
        text: p.query.filter(|s| !s.is_empty()),
        ..Default::default()
    };
    for (key, values) in filter_pairs(p.filter.as_deref())? {
        match key.as_str() {
            "product" | "product_id" => {
                for v in &values {
                    q.product_ids
                        .push(v.parse().map_err(|_| bad("filter", "product is a product id"))?);
                }
            }
            "product_type" => q.product_types.extend(values),
            "status" => {
                for v in &values {
                    q.statuses.push(
                        SubscriptionStatus::parse(v).ok_or_else(|| bad("filter", format!("unknown status {v:?}")))?,
                    );
                }
            }
            "insync" => {
                q.insync = Some(match values.first().map(String::as_str) {
                    Some("true") => true,
                    Some("false") => false,
                    _ => return Err(bad("filter", "insync is true or false")),
                })
            }
            "customer_id" | "customer" => q.customer_id = values.first().cloned(),
            other => return Err(bad("filter", format!("cannot filter by {other:?}"))),
        }
    }
    let (items, total) = state.subscriptions.list(&auth, &q).await?;
    Ok((content_range("subscriptions", start, items.len(), total), Json(items)))
}

/// The subscription's domain model: fields, fixed inputs, blocks (a User's group nested),
/// `in_use_by_ids` / `depends_on_ids`. Answers with an `ETag`; a request whose `If-None-Match`
/// names the current one gets 304 without a body.
#[utoipa::path(get, operation_id = "get_subscription_domain_model", path = "/api/subscriptions/domain-model/{id}", tag = "subscriptions", security(("session" = [])),
    params(("id" = Uuid, Path), ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer")),
    responses((status = 200, body = Object, headers(("ETag" = String))), (status = 304), (status = 404, body = Problem), (status = 403, body = Problem)))]
pub async fn domain_model(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let model = state.subscriptions.domain_model(&auth, &id).await?;
    let body = serde_json::to_vec(&model).map_err(|e| ApiError(DomainError::internal(e)))?;
    // The tag is the body's digest, not the subscription's `version`: the model also shows
    // other subscriptions (a User's group, its users), which change without this one's version.
    let etag = etag_of(&body);
    let revalidating = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "private, no-cache".to_owned()),
    ];
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, revalidating).into_response());
    }
    Ok((revalidating, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A strong entity tag: the first 128 bits of the body's SHA-256, in hex.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names `etag` (or is `*`), compared weakly as RFC 9110 says for GET.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// The workflows per target, each with a `reason` when it may not start now.
#[utoipa::path(get, operation_id = "list_subscription_workflows", path = "/api/subscriptions/workflows/{id}", tag = "subscriptions", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Object), (status = 404, body = Problem), (status = 403, body = Problem)))]
pub async fn workflows(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.subscriptions.workflows(&auth, &id).await?))
}

/// Marks a subscription in sync (recovery); 409 while an unfinished process holds it.
#[utoipa::path(put, operation_id = "set_subscription_in_sync", path = "/api/subscriptions/{id}/set_in_sync", tag = "subscriptions", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200), (status = 404, body = Problem), (status = 409, body = Problem), (status = 403, body = Problem)))]
pub async fn set_in_sync(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    Ctx(ctx): Ctx,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.subscriptions.set_in_sync(&ctx, &auth, &id).await?;
    Ok(StatusCode::OK)
}

/// Deletes an `initial` or `terminated` subscription (its blocks, relations and process links;
/// the processes keep their history). 409 with the reason while it is in another status, other
/// subscriptions depend on it, or an unfinished process holds it.
#[utoipa::path(delete, operation_id = "delete_subscription", path = "/api/subscriptions/{id}", tag = "subscriptions", security(("session" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 403, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    Ctx(ctx): Ctx,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.subscriptions.delete(&ctx, &auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, value.parse().expect("header value"));
        h
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_the_wildcard() {
        let tag = etag_of(b"{}");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34, "{tag}");
        assert_ne!(tag, etag_of(b"{ }"));
        assert!(if_none_match(&with(&tag), &tag));
        assert!(if_none_match(&with(&format!("W/{tag}")), &tag));
        assert!(if_none_match(&with(&format!("\"other\", {tag}")), &tag));
        assert!(if_none_match(&with("*"), &tag));
        assert!(!if_none_match(&with("\"other\""), &tag));
        assert!(!if_none_match(&HeaderMap::new(), &tag));
    }
}
