//! Me: everyone's own page. Profile, password, TOTP enrolment (QR code drawn on the server),
//! own sessions, and the person's offering accounts with what each hosting site asks of them.

use crate::auth::{SecureCookies, Viewer};
use crate::layout::{Layout, render};
use crate::pages::{PageResult, badge_class, done, when};
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use muster_core::directory::UserView;
use muster_directory::{SessionView, UserTarget};
use muster_offerings::{AccountFilter, OfferingUserView};
use muster_server::AppState;
use serde::Deserialize;

/// A TOTP key being enrolled: shown once, until confirmed.
pub struct Enrolment {
    pub key: String,
    pub qr_svg: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    layout: Layout,
    user: UserView,
    sessions: Vec<SessionView>,
    accounts: Vec<OfferingUserView>,
    accounts_total: i64,
    enrolment: Option<Enrolment>,
    password_error: Option<String>,
    totp_error: Option<String>,
}

impl MePage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }

    fn badge(&self, s: &str) -> String {
        badge_class(s)
    }
}

/// The otpauth URI as a QR code, in SVG (no image request, no script).
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(220, 220)
            .quiet_zone(true)
            .build(),
    )
}

async fn me_page(state: &AppState, viewer: &Viewer) -> PageResult<MePage> {
    let user = state.directory.get_user(&viewer.auth, UserTarget::Me).await?;
    let sessions = state.directory.list_sessions(&viewer.auth, UserTarget::Me).await?;
    let filter = AccountFilter {
        user_uuid: Some(viewer.auth.user.uuid),
        page: 1,
        page_size: 100,
        ..Default::default()
    };
    let (accounts_total, accounts) = state.offerings.list_accounts(&viewer.caller(), &filter).await?;
    Ok(MePage {
        layout: Layout::new(viewer, "Me", "me"),
        user,
        sessions,
        accounts,
        accounts_total,
        enrolment: None,
        password_error: None,
        totp_error: None,
    })
}

/// `GET /me`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    Ok(render(&me_page(&state, &viewer).await?))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    old_password: String,
    new_password: String,
    new_password_again: String,
}

/// `POST /me/password`.
pub async fn change_password(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Form(f): Form<PasswordForm>,
) -> PageResult {
    let result = if f.new_password != f.new_password_again {
        Err("The two new passwords differ.".to_owned())
    } else {
        state
            .directory
            .change_own_password(&viewer.ctx, &viewer.auth, f.old_password, f.new_password)
            .await
            .map_err(|e| match e.code {
                muster_core::error::codes::NOT_ALLOWED => "The current password is not right.".to_owned(),
                _ => e.message,
            })
    };
    match result {
        Ok(()) => Ok(done(
            "/me",
            "Your password was changed. Your other sessions were ended.",
            secure,
        )),
        Err(message) => {
            let mut p = me_page(&state, &viewer).await?;
            p.password_error = Some(message);
            Ok(render(&p))
        }
    }
}

#[derive(Deserialize)]
pub struct BeginTotpForm {
    password: String,
    totp_code: Option<String>,
}

/// `POST /me/totp`: starts enrolling a new key; the page shows it once, as a QR code.
pub async fn begin_totp(State(state): State<AppState>, viewer: Viewer, Form(f): Form<BeginTotpForm>) -> PageResult {
    let code = f.totp_code.filter(|c| !c.trim().is_empty());
    let result = state
        .directory
        .begin_totp_enrollment(&viewer.ctx, &viewer.auth, f.password, code)
        .await;
    let mut p = me_page(&state, &viewer).await?;
    match result {
        Ok(e) => {
            p.enrolment = Some(Enrolment {
                qr_svg: qr_svg(&e.otpauth_uri).unwrap_or_default(),
                key: e.totp_key,
                expires: when(&e.expires_at),
            });
            Ok(render(&p))
        }
        Err(e) => {
            p.totp_error = Some(match e.code {
                muster_core::error::codes::NOT_ALLOWED => "The password (or current code) is not right.".into(),
                _ => e.message,
            });
            Ok(render(&p))
        }
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    totp_code: String,
}

/// `POST /me/totp/confirm`: the first code from the new key turns it on.
pub async fn confirm_totp(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Form(f): Form<CodeForm>,
) -> PageResult {
    match state
        .directory
        .confirm_totp_enrollment(&viewer.ctx, &viewer.auth, f.totp_code.trim().to_owned())
        .await
    {
        Ok(_) => Ok(done(
            "/me",
            "Two-step sign-in is on: from now on you sign in with a code.",
            secure,
        )),
        Err(e) => {
            let mut p = me_page(&state, &viewer).await?;
            p.totp_error = Some(match e.code {
                muster_core::error::codes::NOT_ALLOWED => {
                    "That code is not right. Start again and scan the new code.".into()
                }
                _ => e.message,
            });
            Ok(render(&p))
        }
    }
}

#[derive(Deserialize)]
pub struct DisableTotpForm {
    password: String,
    totp_code: String,
}

/// `POST /me/totp/disable`.
pub async fn disable_totp(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Form(f): Form<DisableTotpForm>,
) -> PageResult {
    match state
        .directory
        .disable_totp(&viewer.ctx, &viewer.auth, f.password, f.totp_code.trim().to_owned())
        .await
    {
        Ok(_) => Ok(done("/me", "Two-step sign-in is off.", secure)),
        Err(e) => {
            let mut p = me_page(&state, &viewer).await?;
            p.totp_error = Some(match e.code {
                muster_core::error::codes::NOT_ALLOWED => "The password or code is not right.".into(),
                _ => e.message,
            });
            Ok(render(&p))
        }
    }
}

/// `POST /me/sessions/{id}/end`.
pub async fn end_session(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| muster_core::DomainError::not_found("session"))?;
    state.directory.revoke_session(&viewer.ctx, &viewer.auth, id).await?;
    if id == viewer.auth.session_id {
        return Ok(done("/login", "Your session was ended.", secure));
    }
    Ok(done("/me#sessions", "The session was ended.", secure))
}

/// `POST /me/sessions/end-others`.
pub async fn end_other_sessions(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
) -> PageResult<Response> {
    let n = state
        .directory
        .revoke_all(&viewer.ctx, &viewer.auth, UserTarget::Me, true)
        .await?;
    Ok(done("/me#sessions", &format!("{n} other session(s) ended."), secure))
}
