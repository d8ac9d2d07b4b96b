//! Request ids, tracing and metrics.

use crate::AppState;
use crate::extract::RequestId;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client-sent request id is kept only if it is short printable ASCII; anything else could
/// smuggle text into logs and audit records, and is replaced.
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Gives every request an id (the audit `cid`) and echoes it on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// Logs one span per request with its id, method and route; never headers or bodies (they
/// carry tokens and passwords).
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, impl Fn(&Request) -> tracing::Span + Clone>
{
    TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let id = req.extensions().get::<RequestId>().map(|r| r.0.as_str()).unwrap_or("");
        let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or("");
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path(), route = %route)
    })
}

/// Counts requests and records their latency by route template (not raw path, which would
/// explode the label space with ids).
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("muster_http_requests_total", &labels).increment(1);
    metrics::histogram!("muster_http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics` in Prometheus' text format.
pub async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// After a successful write, numbers its events now instead of at the sequencer's next tick,
/// so followers see changes within milliseconds.
pub async fn wake_sequencer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let writes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let resp = next.run(req).await;
    if writes && resp.status().is_success() {
        state.events.wake();
    }
    resp
}

/// The answer when a handler panicked: a generic 500; the panic itself goes to the log.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    crate::error::problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        muster_core::error::codes::INTERNAL,
        "internal error",
        vec![],
    )
}
