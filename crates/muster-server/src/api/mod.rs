//! The REST API, one module per resource.

pub mod audit;
pub mod events;
pub mod health;
pub mod mail;
pub mod offering_users;
pub mod processes;
pub mod products;
pub mod providers;
pub mod session;
pub mod subscriptions;
pub mod users;

use crate::AppState;
use crate::error::problem;
use axum::http::StatusCode;
use axum::response::Response;
use muster_core::error::codes;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Every documented route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(session::router())
        .merge(users::router())
        .merge(mail::router())
        .merge(audit::router())
        .merge(events::router())
        .merge(processes::router())
        .merge(subscriptions::router())
        .merge(products::router())
        .merge(providers::router())
        .merge(offering_users::router())
}

pub async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such resource", vec![])
}

pub async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this resource does not support that method",
        vec![],
    )
}
