//! Callbacks from outside systems, and the deadlines of those that never come.
//!
//! A callback token is compared in constant time with the stored hash, and a wrong token, an
//! unknown process and a process not awaiting a callback all answer alike (not found). Only a
//! process awaiting its callback moves on (an answer that comes while the step's action still
//! runs is kept for it); expiry fails only a process still awaiting past its deadline.

use super::{Engine, internal};
use muster_core::audit::{AuditEntry, Event, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::error::DomainError;
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::StepLog;
use serde_json::{Value, json};
use uuid::Uuid;

impl<D: Send + Sync + 'static> Engine<D> {
    /// `POST /api/processes/{id}/callback/{token}`: an outside system reports back. The token
    /// is compared in constant time; a wrong token and an unknown process answer alike.
    pub async fn callback(&self, ctx: &RequestCtx, pid: Uuid, token: &str, data: Value) -> Result<(), DomainError> {
        use subtle::ConstantTimeEq;
        self.refuse_when_paused().await?;
        let now = clock::now();
        let mut tx = self.inner.store.begin().await.map_err(internal)?;
        // The row first (locked on PostgreSQL): a step finishing now is either done before
        // this look, or waits for it.
        let row = tx
            .process(pid)
            .await
            .map_err(internal)?
            .ok_or_else(|| DomainError::not_found("callback"))?;
        let stored = tx.callback_token_hash(pid).await.map_err(internal)?;
        let presented = crate::callback_token::token_hash(token);
        let matches = stored
            .as_deref()
            .is_some_and(|h| bool::from(h.as_bytes().ct_eq(presented.as_bytes())));
        if !matches {
            return Err(DomainError::not_found("callback"));
        }
        if row.last_status == ProcessStatus::Running.as_str() {
            // The callback step's action is still running: keep the answer for it.
            if !tx.keep_early_callback(pid, &data).await.map_err(internal)? {
                return Err(DomainError::not_found("callback"));
            }
            let entry = AuditEntry::new(ctx, actions::PROCESS_CALLBACK, None, Some(pid.to_string()))
                .with_details(json!({ "kept_for_running_step": true }));
            tx.audit(&entry).await.map_err(internal)?;
            tx.commit().await.map_err(internal)?;
            return Ok(());
        }
        let wf = self
            .workflow_version(&row.workflow_name, row.workflow_version)
            .ok_or_else(|| DomainError::internal("workflow version not registered"))?
            .clone();
        let step_name = row.next_step.clone().unwrap_or_default();
        let Value::Object(mut state) = row.state.0.clone() else {
            return Err(DomainError::internal("process state is not an object"));
        };
        state.insert("callback_result".into(), data.clone());
        let ok = tx
            .move_process(
                pid,
                &[ProcessStatus::AwaitingCallback],
                ProcessStatus::Resumed,
                &Value::Object(state),
                wf.after(&step_name),
                Some(now),
                None,
                now,
            )
            .await
            .map_err(internal)?;
        if !ok {
            return Err(DomainError::not_found("callback"));
        }
        tx.log_step(
            pid,
            row.attempt,
            &StepLog {
                name: step_name,
                status: StepStatus::Success,
                state_delta: json!({ "callback_result": data }),
                created_by: "callback".into(),
                started_at: now,
                completed_at: now,
                retries: 0,
            },
        )
        .await
        .map_err(internal)?;
        let entry = AuditEntry::new(ctx, actions::PROCESS_CALLBACK, None, Some(pid.to_string())).with_event(
            streams::PROCESSES,
            kinds::PROCESS_UPDATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "resumed" }),
        );
        tx.audit(&entry).await.map_err(internal)?;
        tx.notify_work().await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.events_written();
        self.wake();
        Ok(())
    }

    /// Fails processes whose callback did not come in time.
    pub async fn expire_callbacks(&self) -> Result<usize, DomainError> {
        let now = clock::now();
        let ids = self.inner.store.expired_callbacks(now, 100).await.map_err(internal)?;
        let mut n = 0;
        for pid in ids {
            let mut tx = self.inner.store.begin().await.map_err(internal)?;
            let Some(row) = tx.process(pid).await.map_err(internal)? else {
                continue;
            };
            // It may have been called back, and be waiting at a later callback, since the
            // expired ones were listed.
            let expired = row.last_status == ProcessStatus::AwaitingCallback.as_str()
                && row.callback_deadline.is_some_and(|d| d.0 < now);
            if !expired {
                continue;
            }
            let step = row.next_step.clone().unwrap_or_default();
            let ok = tx
                .move_process(
                    pid,
                    &[ProcessStatus::AwaitingCallback],
                    ProcessStatus::Failed,
                    &row.state.0,
                    Some(&step),
                    None,
                    Some("the callback did not arrive before its timeout"),
                    now,
                )
                .await
                .map_err(internal)?;
            if !ok {
                continue;
            }
            tx.log_step(
                pid,
                row.attempt,
                &StepLog {
                    name: step,
                    status: StepStatus::Failed,
                    state_delta: json!({ "error": "the callback did not arrive before its timeout" }),
                    created_by: "SYSTEM".into(),
                    started_at: now,
                    completed_at: now,
                    retries: row.retries,
                },
            )
            .await
            .map_err(internal)?;
            tx.event(
                &Event {
                    stream: streams::PROCESSES,
                    kind: kinds::PROCESS_UPDATED,
                    subject: Some(pid.to_string()),
                    data: json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "failed" }),
                },
                now,
                None,
            )
            .await
            .map_err(internal)?;
            tx.commit().await.map_err(internal)?;
            n += 1;
        }
        if n > 0 {
            self.events_written();
        }
        Ok(n)
    }
}
