//! Running a claimed process: one transaction per step, fenced by the claim's attempt.

use crate::definition::{State, StepCtx, StepKind, StepOutcome};
use crate::engine::Engine;
use muster_core::audit::{Event, kinds, streams};
use muster_core::clock;
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::{Fence, ProcessRow, ProcessUpdate, StepLog, StoreTx};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use std::time::Duration;
use tracing::{debug, warn};

pub(crate) fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> String {
    // 256 bits from the OS generator, hex: the same strength as session tokens.
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

fn later(now: time::OffsetDateTime, d: Duration) -> time::OffsetDateTime {
    now + time::Duration::try_from(d).unwrap_or(time::Duration::HOUR)
}

/// Runs `row`'s steps until the process stops (done, suspended, waiting, failed, lost lease).
pub(crate) async fn run<D: Send + Sync + 'static>(engine: &Engine<D>, row: ProcessRow) {
    let pid = row.process_id;
    let fence = Fence {
        process_id: pid,
        attempt: row.attempt,
        worker: engine.inner.config.worker_name.clone(),
    };
    let heartbeat = spawn_heartbeat(engine, fence.clone());
    if let Err(e) = run_steps(engine, &row, &fence).await {
        warn!(process_id = %pid, error = %e, "process run stopped");
    }
    heartbeat.abort();
}

