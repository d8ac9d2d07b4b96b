//! Signing in and out, with every step of Zato's login: a TOTP code when the account has one,
//! a new password when the old one must be changed or has expired, and the warning that the
//! password expires soon.
//!
//! Each step is a real `Directory::login` call with everything gathered so far, so each is
//! throttled and audited like an API login. Between steps the browser keeps what was typed in
//! a short-lived cookie sealed with the server key (XChaCha20-Poly1305): it can neither read nor
//! change it, and it is sent only to `/login` and ends after five minutes.

use crate::auth::{self, PRE_SESSION, SESSION, SecureCookies, Viewer};
use crate::cookies::{self, Cookies};
use crate::layout::{Layout, render};
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_directory::LoginInput;
use muster_server::AppState;
use muster_server::extract::Ctx;
use serde::{Deserialize, Serialize};

/// The cookie holding what the earlier steps gathered.
const PENDING: &str = "muster_login";
/// How long a started sign-in may take to finish.
const PENDING_SECS: i64 = 300;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    /// `password`, `totp`, `new_password` or `warned`.
    step: &'static str,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
    notice: Option<String>,
    /// Why a new password is needed.
    reason: String,
    admin_username: String,
    warn_days: i64,
    /// Sign-up is on: the page links to it.
    signup: bool,
}

#[derive(Deserialize)]
pub struct NextParam {
    next: Option<String>,
    signed_out: Option<String>,
    password_reset: Option<String>,
}

/// What the earlier steps gathered.
#[derive(Serialize, Deserialize)]
struct Pending {
    u: String,
    p: String,
    t: Option<String>,
    /// Unix time after which it is void.
    exp: i64,
}

fn pre_session_secret(headers: &HeaderMap) -> (String, bool) {
    match Cookies::of(headers).get(PRE_SESSION) {
        Some(v) => (v.to_owned(), false),
        None => {
            let (token, _) = muster_core::credentials::token::new_token("pre_");
            (token, true)
        }
    }
}

fn login_page(
    state: &AppState,
    options: &crate::ConsoleOptions,
    step: &'static str,
    csrf: String,
    next: String,
) -> LoginPage {
    LoginPage {
        layout: Layout::anonymous("Sign in"),
        step,
        csrf,
        next,
        username: String::new(),
        error: None,
        notice: None,
        reason: String::new(),
        admin_username: options.admin_username.clone(),
        warn_days: state.directory.config().password_warn_days,
        signup: state.directory.mail_config().signup != muster_directory::SignupMode::Off,
    }
}

