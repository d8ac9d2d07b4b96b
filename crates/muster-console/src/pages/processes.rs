//! Processes and tasks: tabs, counts per status, filters, paging and CSV; a process's page
//! with its step timeline (live while it runs), retry and abort, and the form of a suspended
//! input step.

use crate::auth::{SecureCookies, Viewer};
use crate::forms::{self, Widget};
use crate::layout::{Layout, render};
use crate::lists::{self, Pager, SortLink};
use crate::pages::{PageResult, badge_class, done, when_str};
use crate::urls::{FormData, Params, Query};
use askama::Template;
use axum::extract::{Path, State};
use muster_core::error::{DomainError, codes};
use muster_core::workflow::ProcessStatus;
use muster_core::workflow::form::FormStop;
use muster_engine::{ProcessView, StartError, StepView};
use muster_server::AppState;
use muster_store::{ProcessQuery, ProcessSort};
use serde_json::{Map, Value};

pub struct StatusTab {
    pub status: &'static str,
    pub count: i64,
    pub href: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "processes.html")]
struct ProcessesPage {
    layout: Layout,
    params: Params,
    tasks: bool,
    processes: Vec<ProcessView>,
    statuses: Vec<StatusTab>,
    pager: Pager,
    sorts: Vec<SortLink>,
}

impl ProcessesPage {
    fn when(&self, s: &str) -> String {
        when_str(s)
    }
    fn badge(&self, s: &str) -> String {
        badge_class(s)
    }
    fn val(&self, key: &str) -> String {
        self.params.get(key).unwrap_or("").to_owned()
    }
}

fn bad(field: &str, msg: &str) -> DomainError {
    DomainError::invalid_field(field, codes::INVALID_INPUT, msg)
}

fn time_of(field: &str, v: &str) -> Result<time::OffsetDateTime, DomainError> {
    // The browser's datetime-local control sends `YYYY-MM-DDTHH:MM` (taken as UTC).
    let full = if v.len() == 16 {
        format!("{v}:00Z")
    } else {
        v.to_owned()
    };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad(field, "not a date and time"))
}

fn query(p: &Params, offset: i64, limit: i64) -> Result<ProcessQuery, DomainError> {
    let mut q = ProcessQuery {
        offset,
        limit,
        ..Default::default()
    };
    for s in p.all("status") {
        q.statuses
            .push(ProcessStatus::parse(s).ok_or_else(|| bad("status", "unknown status"))?);
    }
    q.workflow_names = p.all("workflow").into_iter().map(str::to_owned).collect();
    q.targets = p.all("target").into_iter().map(|t| t.to_ascii_uppercase()).collect();
    if let Some(s) = p.get("subscription") {
        q.subscription_id = Some(s.parse().map_err(|_| bad("subscription", "not a subscription id"))?);
    }
    q.created_by = p.get("created_by").map(str::to_owned);
    q.is_task = Some(p.get("tab") == Some("tasks"));
    if let Some(v) = p.get("started_after") {
        q.started_after = Some(time_of("started_after", v)?);
    }
    if let Some(v) = p.get("started_before") {
        q.started_before = Some(time_of("started_before", v)?);
    }
    q.sort = match p.sort() {
        Some((c, desc)) => vec![(
            ProcessSort::parse(c).ok_or_else(|| bad("sort", "cannot sort by that"))?,
            desc,
        )],
        None => vec![(ProcessSort::Started, true)],
    };
    Ok(q)
}

/// `GET /processes`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    let live = crate::live::url(&state, &viewer, "processes").await;
    let q = query(&params, Pager::offset(&params), params.page_size())?;
    let page = state.processes.list(&viewer.auth, &q).await?;
    let tasks = params.get("tab") == Some("tasks");
    let counts = state.processes.status_counts(&viewer.auth).await?;
    let key = if tasks { "task_counts" } else { "process_counts" };
    let statuses = ProcessStatus::ALL
        .into_iter()
        .map(|s| StatusTab {
            status: s.as_str(),
            count: counts[key][s.as_str()].as_i64().unwrap_or(0),
            href: format!("/processes{}", params.with("status", Some(s.as_str()))),
            current: params.has("status", s.as_str()),
        })
        .collect();
    let pager = Pager::new(&params, "/processes", "/processes.csv", page.total, page.items.len());
    let sorts = [
        ("workflow", "Workflow"),
        ("status", "Status"),
        ("started", "Started"),
        ("modified", "Modified"),
        ("creator", "Started by"),
    ]
    .into_iter()
    .map(|(c, l)| SortLink::new(&params, "/processes", c, l))
    .collect();
    Ok(render(&ProcessesPage {
        layout: Layout::new(&viewer, if tasks { "Tasks" } else { "Processes" }, "processes").live(live),
        tasks,
        processes: page.items,
        statuses,
        pager,
        sorts,
        params,
    }))
}

