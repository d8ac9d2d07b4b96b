//! The catalogue, read-only: products, product blocks, workflows.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiPath, ApiQuery, AuthUser};
use axum::Json;
use axum::extract::State;
use muster_core::error::DomainError;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(get_product))
        .routes(routes!(list_blocks))
        .routes(routes!(get_block))
        .routes(routes!(list_workflows))
        .routes(routes!(get_workflow))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProductParams {
    pub tag: Option<String>,
    pub product_type: Option<String>,
}

/// Products with their fixed inputs, product blocks and workflows.
#[utoipa::path(get, path = "/api/products", tag = "catalogue", security(("session" = [])), params(ProductParams),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_products(
    State(state): State<AppState>,
    AuthUser(_auth): AuthUser,
    ApiQuery(p): ApiQuery<ProductParams>,
) -> ApiResult<Json<Vec<Value>>> {
    let c = state.subscriptions.catalogue();
    Ok(Json(
        c.products
            .iter()
            .filter(|x| p.tag.as_ref().is_none_or(|t| &x.tag == t))
            .filter(|x| p.product_type.as_ref().is_none_or(|t| &x.product_type == t))
            .map(|x| x.json.clone())
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/products/{id}", tag = "catalogue", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_product(
    State(state): State<AppState>,
    AuthUser(_auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let id = crate::api::processes::uuid_of(&id, "product")?;
    let c = state.subscriptions.catalogue();
    Ok(Json(
        c.product(id)
            .map(|p| p.json.clone())
            .ok_or_else(|| DomainError::not_found("product"))?,
    ))
}

#[utoipa::path(get, operation_id = "list_product_blocks", path = "/api/product_blocks", tag = "catalogue", security(("session" = [])),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_blocks(State(state): State<AppState>, AuthUser(_auth): AuthUser) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(state.subscriptions.catalogue().blocks.clone()))
}

#[utoipa::path(get, operation_id = "get_product_block", path = "/api/product_blocks/{id}", tag = "catalogue", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_block(
    State(state): State<AppState>,
    AuthUser(_auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let id = crate::api::processes::uuid_of(&id, "product block")?.to_string();
    state
        .subscriptions
        .catalogue()
        .blocks
        .iter()
        .find(|b| b["product_block_id"].as_str() == Some(id.as_str()))
        .cloned()
        .map(Json)
        .ok_or_else(|| DomainError::not_found("product block").into())
}

#[utoipa::path(get, path = "/api/workflows", tag = "catalogue", security(("session" = [])),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_workflows(State(state): State<AppState>, AuthUser(_auth): AuthUser) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(
        state
            .subscriptions
            .catalogue()
            .workflows
            .iter()
            .map(|w| w.json.clone())
            .collect(),
    ))
}

/// A workflow by id or by name, with the step names of its current version.
#[utoipa::path(get, path = "/api/workflows/{id}", tag = "catalogue", security(("session" = [])),
    params(("id" = String, Path, description = "workflow_id or name")), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_workflow(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let c = state.subscriptions.catalogue();
    let w = c
        .workflows
        .iter()
        .find(|w| w.name == id || w.workflow_id.to_string() == id)
        .ok_or_else(|| DomainError::not_found("workflow"))?;
    let mut v = w.json.clone();
    if let Some((version, steps)) = state.processes.workflow_steps(&auth, &w.name) {
        v["version"] = serde_json::json!(version);
        v["steps"] = serde_json::json!(steps);
    }
    Ok(Json(v))
}
