//! Aborting a process: it stops for good, its workflow's compensation undoes what its steps
//! made, and its subscriptions are released.
//!
//! All of that, the step-log row and the audit record commit in one transaction or not at all;
//! a process running a step under a live lease is refused, not aborted under its runner.

use super::{Engine, StartError, internal};
use muster_core::audit::{AuditEntry, Event, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::StepLog;
use serde_json::{Value, json};
use uuid::Uuid;

impl<D: Send + Sync + 'static> Engine<D> {
    /// `PUT /api/processes/{id}/abort`: stops the process for good and undoes what its steps
    /// made (the workflow's compensation), releasing its subscriptions, in one transaction.
    pub async fn abort(&self, ctx: &RequestCtx, actor: &str, pid: Uuid) -> Result<(), DomainError> {
        let result = self.abort_unaudited(ctx, actor, pid).await;
        if let Err(e) = &result {
            let entry = AuditEntry::new(
                ctx,
                actions::PROCESS_ABORT,
                Some(actor.to_owned()),
                Some(pid.to_string()),
            );
            self.audit_refusal(entry, &StartError::Domain(e.clone())).await;
        }
        result
    }

    async fn abort_unaudited(&self, ctx: &RequestCtx, actor: &str, pid: Uuid) -> Result<(), DomainError> {
        let row = self
            .inner
            .store
            .process(pid)
            .await
            .map_err(internal)?
            .ok_or_else(|| DomainError::not_found("process"))?;
        let status = row.status().map_err(internal)?;
        let wf = self
            .workflow_version(&row.workflow_name, row.workflow_version)
            .ok_or_else(|| DomainError::internal("workflow version not registered"))?
            .clone();
        let sources = ProcessStatus::sources(ProcessStatus::Aborted);
        // Running is listed so that a process whose worker died can be aborted; the store
        // refuses while a live lease holds it.
        if !sources.contains(&status) && status != ProcessStatus::Running {
            return Err(DomainError::conflict(
                codes::INVALID_TRANSITION,
                format!("the process is {}; it cannot be aborted", status.as_str()),
            ));
        }
        let now = clock::now();
        let mut tx = self.inner.store.begin().await.map_err(internal)?;
        self.check_unchanged(&mut tx, &row).await?;
        let mut from = sources.clone();
        from.push(ProcessStatus::Running);
        let ok = tx
            .move_process(
                pid,
                &from,
                ProcessStatus::Aborted,
                &row.state.0,
                None,
                None,
                Some("aborted"),
                now,
            )
            .await
            .map_err(internal)?;
        if !ok {
            return Err(DomainError::conflict(
                codes::INVALID_TRANSITION,
                "the process is running a step; abort it when the step is over",
            ));
        }
        if let (Some(f), Value::Object(state)) = (wf.on_abort, &row.state.0) {
            f(&self.inner.deps, &mut tx, state, pid)
                .await
                .map_err(|e| DomainError::conflict(codes::INVALID_OPERATION, format!("compensation failed: {e}")))?;
        }
        for sid in tx.release_subscriptions(pid, now).await.map_err(internal)? {
            tx.event(
                &Event {
                    stream: streams::SUBSCRIPTIONS,
                    kind: kinds::SUBSCRIPTION_UPDATED,
                    subject: Some(sid.to_string()),
                    data: json!({ "subscription_id": sid, "insync": true, "released_by_abort_of": pid }),
                },
                now,
                Some(&ctx.cid),
            )
            .await
            .map_err(internal)?;
        }
        tx.log_step(
            pid,
            row.attempt,
            &StepLog {
                name: "User Aborted".into(),
                status: StepStatus::Abort,
                state_delta: json!({}),
                created_by: actor.to_owned(),
                started_at: now,
                completed_at: now,
                retries: 0,
            },
        )
        .await
        .map_err(internal)?;
        let entry = AuditEntry::new(
            ctx,
            actions::PROCESS_ABORT,
            Some(actor.to_owned()),
            Some(pid.to_string()),
        )
        .with_event(
            streams::PROCESSES,
            kinds::PROCESS_UPDATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "aborted" }),
        );
        tx.audit(&entry).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.events_written();
        Ok(())
    }
}
