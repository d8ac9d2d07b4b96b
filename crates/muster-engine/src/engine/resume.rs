//! Resuming a process: a suspended one with its input step's form, a failed or waiting one to
//! run its step again from the last committed state.
//!
//! A resume acts only on the row it decided on: `check_unchanged` re-reads it inside the
//! resume's transaction, so a decision made on a stale row never rewinds a process. A 2xx
//! means the move, its step-log row and its audit record committed and the process is queued.

use super::{Engine, StartError};
use crate::definition::StepKind;
use crate::view;
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_core::workflow::form::FormRun;
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::StepLog;
use serde_json::{Value, json};
use uuid::Uuid;

impl<D: Send + Sync + 'static> Engine<D> {
    /// `PUT /api/processes/{id}/resume`: a suspended process with its input step's form, a
    /// failed or waiting one to retry its step from the last good state.
    pub async fn resume(&self, ctx: &RequestCtx, actor: &str, pid: Uuid, inputs: Vec<Value>) -> Result<(), StartError> {
        let result = self.resume_unaudited(ctx, actor, pid, inputs).await;
        if let Err(e) = &result {
            let entry = AuditEntry::new(
                ctx,
                actions::PROCESS_RESUME,
                Some(actor.to_owned()),
                Some(pid.to_string()),
            );
            self.audit_refusal(entry, e).await;
        }
        result
    }

    async fn resume_unaudited(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        pid: Uuid,
        inputs: Vec<Value>,
    ) -> Result<(), StartError> {
        self.refuse_when_paused().await?;
        let row = self
            .inner
            .store
            .process(pid)
            .await?
            .ok_or_else(|| DomainError::not_found("process"))?;
        let status = row.status()?;
        let wf = self
            .workflow_version(&row.workflow_name, row.workflow_version)
            .ok_or_else(|| {
                DomainError::internal(format!(
                    "workflow {} v{} is not registered",
                    row.workflow_name, row.workflow_version
                ))
            })?
            .clone();
        let Value::Object(mut state) = row.state.0.clone() else {
            return Err(DomainError::internal("process state is not an object").into());
        };
        let now = clock::now();
        let mut tx = self.inner.store.begin().await?;
        let moved = match status {
            ProcessStatus::Suspended => {
                let step_name = row.next_step.clone().unwrap_or_default();
                let Some(step) = wf.step_named(&step_name) else {
                    return Err(DomainError::internal(format!("step {step_name} is not in the workflow")).into());
                };
                let StepKind::Input { form, .. } = &step.kind else {
                    return Err(DomainError::internal("a suspended process must wait at an input step").into());
                };
                let mut run = FormRun::new(inputs);
                form(&self.inner.deps, &state, &mut run).await?;
                let input = run.finish().map_err(StartError::Form)?;
                self.check_unchanged(&mut tx, &row).await?;
                state.extend(input.clone());
                let next = wf.after(&step_name);
                let ok = tx
                    .move_process(
                        pid,
                        &[ProcessStatus::Suspended],
                        ProcessStatus::Resumed,
                        &Value::Object(state.clone()),
                        next,
                        Some(now),
                        None,
                        now,
                    )
                    .await?;
                if ok {
                    tx.log_step(
                        pid,
                        row.attempt,
                        &StepLog {
                            name: step_name,
                            status: StepStatus::Success,
                            state_delta: view::public(&Value::Object(input)),
                            created_by: actor.to_owned(),
                            started_at: now,
                            completed_at: now,
                            retries: 0,
                        },
                    )
                    .await?;
                }
                ok
            }
            ProcessStatus::Failed | ProcessStatus::Waiting => {
                self.check_unchanged(&mut tx, &row).await?;
                tx.move_process(
                    pid,
                    &[ProcessStatus::Failed, ProcessStatus::Waiting],
                    ProcessStatus::Resumed,
                    &Value::Object(state.clone()),
                    row.next_step.as_deref(),
                    Some(now),
                    None,
                    now,
                )
                .await?
            }
            other => {
                return Err(DomainError::conflict(
                    codes::INVALID_TRANSITION,
                    format!(
                        "the process is {}; only suspended, waiting or failed processes resume",
                        other.as_str()
                    ),
                )
                .into());
            }
        };
        if !moved {
            return Err(
                DomainError::conflict(codes::INVALID_TRANSITION, "the process changed meanwhile; reload it").into(),
            );
        }
        let entry = AuditEntry::new(
            ctx,
            actions::PROCESS_RESUME,
            Some(actor.to_owned()),
            Some(pid.to_string()),
        )
        .with_event(
            streams::PROCESSES,
            kinds::PROCESS_UPDATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "resumed" }),
        );
        tx.audit(&entry).await?;
        tx.notify_work().await?;
        tx.commit().await?;
        self.events_written();
        self.wake();
        Ok(())
    }
}
