//! Starting a workflow: any workflow's form, page by page, through the same protocol a REST
//! client uses (orchestrator-core's: every request posts all pages filled so far; 510 brings
//! the next page's JSON Schema, 400 the validation errors, success the process id).
//!
//! Nothing typed is lost: the pages already filled, the values of pages visited and left with
//! *Previous*, and passwords entered on the current page travel with the form, sealed with the
//! server key (the browser can neither read nor alter them). After a validation error the page
//! comes back with everything as typed and each message next to its field.

use crate::auth::Viewer;
use crate::forms::{self, Widget};
use crate::layout::{Layout, render};
use crate::pages::{PageError, PageResult};
use crate::urls::{FormData, Query};
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use muster_core::error::DomainError;
use muster_core::workflow::Target;
use muster_core::workflow::form::FormStop;
use muster_engine::StartError;
use muster_server::AppState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Where a person is in a workflow's form.
#[derive(Default, Serialize, Deserialize)]
struct Walk {
    /// The inputs of the pages before the current one.
    pages: Vec<Value>,
    /// Values typed on later pages, kept while the person went back.
    ahead: Vec<Value>,
    /// Secrets typed on the current page.
    secrets: Map<String, Value>,
}

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    layout: Layout,
    workflow: String,
    description: String,
    title: String,
    page_no: usize,
    has_next: bool,
    widgets: Vec<Widget>,
    form_errors: Vec<String>,
    state: String,
}

pub struct Choice {
    pub name: String,
    pub description: String,
    pub href: String,
}

pub struct ProductGroup {
    pub product: String,
    pub product_type: String,
    pub workflows: Vec<Choice>,
}

#[derive(Template)]
#[template(path = "start_choose.html")]
struct ChoosePage {
    layout: Layout,
    groups: Vec<ProductGroup>,
    tasks: Vec<Choice>,
}

/// `GET /start`: the create workflows per product, and the tasks; modify, terminate and
/// validate start from a subscription's page.
pub async fn choose(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    viewer.auth.require_super_user()?;
    let catalogue = state.subscriptions.catalogue();
    let mut groups = Vec::new();
    for p in &catalogue.products {
        let workflows = catalogue
            .workflows_for(&p.product_type)
            .filter(|w| w.target == Target::Create)
            .map(|w| Choice {
                name: w.name.clone(),
                description: w.description.clone(),
                href: format!("/start/{}?product={}", w.name, p.product_id),
            })
            .collect();
        groups.push(ProductGroup {
            product: p.name.clone(),
            product_type: p.product_type.clone(),
            workflows,
        });
    }
    let tasks = catalogue
        .workflows
        .iter()
        .filter(|w| w.is_task)
        .map(|w| Choice {
            name: w.name.clone(),
            description: w.description.clone(),
            href: format!("/start/{}", w.name),
        })
        .collect();
    Ok(render(&ChoosePage {
        layout: Layout::new(&viewer, "Start a workflow", "start"),
        groups,
        tasks,
    }))
}

/// What one round of the protocol answered.
enum Answer {
    Page { form: Value, has_next: bool },
    Invalid { errors: Value },
    Started(uuid::Uuid),
}

async fn post_pages(
    state: &AppState,
    viewer: &Viewer,
    workflow: &str,
    pages: Vec<Value>,
) -> Result<Answer, DomainError> {
    match state.processes.start(&viewer.ctx, &viewer.auth, workflow, pages).await {
        Ok(id) => Ok(Answer::Started(id)),
        Err(StartError::Form(FormStop::NotComplete { form, meta })) => Ok(Answer::Page {
            form,
            has_next: meta["hasNext"].as_bool().unwrap_or(true),
        }),
        Err(StartError::Form(FormStop::Invalid { errors, .. })) => Ok(Answer::Invalid {
            errors: serde_json::to_value(errors).unwrap_or(Value::Null),
        }),
        Err(StartError::Form(FormStop::Overflow)) => Err(DomainError::invalid(
            muster_core::error::codes::INVALID_INPUT,
            "more pages were posted than the form has",
        )),
        Err(StartError::Domain(e)) => Err(e),
    }
}

