//! Signing in with a cookie, and the CSRF guard.
//!
//! The cookie holds an ordinary muster session token: the session has the same idle and
//! absolute expiry, revocation, throttling and audit as one opened over the API (it *is*
//! opened by `Directory::login`). The cookie is `HttpOnly` (scripts cannot read it),
//! `SameSite=Strict` (other sites' pages cannot send it) and `Secure` whenever the console is
//! reached over https.
//!
//! Every state-changing request must carry a CSRF token, checked in one place
//! ([`csrf_guard`]) before any handler runs. Signed in, the token is derived from the session
//! token (so it needs no storage and changes with every session); before sign-in it is derived
//! from a random cookie set by the sign-in page (login CSRF).

use crate::ConsoleOptions;
use crate::cookies::{self, Cookies};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muster_core::audit::RequestCtx;
use muster_directory::{Auth, Caller};
use muster_server::AppState;
use muster_server::extract::Ctx;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The session cookie: an ordinary muster session token.
pub const SESSION: &str = "muster_session";
/// A random value set by the sign-in page; the sign-in forms' CSRF token derives from it.
pub const PRE_SESSION: &str = "muster_presession";
/// The form field that carries the CSRF token (htmx requests send the `X-CSRF-Token` header).
pub const CSRF_FIELD: &str = "_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token bound to cookie value `secret` for `purpose`.
pub fn csrf_token(purpose: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"muster console csrf\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Whether the request reached us over https: the console's setting says so, or a trusted
/// proxy forwarded it with `X-Forwarded-Proto: https`.
pub fn is_https(headers: &HeaderMap, peer: Option<SocketAddr>, state: &AppState, options: &ConsoleOptions) -> bool {
    if options.secure_cookies {
        return true;
    }
    let trusted = peer.is_some_and(|p| state.trusted_proxies.contains(&p.ip()));
    trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            })
}

/// Whether cookies set in answer to `parts` get `Secure`.
pub fn secure(parts: &Parts, state: &AppState) -> bool {
    let Some(options) = parts.extensions.get::<Arc<ConsoleOptions>>() else {
        return false;
    };
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    is_https(&parts.headers, peer, state, options)
}

/// The signed-in person, from the session cookie.
pub struct Viewer {
    pub auth: Auth,
    /// The CSRF token for this session's forms.
    pub csrf: String,
    pub ctx: RequestCtx,
    /// Providers this person manages (empty for most people).
    pub managed_providers: usize,
    /// A message from the previous request (after a redirect), shown once.
    pub flash: Option<String>,
}

impl Viewer {
    pub fn caller(&self) -> Caller {
        Caller::User(self.auth.clone())
    }

    pub fn is_super_user(&self) -> bool {
        self.auth.is_super_user()
    }

    pub fn name(&self) -> String {
        self.auth
            .user
            .display_name
            .clone()
            .unwrap_or_else(|| self.auth.user.username.clone())
    }
}

/// Not signed in (or the session ended): pages redirect to the sign-in page and come back;
/// htmx requests are told to load that page instead of swapping it into a fragment.
pub struct SignInFirst {
    next: String,
    htmx: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let to = format!("/login?next={}", crate::urls::encode(&self.next));
        if self.htmx {
            return (StatusCode::UNAUTHORIZED, [("hx-redirect", to)]).into_response();
        }
        Redirect::to(&to).into_response()
    }
}

/// Only same-site paths may be returned to after sign-in (no `//host` or `/\host`).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") && !n.contains(['\r', '\n']) => {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let htmx = parts.headers.contains_key("hx-request");
        let next = if htmx {
            parts
                .headers
                .get("hx-current-url")
                .and_then(|v| v.to_str().ok())
                .and_then(|u| {
                    u.find("://")
                        .and_then(|i| u[i + 3..].find('/').map(|j| u[i + 3 + j..].to_owned()))
                })
                .unwrap_or_else(|| "/".to_owned())
        } else {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned())
        };
        let refuse = || SignInFirst {
            next: next.clone(),
            htmx,
        };
        let cookies = Cookies::of(&parts.headers);
        let Some(token) = cookies.get(SESSION) else {
            return Err(refuse());
        };
        let auth = state.directory.authenticate(token).await.map_err(|_| refuse())?;
        let ctx = match Ctx::from_request_parts(parts, state).await {
            Ok(Ctx(ctx)) => ctx,
            Err(_) => RequestCtx::default(),
        };
        // Super-users see every provider anyway; others see the menu of what they manage.
        let managed_providers = if auth.is_super_user() {
            0
        } else {
            state
                .offerings
                .list_providers(&Caller::User(auth.clone()))
                .await
                .map(|p| p.len())
                .unwrap_or(0)
        };
        Ok(Viewer {
            csrf: csrf_token("session", token),
            ctx: auth.ctx(ctx),
            auth,
            managed_providers,
            flash: cookies.get(cookies::FLASH).map(cookies::decode_flash),
        })
    }
}

/// The refusal of a state-changing request without a valid CSRF token. Nothing was done.
fn csrf_refused() -> Response {
    let body = crate::error_page::plain_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form did not carry a valid security token (it may come from another site, or from \
         a page opened before you signed in again). Nothing was changed. Reload the page and try again.",
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

/// Refuses every state-changing request that does not carry the CSRF token of the caller's
/// session (or, on the sign-in pages, of the pre-session cookie), before any handler runs.
pub async fn csrf_guard(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    // Browsers say where a request comes from; a cross-site one is refused outright.
    if req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return csrf_refused();
    }
    let cookies = Cookies::of(req.headers());
    // The pages for people who are not signed in (sign-in, password reset, invitation, sign-up) carry
    // the pre-session cookie's token.
    let path = req.uri().path();
    let anonymous = ["/login", "/password-reset", "/invitation", "/signup"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let expected = if anonymous {
        cookies.get(PRE_SESSION).map(|c| csrf_token("presession", c))
    } else {
        cookies.get(SESSION).map(|c| csrf_token("session", c))
    };
    let Some(expected) = expected else {
        return csrf_refused();
    };
    let from_header = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (req, submitted) = match from_header {
        Some(t) => (req, Some(t)),
        None => {
            let is_form = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !is_form {
                return csrf_refused();
            }
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, crate::MAX_FORM_BYTES).await else {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the form is larger than this server accepts",
                )
                    .into_response();
            };
            let token = form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.into_owned());
            (Request::from_parts(parts, axum::body::Body::from(bytes)), token)
        }
    };
    match submitted {
        Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => next.run(req).await,
        _ => csrf_refused(),
    }
}

/// Whether cookies set by this answer get `Secure` (see [`is_https`]).
pub struct SecureCookies(pub bool);

impl FromRequestParts<AppState> for SecureCookies {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(SecureCookies(secure(parts, state)))
    }
}

/// The console's settings.
pub struct Options(pub Arc<ConsoleOptions>);

impl<S: Send + Sync> FromRequestParts<S> for Options {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Options(
            parts
                .extensions
                .get::<Arc<ConsoleOptions>>()
                .cloned()
                .unwrap_or_default(),
        ))
    }
}
