//! Extractors: strict JSON bodies, the authenticated caller, the request context.

use crate::AppState;
use crate::error::{ApiError, problem};
use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::audit::RequestCtx;
use muster_core::error::{DomainError, FieldError, codes};
use muster_directory::{Auth, Caller};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// The request id: `X-Request-Id` if the client sent a sane one, else generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A JSON body that must parse into `T` exactly: wrong types, unknown fields, malformed JSON,
/// a missing or wrong content type and oversize bodies are all refused with a problem document.
pub struct ApiJson<T>(pub T);

/// Turns serde's message into (field, safe message). serde echoes the offending value in
/// "invalid type: string \"hunter2\", expected …", and that value may be a secret the caller
/// mistyped: it is cut out. The field comes from the path prefix ("is_locked: …") or from
/// the backticks of "unknown field `x`" / "missing field `x`".
fn describe(message: &str) -> (Option<String>, String) {
    let (path, inner) = match message.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') && p != "." => (Some(p.to_owned()), rest),
        _ => (None, message),
    };
    let mut inner = inner.to_owned();
    for marker in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let (Some(start), Some(end)) = (inner.find(marker), inner.rfind(", expected"))
            && start < end
        {
            inner = format!(
                "{}{}{}",
                &inner[..start],
                marker.trim_end_matches([':', ' ']),
                &inner[end..]
            );
        }
    }
    // "unknown variant `hunter2`, expected one of …": the variant is what the caller sent.
    if let Some(rest) = inner.strip_prefix("unknown variant `")
        && let Some(end) = rest.find('`')
    {
        inner = format!("unknown variant{}", &rest[end + 1..]);
    }
    let backticked = || {
        let start = inner.find('`')? + 1;
        let end = start + inner[start..].find('`')?;
        Some(inner[start..end].to_owned())
    };
    let field = if inner.starts_with("unknown field") || inner.starts_with("missing field") {
        // serde_path_to_error already puts an unknown field at the end of the path.
        backticked().map(|f| match &path {
            Some(p) if p == &f || p.ends_with(&format!(".{f}")) => p.clone(),
            Some(p) => format!("{p}.{f}"),
            None => f,
        })
    } else {
        path.clone()
    };
    let text = match &path {
        Some(p) => format!("{p}: {inner}"),
        None => inner,
    };
    (field, text)
}

pub fn json_rejection(rejection: JsonRejection) -> Response {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's messages name fields and types, never values.
            let raw = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
            let (field, message) = describe(&raw);
            let code = if message.contains("unknown field") {
                "unknown_field"
            } else if message.contains("missing field") {
                codes::MISSING_INPUT
            } else {
                codes::INVALID_INPUT
            };
            let errors = field
                .map(|field| {
                    vec![FieldError {
                        field,
                        code: code.to_owned(),
                        message: message.clone(),
                    }]
                })
                .unwrap_or_default();
            problem(StatusCode::BAD_REQUEST, code, message, errors)
        }
        JsonRejection::JsonSyntaxError(_) => problem(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body is not valid JSON",
            vec![],
        ),
        JsonRejection::MissingJsonContentType(_) => problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
            vec![],
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body is larger than this server accepts",
            vec![],
        ),
        other => problem(other.status(), "bad_body", other.body_text(), vec![]),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Query parameters that must parse into `T`; refusals are problem documents.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let code = if text.contains("unknown field") {
                    "unknown_field"
                } else {
                    codes::INVALID_INPUT
                };
                Err(problem(StatusCode::BAD_REQUEST, code, text, vec![]))
            }
            Err(other) => Err(problem(other.status(), codes::INVALID_INPUT, other.body_text(), vec![])),
        }
    }
}

/// Path parameters that must parse into `T`. axum answers a refusal (a segment that is not
/// UTF-8 once percent-decoded, say) in plain text; here it is a problem document like every
/// other error, and never echoes the segment.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> Response {
    let status = rejection.status();
    if status.is_server_error() {
        // A route and its extractor disagree: a bug, not the caller's doing.
        return ApiError(DomainError::internal(rejection.body_text())).into_response();
    }
    let (field, message) = match &rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            PathErrorKind::InvalidUtf8InPathParam { key } => (Some(key.clone()), format!("{key} is not valid UTF-8")),
            PathErrorKind::ParseErrorAtKey { key, .. } | PathErrorKind::DeserializeError { key, .. } => {
                (Some(key.clone()), format!("{key} is not valid"))
            }
            _ => (None, "a path parameter is not valid".to_owned()),
        },
        _ => (None, "a path parameter is not valid".to_owned()),
    };
    let errors = field
        .map(|field| {
            vec![FieldError {
                field,
                code: codes::INVALID_INPUT.to_owned(),
                message: message.clone(),
            }]
        })
        .unwrap_or_default();
    problem(status, codes::INVALID_INPUT, message, errors)
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the nearest
/// untrusted address in `X-Forwarded-For`. Headers from untrusted peers are ignored, so a
/// client cannot spoof its address (Zato's allow-list could be bypassed that way).
fn client_addr(parts: &Parts, trusted: &[IpAddr]) -> Option<String> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())?;
    if !trusted.contains(&peer) {
        return Some(peer.to_string());
    }
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let chain: Vec<IpAddr> = forwarded.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    Some(
        chain
            .iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .copied()
            .unwrap_or(peer)
            .to_string(),
    )
}

