//! Process JSON with orchestrator-core's field names.

use muster_store::{ProcessRow, StepRow, Ts};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Drops the state keys that start with `__`: the engine's and the workflows' internals
/// (sealed secrets, backups), never shown.
pub fn public(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn rfc3339(t: &Ts) -> String {
    t.0.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub step_id: i64,
    pub name: String,
    pub status: String,
    /// What the step added to the state.
    pub state: Value,
    pub created_by: String,
    pub started: String,
    pub completed: String,
    pub retries: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionRef {
    pub subscription_id: Uuid,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    pub process_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub workflow_target: String,
    pub is_task: bool,
    pub last_status: String,
    pub last_step: Option<String>,
    pub next_step: Option<String>,
    pub assignee: String,
    pub failed_reason: Option<String>,
    pub traceback: Option<String>,
    pub created_by: String,
    pub started_at: String,
    pub last_modified_at: String,
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_state: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<SubscriptionRef>>,
    /// The input step's form, while the process is suspended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessList {
    pub items: Vec<ProcessView>,
    pub total: i64,
}

pub(crate) fn summary(row: &ProcessRow) -> ProcessView {
    ProcessView {
        process_id: row.process_id,
        workflow_name: row.workflow_name.clone(),
        workflow_version: row.workflow_version,
        workflow_target: row.target.clone(),
        is_task: row.is_task,
        last_status: row.last_status.clone(),
        last_step: row.last_step.clone(),
        next_step: row.next_step.clone(),
        assignee: row.assignee.clone(),
        failed_reason: row.failed_reason.clone(),
        traceback: row.traceback.clone(),
        created_by: row.created_by.clone(),
        started_at: rfc3339(&row.started_at),
        last_modified_at: rfc3339(&row.last_modified_at),
        note: row.note.clone(),
        steps: None,
        current_state: None,
        subscriptions: None,
        form: None,
    }
}

pub(crate) fn process(row: &ProcessRow, steps: &[StepRow], subs: &[Uuid], form: Option<Value>) -> ProcessView {
    let mut v = summary(row);
    v.steps = Some(
        steps
            .iter()
            .map(|s| StepView {
                step_id: s.step_id,
                name: s.name.clone(),
                status: s.status.clone(),
                state: public(&s.state_delta.0),
                created_by: s.created_by.clone(),
                started: rfc3339(&s.started_at),
                completed: rfc3339(&s.completed_at),
                retries: s.retries,
            })
            .collect(),
    );
    v.current_state = Some(public(&row.state.0));
    v.subscriptions = Some(subs.iter().map(|s| SubscriptionRef { subscription_id: *s }).collect());
    v.form = form;
    v
}
