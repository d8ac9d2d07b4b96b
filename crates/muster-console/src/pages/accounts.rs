//! Offering accounts, as a hosting site's staff work with them in Waldur's "Offering users"
//! list: Waldur's columns plus provider, runtime state, restriction and a comment marker;
//! every filter the API has, all ten states (several at once); row actions that offer only
//! what the lifecycle table allows from the row's state; bulk transitions with an outcome per
//! row; the account's history; rows changed by someone else highlighted live.
//!
//! A provider manager sees their providers' accounts, a super-user all: the offering service
//! decides, as it does for the API.

use crate::auth::{SecureCookies, Viewer};
use crate::layout::{Layout, render};
use crate::lists::{self, Pager, SortLink};
use crate::pages::users::{BulkPage, Outcome};
use crate::pages::{PageResult, badge_class, done, when};
use crate::urls::{FormData, Params, Query, encode};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::{self, AccountState, Action, CommentEffect, RuntimeState};
use muster_offerings::{
    AccountFilter, CommentsInput, HistoryView, OfferingUserView, OfferingView, ProviderView, TransitionInput,
    UsernameInput,
};
use muster_server::AppState;
use muster_store::AccountOrder;

/// A target state offered from a row, and the action that reaches it.
pub struct Move {
    pub action: &'static str,
    pub target: &'static str,
    /// The target is a pending state: the form asks for the instructions to the person.
    pub with_comment: bool,
}

/// The action that moves an account from `from` to `to`: `set_validation_complete` from a
/// pending state to OK (Waldur's UI does the same), otherwise the first in table order.
pub fn action_for(from: AccountState, to: AccountState) -> Option<Action> {
    let pending = matches!(
        from,
        AccountState::PendingAccountLinking | AccountState::PendingAdditionalValidation
    );
    if pending && to == AccountState::Ok && lifecycle::allowed(Action::SetValidationComplete, from) {
        return Some(Action::SetValidationComplete);
    }
    lifecycle::actions_from(from)
        .into_iter()
        .find(|a| lifecycle::target(*a) == to)
}

/// Every target the table allows from `from`.
pub fn moves(from: AccountState) -> Vec<Move> {
    lifecycle::next_states(from)
        .into_iter()
        .filter_map(|to| {
            action_for(from, to).map(|a| Move {
                action: a.name(),
                target: to.label(),
                with_comment: lifecycle::comment_effect(a) == CommentEffect::SetIfGiven,
            })
        })
        .collect()
}

/// One row, ready to render.
pub struct Row {
    pub a: OfferingUserView,
    pub provider: String,
    pub moves: Vec<Move>,
    pub changed: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    layout: Layout,
    params: Params,
    rows: Vec<Row>,
    pager: Pager,
    sorts: Vec<SortLink>,
    states: Vec<&'static str>,
    runtime_states: Vec<&'static str>,
    offerings: Vec<OfferingView>,
    providers: Vec<ProviderView>,
    actions: Vec<&'static str>,
    can_manage: bool,
}

impl AccountsPage {
    fn val(&self, key: &str) -> String {
        self.params.get(key).unwrap_or("").to_owned()
    }
}

#[derive(Template)]
#[template(path = "account_row.html")]
struct RowFragment {
    layout: Layout,
    row: Row,
    can_manage: bool,
}

fn bad(field: &str, msg: &str) -> DomainError {
    DomainError::invalid_field(field, codes::INVALID_INPUT, msg)
}

fn time_of(field: &str, v: &str) -> Result<time::OffsetDateTime, DomainError> {
    let full = if v.len() == 10 {
        format!("{v}T00:00:00Z")
    } else {
        v.to_owned()
    };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad(field, "not a date"))
}

fn uuids(p: &Params, key: &str) -> Result<Vec<uuid::Uuid>, DomainError> {
    p.all(key)
        .into_iter()
        .map(|v| v.parse().map_err(|_| bad(key, "not an id")))
        .collect()
}

