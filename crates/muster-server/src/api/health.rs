//! `GET /api/health`.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; `read_only` when the database answers but refuses writes (full, read-only);
    /// `unavailable` when it does not answer.
    pub status: &'static str,
    /// The database in use: `sqlite` or `postgres`.
    pub database: &'static str,
    /// The database answered a read.
    pub reachable: bool,
    /// The database committed a write.
    pub writable: bool,
    /// Why not: `storage_full`, `database_unavailable`, `timeout` or `database_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
    pub version: &'static str,
}

/// Liveness, and whether the database answers and takes writes. Answers within about two
/// seconds whatever the database does: each check has its own short timeout.
#[utoipa::path(get, operation_id = "get_health", path = "/api/health", tag = "operations",
    responses((status = 200, body = Health, description = "The server and its database answer and take writes"),
        (status = 503, body = Health, description = "The database does not answer, or refuses writes")))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let store = state.directory.store();
    let database = match store.backend() {
        muster_store::Backend::Sqlite => "sqlite",
        muster_store::Backend::Postgres => "postgres",
    };
    let h = store.health().await;
    let (code, status) = match (h.reachable, h.writable) {
        (true, true) => (StatusCode::OK, "ok"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "read_only"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    (
        code,
        Json(Health {
            status,
            database,
            reachable: h.reachable,
            writable: h.writable,
            problem: h.problem,
            version: env!("CARGO_PKG_VERSION"),
        }),
    )
}
