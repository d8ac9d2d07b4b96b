//! Subscriptions: tabs Active / Terminated / Transient / All, filters, paging and CSV; a
//! subscription's page with its domain model, relations, processes, the workflows that can
//! start now (and why the others cannot), set in sync, and delete where allowed.

use crate::auth::{SecureCookies, Viewer};
use crate::layout::{Layout, render};
use crate::lists::{self, Pager, SortLink};
use crate::pages::{PageResult, badge_class, done, when_str};
use crate::urls::{Params, Query};
use askama::Template;
use axum::extract::{Path, State};
use muster_core::error::{DomainError, codes};
use muster_core::workflow::SubscriptionStatus;
use muster_engine::ProcessView;
use muster_server::AppState;
use muster_store::{ProcessQuery, ProcessSort, SubscriptionQuery, SubscriptionSort};
use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct SubscriptionsPage {
    layout: Layout,
    params: Params,
    tab: String,
    items: Vec<Value>,
    pager: Pager,
    sorts: Vec<SortLink>,
    products: Vec<(String, String)>,
}

impl SubscriptionsPage {
    fn s(&self, v: &Value) -> String {
        s(v)
    }
    fn when(&self, v: &Value) -> String {
        v.as_str().map(when_str).unwrap_or_default()
    }
    fn badge(&self, v: &Value) -> String {
        badge_class(&s(v))
    }
    fn val(&self, key: &str) -> String {
        self.params.get(key).unwrap_or("").to_owned()
    }
    fn out_of_sync(&self, v: &Value) -> bool {
        v["insync"].as_bool() == Some(false)
    }
    fn tab_href(&self, tab: &str) -> String {
        format!("/subscriptions{}", self.params.with("tab", Some(tab)))
    }
}

fn bad(field: &str, msg: &str) -> DomainError {
    DomainError::invalid_field(field, codes::INVALID_INPUT, msg)
}

/// The statuses of a tab (orchestrator-ui's: transient is everything between).
fn tab_statuses(tab: &str) -> Vec<SubscriptionStatus> {
    use SubscriptionStatus as S;
    match tab {
        "terminated" => vec![S::Terminated],
        "transient" => S::ALL
            .into_iter()
            .filter(|s| !matches!(s, S::Active | S::Terminated))
            .collect(),
        "all" => vec![],
        _ => vec![S::Active],
    }
}

fn query(p: &Params, offset: i64, limit: i64) -> Result<SubscriptionQuery, DomainError> {
    let tab = p.get("tab").unwrap_or("active");
    let mut q = SubscriptionQuery {
        offset,
        limit,
        text: p.get("q").map(str::to_owned),
        ..Default::default()
    };
    q.statuses = tab_statuses(tab);
    if let Some(st) = p.get("status") {
        q.statuses = vec![SubscriptionStatus::parse(st).ok_or_else(|| bad("status", "unknown status"))?];
    }
    for v in p.all("product") {
        q.product_ids
            .push(v.parse().map_err(|_| bad("product", "not a product id"))?);
    }
    q.insync = match p.get("insync") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(bad("insync", "true or false")),
        None => None,
    };
    q.customer_id = p.get("customer").map(str::to_owned);
    q.sort = match p.sort() {
        Some((c, desc)) => vec![(
            SubscriptionSort::parse(c).ok_or_else(|| bad("sort", "cannot sort by that"))?,
            desc,
        )],
        None => vec![(SubscriptionSort::Created, true)],
    };
    Ok(q)
}

/// `GET /subscriptions`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    let live = crate::live::url(&state, &viewer, "subscriptions").await;
    let q = query(&params, Pager::offset(&params), params.page_size())?;
    let (items, total) = state.subscriptions.list(&viewer.auth, &q).await?;
    let pager = Pager::new(&params, "/subscriptions", "/subscriptions.csv", total, items.len());
    let sorts = [
        ("description", "Description"),
        ("product", "Product"),
        ("status", "Status"),
        ("start_date", "Start date"),
        ("customer_id", "Customer"),
    ]
    .into_iter()
    .map(|(c, l)| SortLink::new(&params, "/subscriptions", c, l))
    .collect();
    let products = state
        .subscriptions
        .catalogue()
        .products
        .iter()
        .map(|p| (p.product_id.to_string(), p.name.clone()))
        .collect();
    Ok(render(&SubscriptionsPage {
        layout: Layout::new(&viewer, "Subscriptions", "subscriptions").live(live),
        tab: params.get("tab").unwrap_or("active").to_owned(),
        items,
        pager,
        sorts,
        products,
        params,
    }))
}