fn filter(p: &Params, page: i64, page_size: i64) -> Result<AccountFilter, DomainError> {
    let mut f = AccountFilter {
        page,
        page_size,
        ..Default::default()
    };
    for s in p.all("state") {
        f.states
            .push(AccountState::parse_label(s).ok_or_else(|| bad("state", "unknown state"))?);
    }
    for s in p.all("runtime_state") {
        f.runtime_states
            .push(RuntimeState::parse_label(s).ok_or_else(|| bad("runtime_state", "unknown runtime state"))?);
    }
    f.offering_uuids = uuids(p, "offering")?;
    f.provider_uuids = uuids(p, "provider")?;
    if let Some(u) = p.get("user") {
        f.user_uuid = Some(u.parse().map_err(|_| bad("user", "not an id"))?);
    }
    f.user_username = p.get("user_username").map(str::to_owned);
    f.is_restricted = match p.get("is_restricted") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(bad("is_restricted", "true or false")),
        None => None,
    };
    f.query = p.get("q").map(str::to_owned);
    for (key, slot) in [
        ("created_from", &mut f.created_from),
        ("created_before", &mut f.created_before),
        ("modified_from", &mut f.modified_from),
        ("modified_before", &mut f.modified_before),
    ] {
        if let Some(v) = p.get(key) {
            *slot = Some(time_of(key, v)?);
        }
    }
    f.order = match p.sort() {
        Some((c, desc)) => vec![(
            match c {
                "created" => AccountOrder::Created,
                "modified" => AccountOrder::Modified,
                "username" => AccountOrder::Username,
                "first_name" => AccountOrder::UserFirstName,
                "last_name" => AccountOrder::UserLastName,
                _ => return Err(bad("sort", "cannot sort by that")),
            },
            desc,
        )],
        None => vec![(AccountOrder::Modified, true)],
    };
    Ok(f)
}

async fn providers(state: &AppState, viewer: &Viewer) -> Result<Vec<ProviderView>, DomainError> {
    state.offerings.list_providers(&viewer.caller()).await
}

/// A row of `a` (`customer_*` is the provider, as Waldur names it).
fn row_of(a: OfferingUserView) -> Row {
    Row {
        provider: a.customer_name.clone(),
        moves: moves(a.state),
        a,
        changed: false,
        error: None,
    }
}

/// `GET /accounts`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    let live = crate::live::url(&state, &viewer, "offering_users").await;
    let f = filter(&params, params.page(), params.page_size())?;
    let caller = viewer.caller();
    let (total, items) = state.offerings.list_accounts(&caller, &f).await?;
    let providers = providers(&state, &viewer).await?;
    let offerings = state.offerings.list_offerings(&caller).await?;
    let pager = Pager::new(&params, "/accounts", "/accounts.csv", total, items.len());
    let sorts = [
        ("username", "Username"),
        ("first_name", "First name"),
        ("last_name", "Last name"),
        ("created", "Created"),
        ("modified", "Modified"),
    ]
    .into_iter()
    .map(|(c, l)| SortLink::new(&params, "/accounts", c, l))
    .collect();
    let can_manage = viewer.is_super_user() || !providers.is_empty();
    Ok(render(&AccountsPage {
        layout: Layout::new(&viewer, "Offering accounts", "accounts").live(live),
        rows: items.into_iter().map(row_of).collect(),
        pager,
        sorts,
        states: AccountState::ALL.iter().map(|s| s.label()).collect(),
        runtime_states: RuntimeState::ALL.iter().map(|s| s.label()).collect(),
        offerings,
        providers,
        actions: Action::ALL.iter().map(|a| a.name()).collect(),
        can_manage,
        params,
    }))
}

/// `GET /accounts.csv`: every account matching the filter.
pub async fn csv(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    filter(&params, 1, 1)?;
    let caller = viewer.caller();
    Ok(lists::csv(
        "offering-accounts.csv",
        &[
            "uuid",
            "offering",
            "provider",
            "user_username",
            "user_full_name",
            "username",
            "state",
            "runtime_state",
            "is_restricted",
            "created",
            "modified",
            "comment",
            "comment_url",
        ],
        move |offset| {
            let (state, caller, params) = (state.clone(), caller.clone(), params.clone());
            async move {
                let page = offset / lists::EXPORT_PAGE + 1;
                let (_, items) = state
                    .offerings
                    .list_accounts(&caller, &filter(&params, page, lists::EXPORT_PAGE)?)
                    .await?;
                Ok(items
                    .into_iter()
                    .map(|a| {
                        vec![
                            a.uuid,
                            a.offering_name,
                            a.customer_name,
                            a.user_username,
                            a.user_full_name,
                            a.username.unwrap_or_default(),
                            a.state.label().to_owned(),
                            a.runtime_state.label().to_owned(),
                            a.is_restricted.to_string(),
                            when(&a.created),
                            when(&a.modified),
                            a.service_provider_comment,
                            a.service_provider_comment_url,
                        ]
                    })
                    .collect())
            }
        },
    )
    .await?)
}