/// `GET /processes.csv`.
pub async fn csv(State(state): State<AppState>, viewer: Viewer, Query(params): Query) -> PageResult {
    query(&params, 0, 1)?;
    let auth = viewer.auth.clone();
    Ok(lists::csv(
        "processes.csv",
        &[
            "process_id",
            "workflow",
            "target",
            "status",
            "last_step",
            "created_by",
            "started_at",
            "last_modified_at",
            "failed_reason",
        ],
        move |offset| {
            let (state, auth, params) = (state.clone(), auth.clone(), params.clone());
            async move {
                let page = state
                    .processes
                    .list(&auth, &query(&params, offset, lists::EXPORT_PAGE)?)
                    .await?;
                Ok(page
                    .items
                    .into_iter()
                    .map(|p| {
                        vec![
                            p.process_id.to_string(),
                            p.workflow_name,
                            p.workflow_target,
                            p.last_status,
                            p.last_step.unwrap_or_default(),
                            p.created_by,
                            p.started_at,
                            p.last_modified_at,
                            p.failed_reason.unwrap_or_default(),
                        ]
                    })
                    .collect())
            }
        },
    )
    .await?)
}

// --- one process -----------------------------------------------------------------------------

/// One step on the timeline.
pub struct Step {
    pub name: String,
    pub status: String,
    pub who: String,
    pub started: String,
    pub duration: String,
    pub state_change: String,
    pub retries: i32,
}

fn duration(start: &str, end: &str) -> String {
    let parse = |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok();
    match (parse(start), parse(end)) {
        (Some(a), Some(b)) => {
            let ms = (b - a).whole_milliseconds();
            if ms < 1000 {
                format!("{ms} ms")
            } else {
                format!("{:.1} s", ms as f64 / 1000.0)
            }
        }
        _ => String::new(),
    }
}

fn steps_of(view: &ProcessView) -> Vec<Step> {
    view.steps
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|s: &StepView| Step {
            name: s.name.clone(),
            status: s.status.clone(),
            who: s.created_by.clone(),
            started: when_str(&s.started),
            duration: duration(&s.started, &s.completed),
            state_change: match &s.state {
                Value::Object(m) if m.is_empty() => String::new(),
                Value::Null => String::new(),
                v => serde_json::to_string_pretty(v).unwrap_or_default(),
            },
            retries: s.retries,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "process.html")]
struct ProcessPage {
    layout: Layout,
    csrf: String,
    p: ProcessView,
    steps: Vec<Step>,
    resumable: bool,
    abortable: bool,
    running: bool,
    widgets: Vec<Widget>,
    form_title: String,
    form_errors: Vec<String>,
    current_state: String,
}

impl ProcessPage {
    fn when(&self, s: &str) -> String {
        when_str(s)
    }
    fn badge(&self, s: &str) -> String {
        badge_class(s)
    }
}

#[derive(Template)]
#[template(path = "process_timeline.html")]
struct TimelineFragment {
    csrf: String,
    resumable: bool,
    abortable: bool,
    p: ProcessView,
    steps: Vec<Step>,
    running: bool,
}

impl TimelineFragment {
    fn badge(&self, s: &str) -> String {
        badge_class(s)
    }
}

/// A failed or waiting process can be retried (a suspended one waits for its form instead).
fn resumable(status: Option<ProcessStatus>) -> bool {
    status.is_some_and(|s| ProcessStatus::RESUMABLE.contains(&s) && s != ProcessStatus::Suspended)
}