/// `GET /subscriptions.csv`.
pub async fn csv(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    query(&params, 0, 1)?;
    let auth = viewer.auth.clone();
    Ok(lists::csv(
        "subscriptions.csv",
        &[
            "subscription_id",
            "description",
            "product",
            "status",
            "insync",
            "customer_id",
            "start_date",
            "end_date",
        ],
        move |offset| {
            let (state, auth, params) = (state.clone(), auth.clone(), params.clone());
            async move {
                let (items, _) = state
                    .subscriptions
                    .list(&auth, &query(&params, offset, lists::EXPORT_PAGE)?)
                    .await?;
                Ok(items
                    .iter()
                    .map(|v| {
                        vec![
                            s(&v["subscription_id"]),
                            s(&v["description"]),
                            s(&v["product"]["name"]),
                            s(&v["status"]),
                            s(&v["insync"]),
                            s(&v["customer_id"]),
                            s(&v["start_date"]),
                            s(&v["end_date"]),
                        ]
                    })
                    .collect())
            }
        },
    )
    .await?)
}

/// A workflow on a subscription's page: startable, or why not.
pub struct WorkflowChoice {
    pub target: String,
    pub name: String,
    pub description: String,
    pub reason: Option<String>,
}

#[derive(Template)]
#[template(path = "subscription.html")]
struct SubscriptionPage {
    layout: Layout,
    id: String,
    model: Value,
    model_json: String,
    workflows: Vec<WorkflowChoice>,
    processes: Vec<ProcessView>,
    deletable: bool,
}

impl SubscriptionPage {
    fn s(&self, v: &Value) -> String {
        s(v)
    }
    fn when(&self, v: &Value) -> String {
        v.as_str().map(when_str).unwrap_or_default()
    }
    fn when_s(&self, v: &str) -> String {
        when_str(v)
    }
    fn badge(&self, v: &str) -> String {
        badge_class(v)
    }
    fn out_of_sync(&self) -> bool {
        self.model["insync"].as_bool() == Some(false)
    }
    fn locked_by(&self) -> Option<String> {
        self.model["locked_by_process"].as_str().map(str::to_owned)
    }
    fn ids(&self, key: &str) -> Vec<String> {
        self.model[key]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default()
    }
}

/// `GET /subscriptions/{id}`.
pub async fn detail(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> PageResult {
    let live = crate::live::url(&state, &viewer, "subscriptions,processes").await;
    let model = state.subscriptions.domain_model(&viewer.auth, &id).await?;
    let wf = state.subscriptions.workflows(&viewer.auth, &id).await?;
    let mut workflows = Vec::new();
    for target in ["create", "modify", "terminate", "validate", "system"] {
        for w in wf[target].as_array().into_iter().flatten() {
            workflows.push(WorkflowChoice {
                target: target.to_owned(),
                name: s(&w["name"]),
                description: s(&w["description"]),
                reason: w.get("message").map(s),
            });
        }
    }
    let sub_id = model["subscription_id"].as_str().and_then(|v| v.parse().ok());
    let q = ProcessQuery {
        subscription_id: sub_id,
        limit: 50,
        sort: vec![(ProcessSort::Started, true)],
        ..Default::default()
    };
    let processes = state.processes.list(&viewer.auth, &q).await?.items;
    let status = s(&model["status"]);
    Ok(render(&SubscriptionPage {
        layout: Layout::new(&viewer, s(&model["description"]), "subscriptions").live(live),
        id: s(&model["subscription_id"]),
        model_json: serde_json::to_string_pretty(&model).unwrap_or_default(),
        deletable: status == "initial" || status == "terminated",
        model,
        workflows,
        processes,
    }))
}

/// `POST /subscriptions/{id}/in-sync`.
pub async fn set_in_sync(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    match state.subscriptions.set_in_sync(&viewer.ctx, &viewer.auth, &id).await {
        Ok(()) => Ok(done(&format!("/subscriptions/{id}"), "Marked in sync.", secure)),
        Err(e) if e.kind == muster_core::ErrorKind::Conflict => Ok(done(
            &format!("/subscriptions/{id}"),
            &format!("Not done: {}", e.message),
            secure,
        )),
        Err(e) => Err(e.into()),
    }
}

/// `POST /subscriptions/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    match state.subscriptions.delete(&viewer.ctx, &viewer.auth, &id).await {
        Ok(()) => Ok(done("/subscriptions?tab=all", "The subscription was deleted.", secure)),
        Err(e) if e.kind == muster_core::ErrorKind::Conflict => Ok(done(
            &format!("/subscriptions/{id}"),
            &format!("Not deleted: {}", e.message),
            secure,
        )),
        Err(e) => Err(e.into()),
    }
}