/// Where the request came from; audit records are built from it.
pub struct Ctx(pub RequestCtx);

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let cid = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Ctx(RequestCtx {
            cid,
            remote_addr: client_addr(parts, &state.trusted_proxies),
            current_app: None,
            user_agent,
        }))
    }
}

/// The bearer token, not yet checked: for handlers that authenticate and read in one round trip.
pub struct BearerToken(pub String);

fn bearer(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The refusal of a request to a session-only route that carries no session token: 403 when
/// it carries a valid provider API token instead (the token is fine; the route is not for it),
/// else 401.
async fn no_session_token(parts: &Parts, state: &AppState) -> Response {
    let e = match api_token(&parts.headers) {
        Some(key) => match state.directory.authenticate_api_token(key).await {
            Ok(_) => DomainError::forbidden(
                codes::SESSION_REQUIRED,
                "this route needs a person's session (Authorization: Bearer); provider API tokens reach \
                 the offering-account API and the event stream only",
            ),
            Err(e) => e,
        },
        None => DomainError::no_session(),
    };
    ApiError(e).into_response()
}

impl FromRequestParts<AppState> for BearerToken {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match bearer(parts) {
            Some(t) => Ok(BearerToken(t.to_owned())),
            None => Err(no_session_token(parts, state).await),
        }
    }
}

/// The caller, authenticated by `Authorization: Bearer <session token>`.
pub struct AuthUser(pub Auth);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Err(no_session_token(parts, state).await);
        };
        match state.directory.authenticate(token).await {
            Ok(auth) => Ok(AuthUser(auth)),
            Err(e) => Err(ApiError(e).into_response()),
        }
    }
}

/// `Authorization: Token <key>`: a provider API token, as Waldur's agents send it.
fn api_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Token ").or_else(|| v.strip_prefix("token ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The caller, authenticated by a session (`Bearer`) or a provider API token (`Token`). Only
/// the offering-account API and the event stream accept tokens; the directory stays behind
/// [`AuthUser`].
pub struct AnyCaller(pub Caller);

impl AnyCaller {
    /// Authenticates the credentials of `parts`. The key never appears in the error.
    pub async fn from_headers(headers: &axum::http::HeaderMap, state: &AppState) -> Result<Caller, DomainError> {
        if let Some(key) = api_token(headers) {
            return state.directory.authenticate_api_token(key).await.map(Caller::Provider);
        }
        let Some(token) = bearer_in(headers) else {
            return Err(DomainError::no_session());
        };
        state.directory.authenticate(token).await.map(Caller::User)
    }
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Self::from_headers(&parts.headers, state).await {
            Ok(c) => Ok(AnyCaller(c)),
            Err(e) => Err(ApiError(e).into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn names_fields_and_never_echoes_values() {
        let (f, m) = describe("unknown field `is_super_user`, expected one of `a` at line 1 column 20");
        assert_eq!(f.as_deref(), Some("is_super_user"));
        let (f, _) = describe("is_super_user: unknown field `is_super_user`, expected one of `a`");
        assert_eq!(f.as_deref(), Some("is_super_user"));
        assert!(m.starts_with("unknown field"));
        assert_eq!(
            describe("missing field `username` at line 1 column 2").0.as_deref(),
            Some("username")
        );
        let (f, m) = describe("password: invalid type: integer `123456789`, expected a string at line 1 column 9");
        assert_eq!(f.as_deref(), Some("password"));
        assert!(!m.contains("123456789"), "{m}");
        assert!(m.contains("expected a string"), "{m}");
        let (_, m) = describe("is_locked: invalid type: string \"x, expected SECRET\", expected a boolean");
        assert!(!m.contains("SECRET"), "{m}");
        let (_, m) = describe("is_locked: invalid type: string \"hunter2\", expected a boolean");
        assert!(!m.contains("hunter2"), "{m}");
        let (f, m) = describe("sign_up_status: unknown variant `hunter2`, expected `before_confirmation` or `final`");
        assert_eq!(f.as_deref(), Some("sign_up_status"));
        assert!(!m.contains("hunter2") && m.contains("expected"), "{m}");
    }
}