fn abortable(status: Option<ProcessStatus>) -> bool {
    status.is_some_and(|s| s.next().contains(&ProcessStatus::Aborted))
}

fn process_page(
    viewer: &Viewer,
    live: String,
    view: ProcessView,
    values: &Map<String, Value>,
    errors: &Value,
) -> ProcessPage {
    let status = ProcessStatus::parse(&view.last_status);
    let form = view.form.clone().unwrap_or(Value::Null);
    let fields: Vec<String> = form["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let by_field = forms::errors_by_field(errors, &fields);
    ProcessPage {
        layout: Layout::new(viewer, format!("Process {}", view.workflow_name), "processes").live(live),
        csrf: viewer.csrf.clone(),
        steps: steps_of(&view),
        resumable: resumable(status),
        abortable: abortable(status),
        running: status.is_some_and(|s| !s.is_final()),
        widgets: if form.is_null() {
            Vec::new()
        } else {
            forms::widgets(&form, values, &by_field, &[])
        },
        form_title: form["title"].as_str().unwrap_or("").to_owned(),
        form_errors: by_field
            .iter()
            .filter(|(f, _)| f.is_empty())
            .map(|(_, m)| m.clone())
            .collect(),
        current_state: view
            .current_state
            .as_ref()
            .map(|s| serde_json::to_string_pretty(s).unwrap_or_default())
            .unwrap_or_default(),
        p: view,
    }
}

/// `GET /processes/{id}`.
pub async fn detail(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> PageResult {
    let live = crate::live::url(&state, &viewer, "processes").await;
    let view = state.processes.get(&viewer.auth, &id).await?;
    Ok(render(&process_page(&viewer, live, view, &Map::new(), &Value::Null)))
}

/// `GET /processes/{id}/timeline`: the status and the steps, refreshed live.
pub async fn timeline(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> PageResult {
    let view = state.processes.get(&viewer.auth, &id).await?;
    let status = ProcessStatus::parse(&view.last_status);
    Ok(render(&TimelineFragment {
        csrf: viewer.csrf.clone(),
        resumable: resumable(status),
        abortable: abortable(status),
        steps: steps_of(&view),
        running: status.is_some_and(|s| !s.is_final()),
        p: view,
    }))
}

/// `POST /processes/{id}/retry`: resumes a failed or waiting process from its last good state.
pub async fn retry(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    match state.processes.resume(&viewer.ctx, &viewer.auth, &id, vec![]).await {
        Ok(()) => Ok(done(&format!("/processes/{id}"), "Retrying.", secure)),
        Err(StartError::Domain(e)) => Err(e.into()),
        Err(StartError::Form(_)) => Ok(done(
            &format!("/processes/{id}"),
            "This process waits for its form.",
            secure,
        )),
    }
}

/// `POST /processes/{id}/abort`.
pub async fn abort(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    state.processes.abort(&viewer.ctx, &viewer.auth, &id).await?;
    Ok(done(
        &format!("/processes/{id}"),
        "Aborted; what it made was undone.",
        secure,
    ))
}

/// `POST /processes/{id}/resume`: the suspended input step's form.
pub async fn resume(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path(id): Path<String>,
    FormData(f): FormData,
) -> PageResult {
    let live = crate::live::url(&state, &viewer, "processes").await;
    let view = state.processes.get(&viewer.auth, &id).await?;
    let form = view.form.clone().unwrap_or(Value::Null);
    let input = forms::input_of(&form, &f, &Map::new());
    match state
        .processes
        .resume(&viewer.ctx, &viewer.auth, &id, vec![Value::Object(input.clone())])
        .await
    {
        Ok(()) => Ok(done(
            &format!("/processes/{id}"),
            "Submitted; the process goes on.",
            secure,
        )),
        Err(StartError::Form(FormStop::Invalid { errors, .. })) => {
            let errors = serde_json::to_value(errors).unwrap_or(Value::Null);
            Ok(render(&process_page(&viewer, live, view, &input, &errors)))
        }
        Err(StartError::Form(_)) => Ok(done(&format!("/processes/{id}"), "The form needs more pages.", secure)),
        Err(StartError::Domain(e)) => Err(e.into()),
    }
}