fn seal(state: &AppState, walk: &Walk) -> String {
    state
        .directory
        .secrets()
        .seal(&serde_json::to_string(walk).unwrap_or_default())
}

fn unseal(state: &AppState, sealed: Option<&str>) -> Result<Walk, DomainError> {
    match sealed {
        None => Ok(Walk::default()),
        Some(s) => state
            .directory
            .secrets()
            .open(s)
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .ok_or_else(|| {
                DomainError::invalid(
                    muster_core::error::codes::INVALID_INPUT,
                    "the form's saved state is not valid; start again",
                )
            }),
    }
}

#[allow(clippy::too_many_arguments)]
fn page(
    state: &AppState,
    viewer: &Viewer,
    workflow: &str,
    walk: &Walk,
    form: &Value,
    has_next: bool,
    values: &Map<String, Value>,
    errors: &Value,
) -> StartPage {
    let fields: Vec<String> = form["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let by_field = forms::errors_by_field(errors, &fields);
    let kept: Vec<String> = walk.secrets.keys().cloned().collect();
    let info = state
        .subscriptions
        .catalogue()
        .workflow(workflow)
        .map(|w| w.description.clone())
        .unwrap_or_default();
    StartPage {
        layout: Layout::new(viewer, format!("Start {workflow}"), "start"),
        workflow: workflow.to_owned(),
        description: info,
        title: form["title"].as_str().unwrap_or("").to_owned(),
        page_no: walk.pages.len() + 1,
        has_next,
        widgets: forms::widgets(form, values, &by_field, &kept),
        form_errors: by_field
            .iter()
            .filter(|(f, _)| f.is_empty())
            .map(|(_, m)| m.clone())
            .collect(),
        state: seal(state, walk),
    }
}

/// `GET /start/{workflow}`: page 1; `?product=` or `?subscription=` fill it in and go on.
pub async fn first_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(workflow): Path<String>,
    Query(q): Query,
) -> PageResult {
    let mut walk = Walk::default();
    let Answer::Page { form, has_next } = post_pages(&state, &viewer, &workflow, vec![]).await? else {
        return Err(DomainError::not_found("form").into());
    };
    let props = &form["properties"];
    let preset = match (q.get("product"), q.get("subscription")) {
        (Some(p), _) if props.get("product").is_some() => Some(json!({ "product": p })),
        (_, Some(s)) if props.get("subscription_id").is_some() => Some(json!({ "subscription_id": s })),
        _ => None,
    };
    if let Some(first) = preset {
        match post_pages(&state, &viewer, &workflow, vec![first.clone()]).await? {
            Answer::Page { form, has_next } => {
                walk.pages.push(first);
                return Ok(render(&page(
                    &state,
                    &viewer,
                    &workflow,
                    &walk,
                    &form,
                    has_next,
                    &Map::new(),
                    &Value::Null,
                )));
            }
            Answer::Started(id) => return Ok(Redirect::to(&format!("/processes/{id}")).into_response()),
            Answer::Invalid { .. } => {}
        }
    }
    Ok(render(&page(
        &state,
        &viewer,
        &workflow,
        &walk,
        &form,
        has_next,
        &Map::new(),
        &Value::Null,
    )))
}

