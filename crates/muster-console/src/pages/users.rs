//! Users: search with every filter the API has, paging and CSV; create with every
//! `create_user` field; a user's page with every super-user action, their subscriptions,
//! offering accounts and audit trail; bulk approve/reject/lock/unlock with an outcome per row.

use crate::auth::{SecureCookies, Viewer};
use crate::layout::{Layout, render};
use crate::lists::{self, Pager, SortLink};
use crate::pages::{PageResult, badge_class, done, when};
use crate::urls::{FormData, Params, Query};
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use muster_core::directory::create::CreateUserInput;
use muster_core::directory::{ApprovalStatus, SignUpStatus, UserView};
use muster_core::error::DomainError;
use muster_core::ids::UserId;
use muster_directory::{SearchInput, UserTarget};
use muster_offerings::{AccountFilter, OfferingUserView};
use muster_server::AppState;
use muster_store::{AuditQuery, AuditRecord, SubscriptionQuery, UserCursor, UserOrder};
use serde_json::Value;

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    params: Params,
    users: Vec<UserView>,
    pager: Pager,
    sort_username: SortLink,
    sort_signup: SortLink,
}

impl UsersPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
    fn sel(&self, key: &str, value: &str) -> bool {
        self.params.get(key) == Some(value)
    }
    fn val(&self, key: &str) -> String {
        self.params.get(key).unwrap_or("").to_owned()
    }
}

fn search_input(p: &Params, page: i64, page_size: i64) -> Result<SearchInput, DomainError> {
    let bad =
        |f: &str| DomainError::invalid_field(f, muster_core::error::codes::INVALID_INPUT, format!("{f} is not valid"));
    Ok(SearchInput {
        username: p.get("username").map(str::to_owned),
        email: p.get("email").map(str::to_owned),
        name: p.get("name").map(str::to_owned),
        approval_status: p
            .get("approval_status")
            .map(|v| ApprovalStatus::parse(v).ok_or_else(|| bad("approval_status")))
            .transpose()?,
        sign_up_status: p
            .get("sign_up_status")
            .map(|v| SignUpStatus::parse(v).ok_or_else(|| bad("sign_up_status")))
            .transpose()?,
        is_locked: match p.get("is_locked") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(bad("is_locked")),
            None => None,
        },
        order: match p.sort() {
            Some(("sign_up_time", false)) => UserOrder::SignUpTime,
            Some(("sign_up_time", true)) => UserOrder::SignUpTimeDesc,
            _ => UserOrder::Username,
        },
        page,
        page_size,
    })
}

/// `GET /users`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    let input = search_input(&params, params.page(), params.page_size())?;
    let page = state.directory.search_users(&viewer.auth, input).await?;
    let pager = Pager::new(&params, "/users", "/users.csv", page.total, page.result.len());
    Ok(render(&UsersPage {
        layout: Layout::new(&viewer, "Users", "users"),
        sort_username: SortLink::new(&params, "/users", "username", "Username"),
        sort_signup: SortLink::new(&params, "/users", "sign_up_time", "Signed up"),
        users: page.result,
        pager,
        params,
    }))
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// `GET /users.csv`: every user matching the filter.
pub async fn csv(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    search_input(&params, 1, 1)?;
    let auth = viewer.auth.clone();
    Ok(lists::csv_by_key(
        "users.csv",
        &[
            "user_id",
            "username",
            "display_name",
            "first_name",
            "last_name",
            "email",
            "approval_status",
            "is_locked",
            "sign_up_status",
            "is_totp_enabled",
            "sign_up_time",
        ],
        move |after: Option<UserCursor>| {
            let (state, auth, params) = (state.clone(), auth.clone(), params.clone());
            async move {
                let (users, next) = state
                    .directory
                    .export_users(&auth, search_input(&params, 1, 1)?, after, lists::EXPORT_PAGE)
                    .await?;
                let rows = users
                    .into_iter()
                    .map(|u| {
                        let a = u.admin.as_ref();
                        vec![
                            u.user_id.to_string(),
                            u.username.clone(),
                            opt(&u.display_name),
                            opt(&u.first_name),
                            opt(&u.last_name),
                            opt(&u.email),
                            a.map(|a| a.approval_status.as_str().to_owned()).unwrap_or_default(),
                            a.map(|a| a.is_locked.to_string()).unwrap_or_default(),
                            a.map(|a| a.sign_up_status.as_str().to_owned()).unwrap_or_default(),
                            u.is_totp_enabled.to_string(),
                            a.map(|a| when(&a.sign_up_time)).unwrap_or_default(),
                        ]
                    })
                    .collect();
                Ok((rows, next))
            }
        },
    )
    .await?)
}

