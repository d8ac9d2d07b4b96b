//! Reads: one process with its steps, lists of processes, counts by status.
//!
//! Nothing here writes; each answer is one read of committed rows (a suspended process's form
//! is computed from its state, not stored).

use super::{Engine, internal};
use crate::definition::{FormFail, StepKind};
use crate::view::{self, ProcessList, ProcessView};
use muster_core::error::DomainError;
use muster_core::workflow::ProcessStatus;
use muster_core::workflow::form::{FormRun, FormStop};
use muster_store::ProcessQuery;
use serde_json::{Value, json};
use uuid::Uuid;

impl<D: Send + Sync + 'static> Engine<D> {
    /// One process with its steps, current state and (when suspended) its form.
    pub async fn process_view(&self, pid: Uuid) -> Result<ProcessView, DomainError> {
        let store = &self.inner.store;
        let row = store
            .process(pid)
            .await
            .map_err(internal)?
            .ok_or_else(|| DomainError::not_found("process"))?;
        let steps = store.process_steps(pid).await.map_err(internal)?;
        let subs = store.process_subscriptions(pid).await.map_err(internal)?;
        let mut form = None;
        if row.last_status == ProcessStatus::Suspended.as_str()
            && let Some(wf) = self.workflow_version(&row.workflow_name, row.workflow_version)
            && let Some(step) = row.next_step.as_deref().and_then(|n| wf.step_named(n))
            && let StepKind::Input { form: f, .. } = &step.kind
            && let Value::Object(state) = &row.state.0
        {
            let mut run = FormRun::new(vec![]);
            if let Err(FormFail::Stop(FormStop::NotComplete { form: schema, .. })) =
                f(&self.inner.deps, state, &mut run).await
            {
                form = Some(schema);
            }
        }
        Ok(view::process(&row, &steps, &subs, form))
    }

    pub async fn list(&self, q: &ProcessQuery) -> Result<ProcessList, DomainError> {
        let (rows, total) = self.inner.store.list_processes(q).await.map_err(internal)?;
        Ok(ProcessList {
            items: rows.iter().map(view::summary).collect(),
            total,
        })
    }

    /// `GET /api/processes/status-counts`.
    pub async fn status_counts(&self) -> Result<Value, DomainError> {
        let rows = self.inner.store.process_status_counts().await.map_err(internal)?;
        let mut processes = serde_json::Map::new();
        let mut tasks = serde_json::Map::new();
        for (status, is_task, n) in rows {
            let m = if is_task { &mut tasks } else { &mut processes };
            m.insert(status, json!(n));
        }
        Ok(json!({ "process_counts": processes, "task_counts": tasks }))
    }
}