/// `POST /start/{workflow}`: Next, Previous, or adding/removing a row of a choice list.
pub async fn submit(
    State(state): State<AppState>,
    crate::auth::SecureCookies(secure): crate::auth::SecureCookies,
    viewer: Viewer,
    Path(workflow): Path<String>,
    FormData(f): FormData,
) -> PageResult<Response> {
    let mut walk = unseal(&state, f.get("_state"))?;
    // The current page's schema, as the protocol gives it for the pages filled so far.
    let (form, has_next) = match post_pages(&state, &viewer, &workflow, walk.pages.clone()).await? {
        Answer::Page { form, has_next } => (form, has_next),
        Answer::Invalid { errors } => {
            // An earlier page is no longer valid (a choice went away meanwhile): back to it.
            return back_to_invalid(&state, &viewer, &workflow, walk, errors).await;
        }
        Answer::Started(id) => return Ok(Redirect::to(&format!("/processes/{id}")).into_response()),
    };
    let secrets = forms::secret_fields(&form);
    let mut input = forms::input_of(&form, &f, &walk.secrets);
    for s in &secrets {
        if let Some(v) = input.get(s) {
            walk.secrets.insert(s.clone(), v.clone());
        }
    }
    let op = f.get("_op").unwrap_or("next").to_owned();
    if let Some(field) = op.strip_prefix("add:") {
        if let Some(Value::Array(rows)) = input.get_mut(field) {
            rows.push(json!(""));
        } else {
            input.insert(field.to_owned(), json!(["", ""]));
        }
        return Ok(render(&page(
            &state,
            &viewer,
            &workflow,
            &walk,
            &form,
            has_next,
            &input,
            &Value::Null,
        )));
    }
    if let Some(rest) = op.strip_prefix("remove:") {
        if let Some((field, i)) = rest.rsplit_once(':')
            && let (Some(Value::Array(rows)), Ok(i)) = (input.get_mut(field), i.parse::<usize>())
            && i < rows.len()
        {
            rows.remove(i);
        }
        return Ok(render(&page(
            &state,
            &viewer,
            &workflow,
            &walk,
            &form,
            has_next,
            &input,
            &Value::Null,
        )));
    }
    if op == "prev" {
        let Some(previous) = walk.pages.pop() else {
            return Ok(render(&page(
                &state,
                &viewer,
                &workflow,
                &walk,
                &form,
                has_next,
                &input,
                &Value::Null,
            )));
        };
        walk.ahead.insert(0, Value::Object(input));
        walk.secrets = Map::new();
        let Answer::Page { form, has_next } = post_pages(&state, &viewer, &workflow, walk.pages.clone()).await? else {
            return Err(DomainError::invalid(
                muster_core::error::codes::INVALID_INPUT,
                "the form changed; start again",
            )
            .into());
        };
        let values = previous.as_object().cloned().unwrap_or_default();
        return Ok(render(&page(
            &state,
            &viewer,
            &workflow,
            &walk,
            &form,
            has_next,
            &values,
            &Value::Null,
        )));
    }
    let mut pages = walk.pages.clone();
    pages.push(Value::Object(input.clone()));
    match post_pages(&state, &viewer, &workflow, pages.clone()).await? {
        Answer::Started(id) => Ok(crate::pages::done(
            &format!("/processes/{id}"),
            &format!("Started {workflow}."),
            secure,
        )),
        Answer::Invalid { errors } => {
            let mut p = page(&state, &viewer, &workflow, &walk, &form, has_next, &input, &errors);
            p.layout.title = format!("Start {workflow}: check the form");
            Ok(render(&p))
        }
        Answer::Page { form: next, has_next } => {
            walk.pages = pages;
            walk.secrets = Map::new();
            let values = if walk.ahead.is_empty() {
                Map::new()
            } else {
                walk.ahead.remove(0).as_object().cloned().unwrap_or_default()
            };
            Ok(render(&page(
                &state,
                &viewer,
                &workflow,
                &walk,
                &next,
                has_next,
                &values,
                &Value::Null,
            )))
        }
    }
}

/// An earlier page was refused on replay: show the last page that still stands with the
/// message.
async fn back_to_invalid(
    state: &AppState,
    viewer: &Viewer,
    workflow: &str,
    mut walk: Walk,
    errors: Value,
) -> PageResult<Response> {
    while let Some(last) = walk.pages.pop() {
        if let Answer::Page { form, has_next } = post_pages(state, viewer, workflow, walk.pages.clone()).await? {
            let values = last.as_object().cloned().unwrap_or_default();
            return Ok(render(&page(
                state, viewer, workflow, &walk, &form, has_next, &values, &errors,
            )));
        }
    }
    Err(PageError(DomainError::invalid(
        muster_core::error::codes::INVALID_INPUT,
        "the form cannot be continued; start again",
    )))
}
