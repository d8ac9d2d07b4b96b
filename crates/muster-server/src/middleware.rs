//! Request ids, tracing and metrics.

use crate::AppState;
use crate::extract::RequestId;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tower_http::classify::{SharedClassifier, StatusInRangeAsFailures};
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

/// The method as a metric and log label: one of the methods HTTP defines, else `other`. A
/// client can send any token as a method, of any length: used as is, each would become a new
/// time series (and a new line in every scrape).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The route template the request matched (`/api/users/{user_id}`), or `unmatched`: never the
/// raw path, which carries ids (unbounded labels) and sometimes secrets (a callback's token).
pub fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into())
}

/// Logs one span per request with its id, method and route template; never the raw path,
/// query, headers or body (they carry tokens and passwords).
///
/// Only a 500 is logged as a failed response: it is a bug or an unforeseen failure. The other
/// 5xx answers are muster working as designed and are not errors of the server: 510 is the
/// form protocol asking for the next page, 503 a paused engine or an unreachable database and
/// 507 a full one (both logged once, as warnings, where they happen).
pub fn trace_layer() -> TraceLayer<SharedClassifier<StatusInRangeAsFailures>, impl Fn(&Request) -> tracing::Span + Clone>
{
    TraceLayer::new(StatusInRangeAsFailures::new(500..=500).into_make_classifier()).make_span_with(|req: &Request| {
        let id = req.extensions().get::<RequestId>().map(|r| r.0.as_str()).unwrap_or("");
        tracing::info_span!(
            "request",
            request_id = %id,
            method = method_label(req.method()),
            route = %route_label(req)
        )
    })
}

/// Counts requests and records their latency by method and route template, each from a
/// bounded set (see [`method_label`] and [`route_label`]); the status is the server's own.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(&req);
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method.to_owned()), ("route", route), ("status", status)];
    metrics::counter!("muster_http_requests_total", &labels).increment(1);
    metrics::histogram!("muster_http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    resp
}

/// The Content-Security-Policy of every HTML page: scripts, styles and everything else only
/// from this server, never inline; no framing, no plugins, no `<base>` tricks.
pub const HTML_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
    object-src 'none'";

/// Security headers on every response: no MIME sniffing, no referrer; and on every HTML
/// response (whichever handler made it) the [`HTML_CSP`].
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(HTML_CSP));
    }
    resp
}

/// A response that carries a secret shown once (a session token, a TOTP key, an API key):
/// no cache, private or shared, may keep it.
pub struct NoStore<T>(pub T);

impl<T: IntoResponse> IntoResponse for NoStore<T> {
    fn into_response(self) -> Response {
        let mut resp = self.0.into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// Refuses (400) a query string with a control character (NUL, newline, …) in any name or
/// value, for every route at once: no filter, cursor or flag has a use for one, and a NUL in a
/// substring filter reached the database as a pattern that matched every row on SQLite.
pub async fn refuse_control_characters(req: Request, next: Next) -> Response {
    let bad = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, v)| k.chars().chain(v.chars()).any(char::is_control))
            .map(|(k, _)| k.chars().filter(|c| !c.is_control()).take(64).collect::<String>())
    });
    match bad {
        Some(name) => crate::error::problem(
            StatusCode::BAD_REQUEST,
            muster_core::error::codes::INVALID_INPUT,
            format!("query parameter `{name}` contains a control character"),
            vec![muster_core::error::FieldError {
                field: name,
                code: muster_core::error::codes::INVALID_INPUT.to_owned(),
                message: "control characters are not allowed".to_owned(),
            }],
        ),
        None => next.run(req).await,
    }
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
