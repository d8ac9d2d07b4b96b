//! muster's HTTP surface.
//!
//! Handlers parse and authorize, then call the directory service; they never build SQL and
//! never decide policy. Errors leave as problem documents through [`error::ApiError`].

pub mod api;
pub mod error;
pub mod events;
pub mod extract;
pub mod middleware;
pub mod openapi;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use metrics_exporter_prometheus::PrometheusHandle;
use muster_directory::Directory;
use std::net::IpAddr;
use std::time::Duration;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub directory: Directory,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: std::sync::Arc<Vec<IpAddr>>,
    pub metrics: Option<PrometheusHandle>,
    /// Wakes the event sequencer and the stream's followers.
    pub events: events::EventHub,
    /// Starting and steering workflows (the engine, behind its permission checks).
    pub processes: muster_workflows::Processes,
    pub subscriptions: muster_workflows::Subscriptions,
    /// Providers, offerings and offering accounts.
    pub offerings: muster_offerings::Offerings,
}

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// The whole application: API, docs, health and metrics, and `pages` (the web console, served
/// beside the API under the same middleware), with every middleware applied.
pub fn app(state: AppState, options: &HttpOptions, pages: Router<AppState>) -> Router {
    let (api, mut doc) = api::router().split_for_parts();
    openapi::complete(&mut doc);
    let docs = utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/openapi.json", doc);
    Router::new()
        .merge(api)
        .merge(docs)
        .merge(pages)
        .route("/metrics", axum::routing::get(middleware::metrics_endpoint))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::refuse_control_characters))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::wake_sequencer,
        ))
        .layer(axum::middleware::from_fn(middleware::track_metrics))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        // A panic in a handler (a bug) answers 500 with a problem document instead of
        // dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(middleware::trace_layer())
        .layer(axum::middleware::from_fn(middleware::request_id))
        // Outermost: every answer gets the headers, those of the layers above included.
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .with_state(state)
}

/// The OpenAPI document, without a running server (for `muster openapi`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = api::router().split_for_parts().1;
    openapi::complete(&mut doc);
    doc
}

/// Installs the process-wide Prometheus recorder. None if one is installed already.
pub fn install_metrics() -> Option<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok()
}

/// Serves `app` on `listener` until `shutdown` completes, with client addresses available to
/// handlers (for audit records and throttling).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