// --- create ----------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "user_new.html")]
struct NewUserPage {
    layout: Layout,
    form: Params,
    error: Option<String>,
    /// Field name → message.
    field_errors: Vec<(String, String)>,
}

impl NewUserPage {
    fn val(&self, key: &str) -> String {
        self.form.raw(key).unwrap_or("").to_owned()
    }
    fn checked(&self, key: &str) -> bool {
        self.form.get(key).is_some()
    }
    fn sel(&self, key: &str, value: &str) -> bool {
        self.form.get(key) == Some(value)
    }
    fn err(&self, key: &str) -> Option<String> {
        self.field_errors.iter().find(|(f, _)| f == key).map(|(_, m)| m.clone())
    }
}

/// `GET /users/new`.
pub async fn new_form(viewer: Viewer) -> PageResult {
    viewer.auth.require_super_user()?;
    Ok(render(&NewUserPage {
        layout: Layout::new(&viewer, "New user", "users"),
        form: Params::default(),
        error: None,
        field_errors: Vec::new(),
    }))
}

fn non_empty(p: &Params, key: &str) -> Option<String> {
    p.raw(key).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// `POST /users/new`: every field of `create_user`; an error keeps what was typed.
pub async fn create(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    FormData(form): FormData,
) -> PageResult {
    let input = CreateUserInput {
        username: non_empty(&form, "username"),
        password: non_empty(&form, "password"),
        password_must_change: Some(form.get("password_must_change").is_some()),
        display_name: non_empty(&form, "display_name"),
        first_name: non_empty(&form, "first_name"),
        middle_name: non_empty(&form, "middle_name"),
        last_name: non_empty(&form, "last_name"),
        email: non_empty(&form, "email"),
        is_locked: Some(form.get("is_locked").is_some()),
        sign_up_status: form.get("sign_up_status").and_then(SignUpStatus::parse),
        is_totp_enabled: Some(form.get("is_totp_enabled").is_some()),
        totp_key: non_empty(&form, "totp_key"),
        totp_label: non_empty(&form, "totp_label"),
    };
    match state.directory.create_user(&viewer.ctx, &viewer.auth, input).await {
        Ok(user) => Ok(done(
            &format!("/users/{}", user.user_id),
            &format!("User {} was created.", user.username),
            secure,
        )),
        Err(e) if e.kind == muster_core::ErrorKind::Invalid || e.kind == muster_core::ErrorKind::Conflict => {
            let mut field_errors: Vec<(String, String)> =
                e.errors.iter().map(|f| (f.field.clone(), f.message.clone())).collect();
            if field_errors.is_empty() && e.code.starts_with("E001") {
                field_errors.push(("username".into(), e.message.clone()));
            }
            // Never send a password back into the page.
            let mut kept = form;
            kept.0.retain(|(k, _)| k != "password" && k != "totp_key");
            Ok(render(&NewUserPage {
                layout: Layout::new(&viewer, "New user", "users"),
                form: kept,
                error: Some(e.message),
                field_errors,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

// --- one user --------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    layout: Layout,
    user: UserView,
    subscriptions: Vec<Value>,
    accounts: Vec<OfferingUserView>,
    audit: Vec<AuditRecord>,
    is_self: bool,
}

impl UserPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
    fn badge(&self, s: &str) -> String {
        badge_class(s)
    }
    fn s(&self, v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

fn user_id(id: &str) -> Result<UserId, DomainError> {
    UserId::parse_any(id).ok_or_else(|| DomainError::not_found("user"))
}

/// `GET /users/{id}`.
pub async fn detail(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> PageResult {
    viewer.auth.require_super_user()?;
    let uid = user_id(&id)?;
    let user = state.directory.get_user(&viewer.auth, UserTarget::Id(uid)).await?;
    let subs = SubscriptionQuery {
        directory_user: Some(user.uuid),
        limit: 50,
        ..Default::default()
    };
    let (subscriptions, _) = state.subscriptions.list(&viewer.auth, &subs).await?;
    let filter = AccountFilter {
        user_uuid: Some(user.uuid),
        page: 1,
        page_size: 100,
        ..Default::default()
    };
    let (_, accounts) = state.offerings.list_accounts(&viewer.caller(), &filter).await?;
    let (_, audit) = state
        .directory
        .list_audit(
            &viewer.auth,
            AuditQuery {
                target: Some(user.user_id.to_string()),
                limit: 50,
                ..Default::default()
            },
        )
        .await?;
    Ok(render(&UserPage {
        layout: Layout::new(&viewer, format!("User {}", user.username), "users"),
        is_self: user.uuid == viewer.auth.user.uuid,
        user,
        subscriptions,
        accounts,
        audit,
    }))
}

/// What one action does to one user; the message on success.
async fn apply(
    state: &AppState,
    viewer: &Viewer,
    uid: UserId,
    action: &str,
    form: &Params,
) -> Result<String, DomainError> {
    let (ctx, auth) = (&viewer.ctx, &viewer.auth);
    let d = &state.directory;
    Ok(match action {
        "lock" => d.set_locked(ctx, auth, uid, true).await.map(|_| "locked")?.to_owned(),
        "unlock" => d
            .set_locked(ctx, auth, uid, false)
            .await
            .map(|_| "unlocked")?
            .to_owned(),
        "approve" => d
            .set_approval(ctx, auth, uid, true)
            .await
            .map(|_| "approved")?
            .to_owned(),
        "reject" => d
            .set_approval(ctx, auth, uid, false)
            .await
            .map(|_| "rejected")?
            .to_owned(),
        "end-sessions" => {
            let n = d.revoke_all(ctx, auth, UserTarget::Id(uid), false).await?;
            format!("{n} session(s) ended")
        }
        "password" => {
            let password = form.raw("new_password").unwrap_or("").to_owned();
            let must_change = Some(form.get("must_change").is_some());
            d.set_password(ctx, auth, uid, password, must_change, None).await?;
            "password set".to_owned()
        }
        "delete" => {
            d.delete_user(ctx, auth, uid).await?;
            "deleted".to_owned()
        }
        _ => return Err(DomainError::not_found("action")),
    })
}

/// `POST /users/{id}/{action}`: lock, unlock, approve, reject, password, end-sessions, delete.
pub async fn act(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path((id, action)): Path<(String, String)>,
    FormData(form): FormData,
) -> PageResult {
    let uid = user_id(&id)?;
    match apply(&state, &viewer, uid, &action, &form).await {
        Ok(msg) if action == "delete" => Ok(done("/users", &format!("The user was {msg}."), secure)),
        Ok(msg) => Ok(done(&format!("/users/{id}"), &format!("Done: {msg}."), secure)),
        Err(e) if e.kind == muster_core::ErrorKind::Invalid || e.kind == muster_core::ErrorKind::Conflict => Ok(done(
            &format!("/users/{id}"),
            &format!("Not done: {}", e.message),
            secure,
        )),
        Err(e) => Err(e.into()),
    }
}

// --- bulk ------------------------------------------------------------------------------------

/// One row of a bulk action's outcome.
pub struct Outcome {
    pub label: String,
    pub href: String,
    pub ok: bool,
    pub message: String,
}

#[derive(Template)]
#[template(path = "bulk_outcome.html")]
pub struct BulkPage {
    pub layout: Layout,
    pub heading: String,
    pub outcomes: Vec<Outcome>,
    pub back: String,
}

impl BulkPage {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok).count()
    }
}

/// `POST /users/bulk`: `action` applied to every `ids` row, each on its own; the page lists the
/// outcome of each.
pub async fn bulk(State(state): State<AppState>, viewer: Viewer, FormData(form): FormData) -> PageResult<Response> {
    let action = form.get("action").unwrap_or("").to_owned();
    if !["approve", "reject", "lock", "unlock"].contains(&action.as_str()) {
        return Err(DomainError::invalid_field(
            "action",
            muster_core::error::codes::INVALID_INPUT,
            "choose approve, reject, lock or unlock",
        )
        .into());
    }
    let mut outcomes = Vec::new();
    for id in form.all("ids").into_iter().take(1000) {
        let Ok(uid) = user_id(id) else { continue };
        let label = state
            .directory
            .get_user(&viewer.auth, UserTarget::Id(uid))
            .await
            .map(|u| u.username)
            .unwrap_or_else(|_| id.to_owned());
        let r = apply(&state, &viewer, uid, &action, &Params::default()).await;
        outcomes.push(Outcome {
            label,
            href: format!("/users/{id}"),
            ok: r.is_ok(),
            message: match r {
                Ok(m) => m,
                Err(e) => e.message,
            },
        });
    }
    let page = BulkPage {
        layout: Layout::new(&viewer, "Bulk action", "users"),
        heading: format!("{action}: {} user(s)", outcomes.len()),
        outcomes,
        back: form
            .get("back")
            .filter(|b| b.starts_with("/users"))
            .unwrap_or("/users")
            .to_owned(),
    };
    Ok(render(&page))
}