fn with_cookies(mut resp: Response, set: &[String]) -> Response {
    for c in set {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `GET /login`: the sign-in form (or straight on, when already signed in).
pub async fn page(
    State(state): State<AppState>,
    auth::Options(options): auth::Options,
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
    Query(q): Query<NextParam>,
) -> Response {
    let next = auth::safe_next(q.next.as_deref());
    if let Some(token) = Cookies::of(&headers).get(SESSION)
        && state.directory.authenticate(token).await.is_ok()
    {
        return Redirect::to(&next).into_response();
    }
    let (secret, fresh) = pre_session_secret(&headers);
    let mut p = login_page(
        &state,
        &options,
        "password",
        auth::csrf_token("presession", &secret),
        next,
    );
    if q.signed_out.is_some() {
        p.notice = Some("You are signed out.".into());
    }
    if q.password_reset.is_some() {
        p.notice = Some("Your password is set. Sign in with it.".into());
    }
    let mut set = Vec::new();
    if fresh {
        set.push(cookies::set(PRE_SESSION, &secret, "/", None, secure));
    }
    with_cookies(render(&p), &set)
}

#[derive(Deserialize)]
pub struct FirstStep {
    username: String,
    password: String,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LaterStep {
    totp_code: Option<String>,
    new_password: Option<String>,
    new_password_again: Option<String>,
    next: Option<String>,
}

/// `POST /login`: username and password.
pub async fn submit(
    State(state): State<AppState>,
    auth::Options(options): auth::Options,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<FirstStep>,
) -> Response {
    let next = auth::safe_next(f.next.as_deref());
    let pending = Pending {
        u: f.username,
        p: f.password,
        t: None,
        exp: time::OffsetDateTime::now_utc().unix_timestamp() + PENDING_SECS,
    };
    attempt(&state, &options, secure, &ctx, &headers, pending, None, next).await
}

/// `POST /login/step`: the TOTP code or the new password, with what the first step gathered.
pub async fn step(
    State(state): State<AppState>,
    auth::Options(options): auth::Options,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<LaterStep>,
) -> Response {
    let next = auth::safe_next(f.next.as_deref());
    let (secret, _) = pre_session_secret(&headers);
    let csrf = auth::csrf_token("presession", &secret);
    let opened = Cookies::of(&headers)
        .get(PENDING)
        .and_then(|sealed| state.directory.secrets().open(sealed).ok())
        .and_then(|json| serde_json::from_str::<Pending>(&json).ok())
        .filter(|p| p.exp > time::OffsetDateTime::now_utc().unix_timestamp());
    let Some(mut pending) = opened else {
        let mut p = login_page(&state, &options, "password", csrf, next);
        p.error = Some("That sign-in took too long. Please start again.".into());
        return render(&p);
    };
    if let Some(code) = f.totp_code.filter(|c| !c.trim().is_empty()) {
        pending.t = Some(code.trim().to_owned());
    }
    let new_password = match (f.new_password, f.new_password_again) {
        (Some(a), Some(b)) if a != b => {
            let mut p = login_page(&state, &options, "new_password", csrf, next);
            p.username = pending.u;
            p.reason = "Choose a new password.".into();
            p.error = Some("The two new passwords differ.".into());
            return render(&p);
        }
        (Some(a), _) if !a.is_empty() => Some(a),
        _ => None,
    };
    attempt(&state, &options, secure, &ctx, &headers, pending, new_password, next).await
}

/// One `Directory::login` with everything gathered; its answer decides the next step.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    state: &AppState,
    options: &crate::ConsoleOptions,
    secure: bool,
    ctx: &muster_core::audit::RequestCtx,
    headers: &HeaderMap,
    pending: Pending,
    new_password: Option<String>,
    next: String,
) -> Response {
    let (secret, _) = pre_session_secret(headers);
    let csrf = auth::csrf_token("presession", &secret);
    let input = LoginInput {
        username: pending.u.clone(),
        password: pending.p.clone(),
        totp_code: pending.t.clone(),
        current_app: None,
        new_password,
    };
    let had_new_password = input.new_password.is_some();
    let mut p = login_page(state, options, "password", csrf, next.clone());
    p.username = pending.u.clone();
    match state.directory.login(ctx, input).await {
        Ok(outcome) => {
            let session = cookies::set(SESSION, &outcome.token, "/", None, secure);
            let done = cookies::clear(PENDING, "/login", secure);
            if outcome.warnings.iter().any(|w| w == codes::PASSWORD_ABOUT_TO_EXPIRE) {
                p.step = "warned";
                return with_cookies(render(&p), &[session, done]);
            }
            with_cookies(Redirect::to(&next).into_response(), &[session, done])
        }
        Err(e) => {
            let keep = |p: &Pending| {
                let sealed = state
                    .directory
                    .secrets()
                    .seal(&serde_json::to_string(p).unwrap_or_default());
                cookies::set(PENDING, &sealed, "/login", Some(PENDING_SECS), secure)
            };
            let set = match e.code {
                codes::TOTP_MISSING => {
                    p.step = "totp";
                    vec![keep(&pending)]
                }
                codes::PASSWORD_MUST_CHANGE | codes::PASSWORD_EXPIRED => {
                    p.step = "new_password";
                    p.reason = if e.code == codes::PASSWORD_EXPIRED {
                        "Your password has expired. Choose a new one to sign in.".into()
                    } else {
                        "Your password must be changed before you continue.".into()
                    };
                    vec![keep(&pending)]
                }
                _ if had_new_password && e.kind == ErrorKind::Invalid => {
                    // The new password was refused by the policy: ask again, keep the rest.
                    p.step = "new_password";
                    p.reason = "Choose a new password.".into();
                    p.error = Some(e.message.clone());
                    vec![keep(&pending)]
                }
                codes::NOT_ALLOWED if pending.t.is_some() => {
                    p.step = "totp";
                    p.error = Some("That code is not right (or was used already). Enter the current one.".into());
                    let again = Pending { t: None, ..pending };
                    vec![keep(&again)]
                }
                _ => {
                    p.error = Some(message(&e));
                    vec![cookies::clear(PENDING, "/login", secure)]
                }
            };
            with_cookies(render(&p), &set)
        }
    }
}

/// What a refused sign-in tells the person (never which of username or password was wrong).
fn message(e: &DomainError) -> String {
    match (e.kind, e.code) {
        (_, codes::NOT_ALLOWED) => "The username or password is not right.".into(),
        (ErrorKind::Throttled, _) => format!(
            "Too many attempts. Try again in {} seconds.",
            e.retry_after.unwrap_or(1)
        ),
        (_, codes::LOCKED) => "This account is locked. Ask an administrator to unlock it.".into(),
        (_, codes::NOT_APPROVED) => "This account has not been approved yet.".into(),
        (_, codes::SIGN_UP_NOT_FINAL) => "This account's sign-up is not complete.".into(),
        (ErrorKind::Internal, _) => "muster could not sign you in; the error is in its log.".into(),
        _ => e.message.clone(),
    }
}

/// `POST /logout`: ends the session and forgets the cookie.
pub async fn logout(State(state): State<AppState>, SecureCookies(secure): SecureCookies, viewer: Viewer) -> Response {
    if let Err(e) = state.directory.logout(&viewer.ctx, &viewer.auth).await {
        tracing::warn!(code = e.code, "sign-out could not end the session");
    }
    with_cookies(
        Redirect::to("/login?signed_out=1").into_response(),
        &[cookies::clear(SESSION, "/", secure)],
    )
}
