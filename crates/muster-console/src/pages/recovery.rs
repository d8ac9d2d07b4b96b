//! Getting in without a password: asking for a reset link, setting a password from it,
//! accepting an invitation, and signing up. These pages are for people who are not signed in,
//! so their forms carry the pre-session CSRF token, like the sign-in page's. Each form is one
//! directory call (`request_password_reset`, `complete_password_reset`, `accept_invitation`,
//! `sign_up`, `confirm_sign_up`): the same rules, throttles and audit records as the API.

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
    /// Steps: `ask`, `asked`, `set` or `dead` (the link no longer works).
    form: FormState,
}

impl ResetPage {
    fn new(form: FormState) -> Self {
        Self {
            layout: Layout::anonymous("Reset your password"),
            form,
        }
    }
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    layout: Layout,
    /// Steps: `set` or `dead`.
    form: FormState,
}

impl InvitationPage {
    fn new(form: FormState) -> Self {
        Self {
            layout: Layout::anonymous("Welcome to muster"),
            form,
        }
    }
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    layout: Layout,
    /// Steps: `form`, `sent`, `off`, `confirm`, `confirmed`, `awaiting` or `dead`.
    form: FormState,
    username: String,
    email: String,
}

impl SignupPage {
    fn new(form: FormState) -> Self {
        Self {
            layout: Layout::anonymous("Sign up"),
            form,
            username: String::new(),
            email: String::new(),
        }
    }
}

/// What the form of every page here carries, and what the pages do alike with it. A handler
/// builds its page's form, makes its one directory call and says which step answers it.
struct FormState {
    /// The step the page shows; each page names its own, and `dead` is a link that no longer
    /// works.
    step: &'static str,
    /// The pre-session CSRF token the form posts back.
    csrf: String,
    /// The link's token, carried from the link to the form's post.
    token: String,
    /// What went wrong, shown above the form.
    error: Option<String>,
}

impl FormState {
    /// The form of a page shown by a GET, and the pre-session cookie to set with it (see
    /// [`answer`]) when the browser came without one.
    fn shown(headers: &HeaderMap, secure: bool, step: &'static str, token: String) -> (Self, Option<String>) {
        let (csrf, cookie) = presession(headers, secure);
        let form = Self {
            step,
            csrf,
            token,
            error: None,
        };
        (form, cookie)
    }

    /// The form of a page answering a post. The post passed the CSRF check, so the browser
    /// has its pre-session cookie and none is set.
    fn posted(headers: &HeaderMap, secure: bool, step: &'static str, token: String) -> Self {
        Self::shown(headers, secure, step, token).0
    }

    /// Whether the two password fields differ; if so the form says `what`, and nothing is
    /// asked of the directory.
    fn passwords_differ(&mut self, password: &str, again: &str, what: &str) -> bool {
        let differ = password != again;
        if differ {
            self.error = Some(what.to_owned());
        }
        differ
    }

    /// A refused call: a link that no longer works shows the page's `dead` step, without the
    /// spent token; anything else shows the form again with what went wrong.
    fn refused(&mut self, e: &DomainError) {
        if e.code == codes::LINK_INVALID {
            self.step = "dead";
            self.token.clear();
        } else {
            self.error = Some(message(e));
        }
    }
}

/// A page shown by a GET, with the pre-session `cookie` when there is one to set.
fn answer(page: &impl Template, cookie: Option<String>) -> Response {
    with_cookies(render(page), cookie.as_slice())
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
    let token = q.token.unwrap_or_default();
    let step = if token.is_empty() { "ask" } else { "set" };
    let (form, cookie) = FormState::shown(&headers, secure, step, token);
    answer(&ResetPage::new(form), cookie)
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
    let mut p = ResetPage::new(FormState::posted(&headers, secure, "asked", String::new()));
    let who = f.who.trim().to_owned();
    // An address has an @; so may a username, which is then looked up as an address: the
    // answer is the same either way.
    let target = if who.contains('@') {
        ResetFor::Email(who)
    } else {
        ResetFor::Username(who)
    };
    if let Err(e) = state.directory.request_password_reset(&ctx, target).await {
        p.form.step = "ask";
        p.form.error = Some(message(&e));
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
    let mut p = ResetPage::new(FormState::posted(&headers, secure, "set", f.token.clone()));
    if p.form
        .passwords_differ(&f.new_password, &f.new_password_again, "The two new passwords differ.")
    {
        return render(&p);
    }
    let code = f.totp_code.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    match state
        .directory
        .complete_password_reset(&ctx, &f.token, f.new_password, code)
        .await
    {
        Ok(()) => Redirect::to("/login?password_reset=1").into_response(),
        Err(e) => {
            p.form.refused(&e);
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
    let token = q.token.unwrap_or_default();
    let step = if token.is_empty() { "dead" } else { "set" };
    let (form, cookie) = FormState::shown(&headers, secure, step, token);
    answer(&InvitationPage::new(form), cookie)
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
    let mut p = InvitationPage::new(FormState::posted(&headers, secure, "set", f.token.clone()));
    if p.form
        .passwords_differ(&f.password, &f.password_again, "The two passwords differ.")
    {
        return render(&p);
    }
    match state.directory.accept_invitation(&ctx, &f.token, f.password).await {
        Ok(outcome) => with_cookies(
            Redirect::to("/me").into_response(),
            &[cookies::set(SESSION, &outcome.token, "/", None, secure)],
        ),
        Err(e) => {
            p.form.refused(&e);
            render(&p)
        }
    }
}

/// `GET /signup`: the sign-up form (when sign-up is on).
pub async fn signup_form(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
) -> Response {
    let on = state.directory.mail_config().signup != muster_directory::SignupMode::Off;
    let (form, cookie) = FormState::shown(&headers, secure, if on { "form" } else { "off" }, String::new());
    answer(&SignupPage::new(form), cookie)
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
    let mut p = SignupPage::new(FormState::posted(&headers, secure, "form", String::new()));
    p.username = f.username.clone();
    p.email = f.email.clone();
    if p.form
        .passwords_differ(&f.password, &f.password_again, "The two passwords differ.")
    {
        return render(&p);
    }
    match state.directory.sign_up(&ctx, f.username, f.email, f.password).await {
        Ok(()) => p.form.step = "sent",
        Err(e) if e.kind == ErrorKind::Forbidden => p.form.step = "off",
        Err(e) => {
            p.form.error = Some(match e.errors.first() {
                Some(field) => format!("{}: {}", field.field, field.message),
                None => message(&e),
            });
        }
    }
    render(&p)
}

/// `GET /signup/confirm?token=`: a button to confirm (a link opened by a mail scanner must not
/// confirm by itself).
pub async fn confirm_page(
    SecureCookies(secure): SecureCookies,
    headers: HeaderMap,
    Query(q): Query<TokenParam>,
) -> Response {
    let token = q.token.unwrap_or_default();
    let step = if token.is_empty() { "dead" } else { "confirm" };
    let (form, cookie) = FormState::shown(&headers, secure, step, token);
    answer(&SignupPage::new(form), cookie)
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
    let mut p = SignupPage::new(FormState::posted(&headers, secure, "confirmed", String::new()));
    match state.directory.confirm_sign_up(&ctx, &f.token).await {
        Ok(c) if c.awaiting_approval => p.form.step = "awaiting",
        Ok(_) => {}
        Err(e) => {
            // The confirmation button again, unless the link is dead.
            p.form.step = "confirm";
            p.form.token = f.token;
            p.form.refused(&e);
        }
    }
    render(&p)
}
