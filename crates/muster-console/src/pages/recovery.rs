//! Getting in without a password: asking for a reset link, setting a password from it, and
//! accepting an invitation. These pages are for people who are not signed in, so their forms
//! carry the pre-session CSRF token, like the sign-in page's. Each form is one directory call
//! (`request_password_reset`, `complete_password_reset`, `accept_invitation`): the same rules,
//! throttles and audit records as the API.

use crate::auth::{self, PRE_SESSION, SESSION, SecureCookies};
use crate::cookies::{self, Cookies};
use crate::layout::{Layout, render};
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_directory::ResetFor;
use muster_server::AppState;
use muster_server::extract::Ctx;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "password_reset.html")]
struct ResetPage {
    layout: Layout,
    /// `ask`, `asked`, `set` or `dead` (the link no longer works).
    step: &'static str,
    csrf: String,
    token: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    layout: Layout,
    /// `set` or `dead`.
    step: &'static str,
    csrf: String,
    token: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

/// The pre-session secret (a fresh one when the browser has none) and its CSRF token.
fn presession(headers: &HeaderMap, secure: bool) -> (String, Option<String>) {
    match Cookies::of(headers).get(PRE_SESSION) {
        Some(v) => (auth::csrf_token("presession", v), None),
        None => {
            let (secret, _) = muster_core::credentials::token::new_token("pre_");
            (
                auth::csrf_token("presession", &secret),
                Some(cookies::set(PRE_SESSION, &secret, "/", None, secure)),
            )
        }
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

/// What a refusal tells the person.
fn message(e: &DomainError) -> String {
    match (e.kind, e.code) {
        (ErrorKind::Throttled, _) => format!(
            "Too many requests. Try again in {} seconds.",
            e.retry_after.unwrap_or(1)
        ),
        (_, codes::TOTP_MISSING) => "This account uses a one-time code: enter the current one.".into(),
        (_, codes::NOT_ALLOWED) => "That code is not right (or was used already), or this account may not \
                                    set a password now."
            .into(),
        (ErrorKind::Internal, _) => "muster could not do that; the error is in its log.".into(),
        _ => e.message.clone(),
    }
}

/// `GET /password-reset`: the form to ask for a link, or, with `?token=`, to set a password.
pub async fn reset_page(
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
    Query(q): Query<TokenParam>,
) -> Response {
    let (csrf, set) = presession(&headers, secure);
    let token = q.token.unwrap_or_default();
    let p = ResetPage {
        layout: Layout::anonymous("Reset your password"),
        step: if token.is_empty() { "ask" } else { "set" },
        csrf,
        token,
        error: None,
    };
    with_cookies(render(&p), &set.into_iter().collect::<Vec<_>>())
}

#[derive(Deserialize)]
pub struct AskForm {
    who: String,
}

/// `POST /password-reset`: asks for a link; the answer is the same whoever is named.
pub async fn ask(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<AskForm>,
) -> Response {
    let (csrf, _) = presession(&headers, secure);
    let who = f.who.trim().to_owned();
    // An address has an @; so may a username, which is then looked up as an address: the
    // answer is the same either way.
    let target = if who.contains('@') {
        ResetFor::Email(who)
    } else {
        ResetFor::Username(who)
    };
    let mut p = ResetPage {
        layout: Layout::anonymous("Reset your password"),
        step: "asked",
        csrf,
        token: String::new(),
        error: None,
    };
    if let Err(e) = state.directory.request_password_reset(&ctx, target).await {
        p.step = "ask";
        p.error = Some(message(&e));
    }
    render(&p)
}

#[derive(Deserialize)]
pub struct SetForm {
    token: String,
    new_password: String,
    new_password_again: String,
    totp_code: Option<String>,
}

/// `POST /password-reset/complete`: sets the password from the link, then on to sign in.
pub async fn complete(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<SetForm>,
) -> Response {
    let (csrf, _) = presession(&headers, secure);
    let mut p = ResetPage {
        layout: Layout::anonymous("Reset your password"),
        step: "set",
        csrf,
        token: f.token.clone(),
        error: None,
    };
    if f.new_password != f.new_password_again {
        p.error = Some("The two new passwords differ.".into());
        return render(&p);
    }
    let code = f.totp_code.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    match state
        .directory
        .complete_password_reset(&ctx, &f.token, f.new_password, code)
        .await
    {
        Ok(()) => Redirect::to("/login?password_reset=1").into_response(),
        Err(e) if e.code == codes::LINK_INVALID => {
            p.step = "dead";
            p.token.clear();
            render(&p)
        }
        Err(e) => {
            p.error = Some(message(&e));
            render(&p)
        }
    }
}

/// `GET /invitation?token=`: the form to choose a first password.
pub async fn invitation_page(
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
    Query(q): Query<TokenParam>,
) -> Response {
    let (csrf, set) = presession(&headers, secure);
    let token = q.token.unwrap_or_default();
    let p = InvitationPage {
        layout: Layout::anonymous("Welcome to muster"),
        step: if token.is_empty() { "dead" } else { "set" },
        csrf,
        token,
        error: None,
    };
    with_cookies(render(&p), &set.into_iter().collect::<Vec<_>>())
}

#[derive(Deserialize)]
pub struct AcceptForm {
    token: String,
    password: String,
    password_again: String,
}

/// `POST /invitation`: sets the first password and signs the person in.
pub async fn accept(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<AcceptForm>,
) -> Response {
    let (csrf, _) = presession(&headers, secure);
    let mut p = InvitationPage {
        layout: Layout::anonymous("Welcome to muster"),
        step: "set",
        csrf,
        token: f.token.clone(),
        error: None,
    };
    if f.password != f.password_again {
        p.error = Some("The two passwords differ.".into());
        return render(&p);
    }
    match state.directory.accept_invitation(&ctx, &f.token, f.password).await {
        Ok(outcome) => with_cookies(
            Redirect::to("/me").into_response(),
            &[cookies::set(SESSION, &outcome.token, "/", None, secure)],
        ),
        Err(e) if e.code == codes::LINK_INVALID => {
            p.step = "dead";
            p.token.clear();
            render(&p)
        }
        Err(e) => {
            p.error = Some(message(&e));
            render(&p)
        }
    }
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    layout: Layout,
    /// `form`, `sent`, `off`, `confirm`, `confirmed`, `awaiting` or `dead`.
    step: &'static str,
    csrf: String,
    token: String,
    username: String,
    email: String,
    error: Option<String>,
}

fn signup_page(step: &'static str, csrf: String) -> SignupPage {
    SignupPage {
        layout: Layout::anonymous("Sign up"),
        step,
        csrf,
        token: String::new(),
        username: String::new(),
        email: String::new(),
        error: None,
    }
}

/// `GET /signup`: the sign-up form (when sign-up is on).
pub async fn signup_form(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
) -> Response {
    let (csrf, set) = presession(&headers, secure);
    let on = state.directory.mail_config().signup != muster_directory::SignupMode::Off;
    let p = signup_page(if on { "form" } else { "off" }, csrf);
    with_cookies(render(&p), &set.into_iter().collect::<Vec<_>>())
}

#[derive(Deserialize)]
pub struct SignupForm {
    username: String,
    email: String,
    password: String,
    password_again: String,
}

/// `POST /signup`: signs up; the answer is the same whether or not the name or address is taken.
pub async fn signup(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<SignupForm>,
) -> Response {
    let (csrf, _) = presession(&headers, secure);
    let mut p = signup_page("form", csrf);
    p.username = f.username.clone();
    p.email = f.email.clone();
    if f.password != f.password_again {
        p.error = Some("The two passwords differ.".into());
        return render(&p);
    }
    match state.directory.sign_up(&ctx, f.username, f.email, f.password).await {
        Ok(()) => {
            p.step = "sent";
            render(&p)
        }
        Err(e) if e.kind == ErrorKind::Forbidden => {
            p.step = "off";
            render(&p)
        }
        Err(e) => {
            p.error = Some(match e.errors.first() {
                Some(field) => format!("{}: {}", field.field, field.message),
                None => message(&e),
            });
            render(&p)
        }
    }
}

/// `GET /signup/confirm?token=`: a button to confirm (a link opened by a mail scanner must not
/// confirm by itself).
pub async fn confirm_page(
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
    Query(q): Query<TokenParam>,
) -> Response {
    let (csrf, set) = presession(&headers, secure);
    let token = q.token.unwrap_or_default();
    let mut p = signup_page(if token.is_empty() { "dead" } else { "confirm" }, csrf);
    p.token = token;
    with_cookies(render(&p), &set.into_iter().collect::<Vec<_>>())
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    token: String,
}

/// `POST /signup/confirm`.
pub async fn confirm(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let (csrf, _) = presession(&headers, secure);
    let mut p = signup_page("confirmed", csrf);
    match state.directory.confirm_sign_up(&ctx, &f.token).await {
        Ok(c) if c.awaiting_approval => p.step = "awaiting",
        Ok(_) => {}
        Err(e) if e.code == codes::LINK_INVALID => p.step = "dead",
        Err(e) => {
            p.step = "confirm";
            p.token = f.token;
            p.error = Some(message(&e));
        }
    }
    render(&p)
}
