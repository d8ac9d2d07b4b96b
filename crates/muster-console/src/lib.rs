//! The web console: server-rendered pages (askama templates, checked at compile time) with
//! htmx for partial updates and its SSE extension for live ones, served by `muster serve` on
//! the API's port.
//!
//! The console is another client of muster's services, exactly like the REST API: every page
//! calls `Directory`, `Offerings`, `Processes` or `Subscriptions` with the signed-in person's
//! session, and those services decide what the person may see and do. It never calls its own
//! API over HTTP and never builds SQL.
//!
//! Layout: [`auth`] (cookie sign-in, CSRF), [`pages`] (one module per page), [`forms`] (JSON
//! Schema → form widgets for any workflow), [`lists`] (paging, sorting, CSV export), [`live`]
//! (the SSE endpoint), [`diagram`] (the offering-account lifecycle drawn from its table),
//! [`assets`] (embedded, content-hashed static files).

pub mod assets;
pub mod auth;
pub mod cookies;
pub mod diagram;
pub mod error_page;
pub mod forms;
pub mod layout;
pub mod lists;
pub mod live;
pub mod pages;
pub mod urls;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use muster_server::AppState;
use std::sync::Arc;

/// Largest form the console reads (the workflow forms' pages travel with every step).
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// How the console is served.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Always mark cookies `Secure` (set when muster is reached over https through a proxy
    /// that does not send `X-Forwarded-Proto`).
    pub secure_cookies: bool,
    /// The super-user created on first start, for the sign-in page's hint.
    pub admin_username: String,
}

/// The Content-Security-Policy the console is built to run under: its own scripts and styles
/// only, no inline code, no other host.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Every console route. Merged into the application beside `/api`, so it gets the same request
/// ids, tracing, metrics and timeouts.
pub fn router(options: ConsoleOptions) -> Router<AppState> {
    use pages::*;
    Router::new()
        .route("/static/{file}", get(assets::serve))
        .route("/login", get(login::page).post(login::submit))
        .route("/login/step", post(login::step))
        .route("/logout", post(login::logout))
        .route("/password-reset", get(recovery::reset_page).post(recovery::ask))
        .route("/password-reset/complete", post(recovery::complete))
        .route("/invitation", get(recovery::invitation_page).post(recovery::accept))
        .route("/signup", get(recovery::signup_form).post(recovery::signup))
        .route("/signup/confirm", get(recovery::confirm_page).post(recovery::confirm))
        .route("/", get(dashboard::page))
        .route("/engine", post(dashboard::set_engine))
        .route("/me", get(me::page))
        .route("/me/password", post(me::change_password))
        .route("/me/totp", post(me::begin_totp))
        .route("/me/totp/confirm", post(me::confirm_totp))
        .route("/me/totp/disable", post(me::disable_totp))
        .route("/me/sessions/{id}/end", post(me::end_session))
        .route("/me/sessions/end-others", post(me::end_other_sessions))
        .route("/users", get(users::list))
        .route("/users.csv", get(users::csv))
        .route("/users/new", get(users::new_form).post(users::create))
        .route("/users/bulk", post(users::bulk))
        .route("/users/{id}", get(users::detail))
        .route("/users/{id}/{action}", post(users::act))
        .route("/subscriptions", get(subscriptions::list))
        .route("/subscriptions.csv", get(subscriptions::csv))
        .route("/subscriptions/{id}", get(subscriptions::detail))
        .route("/subscriptions/{id}/in-sync", post(subscriptions::set_in_sync))
        .route("/subscriptions/{id}/delete", post(subscriptions::delete))
        .route("/processes", get(processes::list))
        .route("/processes.csv", get(processes::csv))
        .route("/processes/{id}", get(processes::detail))
        .route("/processes/{id}/timeline", get(processes::timeline))
        .route("/processes/{id}/retry", post(processes::retry))
        .route("/processes/{id}/abort", post(processes::abort))
        .route("/processes/{id}/resume", post(processes::resume))
        .route("/start", get(start::choose))
        .route("/start/{workflow}", get(start::first_page).post(start::submit))
        .route("/accounts", get(accounts::list))
        .route("/accounts.csv", get(accounts::csv))
        .route("/accounts/bulk", post(accounts::bulk))
        .route("/accounts/{uuid}", get(accounts::detail))
        .route("/accounts/{uuid}/row", get(accounts::row))
        .route("/accounts/{uuid}/{action}", post(accounts::act))
        .route("/providers", get(providers::list).post(providers::create))
        .route("/providers/{uuid}", get(providers::detail))
        .route("/providers/{uuid}/{action}", post(providers::act))
        .route("/mail", get(mail::list))
        .route("/mail/{id}/retry", post(mail::retry))
        .route("/audit", get(audit::list))
        .route("/audit.csv", get(audit::csv))
        .route("/catalogue", get(catalogue::page))
        .route("/live", get(live::stream))
        .layer(axum::middleware::from_fn(page_headers))
        .layer(axum::middleware::from_fn(auth::csrf_guard))
        .layer(axum::Extension(Arc::new(options)))
}

/// Headers every console answer carries: pages are never cached (they show a person's data),
/// are not framed, and run under [`CSP`] even when nothing else sets one.
async fn page_headers(req: Request, next: Next) -> Response {
    // A one-time message is shown by the next full page, then forgotten.
    let had_flash =
        !req.headers().contains_key("hx-request") && cookies::Cookies::of(req.headers()).get(cookies::FLASH).is_some();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        h.entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static(CSP));
        h.entry(header::X_FRAME_OPTIONS)
            .or_insert(HeaderValue::from_static("DENY"));
        h.entry(header::REFERRER_POLICY)
            .or_insert(HeaderValue::from_static("same-origin"));
        h.entry(header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(HeaderValue::from_static("nosniff"));
        if had_flash && let Ok(v) = HeaderValue::from_str(&cookies::clear(cookies::FLASH, "/", false)) {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}