/// Whether `actor` (as history records it) is the viewer.
fn by_viewer(h: &HistoryView, viewer: &Viewer) -> bool {
    h.actor.as_deref() == Some(viewer.auth.user_id().as_str())
}

/// `GET /accounts/{uuid}/row`: one row, for live refreshes (`?live=1` highlights it when the
/// last change was not the viewer's own).
pub async fn row(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(uuid): Path<String>,
    Query(q): Query,
) -> PageResult {
    let caller = viewer.caller();
    let a = state.offerings.get_account(&caller, &uuid).await?;
    let providers = providers(&state, &viewer).await?;
    // A live refresh of a row the page already shows as it is (typically the echo of the
    // viewer's own change, already swapped in by its form) answers 204: htmx keeps the row, so
    // an action menu the person has opened meanwhile stays open.
    if q.get("live").is_some() && q.get("seen") == Some(a.modified.unix_timestamp_nanos().to_string().as_str()) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut row = row_of(a);
    if q.get("live").is_some() {
        let history = state.offerings.history(&caller, &uuid).await?;
        row.changed = !history.last().is_some_and(|h| by_viewer(h, &viewer));
    }
    let can_manage = viewer.is_super_user() || !providers.is_empty();
    Ok(render(&RowFragment {
        layout: Layout::new(&viewer, "", "accounts"),
        row,
        can_manage,
    }))
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    row: Row,
    history: Vec<HistoryView>,
    can_manage: bool,
}

impl AccountPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
    fn badge(&self, s: &str) -> String {
        badge_class(s)
    }
}

/// `GET /accounts/{uuid}`: the account and its history.
pub async fn detail(State(state): State<AppState>, viewer: Viewer, Path(uuid): Path<String>) -> PageResult {
    let live = crate::live::url(&state, &viewer, "offering_users").await;
    let caller = viewer.caller();
    let a = state.offerings.get_account(&caller, &uuid).await?;
    let history = state.offerings.history(&caller, &uuid).await?;
    let providers = providers(&state, &viewer).await?;
    let can_manage = viewer.is_super_user() || !providers.is_empty();
    Ok(render(&AccountPage {
        layout: Layout::new(&viewer, format!("Account of {}", a.user_username), "accounts").live(live),
        row: row_of(a),
        history,
        can_manage,
    }))
}

fn opt_text(p: &Params, key: &str) -> Option<Option<String>> {
    p.raw(key).map(|v| Some(v.trim().to_owned()))
}

/// One row action through the offering service; the account afterwards.
async fn apply(
    state: &AppState,
    viewer: &Viewer,
    uuid: &str,
    action: &str,
    f: &Params,
) -> Result<Option<OfferingUserView>, DomainError> {
    let (ctx, caller) = (&viewer.ctx, viewer.caller());
    let o = &state.offerings;
    Ok(Some(match action {
        "username" => {
            let name = f.get("username").map(str::to_owned);
            o.set_username(ctx, &caller, uuid, UsernameInput { username: Some(name) })
                .await?
        }
        "comment" => {
            let input = CommentsInput {
                service_provider_comment: opt_text(f, "comment"),
                service_provider_comment_url: opt_text(f, "comment_url"),
            };
            o.update_comments(ctx, &caller, uuid, input).await?;
            o.get_account(&caller, uuid).await?
        }
        "restrict" => o.update_restricted(ctx, &caller, uuid, true).await?,
        "unrestrict" => o.update_restricted(ctx, &caller, uuid, false).await?,
        "delete" => {
            o.delete_account(ctx, &caller, uuid).await?;
            return Ok(None);
        }
        "transition" => {
            let name = f.get("to_action").unwrap_or("");
            let a = Action::parse(name).ok_or_else(|| bad("to_action", "choose a new state"))?;
            let input = if lifecycle::comment_effect(a) == CommentEffect::SetIfGiven {
                TransitionInput {
                    comment: opt_text(f, "comment").filter(|c| c.as_deref().is_some_and(|s| !s.is_empty())),
                    comment_url: opt_text(f, "comment_url").filter(|c| c.as_deref().is_some_and(|s| !s.is_empty())),
                }
            } else {
                TransitionInput::default()
            };
            o.transition(ctx, &caller, uuid, a, input).await?
        }
        _ => return Err(DomainError::not_found("action")),
    }))
}