fn spawn_heartbeat<D: Send + Sync + 'static>(engine: &Engine<D>, fence: Fence) -> tokio::task::JoinHandle<()> {
    let store = engine.store().clone();
    let lease = engine.inner.config.lease;
    tokio::spawn(async move {
        let every = lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = later(clock::now(), lease);
            match store.extend_lease(&fence, until).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => warn!(error = %e, "lease heartbeat failed"),
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("lease lost")]
    LeaseLost,
    #[error("{0}")]
    Store(#[from] muster_store::StoreError),
    #[error("{0}")]
    Definition(String),
}

async fn run_steps<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    row: &ProcessRow,
    fence: &Fence,
) -> Result<(), RunError> {
    let Some(wf) = engine
        .workflow_version(&row.workflow_name, row.workflow_version)
        .cloned()
    else {
        return fail_definition(
            engine,
            row,
            fence,
            "the workflow version of this process is not registered",
        )
        .await;
    };
    let Value::Object(mut state) = row.state.0.clone() else {
        return fail_definition(engine, row, fence, "the process state is not an object").await;
    };
    let mut next = row.next_step.clone();
    let mut retries = row.retries;
    let actor = row.created_by.clone();
    loop {
        if engine.store().engine_locked().await? {
            // Paused between steps: give the process back; it is claimed again on resume.
            engine.store().release_lease(fence).await?;
            return Ok(());
        }
        let Some(name) = next.clone() else {
            return fail_definition(engine, row, fence, "the process has no next step").await;
        };
        let Some(step) = wf.step_named(&name) else {
            return fail_definition(
                engine,
                row,
                fence,
                &format!("step `{name}` is not in this workflow version"),
            )
            .await;
        };
        let started = clock::now();
        let lease_until = later(started, engine.inner.config.lease);
        let base = |status: ProcessStatus, next_step: Option<String>, state: &State| ProcessUpdate {
            status,
            last_step: name.clone(),
            next_step,
            state: Value::Object(state.clone()),
            run_after: None,
            lease_until: None,
            failed_reason: None,
            traceback: None,
            retries: 0,
            assignee: "SYSTEM".into(),
            callback_token_hash: None,
            callback_deadline: None,
            now: clock::now(),
        };
        let log = |status: StepStatus, delta: Value, retries: i32| StepLog {
            name: name.clone(),
            status,
            state_delta: crate::view::public(&delta),
            created_by: actor.clone(),
            started_at: started,
            completed_at: clock::now(),
            retries,
        };
        if let Some(pred) = step.when
            && !pred(&state)
        {
            let mut up = base(ProcessStatus::Running, wf.after(&name).map(str::to_owned), &state);
            up.run_after = Some(started);
            up.lease_until = Some(lease_until);
            let tx = engine.store().begin().await?;
            commit(
                engine,
                tx,
                fence,
                &log(StepStatus::Skipped, json!({}), 0),
                &up,
                &row.workflow_name,
            )
            .await?;
            next = up.next_step;
            continue;
        }
        match &step.kind {
            StepKind::Done => {
                let up = base(ProcessStatus::Completed, None, &state);
                let tx = engine.store().begin().await?;
                commit(
                    engine,
                    tx,
                    fence,
                    &log(StepStatus::Complete, json!({}), 0),
                    &up,
                    &row.workflow_name,
                )
                .await?;
                debug!(process_id = %row.process_id, "process completed");
                return Ok(());
            }
            StepKind::Input { assignee, .. } => {
                let mut up = base(ProcessStatus::Suspended, Some(name.clone()), &state);
                up.assignee = (*assignee).to_owned();
                let tx = engine.store().begin().await?;
                commit(
                    engine,
                    tx,
                    fence,
                    &log(StepStatus::Suspend, json!({}), 0),
                    &up,
                    &row.workflow_name,
                )
                .await?;
                return Ok(());
            }
            StepKind::Run(f) | StepKind::Retry(f) | StepKind::Callback { action: f, .. } => {
                let callback = matches!(step.kind, StepKind::Callback { .. });
                let token = callback.then(new_token);
                let mut ctx = StepCtx {
                    deps: engine.deps().clone(),
                    state: state.clone(),
                    process_id: row.process_id,
                    actor: actor.clone(),
                    callback_route: token
                        .as_ref()
                        .map(|t| format!("/api/processes/{}/callback/{t}", row.process_id)),
                    store: engine.store().clone(),
                    tx: None,
                    now: started,
                };
                let result = f(&mut ctx).await;
                let tx = ctx.tx.take();
                match result {
                    Ok(outcome) => {
                        let tx = match tx {
                            Some(tx) => tx,
                            None => engine.store().begin().await?,
                        };
                        let (delta, status) = match outcome {
                            StepOutcome::Success(d) => (d, StepStatus::Success),
                            StepOutcome::Skipped => (State::new(), StepStatus::Skipped),
                        };
                        state.extend(delta.clone());
                        if let (Some(token), StepKind::Callback { timeout, .. }) = (&token, &step.kind) {
                            let mut up = base(ProcessStatus::AwaitingCallback, Some(name.clone()), &state);
                            up.callback_token_hash = Some(token_hash(token));
                            up.callback_deadline = Some(later(started, *timeout));
                            commit(
                                engine,
                                tx,
                                fence,
                                &log(StepStatus::AwaitingCallback, Value::Object(delta), 0),
                                &up,
                                &row.workflow_name,
                            )
                            .await?;
                            return Ok(());
                        }
                        let mut up = base(ProcessStatus::Running, wf.after(&name).map(str::to_owned), &state);
                        up.run_after = Some(started);
                        up.lease_until = Some(lease_until);
                        commit(
                            engine,
                            tx,
                            fence,
                            &log(status, Value::Object(delta), 0),
                            &up,
                            &row.workflow_name,
                        )
                        .await?;
                        next = up.next_step;
                        retries = 0;
                    }
                    Err(err) => {
                        // The step's own writes are discarded; only the failure is recorded.
                        if let Some(tx) = tx {
                            tx.rollback().await?;
                        }
                        let retry = matches!(step.kind, StepKind::Retry(_));
                        let detail = json!({ "error": err.message, "details": err.details });
                        let tx = engine.store().begin().await?;
                        if retry {
                            let mut up = base(ProcessStatus::Waiting, Some(name.clone()), &state);
                            up.retries = retries + 1;
                            up.run_after = Some(later(clock::now(), backoff(engine, retries)));
                            up.failed_reason = Some(err.message.clone());
                            commit(
                                engine,
                                tx,
                                fence,
                                &log(StepStatus::Waiting, detail, retries + 1),
                                &up,
                                &row.workflow_name,
                            )
                            .await?;
                        } else {
                            let mut up = base(ProcessStatus::Failed, Some(name.clone()), &state);
                            up.failed_reason = Some(err.message.clone());
                            up.traceback = err.details.as_ref().map(|d| d.to_string());
                            up.assignee = "SYSTEM".into();
                            commit(
                                engine,
                                tx,
                                fence,
                                &log(StepStatus::Failed, detail, retries),
                                &up,
                                &row.workflow_name,
                            )
                            .await?;
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Exponential back-off: base · 2^retries, capped.
fn backoff<D>(engine: &Engine<D>, retries: i32) -> Duration {
    let c = &engine.inner.config;
    let factor = 2u32.saturating_pow(retries.clamp(0, 20) as u32);
    c.retry_base.saturating_mul(factor).min(c.retry_max)
}

/// Commits a step: log row, fenced process update and the process event, in `tx`.
async fn commit<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    mut tx: StoreTx,
    fence: &Fence,
    log: &StepLog,
    up: &ProcessUpdate,
    workflow_name: &str,
) -> Result<(), RunError> {
    if !tx.finish_step(fence, log, up).await? {
        tx.rollback().await?;
        return Err(RunError::LeaseLost);
    }
    tx.event(
        &Event {
            stream: streams::PROCESSES,
            kind: kinds::PROCESS_UPDATED,
            subject: Some(fence.process_id.to_string()),
            data: json!({
                "process_id": fence.process_id,
                "workflow_name": workflow_name,
                "last_status": up.status.as_str(),
                "last_step": log.name,
                "step_status": log.status.as_str(),
            }),
        },
        up.now,
        None,
    )
    .await?;
    tx.commit().await?;
    engine.events_written();
    Ok(())
}

async fn fail_definition<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    row: &ProcessRow,
    fence: &Fence,
    reason: &str,
) -> Result<(), RunError> {
    let now = clock::now();
    let step = row.next_step.clone().unwrap_or_default();
    let up = ProcessUpdate {
        status: ProcessStatus::Failed,
        last_step: step.clone(),
        next_step: row.next_step.clone(),
        state: row.state.0.clone(),
        run_after: None,
        lease_until: None,
        failed_reason: Some(reason.to_owned()),
        traceback: None,
        retries: row.retries,
        assignee: "SYSTEM".into(),
        callback_token_hash: None,
        callback_deadline: None,
        now,
    };
    let log = StepLog {
        name: step,
        status: StepStatus::Failed,
        state_delta: json!({ "error": reason }),
        created_by: "SYSTEM".into(),
        started_at: now,
        completed_at: now,
        retries: row.retries,
    };
    let tx = engine.store().begin().await?;
    commit(engine, tx, fence, &log, &up, &row.workflow_name).await?;
    Err(RunError::Definition(reason.to_owned()))
}