/// `POST /accounts/{uuid}/{action}`: username, comment, restrict, unrestrict, delete,
/// transition. From htmx the answer is the row itself (with the refusal in it, if any);
/// without script, a redirect back to where the form was.
pub async fn act(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    headers: HeaderMap,
    Path((uuid, action)): Path<(String, String)>,
    FormData(f): FormData,
) -> PageResult<Response> {
    let htmx = headers.contains_key("hx-request");
    let back = f
        .get("back")
        .filter(|b| b.starts_with("/accounts"))
        .unwrap_or("/accounts")
        .to_owned();
    let result = apply(&state, &viewer, &uuid, &action, &f).await;
    if !htmx {
        return match result {
            Ok(_) => Ok(done(&back, "Done.", secure)),
            Err(e)
                if matches!(
                    e.kind,
                    muster_core::ErrorKind::Invalid | muster_core::ErrorKind::Conflict
                ) =>
            {
                Ok(done(&back, &format!("Not done: {}", e.message), secure))
            }
            Err(e) => Err(e.into()),
        };
    }
    let providers = providers(&state, &viewer).await?;
    let can_manage = viewer.is_super_user() || !providers.is_empty();
    let row = match result {
        Ok(Some(a)) => row_of(a),
        Ok(None) => return Ok(axum::response::Html(String::new()).into_response()),
        Err(e)
            if matches!(
                e.kind,
                muster_core::ErrorKind::Invalid | muster_core::ErrorKind::Conflict
            ) =>
        {
            let a = state.offerings.get_account(&viewer.caller(), &uuid).await?;
            Row {
                error: Some(e.message),
                ..row_of(a)
            }
        }
        Err(e) => return Err(e.into()),
    };
    Ok(render(&RowFragment {
        layout: Layout::new(&viewer, "", "accounts"),
        row,
        can_manage,
    }))
}

/// `POST /accounts/bulk`: one action on every selected account, each on its own; an account
/// that moved meanwhile is refused with the API's sentence, the others go through.
pub async fn bulk(State(state): State<AppState>, viewer: Viewer, FormData(f): FormData) -> PageResult {
    let name = f.get("bulk_action").unwrap_or("").to_owned();
    let action = Action::parse(&name).ok_or_else(|| bad("bulk_action", "choose an action"))?;
    let mut form = Params(vec![("to_action".into(), name.clone())]);
    if let Some(c) = f.raw("comment") {
        form.0.push(("comment".into(), c.to_owned()));
    }
    if let Some(c) = f.raw("comment_url") {
        form.0.push(("comment_url".into(), c.to_owned()));
    }
    let mut outcomes = Vec::new();
    for uuid in f.all("ids").into_iter().take(1000) {
        let label = state
            .offerings
            .get_account(&viewer.caller(), uuid)
            .await
            .map(|a| format!("{} on {}", a.user_username, a.offering_name))
            .unwrap_or_else(|_| uuid.to_owned());
        let r = apply(&state, &viewer, uuid, "transition", &form).await;
        outcomes.push(Outcome {
            label,
            href: format!("/accounts/{uuid}"),
            ok: r.is_ok(),
            message: match r {
                Ok(Some(a)) => format!("now {}", a.state.label()),
                Ok(None) => String::new(),
                Err(e) => e.message,
            },
        });
    }
    let back = f
        .get("back")
        .filter(|b| b.starts_with("/accounts"))
        .unwrap_or("/accounts")
        .to_owned();
    Ok(render(&BulkPage {
        layout: Layout::new(&viewer, "Bulk action", "accounts"),
        heading: format!(
            "{} → {}: {} account(s)",
            action.name(),
            lifecycle::target(action).label(),
            outcomes.len()
        ),
        outcomes,
        back,
    }))
}

/// The link to the list filtered by one state.
pub fn state_href(label: &str) -> String {
    format!("/accounts?state={}", encode(label))
}

impl Row {
    pub fn badge(&self) -> String {
        badge_class(self.a.state.label())
    }
    pub fn has_comment(&self) -> bool {
        !self.a.service_provider_comment.is_empty() || !self.a.service_provider_comment_url.is_empty()
    }
    pub fn created(&self) -> String {
        when(&self.a.created)
    }
    pub fn modified(&self) -> String {
        when(&self.a.modified)
    }
    /// Which version of the account the row shows (its last change), so that a live refresh
    /// of a row that is already current changes nothing.
    pub fn seen(&self) -> String {
        self.a.modified.unix_timestamp_nanos().to_string()
    }
}
